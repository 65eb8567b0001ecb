"""Issue 30 item 6: `train`, `prune`, `distill` (and `benchmark`, which shows model.json) reported
torch's parameter count (ShuffleNet 352,042), `evaluate` and `run` the ONNX count after BatchNorm
folding (348,066). One count everywhere now: the deployed graph's, the one evaluate reports and MACs
are already counted on; torch's own count stays in model.json, labelled `torch_params`."""

from __future__ import annotations

from pathlib import Path

from edgecompress.distill import DistillConfig, distill_step
from edgecompress.evaluate import model_stats
from edgecompress.export import load_model_package
from edgecompress.params import build
from edgecompress.prune import PruneConfig, prune_step
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig
from edgecompress.zoo import count_parameters
from tests.unit.test_counts import deployed_params

OFF = Lineage(enabled=False)


def test_train_prune_distill_and_evaluate_report_one_count(
    trained_model: Path, digits_artifact: Path, tmp_path
):
    package = load_model_package(trained_model)
    module = package.load_module()
    onnx_count = model_stats(package.onnx_path).params
    assert onnx_count == deployed_params(module) < count_parameters(module)  # BatchNorm folded away
    assert package.info["params"] == onnx_count and package.info["torch_params"] == count_parameters(module)

    pruned = tmp_path / "pruned"
    config = build(PruneConfig, dict(ratio=0.5, finetune_epochs_after=0))
    result = prune_step(trained_model, digits_artifact, pruned, config, lineage_ctx=OFF, progress=False)
    info = result.info
    child = model_stats(pruned / "model.onnx").params
    assert info["params"] == result.extra["stats"]["child"]["params"] == child
    assert info["prune"]["after"]["params"] == info["prune"]["schedule"][-1]["params"] == child
    assert info["prune"]["before"]["params"] == onnx_count

    train = TrainConfig(epochs=1, batch_size=64, max_train_samples=64)
    out = tmp_path / "distilled"
    info = distill_step(
        trained_model, digits_artifact, str(pruned), out, DistillConfig(train=train), False, None, OFF, False
    ).info
    comparison = info["distill"]["comparison"]
    assert comparison["teacher"]["params"] == onnx_count
    assert (
        comparison["student, distilled"]["params"] == info["params"] == model_stats(out / "model.onnx").params
    )
