"""The committed recovery benchmark (benchmarks/compression/recovery/2026-12-06): results.md is
render(results.json), and each verdict is the rule applied to the paired per-seed differences recorded
in it — never that a target was met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import mean_interval, verdict
from benchmarks.compression.recovery import run as bench

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "benchmarks/compression/recovery/2026-12-06"


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((FOLDER / "results.json").read_text())


def test_the_report_is_rendered_from_its_json(results):
    assert bench.render(results).strip() == (FOLDER / "results.md").read_text().strip()
    assert (FOLDER / "results.png").stat().st_size > 0


def test_the_committed_run_is_the_full_one(results):
    assert not results["quick"] and results["seeds_run"] == list(bench.SEEDS)
    assert (
        results["ratios"] == list(bench.RATIOS) and results["command"] in (FOLDER / "results.md").read_text()
    )
    for seed in results["seeds"]:
        for start in seed["starts"].values():
            for row in start["rows"].values():  # equal budget in every row
                assert row["budget_epochs"] == results["budget_epochs"]


def test_verdicts_follow_the_rule_from_the_paired_differences(results):
    starts = [str(r) for r in results["ratios"]]
    for schedule, (auto, ft) in bench.PAIRS.items():
        paired = [
            s["starts"][r]["rows"][auto]["test_accuracy"] - s["starts"][r]["rows"][ft]["test_accuracy"]
            for r in starts
            for s in results["seeds"]
        ]
        interval = mean_interval(paired)
        recorded = results["differences"][f"{auto} − {ft}"]
        assert recorded["mean"] == pytest.approx(interval["mean"])
        assert (recorded["low"], recorded["high"]) == pytest.approx((interval["low"], interval["high"]))
        name = f"{schedule}: auto never worse than fine-tuning on test"
        assert results["verdicts"][name] == verdict(interval, 0.0, higher_is_better=True)


def test_auto_kept_the_higher_validation_branch(results):
    for s in results["seeds"]:
        for start in s["starts"].values():
            for name, row in start["rows"].items():
                if "auto" in name:
                    val = row["branch_val_accuracy"]
                    assert row["chosen"] == ("kd" if val["kd"] > val["finetune"] else "finetune"), name
                    assert row["val_accuracy"] == pytest.approx(val[row["chosen"]])
