"""benchmarks/architectures: the committed report is render(results.json); targets() on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.architectures.run import VARIANTS, render, targets

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "architectures"


def test_committed_report_is_rendered_from_committed_results():
    results = json.loads((HERE / "results.json").read_text())
    assert (HERE / "results.md").read_text() == render(results)
    assert (HERE / "results.png").stat().st_size > 0
    assert all(results["emulated"].values())  # emulated classes, labelled as such
    assert results["machine"]["git_commit"]


def _results(float_macs: int, pruned_macs: int, float_ms: list[float], both_ms: list[float]) -> dict:
    stats = {v: {"macs": pruned_macs if "pruned" in v else float_macs} for v in VARIANTS}
    p50 = {v: float_ms for v in VARIANTS} | {"pruned+int8": both_ms}
    return {
        "settings": {"prune_ratio": 0.5},
        "devices": ["rpi4-emulated"],
        "models": {"m": {"stats": stats, "p50_ms": {"rpi4-emulated": p50}}},
    }


def test_targets_met():
    lines = targets(_results(100, 40, [10.0, 10.2, 9.8], [5.0, 5.1, 4.9]))
    assert lines[0].endswith("2.50x — met") and lines[1].endswith("— met")


def test_targets_missed():
    lines = targets(_results(100, 60, [10.0, 10.2, 9.8], [12.0, 12.2, 11.9]))
    assert lines[0].endswith("1.67x — missed") and lines[1].endswith("— missed")


def test_target_missed_within_the_interval():
    lines = targets(_results(100, 50, [10.0, 10.0, 10.0], [10.5, 8.0, 13.0]))
    assert lines[0].endswith("2.00x — met")
    assert lines[1].endswith("— missed (within interval)")
