"""Issue 19 item 1: structured pruning of transformers (heads and MLP width, q/k/v or fused qkv,
`nn.MultiheadAttention`), the safety probe that skips what cannot be pruned, static INT8 of attention
MatMuls, and distillation with ViT teacher and student; on sklearn digits (8x8)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from edgecompress.data import load_dataset
from edgecompress.distill import DistillConfig, distill_step
from edgecompress.errors import ConfigError, ModelError
from edgecompress.evaluate import model_stats
from edgecompress.export import check_parity, export_onnx
from edgecompress.prune import StructuredConfig, prune_structured
from edgecompress.quantize.config import QuantConfig
from edgecompress.quantize.precision import quantize_static_measured
from edgecompress.quantize.ptq import activation_matmuls, quantize_static
from edgecompress.stats import MIN_LATENCY_ROUNDS
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig, train_step
from tests.architectures.models import fixed_layout_vit, mha_vit, tiny_vit
from tests.conftest import io_args
from tests.unit.test_counts import reference_macs

SHAPE = (1, 8, 8)


def _prune(model, digits_artifact, finetune: bool = False, **kwargs):
    dataset = load_dataset(digits_artifact)
    after = TrainConfig(epochs=1, batch_size=64, max_train_samples=64) if finetune else None  # one batch
    config = StructuredConfig(ratio=0.5, finetune_after=after, **kwargs)
    return prune_structured(model, SHAPE, 10, config, dataset, progress=False)


def _exports_with_parity(model, dataset, tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    export_onnx(model, SHAPE, path)
    check_parity(model, path, dataset.split("val", 32)[0])
    stats, expected = model_stats(path), reference_macs(model, SHAPE)
    assert abs(stats.macs - expected) <= 0.01 * expected, (stats.macs, expected)
    return path


def test_the_issues_tiny_vit_loses_whole_heads_and_mlp_width(digits_artifact, tmp_path):
    """The issue's crash (`shape '[1, 50, 4, 16]' is invalid`): q/k/v were halved, the head view was
    not. Now whole heads go, the head count attribute follows, and the class token and position
    embedding are pruned with the residual width (no 'Unwrapped parameters' guess)."""
    torch.manual_seed(0)
    model = tiny_vit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned, report = _prune(model, digits_artifact, finetune=True)
    assert not [w for w in caught if "nwrapped" in str(w.message)]
    for block in pruned.blocks:
        attn = block.attn
        assert attn.heads == 2 and attn.head_dim == 8  # 4 heads of 8 -> 2 heads of 8: the head width stays
        assert attn.q.out_features == attn.k.out_features == attn.v.out_features == 16 == attn.out.in_features
        assert block.mlp[0].out_features == 64  # MLP hidden width 128 -> 64
    assert report["attention_heads"] == {"blocks.0.attn": 2, "blocks.1.attn": 2}
    assert pruned.cls.shape[-1] == pruned.pos.shape[-1] == pruned.embed.out_channels
    assert report["macs_reduction"] > 2 and report["skipped"] == []
    assert report["schedule"][0]["val_accuracy_finetuned"] is not None
    _exports_with_parity(pruned, load_dataset(digits_artifact), tmp_path)


def test_multihead_attention_keeps_equal_heads(digits_artifact, tmp_path):
    torch.manual_seed(0)
    pruned, report = _prune(mha_vit(), digits_artifact)
    for block in pruned.blocks:
        mha = block.attn
        assert mha.num_heads == 4 and mha.embed_dim < 32 and mha.embed_dim % 4 == 0
        assert mha.head_dim * mha.num_heads == mha.embed_dim
    assert report["macs_reduction"] > 2
    _exports_with_parity(pruned, load_dataset(digits_artifact), tmp_path)


def test_a_layer_that_cannot_be_pruned_safely_is_skipped_and_named(digits_artifact, tmp_path, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        pruned, report = _prune(fixed_layout_vit(), digits_artifact)
    assert len(report["skipped"]) == 1 and "'blocks.0.attn.qkv'" in report["skipped"][0]
    assert "is invalid for input of size" in report["skipped"][0]
    assert "'blocks.0.attn.qkv'" in caplog.text
    assert pruned.blocks[0].attn.qkv.out_features == 96  # kept whole
    assert pruned.blocks[0].mlp[0].out_features == 64  # the rest is pruned
    _exports_with_parity(pruned, load_dataset(digits_artifact), tmp_path)


def test_heads_can_be_kept_and_attention_names_are_checked(digits_artifact):
    pruned, report = _prune(tiny_vit(), digits_artifact, prune_heads=False)
    assert report["attention_heads"] == {}
    assert all(b.attn.heads == 4 and b.attn.q.out_features == 32 for b in pruned.blocks)
    with pytest.raises(ConfigError, match="no layer named 'blocks.9.attn'"):
        _prune(tiny_vit(), digits_artifact, attention_heads={"blocks.9.attn": 4})


@pytest.mark.parametrize(("ratio", "steps", "heads"), [(0.5, 1, 2), (0.5, 5, 2), (0.9, 18, 1)])
def test_iterative_schedules_remove_heads_as_one_step_would_and_keep_one(
    digits_artifact, ratio, steps, heads
):
    """Torch-Pruning alone compounds its per-step head ratio on the heads left (0.5 over 5 steps
    removed all 4); the schedule ends where one step of that ratio would, never below one head."""
    torch.manual_seed(0)
    config = StructuredConfig(ratio=ratio, steps=steps)
    pruned, report = prune_structured(
        tiny_vit(), SHAPE, 10, config, load_dataset(digits_artifact), progress=False
    )
    assert set(report["attention_heads"].values()) == {heads}
    assert all(b.attn.heads == heads for b in pruned.blocks)
    assert pruned(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_a_global_ranking_that_empties_a_module_is_a_named_error(digits_artifact):
    """Global head ranking at 0.9 keeps int(8 x 0.1) = 0 of the 8 heads: said, not a broken model."""
    torch.manual_seed(0)
    config = StructuredConfig(ratio=0.9, global_pruning=True)
    with pytest.raises(
        ModelError, match=r"^pruning removed every attention head of 'blocks\.0\.attn'.*local pruning"
    ):
        prune_structured(tiny_vit(), SHAPE, 10, config, load_dataset(digits_artifact), progress=False)
    config = StructuredConfig(ratio=0.5, global_pruning=True)
    pruned, report = prune_structured(
        tiny_vit(), SHAPE, 10, config, load_dataset(digits_artifact), progress=False
    )
    assert all(heads >= 1 for heads in report["attention_heads"].values())
    assert pruned(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_a_macs_budget_holds_as_the_evaluation_counts_macs(digits_artifact, tmp_path):
    """Budget search and reports count MACs one way (the ONNX export's, attention MatMuls included),
    so the evaluation of a child pruned to a MACs budget shows it within that budget."""
    from edgecompress.evaluate import module_macs

    torch.manual_seed(0)
    model = tiny_vit()
    base = module_macs(model, SHAPE)
    budget = 0.5 * base
    config = StructuredConfig(budget_metric="macs", budget=budget)
    pruned, report = prune_structured(model, SHAPE, 10, config, load_dataset(digits_artifact), progress=False)
    path = tmp_path / "pruned.onnx"
    export_onnx(pruned, SHAPE, path)
    assert report["before"]["macs"] == base
    assert model_stats(path).macs == report["after"]["macs"] <= budget < report["budget_trace"][-2]["cost"]


def _float_vit(digits_artifact, tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "vit.onnx"
    export_onnx(tiny_vit(), SHAPE, path)
    return path


def test_static_int8_quantizes_attention_matmuls_or_keeps_them_float(digits_artifact, tmp_path):
    path = _float_vit(digits_artifact, tmp_path)
    dataset = load_dataset(digits_artifact)
    names = activation_matmuls(onnx.load(str(path)))
    assert len(names) == 4  # q x k^T and weights x v, two blocks

    def quantized_outputs(proto):
        """Attention MatMuls whose output is quantized (what ONNX Runtime fuses into QLinearMatMul)."""
        quantized = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
        return [n.name for n in proto.graph.node if n.name in names and n.output[0] in quantized]

    int8 = quantize_static(path, dataset, QuantConfig(calibration_samples=16, attention_matmuls="int8"))
    kept = quantize_static(path, dataset, QuantConfig(calibration_samples=16, attention_matmuls="float"))
    assert sorted(quantized_outputs(int8)) == sorted(names) and quantized_outputs(kept) == []


def test_auto_measures_both_and_keeps_the_faster(digits_artifact, tmp_path):
    path = _float_vit(digits_artifact, tmp_path)
    config = QuantConfig(calibration_samples=16)
    assert config.attention_matmuls == "auto"
    proto, details = quantize_static_measured(path, load_dataset(digits_artifact), config)
    choice = details["attention_matmuls"]
    assert choice["nodes"] == 4 and choice["emulated"] and choice["device_class"] == config.target
    assert len(choice["int8_p50_ms"]) == len(choice["float_p50_ms"]) == MIN_LATENCY_ROUNDS
    low, high = choice["speedup_ci"]  # int8 only where its speed-up's lower bound is above 1
    assert low <= choice["speedup"] <= high and choice["chosen"] == ("int8" if low > 1 else "float")
    quantized = {n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    int8_matmuls = [n for n in proto.graph.node if n.op_type == "MatMul" and n.output[0] in quantized]
    names = set(activation_matmuls(onnx.load(str(path))))
    assert len([n for n in int8_matmuls if n.name in names]) == (4 if choice["chosen"] == "int8" else 0)
    # a fixed choice with objective size (no per-op-group measurement either) measures nothing
    fixed = QuantConfig(calibration_samples=16, attention_matmuls="int8", objective="size")
    assert quantize_static_measured(path, load_dataset(digits_artifact), fixed)[1] == {}


def test_autotune_measures_the_attention_choice_once_and_reuses_it(digits_artifact, tmp_path):
    """Whether int8 attention MatMuls pay is a property of the graph and the target: the first static
    trial measures it, the later ones (other calibrations) use its answer and say where it came from."""
    from edgecompress.edge import Measurement
    from edgecompress.quantize.autotune import AutotuneConfig, autotune

    path = _float_vit(digits_artifact, tmp_path)
    quick = Measurement(bench_min_runs=20, bench_min_duration_s=0.05, bench_warmup_runs=2)
    config = AutotuneConfig(  # no trial can pass a 1000x gain: every planned trial runs
        min_gain=1000.0, calibration_samples=16, include_mixed=False, include_qat=False, measurement=quick
    )
    result = autotune(path, load_dataset(digits_artifact), config, workdir=tmp_path / "trials")
    static = [t for t in result["trials"] if t["method"] == "static"]
    assert len(static) == 5 and not result["passed"]  # 4 int8 calibrations and the int4 candidate
    assert [t["config"]["weight_bits"] for t in static] == [8, 8, 8, 8, 4]
    first, *later = static
    measured = first["details"]["attention_matmuls"]
    assert (
        first["config"]["attention_matmuls"] == "auto" and len(measured["int8_p50_ms"]) == MIN_LATENCY_ROUNDS
    )
    for trial in later:
        assert trial["config"]["attention_matmuls"] == measured["chosen"]
        assert trial["details"]["attention_matmuls"] == {
            "chosen": measured["chosen"],
            "measured_in_trial": first["index"],
        }


def test_distillation_runs_with_vit_teacher_and_student(digits_artifact, tmp_path):
    """The existing distillation step, unchanged, with a ViT teacher and a smaller ViT student."""
    teacher = tmp_path / "teacher"
    spec = {"factory": "tests.architectures.models:tiny_vit", "kwargs": {}}
    train_step(
        digits_artifact, spec, teacher, TrainConfig(epochs=1, max_train_samples=128), Lineage(enabled=False)
    )
    student = {"factory": "tests.architectures.models:tiny_vit", "kwargs": {"depth": 1}}
    config = DistillConfig(train=TrainConfig(epochs=1, batch_size=64, max_train_samples=128))
    info = distill_step(
        teacher, digits_artifact, json.dumps(student), tmp_path / "student", config, compare_scratch=False,
        lineage_ctx=Lineage(enabled=False), progress=False,
    ).info  # fmt: skip
    assert info["technique"] == "distill" and (tmp_path / "student" / "model.onnx").exists()


def test_the_issues_tiny_vit_through_the_cli(digits_artifact, tmp_path, run_cli):
    """`edgecompress prune --method structured --ratio 0.5` on the issue's ViT: no traceback now."""
    model = tmp_path / "vit"
    factory = "tests.architectures.models:tiny_vit"
    r = run_cli("train", "--dataset", str(digits_artifact), "--model-spec", factory, "--output", str(model),
                "--epochs", "1", "--max-train-samples", "128", "--no-track", cwd=Path(__file__).parents[2])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("prune", *io_args(model, digits_artifact, tmp_path / "pruned"), "--method", "structured",
                "--ratio", "0.5", "--sensitivity-ratios", "", "--finetune-epochs-after", "1", "--no-track")  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert model_stats(tmp_path / "pruned" / "model.onnx").macs < 0.5 * model_stats(model / "model.onnx").macs
    # the head settings reach the library from the command line: a bad name is refused, nothing written
    r = run_cli("prune", *io_args(model, digits_artifact, tmp_path / "named"), "--method", "structured",
                "--no-prune-heads", "--attention-heads", "blocks.9.attn=4", "--sensitivity-ratios", "",
                "--finetune-epochs-after", "0", "--no-track")  # fmt: skip
    assert r.returncode == 2 and "error: " in r.stderr and "'blocks.9.attn'" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "named").exists()
