"""The suites behind `python -m t2ijax.bench` (the command line and its flags live in t2ijax/bench.py)."""
