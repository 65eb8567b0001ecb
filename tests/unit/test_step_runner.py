"""Issue 27 item 1: every technique's step goes through the one step runner (`edgecompress.step.run_step`),
returns its typed `StepResult`, and records its settings under one MLflow parameter naming; issue 27
item 2: `QuantConfig.validate` runs once per quantize call.

Each step below runs on digits; a spy on the runner's own save (`step._save_child`, called by
`run_step` only) counts the children it saved: exactly one per step call, and it is the published
Model artifact."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from edgecompress.export import load_model_package
from edgecompress.params import build, flat_values
from edgecompress.step import Lineage, StepResult

OFF = Lineage(enabled=False)
SRC = Path(__file__).resolve().parents[2] / "src" / "edgecompress"
SMALL_TRAIN = dict(epochs=1, batch_size=64, max_train_samples=128)
TINY_SPACE = {
    "families": {
        "cnn": {
            "stages": [1], "depth": [1], "channels": [8], "width_mult": [0.5, 1.0],
            "kernel_size": [3], "activation": ["relu"], "downsample": ["maxpool"],
        }
    }
}  # fmt: skip


def _train(model, data, out):
    from edgecompress.train import TrainConfig, train_step

    return train_step(data, "mlp", out, TrainConfig(**SMALL_TRAIN), OFF, progress=False)


def _prune_structured(model, data, out):
    from edgecompress.prune import PruneConfig, prune_step

    config = build(PruneConfig, dict(ratio=0.25, finetune_epochs_after=0))
    return prune_step(model, data, out, config, lineage_ctx=OFF, progress=False)


def _prune_unstructured(model, data, out):
    from edgecompress.prune import PruneConfig, prune_step

    config = build(PruneConfig, dict(method="unstructured", sparsity=0.5, finetune_epochs_after=0))
    return prune_step(model, data, out, config, lineage_ctx=OFF, progress=False)


def _distill(model, data, out):
    from edgecompress.distill import DistillConfig, distill_step
    from edgecompress.train import TrainConfig

    config = DistillConfig(train=TrainConfig(**SMALL_TRAIN))
    return distill_step(model, data, "mlp", out, config, False, None, OFF, progress=False)


def _nas(model, data, out):
    from edgecompress.nas import Constraints, NasConfig, nas_step

    config = NasConfig(
        n_trials=2, search_epochs=1, train_samples=200, holdout_samples=100, eta=1, final_epochs=1,
        batch_size=64, startup_trials=2, search_bench={"warmup_runs": 1, "min_runs": 5, "min_duration_s": 0.01},
        final_bench={"warmup_runs": 1, "min_runs": 5, "min_duration_s": 0.01},
    )  # fmt: skip
    front = out.parent / "front.json"
    return nas_step(
        data, out, front, None, TINY_SPACE, Constraints(), config, lineage_ctx=OFF, progress=False
    )


def _quantize(model, data, out):
    from edgecompress.quantize import QuantConfig, quantize_step

    return quantize_step(model, data, out, QuantConfig(calibration_samples=32), OFF)


def _autotune(model, data, out):
    from edgecompress.edge import Measurement
    from edgecompress.quantize import AutotuneConfig, Criterion, autotune_step

    config = AutotuneConfig(
        Criterion.of(0.5), min_gain=1.0, objective="size", include_mixed=False, include_qat=False,
        calibration_samples=32, measurement=Measurement(bench_min_runs=5, bench_min_duration_s=0.01),
    )  # fmt: skip
    return autotune_step(model, data, out, out.parent / "trials.json", config, lineage_ctx=OFF)


# every technique's step (prune twice: its two methods make different children)
STEPS = {
    "train": _train,
    "prune-structured": _prune_structured,
    "prune-unstructured": _prune_unstructured,
    "distill": _distill,
    "nas": _nas,
    "quantize": _quantize,
    "autotune": _autotune,
}


@pytest.fixture
def saved_by_runner(monkeypatch):
    import edgecompress.step as step

    saved, real = [], step._save_child

    def spy(child, dataset, directory, info):
        saved.append(info["technique"])
        return real(child, dataset, directory, info)

    monkeypatch.setattr(step, "_save_child", spy)
    return saved


@pytest.mark.parametrize("name", list(STEPS))
def test_every_technique_step_goes_through_the_runner(
    name, saved_by_runner, trained_model, digits_artifact, tmp_path
):
    out = tmp_path / "out" / "model"
    result = STEPS[name](trained_model, digits_artifact, out)
    assert isinstance(result, StepResult)
    assert saved_by_runner == [result.info["technique"]]  # one child, saved by the runner
    assert result.package.directory == out and load_model_package(out).info == result.info
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_no_technique_saves_or_logs_a_child_by_hand():
    """The runner's pieces (save, export + parity, LoggedModel) are called by the runner alone, and no
    technique reaches into lineage's private MLflow handle."""
    techniques = [SRC / "train.py", SRC / "distill.py", *(SRC / d / f for d in ("prune", "nas", "quantize") for f in
                                                           sorted(p.name for p in (SRC / d).glob("*.py")))]  # fmt: skip
    banned = {"save_torch_child", "save_model_package", "log_child", "_mlflow", "load_mlflow"}
    found = []
    for path in techniques:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if called in banned:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {called}")
    assert found == []


def test_one_parameter_naming_for_every_step(trained_model, digits_artifact, tmp_path, tracking_uri):
    """A step's MLflow params are its configs' flat parameters (the CLI/component names) under the
    step's name, on the task run and on the LoggedModel."""
    import mlflow

    from edgecompress.prune import PruneConfig, prune_step
    from edgecompress.quantize import QuantConfig, quantize_step

    ctx = Lineage(experiment="one-naming")
    prune_cfg = build(PruneConfig, dict(ratio=0.25, finetune_epochs_after=0))
    pruned = prune_step(
        trained_model, digits_artifact, tmp_path / "p", prune_cfg, lineage_ctx=ctx, progress=False
    )
    quant_cfg = QuantConfig(calibration_samples=32)
    quantized = quantize_step(tmp_path / "p", digits_artifact, tmp_path / "q", quant_cfg, ctx)
    for result, name, config in ((pruned, "prune", prune_cfg), (quantized, "quantize", quant_cfg.resolved())):
        logged = mlflow.get_logged_model(result.model_id).params
        expected = {f"{name}.{k}": str(v) for k, v in flat_values(config).items()}
        assert {k: v for k, v in logged.items() if k.startswith(f"{name}.")} == expected
        assert logged["technique"] == result.info["technique"]
        assert not any(k.startswith(("quant.", "constraint.")) for k in logged)
    assert (
        json.loads(json.dumps(pruned.extra["stats"]))["child"]["macs"]
        < pruned.extra["stats"]["parent"]["macs"]
    )


def test_quant_config_is_validated_once_per_quantize_call(
    trained_model, digits_artifact, tmp_path, monkeypatch
):
    """`QuantConfig.validate` starts by checking the method against `METHODS`: count those checks."""
    import edgecompress.quantize.config as quant_config
    from edgecompress.quantize import QuantConfig, quantize_step

    checks = []

    class Counted(tuple):
        def __contains__(self, item):
            checks.append(item)
            return super().__contains__(item)

    monkeypatch.setattr(quant_config, "METHODS", Counted(quant_config.METHODS))
    # values no earlier test validated: checked once, however often quantize passes the config on
    config = QuantConfig(calibration_samples=33, seed=12345)
    quantize_step(trained_model, digits_artifact, tmp_path / "q", config, OFF)
    assert checks == ["static"]
