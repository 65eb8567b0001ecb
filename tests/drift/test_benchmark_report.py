"""The drift benchmark's report: committed results.md is rendered from committed results.json, the
batches are disjoint, and the targets' verdicts follow the rate and its interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import proportion_interval
from benchmarks.drift.run import FAMILIES, SHIFTS, disjoint_batches, prior_batches, render, targets

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "drift"


def test_committed_report_is_rendered_from_its_results_json():
    results = json.loads((BENCH / "results.json").read_text())
    assert (BENCH / "results.md").read_text() == render(results)
    assert not results["quick"], "the committed report is a full run"
    assert results["settings"]["batch_sizes"] == [25, 50, 100, 200, 500]
    assert {(s["name"], s["severity"]) for s in results["shifts"]} == {
        (n, sev) for n in SHIFTS for sev in ("low", "moderate", "high")
    }
    assert results["machine"]["git_commit"] and (BENCH / "detection.png").stat().st_size > 10_000


def test_batches_of_one_size_never_share_an_image():
    rng = np.random.default_rng(0)
    batches = disjoint_batches(1000, 100, 400, rng)
    assert batches.shape == (10, 100) and len(np.unique(batches)) == 1000
    y = np.repeat(np.arange(10), 100)
    prior = prior_batches(y, 50, 4.0, 400, rng)
    assert len(np.unique(prior)) == prior.size
    assert all((y[b] < 5).sum() == 40 for b in prior)  # classes 0–4 : 5–9 = 4 : 1
    assert len(prior) == 500 // 40  # the first half of the classes runs out first


def test_proportion_interval_is_exact():
    zero = proportion_interval(0, 20)
    assert zero["mean"] == 0 and zero["low"] == 0 and zero["high"] == pytest.approx(1 - 0.025 ** (1 / 20))
    with pytest.raises(ValueError):
        proportion_interval(3, 2)


def _results(clean: tuple[int, int], moderate: tuple[int, int]) -> dict:
    def row(k: int, n: int) -> dict:
        return {f: proportion_interval(k, n) for f in FAMILIES}

    return {
        "settings": {"alpha": 0.05, "batch_sizes": [25, 500], "target_detection": 0.95},
        "clean": [{"batch_size": 25, "batches": clean[1], "rate": row(*clean)}],
        "shifts": [
            {"name": "rotation", "severity": "moderate", "batch_size": 500, "batches": moderate[1],
             "rate": row(*moderate)},
            {"name": "rotation", "severity": "moderate", "batch_size": 25, "batches": 20, "rate": row(0, 20)},
            {"name": "rotation", "severity": "low", "batch_size": 500, "batches": 20, "rate": row(0, 20)},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("clean", "moderate", "expected"),
    [
        ((2, 400), (400, 400), ["met", "met"]),  # rates 0.005 and 1.0, intervals clear of the thresholds
        ((40, 400), (300, 400), ["missed", "missed"]),  # 0.10 > 0.05; 0.75 < 0.95, intervals too
        ((3, 40), (18, 20), ["undecided", "undecided"]),  # 0.075; 0.90: the intervals cross
        ((1, 40), (20, 20), ["undecided", "undecided"]),  # 0.025 [0.001, 0.13]; 1.0 [0.83, 1]: cross
        ((0, 72), (72, 72), ["met", "met"]),  # 72 of 72 is the fewest batches that can show ≥ 0.95
        ((0, 71), (71, 71), ["undecided", "undecided"]),
    ],
)
def test_targets_on_hand_made_results(clean, moderate, expected):
    found = targets(_results(clean, moderate))
    assert [t["verdict"] for t in found] == expected
    assert [t["target"] for t in found] == [
        "false-positive rate, clean batches of 25", "detection of rotation (moderate), batches of 500",
    ]  # fmt: skip


def test_committed_targets_follow_the_rule_and_none_is_counted_met_while_crossing():
    """verdict = rule(numbers) for every committed target row, read back from results.md."""
    results = json.loads((BENCH / "results.json").read_text())
    md = (BENCH / "results.md").read_text()
    for t in targets(results):
        low, high, thr = t["interval"]["low"], t["interval"]["high"], t["threshold"]
        worst, best = (low, high) if t["direction"] == "≥" else (-high, -low)
        thr = thr if t["direction"] == "≥" else -thr
        expected = "met" if worst >= thr else "missed" if best < thr else "undecided"
        assert t["verdict"] == expected
        assert f"| {t['target']} |" in md and f"**{expected}** |" in md
