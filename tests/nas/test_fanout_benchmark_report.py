"""The committed NAS fan-out benchmark: its report is what its JSON renders to, and every figure in it
is recomputed from the recorded runs (ratio and interval, hypervolumes, trials/s, the extrapolation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.nas.fanout.run import analyse, markdown

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "nas" / "fanout"
RUNS = sorted(p for p in BENCH.glob("20*") if (p / "results.json").exists())


def test_there_is_a_committed_run():
    assert RUNS, "benchmarks/nas/fanout/<date>/results.json: run the benchmark and commit it"


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_report_is_rendered_from_its_json_and_its_figures_from_the_runs(run: Path):
    r = json.loads((run / "results.json").read_text())
    assert (run / "results.md").read_text() == markdown(r)
    assert (run / "walltime.png").stat().st_size > 1000
    recomputed = json.loads(json.dumps(analyse(r)))  # keys as the JSON holds them
    assert recomputed == r["analysis"]
    runs = r["runs"]
    assert [x["workers"] for x in runs] == [1, 2] * (len(runs) // 2)  # interleaved 1, 2, 1, 2, …
    assert all(x["accounted"] >= r["search"]["n_trials"] and x["states"]["FAIL"] == 0 for x in runs)
    assert all(x["workers_seen"] == x["workers"] for x in runs)  # every worker ran trials
    md = (run / "results.md").read_text()
    assert "shared with other engineers' work" in md and "2 cores" in md or r["machine"]["cpu_count"] != 2
    assert all("load_before" in x for x in runs + r["overhead"])
