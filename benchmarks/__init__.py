"""Benchmarks of asyncsession against its peers (see run.py)."""
