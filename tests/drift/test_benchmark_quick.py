"""benchmarks/drift/run.py --quick writes results in the issue's shape."""

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
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
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
    assert set(results) == {"machine", "alpha", "batch_size", "clean", "shifts"}
    assert set(results["clean"]) == {"batches", "false_positive_rate"} and results["batch_size"] == 500
    assert {s["name"] for s in results["shifts"]} == {
        "gaussian_noise",
        "brightness_contrast",
        "rotation",
        "class_prior",
    }
    for s in results["shifts"]:
        assert set(s) == {"name", "severity", "batches", "detection_rate"} and 0 <= s["detection_rate"] <= 1
    assert (tmp_path / "detection.png").stat().st_size > 0 and "Quick smoke run" in (
        tmp_path / "results.md"
    ).read_text()
