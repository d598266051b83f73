"""Ternary (BitNet b1.58) language-model training sweeps with per-step token-diversity metrics."""

__version__ = "0.1.0"
