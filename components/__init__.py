"""KFP components, one folder each: component.py (thin wrapper over edgecompress), README.md,
metadata.yaml and the compiled component.yaml."""
