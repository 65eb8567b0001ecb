"""A retrain reuses the production model's recorded chain and settings unless told otherwise."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.conftest import SMALL_CNN


@pytest.fixture(scope="module")
def pruned_quantized(tmp_path_factory: pytest.TempPathFactory, digits_artifact: Path):
    """train → prune (ratio 0.4, 1 fine-tuning epoch) → static INT8 (64 calibration samples), logged
    to a private SQLite store."""
    from edgecompress.params import build
    from edgecompress.prune import PruneConfig, prune_step
    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step
    from tests.conftest import tracking_store

    tmp = tmp_path_factory.mktemp("recorded")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with tracking_store(uri):
        ctx = Lineage(experiment="recorded")
        train_step(
            digits_artifact, SMALL_CNN, tmp / "t", TrainConfig(epochs=1, batch_size=32), ctx, progress=False
        )
        prune_step(tmp / "t", digits_artifact, tmp / "p", build(PruneConfig, dict(ratio=0.4, finetune_epochs_after=1)),
                   lineage_ctx=ctx, progress=False)  # fmt: skip
        info = quantize_step(
            tmp / "p", digits_artifact, tmp / "q", StaticQuantConfig(calibration_samples=64), ctx
        ).info
    return {"uri": uri, "model_id": info["mlflow_model_id"], "trained": tmp / "t"}


def test_the_recorded_chain_and_settings(pruned_quantized, monkeypatch):
    from edgecompress.cli.lineage import _recorded_arguments
    from edgecompress.drift.recorded import recorded_chain
    from edgecompress.pipelines.retrain_on_drift import build_pipeline
    from tests.conftest import use_tracking_store

    use_tracking_store(pruned_quantized["uri"], monkeypatch)
    rec = recorded_chain(pruned_quantized["model_id"])
    assert rec["chain"] == ["prune", "quantize"]
    assert rec["techniques"] == ["train", "prune-structured", "static-int8"]
    assert (
        rec["settings"]["prune"]["ratio"] == "0.4"
        and rec["settings"]["prune"]["finetune_epochs_after"] == "1"
    )
    fn = build_pipeline(rec["chain"]).pipeline_func
    defaults = {k: v.default for k, v in inspect.signature(fn).parameters.items()}
    args = _recorded_arguments(rec, rec["chain"], defaults, given={"epochs"})
    assert args["prune_ratio"] == 0.4 and args["prune_finetune_epochs_after"] == 1
    assert args["quantize_calibration_samples"] == 64 and args["batch_size"] == 32
    assert "epochs" not in args  # told otherwise: what the user gave wins
    assert "quantize_reduce_range" not in args  # computed for the target class again ("auto")
    assert all(type(v) is type(defaults[k]) for k, v in args.items())


def test_a_model_without_a_recorded_chain_is_a_clear_error(pruned_quantized, monkeypatch, tmp_path):
    from edgecompress.drift.recorded import recorded_chain
    from edgecompress.errors import ConfigError
    from tests.conftest import log_model_without_lineage, use_tracking_store

    use_tracking_store(pruned_quantized["uri"], monkeypatch)
    import mlflow

    with mlflow.start_run():
        bare = log_model_without_lineage(pruned_quantized["trained"] / "model.onnx", "imported", "imported")
    with pytest.raises(ConfigError, match="does not start at a trained model .*pass --chain"):
        recorded_chain(bare)
