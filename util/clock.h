/* The local clocks. clock_wall_ms() is the wall clock, which a build with
 * -Dtest_hooks=true (scripts/build) shifts by BOOKMARKFS_TEST_CLOCK_SHIFT
 * seconds, so that the tests can run a mount whose clock is off; other
 * builds never read that variable. clock_mono_ms() is never shifted. */
#ifndef BOOKMARKFS_UTIL_CLOCK_H
#define BOOKMARKFS_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

int64_t clock_wall_ms(void);
int64_t clock_mono_ms(void);

/* clock_wall_ms() in whole seconds, for time(NULL)'s users. */
static inline time_t clock_wall_s(void) { return (time_t)(clock_wall_ms() / 1000); }

#endif
