"""Inference pipelines: compositions of trained models that never train."""
