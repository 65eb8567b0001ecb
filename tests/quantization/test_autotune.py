"""The auto-tuner: stops at the first trial that keeps accuracy and is faster; never a slower success."""

import json

import mlflow

from edgecompress.cli import main
from edgecompress.edge import Measurement
from edgecompress.export import load_model_package
from edgecompress.quantize import autotune_step
from edgecompress.quantize.autotune import AutotuneConfig, AutotuneTrial, Criterion, judge
from edgecompress.step import Lineage
from tests.conftest import io_args

FAST = {"measurement": Measurement(bench_min_runs=30, bench_min_duration_s=0.05)}


def test_no_trial_faster_than_demanded_is_never_a_success(trained_model, digits_artifact, tmp_path):
    """min_gain 1000× cannot be met: the result is the closest trial, marked not passed, with reasons."""
    cfg = AutotuneConfig(
        Criterion.of(0.5),
        min_gain=1000.0,
        include_mixed=False,
        include_qat=False,
        calibration_samples=32,
        **FAST,
    )
    out = autotune_step(
        trained_model,
        digits_artifact,
        tmp_path / "m",
        tmp_path / "r.json",
        cfg,
        tmp_path / "r.html",
        tmp_path / "r.md",
        Lineage(enabled=False),
    )
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["passed"] is False and out.info["autotune"]["passed"] is False
    assert len(result["trials"]) == 6  # every PTQ variant was tried (the int4-weights candidate included)
    assert [t["config"]["weight_bits"] for t in result["trials"]].count(4) == 1
    assert all(any("not faster" in r for r in t["reasons"]) for t in result["trials"])
    assert all("not_faster" in t["reason_codes"] and t["gain_ok"] is False for t in result["trials"])
    assert all(AutotuneTrial.from_json(t).to_json() == t for t in result["trials"])  # the type holds it all
    allowed = result["criterion"]["allowed_drop"]
    for t in result["trials"]:  # every verdict is the rule applied to the numbers the trial records
        c = t["check"]
        assert c["latency_rounds"] >= 8 and c["speedup_ci_low"] <= c["speedup"] <= c["speedup_ci_high"]
        rule = c["accuracy_drop"] <= allowed + 1e-12 and c["timing_meaningful"] and c["speedup_ci_low"] > 1000
        assert t["passed"] == rule
        assert c["split"].startswith("val[:") and c["samples"] < 808 * 0.3 + 1  # the selection part only
    md = (tmp_path / "r.md").read_text()
    assert "NOT PASSED" in md and "not faster than its parent" in md
    assert "<img" in (tmp_path / "r.html").read_text()
    assert load_model_package(tmp_path / "m").info["autotune"]["passed"] is False


def test_size_objective_passes_and_trials_are_child_runs(
    trained_model, digits_artifact, tmp_path, tracking_uri
):
    cfg = AutotuneConfig(
        Criterion.of(0.05, relative=True), objective="size", include_qat=False, calibration_samples=32, **FAST
    )
    ctx = Lineage(experiment="autotune-test")
    out = autotune_step(
        trained_model, digits_artifact, tmp_path / "m", tmp_path / "r.json", cfg, lineage_ctx=ctx
    )
    result = out.extra["autotune_result"]
    pick = result["trials"][result["pick_index"]]
    assert (
        result["passed"] and pick["passed"] and pick["index"] == len(result["trials"]) - 1
    )  # stopped at the first pass
    assert (
        pick["check"]["size_ratio"] > 1
        and pick["check"]["accuracy_drop"] <= result["criterion"]["allowed_drop"]
    )
    exp = mlflow.get_experiment_by_name("autotune-test")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    task = [r for r in runs if r.data.tags.get("edgecompress.task") == "autotune"]
    trials = [r for r in runs if r.data.tags.get("edgecompress.task") == "autotune-trial"]
    assert len(task) == 1 and len(trials) == len(result["trials"])
    assert all(r.data.tags["mlflow.parentRunId"] == task[0].info.run_id for r in trials)
    # trial settings share the quantize step's parameter naming (`quantize.<flat name>`)
    assert all(r.data.params and all(k.startswith("quantize.") for k in r.data.params) for r in trials)
    assert mlflow.get_logged_model(out.model_id).tags["edgecompress.autotune.passed"] == "true"


def test_cli_autotune_exits_1_when_nothing_passes(trained_model, digits_artifact, tmp_path, capsys):
    code = main(
        [
            "autotune",
            *io_args(trained_model, digits_artifact, tmp_path / "m"),
            "--results",
            str(tmp_path / "r.json"),
            "--min-gain",
            "1000",
            "--no-include-qat",
            "--no-include-mixed",
            "--calibration-samples",
            "16",
            "--bench-min-runs",
            "20",
            "--bench-min-duration-s",
            "0.02",
            "--no-track",
        ]
    )
    assert code == 1
    assert "NOT PASSED" in capsys.readouterr().out


def _check(**kw):
    """A trial's recorded check, as check_against_parent writes it."""
    return {
        "accuracy_drop": 0.0,
        "timing_meaningful": True,
        "speedup": 1.022,
        "speedup_ci_low": 0.97,
        "speedup_ci_high": 1.08,
        "latency_rounds": 8,
        "p50_ms": 0.305,
        "parent_p50_ms": 0.312,
        "size_ratio": 3.8,
        "onnx_bytes": 1,
        "parent_onnx_bytes": 4,
        **kw,
    }


def test_a_1_02x_point_estimate_inside_the_noise_does_not_pass():
    """d9a55b6 passed ShuffleNetV2's autotune child on one 1.022x point estimate (issue 30 item 7);
    later paired measurements had it slower. Now the interval's lower bound decides, as in the gate."""
    cfg = AutotuneConfig(Criterion.of(0.01), **FAST)
    out = judge(_check(), 0.01, cfg)
    assert out.passed is False and out.gain_ok is False and out.accuracy_ok is True
    assert "1.02× [0.97, 1.08] over 8 interleaved rounds" in out.reasons[0].message
    assert [r.code for r in out.reasons] == ["not_faster"]
    assert judge(_check(speedup_ci_low=1.01), 0.01, cfg).passed is True


def test_no_latency_verdict_where_timings_mean_nothing():
    cfg = AutotuneConfig(Criterion.of(0.01), **FAST)
    out = judge(_check(speedup=4.0, speedup_ci_low=3.5, timing_meaningful=False), 0.01, cfg)
    assert out.passed is False and "not meaningful (QEMU)" in out.reasons[0].message
    assert [r.code for r in out.reasons] == ["latency_not_meaningful"] and out.gain_ok is False
    size = AutotuneConfig(Criterion.of(0.01), objective="size", **FAST)
    assert judge(_check(timing_meaningful=False), 0.01, size).passed is True  # size needs no timing


def test_gain_ok_comes_from_the_codes_not_the_wording():
    """d9a55b6 decided gain_ok by prefix-matching its own messages ("not …"); an accuracy failure whose
    message happened to start with "not" would have counted as no gain. The codes decide."""
    cfg = AutotuneConfig(Criterion.of(0.01), **FAST)
    slow_and_worse = judge(_check(accuracy_drop=0.03), 0.01, cfg)
    assert [r.code for r in slow_and_worse.reasons] == ["accuracy_drop_too_large", "not_faster"]
    assert slow_and_worse.accuracy_ok is False and slow_and_worse.gain_ok is False
    worse = judge(_check(accuracy_drop=0.03, speedup_ci_low=1.5), 0.01, cfg)
    assert worse.accuracy_ok is False and worse.gain_ok is True
    assert "accuracy drop 3.00 points > allowed 1.00" in worse.reasons[0].message
    relative = AutotuneConfig(Criterion.of(0.01, relative=True), **FAST)  # 1 % of a 0.9 parent: 0.9 points
    assert judge(_check(accuracy_drop=0.0095, speedup_ci_low=1.5), 0.009, relative).accuracy_ok is False


def test_the_criterion_shares_the_accuracy_rule_and_its_range():
    """One range check (rules.AccuracyRule): autotune's max_drop is refused where the gate's is."""
    import pytest

    from edgecompress.errors import ConfigError

    for bad in (-0.01, 0.0, 1.0):
        with pytest.raises(ConfigError, match=r"max_drop must be in \(0, 1\)"):
            Criterion.of(bad).validate()
    assert Criterion().rule.accuracy_rule == "point"  # autotune chooses on the point estimate
