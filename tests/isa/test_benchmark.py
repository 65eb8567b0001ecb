"""benchmarks/isa: its target logic on hand-made results (met, missed, missed within the interval),
and the committed results.md is exactly what render() makes from the committed results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.isa.run import render, targets

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "isa"


def _timing(*walls: float) -> dict:
    return {"check_timing": {"runs": [{"wall_s": w, "samples": 5000, "split_size": 5000, "subsample_step": 1,
                                       "verdict": "accepted"} for w in walls]}}  # fmt: skip


@pytest.mark.parametrize(
    ("walls", "expected"),
    [
        ((300.0, 310.0, 305.0), "met"),
        ((900.0, 910.0, 905.0), "missed"),
        ((560.0, 700.0, 620.0), "missed (within interval)"),
        ((400.0, 700.0, 500.0), "met (interval crosses threshold)"),
    ],
)
def test_check_time_target(walls, expected):
    (t,) = targets(_timing(*walls))
    assert t["verdict"] == expected and t["threshold"] == "≤ 600 s" and "(n=3)" in t["measured"]
    assert "5000 of 5000 validation images" in t["target"]


def test_a_subsampled_check_says_its_interval():
    results = _timing(100.0, 110.0, 105.0)
    for r in results["check_timing"]["runs"]:
        r.update(samples=1000, subsample_step=5)
    assert "1000 of 5000 validation images (every 5th)" in targets(results)[0]["target"]


def test_committed_report_is_rendered_from_its_results_json():
    results = json.loads((BENCH / "results.json").read_text())
    assert (BENCH / "results.md").read_text() == render(results)
    assert not results.get("quick"), "the committed report is a full run"
    assert (BENCH / "results.png").stat().st_size > 10_000
    assert {n["network"] for n in results["networks"]} >= {"Fashion-MNIST baseline CNN"}
