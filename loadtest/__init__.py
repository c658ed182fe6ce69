"""Benchmarks and load generators; results go in BENCHMARKS.md."""
