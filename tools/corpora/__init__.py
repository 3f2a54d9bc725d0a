"""Benchmark corpora, generated at bench time (never committed): see ``base.py``."""
