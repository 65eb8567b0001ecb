"""The quantization benchmark: the --quick smoke run, the committed report rendered from its JSON, and
the targets' verdicts on hand-made results (met, missed, missed within the interval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quantization.run import main, render, targets

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "quantization"


def test_quick_benchmark_writes_a_report_rendered_from_its_json(tmp_path):
    from edgecompress.runtime.devices import needs_reduce_range

    assert main(["--quick", "--models", "mlp", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] and results["selection_split"] == "validation"
    assert results["target"]["reduce_range"] == needs_reduce_range(results["target"]["device_class"])
    model = results["models"]["mlp"]
    assert model["machine"]["git_commit"] and model["machine"]["cpu_model"]
    rows = {r["role"]: r for r in model["rows"]}
    assert {"baseline", "s8s8", "repair", "alternative", "autotune"} <= set(rows)
    seeds = model["settings"]["seeds"]
    for role in ("s8s8", "repair", "alternative", "autotune"):
        assert [p["seed"] for p in rows[role]["per_seed"]] == seeds and rows[role]["summary"][
            "test_change_pt"
        ]["n"] == 2
    # each row is what it claims, read from its graph: S8S8 = INT8 activations, per-tensor weights;
    # QAT = its own scheme (UINT8 activations, per-channel weights), so it cannot pass for an S8S8 repair
    for p in rows["s8s8"]["per_seed"]:
        assert p["scheme"]["activations"] == ["int8"] and p["scheme"]["weight_grain"] == ["per-tensor"]
    for p in rows["repair"]["per_seed"]:
        assert p["scheme"]["activations"] == ["int8"] and p["scheme"]["float_layers"] >= 1
    for p in rows["alternative"]["per_seed"]:
        assert p["scheme"]["activations"] == ["uint8"] and p["scheme"]["weight_grain"] == ["per-channel"]
    for row in model["rows"]:
        speedup = row["latency"]["speedup"]
        assert (
            speedup["low"] <= speedup["mean"] <= speedup["high"]
            and speedup["n"] == model["settings"]["latency_rounds"]
        )
    assert (tmp_path / "results.md").read_text() == render(results)
    assert (
        "baseline_sha256" not in results and "Baseline" not in (tmp_path / "results.md").read_text()
    )  # mlp only
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--quick", "--models", "resnet", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_committed_report_is_rendered_from_its_results_json():
    results = json.loads((BENCH / "results.json").read_text())
    assert (BENCH / "results.md").read_text() == render(results)
    assert not results["quick"] and results["selection_split"] == "validation"
    assert set(results["models"]) == {"cnn", "mlp"}
    for model in results["models"].values():
        for row in model["rows"]:
            if row["role"] in ("s8s8", "repair", "alternative", "autotune"):
                assert row["summary"]["test_change_pt"]["n"] >= 3, row["name"]
    assert (BENCH / "results.png").stat().st_size > 10_000


def _iv(mean: float, low: float, high: float, n: int = 3) -> dict:
    return {"mean": mean, "low": low, "high": high, "n": n}


def _results(repair: dict, alternative: dict, speedup: dict) -> dict:
    limits = {"max_drop_pt": 0.3, "min_speedup": 1.8, "min_size_ratio": 3.5}
    return {"models": {"cnn": {"settings": limits, "rows": [
        {"role": "baseline"},
        {"role": "repair", "summary": {"test_change_pt": repair}},
        {"role": "alternative", "summary": {"test_change_pt": alternative}},
        {"role": "autotune", "summary": {"size_ratio": _iv(3.7, 3.7, 3.7), "test_change_pt": _iv(0.0, -0.1, 0.1)},
         "latency": {"speedup": speedup}},
    ]}}}  # fmt: skip


@pytest.mark.parametrize(
    ("repair", "alternative", "speedup", "expected"),
    [
        (_iv(-0.1, -0.2, 0.0), _iv(0.1, 0.0, 0.2), _iv(2.5, 2.3, 2.7), ["met", "met", "met"]),
        (_iv(-15.5, -17.0, -14.0), _iv(-0.5, -0.8, -0.4), _iv(1.2, 1.1, 1.3), ["missed", "missed", "missed"]),
        (_iv(-0.4, -0.9, 0.1), _iv(-0.2, -0.7, 0.3), _iv(1.7, 1.5, 1.9),
         ["undecided", "undecided", "undecided"]),  # each interval crosses its threshold
        (_iv(-0.1, -0.2, 0.0, n=1), _iv(0.1, 0.0, 0.2), _iv(2.5, 2.3, 2.7), ["undecided", "met", "met"]),  # n=1
    ],
)  # fmt: skip
def test_targets_on_hand_made_results(repair, alternative, speedup, expected):
    found = targets(_results(repair, alternative, speedup))
    by_target = {t["target"]: t["verdict"] for t in found}
    assert [
        by_target["S8S8 repair (mixed precision): test accuracy change vs float"],
        by_target["QAT, alternative to S8S8: test accuracy change vs float"],
        by_target["auto-tuner pick: speed-up over float (p50)"],
    ] == expected
    assert by_target["auto-tuner pick: size ratio"] == "met"


def test_the_repair_verdict_never_borrows_the_qat_row():
    """The old report credited QAT (another configuration) with recovering S8S8: each row has its own verdict."""
    found = targets(_results(_iv(-15.0, -16.0, -14.0), _iv(0.1, 0.0, 0.2), _iv(2.5, 2.3, 2.7)))
    verdicts = {t["target"]: t["verdict"] for t in found}
    assert verdicts["S8S8 repair (mixed precision): test accuracy change vs float"] == "missed"
    assert verdicts["QAT, alternative to S8S8: test accuracy change vs float"] == "met"
