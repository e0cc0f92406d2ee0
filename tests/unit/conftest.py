"""Hypothesis for the fast tests: no per-example deadline. CI machines are shared and noisy, and a
deadline is a timed assertion; the suite's speed is watched by its total time instead."""

from hypothesis import settings

settings.register_profile("slmops", deadline=None)
settings.load_profile("slmops")
