"""Pipelines built from the components."""
