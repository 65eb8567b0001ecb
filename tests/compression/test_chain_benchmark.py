"""The chain benchmark (benchmarks/compression/chain): a smoke run on digits checks that the choice is
the rule applied to validation, size and speed, and that the verdict is the rule applied to the recorded
numbers; the committed Fashion-MNIST run is checked the same way and against its rendered report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import all_of, exact_value, mean_interval, verdict, write_report
from benchmarks.compression.chain import run as bench

FOLDER = Path(bench.HERE)


def _check_choice_and_verdict(r: dict) -> None:
    t, base = r["settings"]["targets"], r["baseline"]
    candidates = r["selection"]["candidates"]
    ok = [
        n
        for n, c in candidates.items()
        if base["gzip_bytes"] / c["int8"]["gzip_bytes"] >= t["gzip_x"]
        and mean_interval(
            [
                b / x
                for b, x in zip(
                    r["selection"]["latency"]["baseline"], r["selection"]["latency"][n], strict=True
                )
            ]
        )["mean"]
        >= t["p50_x"]
    ]
    expected = max(ok, key=lambda n: candidates[n]["int8"]["val_accuracy"]) if ok else None
    assert r["selection"]["winner"] == expected
    dec = r["decision"]
    if expected is None:
        assert dec["verdict"] == "missed" and not r["runs"]
        return
    assert [x["seed"] for x in r["runs"]] == r["settings"]["seeds"]
    assert all(x["global_pruning"] == r["settings"]["allocations"][expected] for x in r["runs"])
    parts = []
    for x in r["runs"]:
        parts.append(verdict(exact_value(base["gzip_bytes"] / x["int8"]["gzip_bytes"]), t["gzip_x"], True))
        rounds = zip(r["latency"]["baseline"], r["latency"][f"seed {x['seed']}"], strict=True)
        parts.append(verdict(mean_interval([b / c for b, c in rounds]), t["p50_x"], True))
    drop = mean_interval([(x["int8"]["test_accuracy"] - base["test_accuracy"]) * 100 for x in r["runs"]])
    parts.append(verdict(drop, -t["max_drop_pt"], True))
    assert dec["verdict"] == all_of(parts)
    assert dec["drop_pt"]["mean"] == pytest.approx(drop["mean"])


def test_quick_run_chooses_on_validation_and_decides_by_the_rule(tmp_path):
    results = bench.run(quick=True, work=tmp_path / "work")
    write_report(results, tmp_path / "out", bench.render, bench.plot, "results.png")
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    assert stored["quick"] and (tmp_path / "out" / "results.png").stat().st_size > 0
    _check_choice_and_verdict(stored)
    for name, budget in stored["param_budgets"].items():  # the size search ends under the limit it aims at
        budgets = [x["budget"] for x in budget["search"]]
        assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets), name
        assert (
            budget["search"][-1]["int8_gzip"] <= stored["gzip_limit"] * stored["settings"]["size_margin"]
        ), name
    assert f"**{stored['decision']['verdict']}**" in (tmp_path / "out" / "results.md").read_text()


def test_committed_run_is_rendered_from_its_json_and_decided_by_the_rule():
    r = json.loads((FOLDER / "results.json").read_text())
    assert not r["quick"] and r["settings"] == json.loads(json.dumps(bench.FULL))
    md = (FOLDER / "results.md").read_text()
    assert bench.render(r).strip() == md.strip() and r["command"] in md
    _check_choice_and_verdict(r)


def test_no_allocation_meeting_size_and_speed_means_missed_not_a_pick():
    """Selection may not fall back to the most accurate candidate when none reaches the size and the
    speed: with a size target no candidate meets, nothing is chosen and the target is missed."""
    r = json.loads((FOLDER / "results.json").read_text())
    t = {**r["settings"]["targets"], "gzip_x": 1000.0}
    assert bench.choose(r["selection"]["candidates"], r["baseline"]["gzip_bytes"], t) is None
    empty = {**r, "runs": []}
    assert bench.decide(empty)["verdict"] == "missed"
    assert (
        bench.choose(r["selection"]["candidates"], r["baseline"]["gzip_bytes"], r["settings"]["targets"])
        == (r["selection"]["winner"])
    )
