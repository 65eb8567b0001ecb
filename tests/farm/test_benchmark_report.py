"""The committed farm benchmark report: every figure in results.md is rendered from results.json, and
it has the sections issue 15 asks for (PostgreSQL next to SQLite, chaos with its targets)."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "farm"


def test_committed_report_is_rendered_from_its_results_json() -> None:
    from benchmarks.farm.run import markdown

    results = json.loads((BENCH / "results.json").read_text())
    assert (BENCH / "results.md").read_text() == markdown(results, results.get("quick", False))
    assert not results.get("quick"), "the committed report is a full run"
    stores = {(r["store"], r["controllers"]) for r in results["stores"]}
    assert stores == {("sqlite", 1), ("postgresql", 1), ("postgresql", 2)}
    for row in results["chaos"]:
        assert row["lost"] == 0 and row["results_accepted_twice"] == 0 and row["done"] == row["jobs"], row
        assert row["agent_kills"] > 0 and row["controller_restarts"] == 1
    assert (BENCH / "farm.png").stat().st_size > 10_000
