"""Helpers shared by the Python tests: servers on loopback and paths."""
