"""The farm benchmark's --quick mode writes results in the issues' shape (slow: about 3 min): fidelity,
overhead, SQLite and PostgreSQL rows (1 and 2 controller processes) and the chaos section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_farm_benchmark_quick(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.farm.run", "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "fidelity", "overhead_p50_ms", "cycles_per_s", "agents"} <= set(results)
    assert results["agents"] == 8 and results["cycles_per_s"] > 0 and results["overhead_p50_ms"] > 0
    for row in results["fidelity"]:
        assert {"model", "threads", "agent_p50_ms", "bare_p50_ms"} <= set(row) and row["agent_p50_ms"] > 0
    stores = {(r["store"], r["controllers"]): r for r in results["stores"]}
    assert set(stores) == {("sqlite", 1), ("postgresql", 1), ("postgresql", 2)}
    assert all(r["cycles_per_s"] > 0 and r["overhead_p50_ms"] > 0 for r in stores.values())
    chaos = {(r["store"], r["controllers"]): r for r in results["chaos"]}
    assert set(chaos) == {("sqlite", 1), ("postgresql", 2)}
    for r in chaos.values():  # the targets: nothing lost, nothing accepted twice, all done
        assert r["lost"] == 0 and r["results_accepted_twice"] == 0 and r["done"] == r["jobs"], r
        assert r["agent_kills"] >= 1 and r["controller_restarts"] == 1
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("# Device farm benchmark") and "## Chaos" in report and "PostgreSQL" in report
    assert (tmp_path / "farm.png").stat().st_size > 1000
