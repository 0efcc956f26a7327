"""The benchmark of bookmarkfs (run it with scripts/bench): the driver, the
plot, the C hot loop and raw-PUT floor, and a StateStore stand-in."""
