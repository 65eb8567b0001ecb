"""The NAS pick + KD report (benchmarks/nas/kd-*): the committed Markdown is rendered from its JSON,
every derived figure follows from the measured ones, and each verdict from its interval."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks.common import mean_interval, verdict
from benchmarks.nas.kd import ACCURACY_TOLERANCE_PT, MIN_SPEEDUP, markdown

RUNS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "nas").glob("kd-*/results.json"))


def test_there_is_a_committed_run():
    assert RUNS


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.parent.name)
def test_committed_kd_report_is_rendered_from_its_json_and_consistent(path):
    r = json.loads(path.read_text())
    assert (path.parent / "results.md").read_text() == markdown(r)
    assert (path.parent / "kd.png").stat().st_size > 10_000
    assert r["emulated"] is True and len(r["seeds"]) >= 2  # issue 17 item 3: two seeds at least
    base = r["baseline"]
    assert base["p50_ms"] == statistics.median(base["p50_rounds_ms"])
    for row in r["seeds"]:
        assert (
            row["p50_ms"] == statistics.median(row["p50_rounds_ms"])
            and len(row["p50_rounds_ms"]) == r["rounds"]
        )
        assert row["speedup"] == pytest.approx(base["p50_ms"] / row["p50_ms"])
        assert row["delta_pt"] == pytest.approx(100 * (row["test_accuracy"] - base["test_accuracy"]))
        assert row["kd_minus_scratch_pt"] == pytest.approx(
            100 * (row["test_accuracy"] - row["scratch_test_accuracy"])
        )
        assert row["trained_on"]["seconds"] > 0 and row["trained_on"]["device"]
    s = r["summary"]
    delta, speedup = s["delta_pt_vs_baseline"], s["speedup_vs_baseline"]
    assert delta == pytest.approx(mean_interval([row["delta_pt"] for row in r["seeds"]]))
    assert speedup == pytest.approx(mean_interval([row["speedup"] for row in r["seeds"]]))
    assert s["targets"]["within_0.3pt"]["verdict"] == verdict(delta, -ACCURACY_TOLERANCE_PT, True)
    assert s["targets"]["2x_lower_p50"]["verdict"] == verdict(speedup, MIN_SPEEDUP, True)
