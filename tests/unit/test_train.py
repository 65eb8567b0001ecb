"""A seeded training run depends on its seed only, not on what drew random numbers before it."""

from __future__ import annotations

import json

import torch

from edgecompress.export import load_model_package
from edgecompress.step import Lineage
from edgecompress.train import TrainConfig, train_step
from edgecompress.zoo import build_model

SPEC = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}


def _weights(model_dir):
    return load_model_package(model_dir).load_module().state_dict()


def test_seeded_build_ignores_and_keeps_the_global_generator():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(SPEC, (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    torch.rand(1000)  # disturb the global generator
    b = build_model(SPEC, (1, 8, 8), 10, seed=7)
    c = build_model(SPEC, (1, 8, 8), 10, seed=8)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    assert not torch.equal(a.state_dict()["features.0.weight"], c.state_dict()["features.0.weight"])


def test_train_step_is_the_same_whatever_ran_before(digits_artifact, tmp_path):
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-2, seed=3, max_train_samples=300)
    train_step(digits_artifact, SPEC, tmp_path / "a", config, Lineage(enabled=False), progress=False)
    build_model("mlp", (1, 8, 8), 10)  # draws from torch's global generator, as NAS cost checks do
    torch.rand(10_000)
    train_step(digits_artifact, SPEC, tmp_path / "b", config, Lineage(enabled=False), progress=False)
    for (name, wa), wb in zip(
        _weights(tmp_path / "a").items(), _weights(tmp_path / "b").values(), strict=True
    ):
        assert torch.equal(wa, wb), name


def test_nas_retrain_and_a_fresh_distill_student_start_from_their_seed(digits_artifact):
    from edgecompress.data import load_dataset
    from edgecompress.distill import load_student
    from edgecompress.nas import NasConfig, retrain

    dataset = load_dataset(digits_artifact)
    config = NasConfig(final_epochs=1, batch_size=64, seed=5)
    first, _ = retrain(SPEC, dataset, config, progress=False)
    torch.rand(10_000)
    second, _ = retrain(SPEC, dataset, config, progress=False)
    for (name, wa), wb in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name

    student_a, _, _ = load_student(json.dumps(SPEC), dataset, seed=5)
    torch.rand(10_000)
    student_b, _, _ = load_student(json.dumps(SPEC), dataset, seed=5)
    student_c, _, _ = load_student(json.dumps(SPEC), dataset, seed=6)
    weight = "features.0.weight"
    assert torch.equal(student_a.state_dict()[weight], student_b.state_dict()[weight])
    assert not torch.equal(student_a.state_dict()[weight], student_c.state_dict()[weight])
