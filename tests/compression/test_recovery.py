"""Progressive prune → recover and the recovery chosen on validation (prune.recovery), through the
prune step and the CLI, on real digits data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import load_model_package
from edgecompress.params import build
from edgecompress.prune import PruneConfig, prune_step
from edgecompress.step import Lineage, save_torch_child
from edgecompress.train import accuracy
from tests.conftest import io_args

OFF = Lineage(enabled=False)


def _prune(model: Path, data: Path, out: Path, report: Path | None = None, **settings):
    config = build(PruneConfig, settings)
    return prune_step(model, data, out, config, report, lineage_ctx=OFF, progress=False)


def test_progressive_kd_has_one_row_per_increment_and_reaches_the_target(
    trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    ratio, steps = 0.75, 3
    result = _prune(
        trained_model,
        digits_artifact,
        tmp_path / "p",
        ratio=ratio,
        steps=steps,
        schedule="geometric",
        recovery="kd",
        finetune_epochs_between=1,
        finetune_epochs_after=1,
    )
    report = result.info["prune"]
    rows = report["schedule"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for k, row in enumerate(rows, start=1):  # geometric in kept channels: (1 - r)^(k/K) kept
        assert row["ratio"] == pytest.approx(1 - (1 - ratio) ** (k / steps))
        assert row["recovery"] == "kd" and row["epochs"] == 1
        assert 0 <= row["val_accuracy_recovered"] <= 1
    assert rows[-1]["ratio"] == pytest.approx(ratio)
    macs = [r["macs"] for r in rows]
    params = [r["params"] for r in rows]
    assert macs == sorted(macs, reverse=True) and macs[0] < report["before"]["macs"]
    assert params == sorted(params, reverse=True)
    # the target reached: every pruned layer keeps round((1 - r) × its channels), the output layer all
    before = {n: m.out_channels for n, m in _convs(trained_model)}
    for name, channels in report["channels"].items():
        if name in before:
            assert abs(channels - before[name] * (1 - ratio)) <= 1, (name, channels, before[name])
    rec = report["recovery"]
    assert rec["asked"] == rec["chosen"] == "kd" and rec["budget_epochs"] == 3
    assert rec["epochs_per_step"] == [1, 1, 1] and rec["epochs_run"] == {"kd": 3}


def _convs(model_dir: Path):
    module = load_model_package(model_dir).load_module()
    return [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]


def test_auto_keeps_the_higher_validation_recovery_and_records_both(
    trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    result = _prune(
        trained_model,
        digits_artifact,
        tmp_path / "p",
        tmp_path / "report.html",
        ratio=0.5,
        steps=2,
        finetune_epochs_between=1,
        finetune_epochs_after=1,
        recovery="auto",
    )
    rec = result.info["prune"]["recovery"]
    val = rec["val_accuracy"]
    assert rec["asked"] == "auto" and set(val) == {"finetune", "kd"}
    assert rec["chosen"] == ("kd" if val["kd"] > val["finetune"] else "finetune")  # ties: fine-tune
    assert "higher validation accuracy" in rec["rule"]
    # equal budget, recorded per branch and per step
    assert rec["budget_epochs"] == 2 and rec["epochs_run"] == {"finetune": 2, "kd": 2}
    for mode, rows in rec["schedules"].items():
        assert [r["epochs"] for r in rows] == [1, 1] and {r["recovery"] for r in rows} == {mode}
    # the child kept is the chosen branch: its validation accuracy is the recorded one
    assert result.info["prune"]["val_accuracy"]["child"] == pytest.approx(val[rec["chosen"]])
    assert result.info["prune"]["schedule"] == rec["schedules"][rec["chosen"]]
    html = (tmp_path / "report.html").read_text()
    assert "Recovery (chosen on validation)" in html
    assert rec["rule"] in html


@pytest.fixture(scope="module")
def useless_teacher(
    tmp_path_factory: pytest.TempPathFactory, trained_model: Path, digits_artifact: Path
) -> Path:
    """The trained CNN with its classifier's weights zeroed: constant logits, nothing to teach (its
    features are intact, so fine-tuning the pruned child recovers)."""
    dataset = load_dataset(digits_artifact)
    package = load_model_package(trained_model)
    model = package.load_module()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
    x_val, y_val = dataset.split("val")
    assert accuracy(model, x_val, y_val) < 0.2
    out = tmp_path_factory.mktemp("useless") / "teacher"
    save_torch_child(model, dataset, out, {**package.info, "technique": "train"})
    return out


def test_auto_picks_fine_tuning_when_the_teacher_is_useless(
    useless_teacher: Path, digits_artifact: Path, tmp_path: Path
):
    result = _prune(
        useless_teacher,
        digits_artifact,
        tmp_path / "p",
        ratio=0.5,
        finetune_epochs_after=3,
        batch_size=32,
        lr=1e-2,
        recovery="auto",
        kd_alpha=1.0,  # soft targets only: KD from constant logits learns nothing about the labels
    )
    rec = result.info["prune"]["recovery"]
    assert rec["chosen"] == "finetune"
    assert rec["val_accuracy"]["finetune"] > rec["val_accuracy"]["kd"] + 0.2
    assert rec["teacher_val_accuracy"] < 0.2


def test_kd_from_a_parent_that_cannot_teach_is_refused(
    useless_teacher: Path, digits_artifact: Path, tmp_path: Path, capsys
):
    from edgecompress.cli import main

    out = tmp_path / "p"
    with pytest.raises(ConfigError, match="cannot teach"):
        _prune(useless_teacher, digits_artifact, out, ratio=0.5, recovery="kd")
    code = main(["prune", *io_args(useless_teacher, digits_artifact, out), "--recovery", "kd", "--no-track"])
    assert code == 2 and "cannot teach" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(recovery="distil"), "recovery 'distil' must be one of"),
        (dict(recovery="kd", kd_alpha=1.5), "alpha must be in \\[0, 1\\]"),
        (dict(recovery="kd", kd_temperature=0.0), "temperature must be > 0"),
        (dict(recovery="kd", method="unstructured", sparsity=0.5), "recovery 'kd' is for structured"),
        (dict(recovery="kd", steps=2, schedule="cubic"), "schedule 'cubic' must be one of"),
        # K < 1 was refused before this change too (StructuredConfig.validate); kept with the rest
        (dict(recovery="kd", steps=0), "steps must be ≥ 1"),
        (dict(device="cuda:99"), "cuda:99"),  # --device reaches the fine-tuning / KD training
    ],
)
def test_bad_recovery_settings(settings, message, trained_model: Path, digits_artifact: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match=message):
        _prune(trained_model, digits_artifact, tmp_path / "p", **settings)
    assert not (tmp_path / "p").exists()


def test_unequal_budget_is_refused(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The equal-budget guard: a recovery that trains fewer epochs than its budget fails the step."""
    from edgecompress.prune import recovery as recovery_module

    real_fit = recovery_module.fit

    def short_fit(model, dataset, config, **kwargs):
        import dataclasses

        return real_fit(model, dataset, dataclasses.replace(config, epochs=1), **kwargs)

    monkeypatch.setattr(recovery_module, "fit", short_fit)
    with pytest.raises(ModelError, match="recovery 'finetune' trained 1 epochs, the budget is 2"):
        _prune(
            trained_model,
            digits_artifact,
            tmp_path / "p",
            ratio=0.5,
            finetune_epochs_after=2,
            recovery="auto",
        )
    assert not (tmp_path / "p").exists()


def test_geometric_schedule_keeps_the_same_fraction_each_step():
    from edgecompress.prune.structured import schedule_ratios

    ratios = schedule_ratios(0.75, 2, "geometric")
    kept = [1 - r for r in ratios]
    assert ratios[0] == 0 and ratios[-1] == pytest.approx(0.75)
    assert kept[1] / kept[0] == pytest.approx(kept[2] / kept[1]) == pytest.approx(math.sqrt(0.25))
    assert schedule_ratios(0.6, 3, "linear") == pytest.approx([0, 0.2, 0.4, 0.6])


def test_default_recovery_is_fine_tuning_and_is_recorded(
    trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    """The default keeps what pruning did (hard-label fine-tuning, one training per step) and says so."""
    assert PruneConfig().recovery.recovery == "finetune"
    result = _prune(trained_model, digits_artifact, tmp_path / "p", ratio=0.5, finetune_epochs_after=1)
    rec = result.info["prune"]["recovery"]
    assert rec["asked"] == rec["chosen"] == "finetune" and rec["budget_epochs"] == 1
    assert "val_accuracy" not in rec  # one recovery ran: nothing to choose between


def test_a_budget_is_met_on_the_geometric_schedule(
    trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    """The budget search walks equal ratio increments; the found ratio is then pruned geometrically."""
    from edgecompress.evaluate import module_macs

    macs = module_macs(load_model_package(trained_model).load_module(), (1, 8, 8))
    result = _prune(
        trained_model,
        digits_artifact,
        tmp_path / "p",
        budget_metric="macs",
        budget=0.3 * macs,
        steps=2,
        schedule="geometric",
        finetune_epochs_after=0,
    )
    report = result.info["prune"]
    assert report["budget"]["met"] and report["budget"]["achieved"] <= 0.3 * macs
    first = report["schedule"][0]["ratio"]
    assert first == pytest.approx(1 - (1 - report["ratio"]) ** 0.5)


def test_the_decision_is_on_the_logged_model(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, tracking_uri: str
):
    """MLflow: the config under `prune.*` (the step runner's naming), the decision under `recovery.*`,
    both validation accuracies as metrics."""
    import mlflow

    config = build(PruneConfig, dict(ratio=0.5, finetune_epochs_after=1, recovery="auto", kd_alpha=0.7))
    result = prune_step(
        trained_model, digits_artifact, tmp_path / "p", config, lineage_ctx=Lineage(), progress=False
    )
    model = mlflow.get_logged_model(result.model_id)
    rec = result.info["prune"]["recovery"]
    assert model.params["prune.recovery"] == "auto" and model.params["prune.kd_alpha"] == "0.7"
    assert model.params["recovery.chosen"] == rec["chosen"] and model.params["recovery.budget_epochs"] == "1"
    assert model.params["recovery.rule"] == rec["rule"]
    metrics = {m.key: m.value for m in model.metrics}
    for mode in ("finetune", "kd"):
        assert metrics[f"recovery_val_accuracy_{mode}"] == pytest.approx(rec["val_accuracy"][mode])


def test_each_recovery_says_which_prune_step_it_follows(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, caplog
):
    """The log (and the progress bar, same text) of a long progressive run names the step each KD
    recovery follows: 'distill' alone, three times over, says nothing."""
    caplog.set_level("INFO", logger="edgecompress")
    _prune(
        trained_model,
        digits_artifact,
        tmp_path / "p",
        ratio=0.5,
        steps=2,
        recovery="kd",
        finetune_epochs_between=1,
        finetune_epochs_after=1,
    )
    text = caplog.text
    assert "kd after prune step 1/2" in text and "kd after prune step 2/2" in text
