"""Metrics and evaluation protocols (docs/protocol.md)."""
