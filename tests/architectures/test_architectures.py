"""Issue 19 item 3: torchvision ResNet-18 and MobileNetV3-small, timm ViT-Tiny and ConvNeXt-Atto
(random weights, nothing downloaded) as a user's `module:factory` models through the CLI: train one
batch (export + parity), `prune` structured with a one-batch fine-tune, `quantize` static INT8 and
QAT (which traces the model with torch.fx), `evaluate` and `autotune`, none with a traceback; the
MACs of the float and pruned exports match torch's own count within 1 %. A few digits images at 3x32x32 (each model's forward accepts it)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from benchmarks.architectures.run import digits_rgb
from edgecompress.architectures import ARCHITECTURES
from edgecompress.data import save_dataset
from edgecompress.evaluate import model_stats
from edgecompress.export import load_model_package
from tests.conftest import io_args
from tests.unit.test_counts import reference_macs

REPO = Path(__file__).resolve().parents[2]
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def rgb_digits(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits-rgb32.npz"
    save_dataset(digits_rgb(32, limit=16), path)  # 16 train, 16 val, 16 test images
    return path


def _ok(result, codes: tuple[int, ...] = (0,)) -> None:
    assert result.returncode in codes and "Traceback" not in result.stderr, result.stderr[-3000:]


def _macs_match(model_dir: Path) -> int:
    package = load_model_package(model_dir)
    macs, expected = model_stats(package.onnx_path).macs, reference_macs(package.load_module(), SHAPE)
    assert abs(macs - expected) <= 0.01 * expected, (macs, expected)
    return macs


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_through_every_command(name, rgb_digits, tmp_path, run_cli):
    model, pruned, int8 = tmp_path / "float", tmp_path / "pruned", tmp_path / "int8"
    spec = f"edgecompress.architectures:{name}"
    one_batch = ("--epochs", "1", "--batch-size", "16", "--no-track")
    _ok(
        run_cli(
            "train", "--dataset", str(rgb_digits), "--model-spec", spec, "--output", str(model), *one_batch
        )
    )
    _ok(
        run_cli("prune", *io_args(model, rgb_digits, pruned), "--method", "structured", "--ratio", "0.5",
                "--sensitivity-ratios", "", "--finetune-epochs-after", "1", "--batch-size", "16", "--no-track")
    )  # fmt: skip
    assert _macs_match(pruned) < 0.5 * _macs_match(model)
    _ok(
        run_cli("quantize", *io_args(pruned, rgb_digits, int8), "--method", "static", "--calibration-samples", "8",
                "--attention-matmuls", "int8", "--no-track")
    )  # fmt: skip
    assert model_stats(int8 / "model.onnx").macs == model_stats(pruned / "model.onnx").macs
    # QAT traces the model with torch.fx: every architecture, not only when autotune gets that far
    qat = tmp_path / "qat"
    _ok(
        run_cli("quantize", *io_args(pruned, rgb_digits, qat), "--method", "qat", "--qat-epochs", "1",
                "--calibration-samples", "8", "--no-track")
    )  # fmt: skip
    assert {"QuantizeLinear", "DequantizeLinear"} <= {
        n.op_type for n in onnx.load(str(qat / "model.onnx")).graph.node
    }
    _ok(run_cli("evaluate", *io_args(int8, rgb_digits, tmp_path / "eval.json"), "--no-track"))
    assert "accuracy" in json.loads((tmp_path / "eval.json").read_text())
    # mixed precision quantizes the model once per quantizable node (and again per node kept float):
    # minutes on a 2-core CI machine for ViT-Tiny's 73 nodes; it runs on ResNet-18's 21 only
    mixed = "--include-mixed" if name == "resnet18" else "--no-include-mixed"
    _ok(
        run_cli("autotune", *io_args(pruned, rgb_digits, tmp_path / "tuned"), "--results", str(tmp_path / "t.json"),
                "--calibration-samples", "8", "--probe-samples", "16", "--bench-min-runs", "3",
                "--bench-min-duration-s", "0.01", "--bench-warmup-runs", "1", mixed, "--qat-epochs", "1",
                "--no-track"),
        codes=(0, 1),  # 1: no candidate passed the gate (random weights, one batch), said without a traceback
    )  # fmt: skip
    assert "passed" in json.loads((tmp_path / "t.json").read_text())
