"""The NAS benchmark's report (benchmarks/nas/results.md): rendered from its results.json, the pick vs
the baseline decided by the intervals (on test, rounds rotating), and a run whose JSON lacks the
intervals reported as undecided and labelled for what it is (validation, rounds in one order)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nas.run import criteria, decided, markdown, pick_vs_baseline

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "nas"


def test_committed_report_is_rendered_from_its_json_and_says_what_it_measured():
    r = json.loads((BENCH / "results.json").read_text())
    md = (BENCH / "results.md").read_text()
    assert md == markdown(r)
    found, overall = decided(r)
    if "accuracy_change_pt" not in r:  # the committed run: validation, one order, no intervals recorded
        assert set(found.values()) == {"undecided"} and overall == "undecided"
        assert "**validation** split" in md and "always in one order" in md
        assert "TARGET MISSED" not in md and "TARGET MET" not in md
    else:
        assert r["report_split"] == "test" and r["round_order"] == "rotating" and r["rounds"] >= 8
        assert found == criteria(r)
    assert f"→ target **{overall}**" in md


def _rounds(base: list[float], pick: list[float]) -> dict[str, list[float]]:
    return {"baseline": base, "pick": pick}


def _correct(n: int, base_only: int, pick_only: int) -> tuple[np.ndarray, np.ndarray]:
    """n images, both right on the first 80 %, except `base_only` / `pick_only` discordant ones."""
    base, pick = np.zeros(n, bool), np.zeros(n, bool)
    both = int(0.8 * n)
    base[:both] = pick[:both] = True
    base[both : both + base_only] = True
    pick[both + base_only : both + base_only + pick_only] = True
    return base, pick


@pytest.mark.parametrize(
    ("base_only", "pick_only", "pick_ms", "expected"),
    [
        (200, 10, [0.10] * 4 + [0.11] * 4, ("missed", "missed")),  # -1.9 pt on 10,000 images
        (10, 200, [0.10] * 4 + [0.11] * 4, ("met", "met")),  # +1.9 pt, ~10x faster
        (10, 200, [0.99, 1.01, 1.02, 0.98, 1.0, 1.03, 0.97, 1.0], ("undecided", "missed")),  # equal speed
    ],
)
def test_pick_vs_baseline_is_decided_by_its_intervals(base_only, pick_only, pick_ms, expected):
    base_ms = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99]
    comparison = pick_vs_baseline(*_correct(10_000, base_only, pick_only), _rounds(base_ms, pick_ms))
    change = comparison["accuracy_change_pt"]
    assert change["mean"] == pytest.approx(100 * (pick_only - base_only) / 10_000)
    assert change["low"] <= change["mean"] <= change["high"] and change["n"] == 10_000
    assert comparison["speedup"]["n"] == 8
    found = criteria(comparison)
    assert (found["faster_or_equal_and_more_accurate"], found["within_0.3pt_and_2x_faster"]) == expected
