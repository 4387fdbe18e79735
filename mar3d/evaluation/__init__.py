"""Metrics and evaluation protocols (EVAL.md)."""
