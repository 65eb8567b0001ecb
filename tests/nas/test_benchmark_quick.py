"""benchmarks/nas/run.py --quick writes results in the issue's shape (digits, tiny space)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_nas_benchmark_quick(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.nas.run", "--quick", "--out", str(tmp_path), "--seeds", "0,1",
         "--trials", "3", "--timeout-s", "120"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    for key in ("machine", "device_class", "budget", "hypervolume", "baseline", "pick", "front"):
        assert key in r
    assert r["device_class"] == "rpi4-emulated" and r["emulated"] is True
    assert len(r["hypervolume"]["nas"]) == len(r["hypervolume"]["random"]) == 2
    assert all(h >= 0 for h in r["hypervolume"]["nas"] + r["hypervolume"]["random"])
    assert {"accuracy", "p50_ms"} <= set(r["baseline"]) and {"accuracy", "p50_ms", "spec"} <= set(r["pick"])
    assert r["front"] and all(f["p50_ms"] > 0 for f in r["front"])
    # the verdicts follow from the recorded intervals by the rule, whichever way they go
    from benchmarks.common import any_of
    from benchmarks.nas.run import criteria

    assert r["report_split"] == "test" and r["round_order"] == "rotating"
    assert len(r["baseline"]["p50_rounds_ms"]) == len(r["pick"]["p50_rounds_ms"]) == r["rounds"]
    assert r["criteria"] == criteria(r) and r["target"] == any_of(list(r["criteria"].values()))
    assert len(r["baseline_sha256"]) == 64
    assert (tmp_path / "front.png").stat().st_size > 1000 and f"→ target **{r['target']}**" in (
        tmp_path / "results.md"
    ).read_text()
