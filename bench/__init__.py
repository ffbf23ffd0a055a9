"""Benchmarks of the esgz format engine against the reference Go builder (see README.md)."""
