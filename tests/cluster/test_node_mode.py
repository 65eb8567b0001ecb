"""The documented on-node benchmark mode works for a profile's real device class: docs/kubernetes.md
tells the user to pass farm_url=node with the node selector, and edge_benchmark with farm_url="node"
benchmarks `rpi4` (a real class) here as a real device of that class. An empty farm_url (what the
docs implied on d9a55b6) means emulated classes only, and says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecompress.edge import NODE_MODE, edge_benchmark
from edgecompress.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
SETTINGS = {"min_runs": 20, "min_duration_s": 0.05, "warmup_runs": 2}


def test_docs_on_node_mode_names_farm_url_node():
    text = DOCS.read_text()
    section = text[text.index("**On-node benchmarks.**") :].split("\n\n")[0]
    assert "--benchmark-node-selector" in section and f"farm_url={NODE_MODE}" in section
    assert re.search(r"empty `farm_url`.*emulated", section, re.S)


def test_node_mode_benchmarks_a_real_class(trained_model):
    results = edge_benchmark(
        trained_model / "model.onnx", ["rpi4"], SETTINGS, farm_url=NODE_MODE, timeout_s=300
    )
    assert results["rpi4"]["emulated"] is False and results["rpi4"]["backend"] == "node"
    assert results["rpi4"]["latency_ms"]["p50"] > 0 and results["rpi4"]["device_class"] == "rpi4"


def test_empty_farm_url_refuses_a_real_class_by_name(trained_model):
    with pytest.raises(ConfigError, match="unknown device class 'rpi4'; emulated classes available locally"):
        edge_benchmark(trained_model / "model.onnx", ["rpi4"], SETTINGS, farm_url="", timeout_s=300)
