"""Issue 30 item 1: distillation kept none of a sparse student's zeros (49.4 % zero weights came out
0.0, silently). The student is now fine-tuned under its zero mask by default, the sparsity before and
after is in the result and the report, and opting out warns with the numbers."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from edgecompress.data import load_dataset
from edgecompress.distill import DistillConfig, distill, distill_step, weight_sparsity
from edgecompress.evaluate import model_stats
from edgecompress.prune import PruneConfig, UnstructuredConfig, prune_step, prune_unstructured
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig
from edgecompress.zoo import build_model

OFF = Lineage(enabled=False)
SMALL = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}
TRAIN = TrainConfig(epochs=1, batch_size=64, lr=3e-3, max_train_samples=256)


def _sparse_student(shape):
    student = build_model(SMALL, shape, 10, seed=1)
    prune_unstructured(student, UnstructuredConfig(sparsity=0.5))
    return student


def test_distill_keeps_the_students_zeros_by_default(digits_artifact):
    dataset = load_dataset(digits_artifact)
    teacher = build_model(SMALL, dataset.input_shape, 10, seed=0)
    student = _sparse_student(dataset.input_shape)
    before = weight_sparsity(student)
    assert 0.45 < before["sparsity"] < 0.55
    zero = {
        n: m.weight == 0 for n, m in student.named_modules() if hasattr(m, "weight") and m.weight.dim() > 1
    }
    child, _, details = distill(teacher, student, dataset, DistillConfig(train=TRAIN), progress=False)
    after = weight_sparsity(child)
    assert after["zeros"] >= before["zeros"]
    modules = dict(child.named_modules())
    for name, mask in zero.items():  # every weight that was zero is zero still
        assert not modules[name].weight[mask].any(), name
    assert details["sparsity"] == {"kept": True, "before": before, "after": after}
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in child.named_parameters())
    assert weight_sparsity(student) == before  # the student passed in is left alone


def test_opting_out_warns_with_the_numbers(digits_artifact, caplog):
    dataset = load_dataset(digits_artifact)
    teacher = build_model(SMALL, dataset.input_shape, 10, seed=0)
    student = _sparse_student(dataset.input_shape)
    config = DistillConfig(keep_sparsity=False, train=TRAIN)
    with caplog.at_level(logging.WARNING, logger="edgecompress.distill"):
        child, _, details = distill(teacher, copy.deepcopy(student), dataset, config, progress=False)
    before, after = details["sparsity"]["before"], details["sparsity"]["after"]
    assert details["sparsity"]["kept"] is False and after["zeros"] < before["zeros"]
    assert f"({before['zeros']} of {before['weights']})" in caplog.text
    assert "keep_sparsity is off" in caplog.text


def test_prune_unstructured_then_distill_step_stays_sparse(trained_model, digits_artifact, tmp_path: Path):
    """The issue's chain: unstructured prune -> distill -> the ONNX artifact is as sparse as the student."""
    pruned = tmp_path / "pruned"
    prune_step(
        trained_model,
        digits_artifact,
        pruned,
        PruneConfig(method="unstructured", unstructured=UnstructuredConfig(sparsity=0.5)),
        lineage_ctx=OFF,
        progress=False,
    )
    out, report = tmp_path / "distilled", tmp_path / "distill.html"
    info = distill_step(
        trained_model, digits_artifact, str(pruned), out, DistillConfig(train=TRAIN), True, report, OFF, False
    ).info
    sparsity = info["distill"]["sparsity"]
    assert sparsity["kept"] and sparsity["after"]["zeros"] >= sparsity["before"]["zeros"] > 0
    assert model_stats(out / "model.onnx").sparsity >= 0.9 * model_stats(pruned / "model.onnx").sparsity > 0.3
    html = report.read_text()
    assert "Student sparsity" in html and "stayed zero" in html
