"""A user model loaded by import path whose work can be made larger on purpose, to check that
`bench compare` catches a known slowdown (see tests/test_compare_real_runs.py)."""
