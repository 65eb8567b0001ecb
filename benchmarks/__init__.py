"""Reproducible measurements; each sub-folder has run.py and its committed results."""
