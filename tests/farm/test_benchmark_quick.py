"""The farm benchmark's --quick mode writes results in the issue's shape (slow: about 1.5 min)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_farm_benchmark_quick(tmp_path: Path) -> None:
    env_path = f"{REPO / 'src'}:{REPO}"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.farm.run", "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "fidelity", "overhead_p50_ms", "cycles_per_s", "agents"} <= set(results)
    assert results["agents"] == 8 and results["cycles_per_s"] > 0 and results["overhead_p50_ms"] > 0
    for row in results["fidelity"]:
        assert {"model", "threads", "agent_p50_ms", "bare_p50_ms"} <= set(row) and row["agent_p50_ms"] > 0
    assert (tmp_path / "results.md").read_text().startswith("# Device farm benchmark")
    assert (tmp_path / "farm.png").stat().st_size > 1000
