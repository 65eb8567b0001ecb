"""`TrainConfig.device`: training (and distillation, with its teacher) runs on that device and the
model comes back on the CPU, where export and the edge runtime work; a device this torch cannot
train on is a ConfigError that names the way out, before any data is read. The `cuda` case is
collected only where torch sees a GPU (the device machine's check); `cpu` runs everywhere."""

from __future__ import annotations

import pytest
import torch

from edgecompress.data import load_dataset
from edgecompress.distill import DistillConfig, distill
from edgecompress.errors import ConfigError
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig, accuracy, fit, train_step
from edgecompress.zoo import build_model
from tests.conftest import SMALL_CNN

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
STUDENT = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "mps", ""])
def test_a_device_torch_cannot_train_on_is_refused(name):
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device=name).validate()


def test_a_missing_gpu_is_refused_with_the_way_out():
    name = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ConfigError, match="CUDA GPU"):
        TrainConfig(device=name).validate()


def test_an_unusable_device_stops_train_before_any_output(digits_artifact, tmp_path):
    config = TrainConfig(epochs=1, device="tpu")
    with pytest.raises(ConfigError):
        train_step(digits_artifact, STUDENT, tmp_path / "out", config, Lineage(enabled=False), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", DEVICES)
def test_fit_and_distill_on_a_device_learn_and_return_cpu_models(device, digits_artifact):
    dataset = load_dataset(digits_artifact)
    x_val, y_val = dataset.split("val")
    # 7 epochs of the 720-image digits train split: the ~80 optimizer steps 4 epochs of 1,257 gave
    config = TrainConfig(epochs=7, batch_size=64, lr=1e-2, seed=0, device=device)
    teacher = build_model(SMALL_CNN, dataset.input_shape, dataset.num_classes, seed=0)
    history = fit(teacher, dataset, config, progress=False)
    assert {p.device.type for p in teacher.parameters()} == {"cpu"}
    assert accuracy(teacher, x_val, y_val) == pytest.approx(history.final_val_accuracy)
    assert history.final_val_accuracy > 0.8  # chance is 0.1
    student = build_model(STUDENT, dataset.input_shape, dataset.num_classes, seed=0)
    kd = DistillConfig(feature_weight=1.0, train=config)  # logits + a hint pair: hooks and projections
    distilled, kd_history, details = distill(teacher, student, dataset, kd, progress=False)
    assert details["feature_pairs"], details
    assert {p.device.type for p in distilled.parameters()} == {"cpu"}
    assert {p.device.type for p in teacher.parameters()} == {"cpu"}
    assert kd_history.final_val_accuracy > 0.5
