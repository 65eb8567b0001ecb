"""benchmarks/drift/run.py --quick: the smoke run writes the report's shape, rendered from its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.data import FASHION_MNIST_DIR
from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_drift_benchmark_quick(tmp_path):
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        skip_or_fail_in_ci(
            "Fashion-MNIST not installed (scripts/system-deps.sh installs dataset-fashion-mnist)"
        )
    from benchmarks.drift.run import FAMILIES, SHIFTS, render

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.drift.run", "--quick", "--output-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] and results["machine"]["git_commit"] and results["machine"]["cpu_model"]
    assert len(results["baseline_sha256"]) == 64  # the deployed model, named (issue 25)
    assert (
        results["settings"]["reference_split"] == "val" and results["settings"]["production_split"] == "test"
    )
    sizes = results["settings"]["batch_sizes"]
    assert [r["batch_size"] for r in results["clean"]] == sizes
    assert {(s["name"], s["batch_size"]) for s in results["shifts"]} == {
        (n, b) for n in SHIFTS for b in sizes
    }
    for row in [*results["clean"], *results["shifts"]]:
        for family in FAMILIES:
            rate = row["rate"][family]
            assert rate["n"] == row["batches"] > 0 and rate["low"] <= rate["mean"] <= rate["high"]
    assert (tmp_path / "results.md").read_text() == render(results)
    assert "Quick smoke run" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "detection.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_baseline_is_an_error_not_an_hour_of_training(tmp_path, monkeypatch):
    import benchmarks.common
    from benchmarks.drift import run

    monkeypatch.setattr(benchmarks.common, "CACHE", tmp_path)
    assert run.main(["--output-dir", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
