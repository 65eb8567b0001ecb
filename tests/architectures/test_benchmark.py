"""benchmarks/architectures: the committed report is render(results.json); targets() on hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
    assert lines[0].endswith("2.50x (exact) — met") and lines[1].endswith("— met")


def test_targets_missed():
    lines = targets(_results(100, 60, [10.0, 10.2, 9.8], [12.0, 12.2, 11.9]))
    assert lines[0].endswith("1.67x (exact) — missed") and lines[1].endswith("— missed")


def test_an_interval_crossing_the_threshold_is_undecided():
    lines = targets(_results(100, 50, [10.0, 10.0, 10.0], [10.5, 8.0, 13.0]))
    assert lines[0].endswith("2.00x (exact) — met")
    assert lines[1].endswith("— undecided")
    lines = targets(_results(100, 50, [10.0, 10.0, 10.0], [9.5, 8.0, 9.0]))  # mean 1.13x [0.92, 1.34]
    assert lines[1].endswith("— undecided")


def test_committed_targets_are_the_rule_applied_to_the_rounds():
    """Each committed speed-up target: recomputed from the per-round p50s in results.json, decided by its
    t-interval (met only where the lower bound is above 1x), and that line is in results.md."""
    from scipy import stats

    results = json.loads((HERE / "results.json").read_text())
    md = (HERE / "results.md").read_text()
    for name, model in results["models"].items():
        for device in results["devices"]:
            rounds = model["p50_ms"][device]
            ratios = [f / v for f, v in zip(rounds["float"], rounds["pruned+int8"], strict=True)]
            low, high = stats.t.interval(0.95, len(ratios) - 1, loc=np.mean(ratios), scale=stats.sem(ratios))
            expected = "met" if low > 1 else "missed" if high <= 1 else "undecided"
            line = next(t for t in targets(results) if t.startswith(f"{name}: pruned + INT8") and device in t)
            assert line.endswith(f"— {expected}") and f"- {line}" in md


def _per_class_results(parent_ms: list[float], child_ms: list[float], all_float: bool) -> dict:
    """Objective latency: stats and INT8 children per class, with the op-level choice recorded."""
    results = _results(100, 40, [10.0, 10.2, 9.8], [5.0, 5.1, 4.9])
    model = results["models"]["m"]
    model["stats"] = {"rpi4-emulated": model["stats"]}
    model["p50_ms"]["rpi4-emulated"].update({"float": parent_ms, "int8": child_ms})
    final = {"quantized_groups": [] if all_float else ["conv"], "why": "stated"}
    per_op = {"all_float": all_float, "final": final}
    model["precision"] = {v: {"rpi4-emulated": per_op} for v in ("int8", "pruned+int8")}
    results["settings"]["objective"] = "latency"
    return results


def test_per_class_int8_is_judged_against_its_float_parent():
    """Objective latency adds 'not slower than its float parent' per INT8 child and class: met on a lower
    bound ≥ 1x, missed when the whole interval is below, and met when the op-level choice kept it float
    (its rounds are then the parent's own file, timed again)."""
    faster = targets(_per_class_results([10.0, 10.2, 9.8], [8.0, 8.1, 7.9], all_float=False))
    line = next(t for t in faster if t.startswith("m: int8 not slower than float"))
    assert line.endswith("— met") and "kept float" not in line
    slower = targets(_per_class_results([10.0, 10.2, 9.8], [13.0, 13.1, 12.9], all_float=False))
    assert next(t for t in slower if t.startswith("m: int8 not slower")).endswith("— missed")
    crossing = targets(_per_class_results([10.0, 10.0, 10.0], [9.0, 10.5, 10.2], all_float=False))
    assert next(t for t in crossing if t.startswith("m: int8 not slower")).endswith("— undecided")
    kept = targets(_per_class_results([10.0, 10.2, 9.8], [10.1, 9.7, 10.0], all_float=True))
    line = next(t for t in kept if t.startswith("m: int8 not slower"))
    assert "every op group kept float by the op-level choice — met" in line
    # the pruned child is judged against the pruned parent, not against float
    pruned = next(t for t in faster if t.startswith("m: pruned+int8 not slower than pruned"))
    assert "2.00x" in pruned and pruned.endswith("— met")  # pruned 10.0/10.2/9.8 vs 5.0/5.1/4.9


def test_every_committed_architectures_run_is_rendered_from_its_results():
    for folder in [HERE, *sorted(p.parent for p in HERE.glob("2026-*/results.json"))]:
        results = json.loads((folder / "results.json").read_text())
        assert (folder / "results.md").read_text() == render(results), folder
        for line in targets(results):
            assert f"- {line}" in (folder / "results.md").read_text(), line


def test_every_committed_run_has_the_rounds_its_command_asked_for():
    """`--rounds N` reaches the measurement: each variant on each class has exactly the recorded number
    of rounds, and that is the N of the recorded command (5 without the flag)."""
    for folder in [HERE, *sorted(p.parent for p in HERE.glob("2026-*/results.json"))]:
        results = json.loads((folder / "results.json").read_text())
        args = results.get("command", "").split()
        asked = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 5
        assert results["settings"]["rounds"] == asked, folder
        for model in results["models"].values():
            for rounds in model["p50_ms"].values():
                assert {len(v) for v in rounds.values()} == {asked}, folder
