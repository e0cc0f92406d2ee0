"""Implementations of the optimizer's ports."""
