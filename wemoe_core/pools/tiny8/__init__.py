"""Tiny-8: the offline model zoo (task generators, builder, pool)."""
