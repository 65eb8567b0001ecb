"""The compression benchmark's --quick mode writes results in the shape the issue fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_benchmark_shape(tmp_path: Path):
    from benchmarks.compression.run import main

    assert main(["--quick", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {"machine", "baseline", "rows", "distillation"} <= set(results)
    names = [r["name"] for r in results["rows"]]
    assert results["baseline"] in names
    keys = {"name", "group", "accuracy", "params", "macs", "onnx_bytes", "gzip_bytes", "p50_ms", "p90_ms"}
    for row in results["rows"]:
        assert keys <= set(row) and row["group"] in ("baseline", "peer", "ours")
        assert 0 <= row["accuracy"] <= 1 and row["p50_ms"] > 0
    groups = {r["group"] for r in results["rows"]}
    assert groups == {"baseline", "peer", "ours"}
    assert len(results["distillation"]["scratch"]) == len(results["distillation"]["distilled"]) >= 2
    rows = {r["name"]: r for r in results["rows"]}
    base = rows[results["baseline"]]
    assert rows["peer: torch-pruning 50% channels (no fine-tune)"]["macs"] < base["macs"] / 2
    assert rows["ours: unstructured 85% + fine-tune"]["gzip_bytes"] < base["gzip_bytes"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Targets" in md and "QUICK MODE" in md
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
