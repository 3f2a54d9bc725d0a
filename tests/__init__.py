"""Liquid Gateway test suite (a regular package so an installed top-level `tests` never shadows it)."""
