"""Distillation through the library and the CLI, on real digits data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgecompress.data import load_dataset
from edgecompress.distill import DistillConfig, distill, distill_step, kd_loss
from edgecompress.errors import ConfigError
from edgecompress.export import load_model_package
from edgecompress.params import build
from edgecompress.prune import PruneConfig, prune_step
from edgecompress.step import Lineage, save_torch_child
from edgecompress.train import TrainConfig
from edgecompress.zoo import build_model

OFF = Lineage(enabled=False)
TINY = '{"family": "cnn", "kwargs": {"widths": [4, 8], "depths": [1, 1]}}'


def test_kd_loss_limits():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))
    assert float(kd_loss(t, t, y, 4.0, 1.0)) == pytest.approx(
        0.0, abs=1e-6
    )  # student = teacher: no soft loss
    assert float(kd_loss(s, t, y, 4.0, 1.0)) > 0


def test_prune_then_distill_step(trained_model: Path, digits_artifact: Path, tmp_path: Path):
    config = build(PruneConfig, dict(ratio=0.5, finetune_epochs_after=0))
    pruned = tmp_path / "pruned"
    prune_step(trained_model, digits_artifact, pruned, config, lineage_ctx=OFF, progress=False)
    config = build(
        DistillConfig, dict(epochs=2, batch_size=64, lr=3e-3, feature_weight=0.5, feature_pairs="auto")
    )
    out, report = tmp_path / "distilled", tmp_path / "distill.html"
    info = distill_step(
        trained_model, digits_artifact, str(pruned), out, config, True, report, OFF, progress=False
    ).info
    comparison = info["distill"]["comparison"]
    assert set(comparison) == {
        "teacher",
        "student (start)",
        "student, hard labels only",
        "student, distilled",
    }
    assert (
        comparison["student, distilled"]["params"]
        == comparison["student (start)"]["params"]
        < comparison["teacher"]["params"]
    )
    pair = info["distill"]["loss"]["feature_pairs"][0]
    assert (
        pair["student"] == pair["teacher"] == "features.5"
    )  # last BatchNorm2d, projected to the teacher's channels
    width = (
        load_model_package(trained_model).load_module().features[4].out_channels
    )  # the teacher's last conv
    assert pair["student_shape"][1] == width // 2 and pair["teacher_shape"][1] == width
    module = load_model_package(out).load_module()
    assert module.features[4].out_channels == width // 2  # the pruned architecture, not the teacher's
    assert not any("projections" in n for n, _ in module.named_parameters())
    assert "hard labels only" in report.read_text()


def test_distilled_student_follows_teacher_more_closely(trained_model: Path, digits_artifact: Path):
    """Same student, same data order: with alpha=1 the student learns only the teacher's outputs."""
    dataset = load_dataset(digits_artifact)
    teacher = load_model_package(trained_model).load_module()
    torch.manual_seed(0)
    student = build_model(TINY, dataset.input_shape, dataset.num_classes)
    # 5 epochs of the 720-image digits train split: the ~57 optimizer steps 3 epochs of 1,257 gave
    train = TrainConfig(epochs=5, batch_size=64, lr=5e-3)
    child, history, _ = distill(
        teacher, student, dataset, DistillConfig(alpha=1.0, temperature=2.0, train=train), False
    )
    x, _ = dataset.split("test")
    with torch.no_grad():
        t = teacher(torch.from_numpy(x)).argmax(1)
        before = (student.eval()(torch.from_numpy(x)).argmax(1) == t).float().mean()
        after = (child(torch.from_numpy(x)).argmax(1) == t).float().mean()
    assert after > before + 0.1
    assert len(history.epochs) == 5


def test_distill_spec_student_parent_is_teacher(trained_model: Path, digits_artifact: Path, tmp_path: Path):
    info = distill_step(
        trained_model,
        digits_artifact,
        TINY,
        tmp_path / "d",
        build(DistillConfig, dict(epochs=1, batch_size=64)),
        compare_scratch=False,
        lineage_ctx=OFF,
        progress=False,
    ).info
    assert (
        info["spec"]["kwargs"]["widths"] == [4, 8]
        and "student, hard labels only" not in info["distill"]["comparison"]
    )


# --- bad input ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_class_teacher(
    tmp_path_factory: pytest.TempPathFactory, digits_artifact: Path, trained_model: Path
) -> Path:
    """A Model artifact whose classifier has 5 outputs (e.g. trained on another label set)."""
    dataset = load_dataset(digits_artifact)
    torch.manual_seed(0)
    model = build_model("lenet5", dataset.input_shape, dataset.num_classes)
    model.classifier[-1] = torch.nn.Linear(84, 5)
    info = {**load_model_package(trained_model).info, "num_classes": 5, "technique": "train"}
    out = tmp_path_factory.mktemp("teacher5") / "teacher"
    save_torch_child(model, dataset, out, info)
    return out


def test_teacher_with_other_classes(five_class_teacher: Path, digits_artifact: Path, tmp_path: Path, capsys):
    from edgecompress.cli import main

    with pytest.raises(ConfigError, match="teacher .* outputs 5 classes.*has 10"):
        distill_step(
            five_class_teacher,
            digits_artifact,
            TINY,
            tmp_path / "d",
            build(DistillConfig, dict(epochs=1)),
            lineage_ctx=OFF,
        )
    code = main(
        [
            "distill",
            "--teacher",
            str(five_class_teacher),
            "--student",
            TINY,
            "--dataset",
            str(digits_artifact),
            "--output",
            str(tmp_path / "d"),
            "--epochs",
            "1",
            "--no-track",
        ]
    )
    assert code == 2 and "outputs 5 classes" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"feature_weight": 1.0, "feature_pairs": "features.0=classifier.2"}, "cannot be matched"),
        ({"feature_weight": 1.0, "feature_pairs": "nope=features.0"}, "no module named 'nope'"),
    ],
)
def test_bad_distill_settings(kwargs, message, trained_model: Path, digits_artifact: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match=message):
        distill_step(
            trained_model,
            digits_artifact,
            TINY,
            tmp_path / "d",
            build(DistillConfig, dict(epochs=1, **kwargs)),
            lineage_ctx=OFF,
            progress=False,
        )
    assert not (tmp_path / "d").exists()


# --- feature-level distillation --------------------------------------------------------------------


def test_attention_transfer_into_the_pruned_teacher(trained_model: Path, digits_artifact: Path):
    """prune → distill with attention transfer: the student is the pruned teacher (fewer channels at
    every stage), so the stages are matched by spatial size and need no adapter."""
    from edgecompress.distill import attention_map
    from edgecompress.prune import StructuredConfig, prune_structured

    dataset = load_dataset(digits_artifact)
    teacher = load_model_package(trained_model).load_module()
    pruned, _ = prune_structured(
        teacher, dataset.input_shape, dataset.num_classes, StructuredConfig(ratio=0.5), dataset, False
    )
    x_val, y_val = dataset.split("val")
    config = DistillConfig(
        temperature=2.0,
        alpha=0.5,
        feature_loss="attention",
        feature_weight=10.0,
        train=TrainConfig(epochs=2, batch_size=64, lr=3e-3),
    )
    child, history, details = distill(teacher, pruned, dataset, config, False)
    assert details["feature_loss"] == "attention"
    pairs = details["feature_pairs"]
    assert len(pairs) >= 2  # one per stage (8×8 and 4×4 on digits)
    assert all(p["student"] == p["teacher"] for p in pairs)  # same layers, pruned channels
    assert all(p["student_shape"][1] < p["teacher_shape"][1] for p in pairs)
    assert all(p["student_shape"][2:] == p["teacher_shape"][2:] for p in pairs)
    assert sum(p.numel() for p in child.parameters()) == sum(p.numel() for p in pruned.parameters())
    from edgecompress.train import accuracy

    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert accuracy(child, x_val, y_val) > accuracy(pruned, x_val, y_val) + 0.05
    a = attention_map(torch.randn(3, 5, 4, 4))
    assert a.shape == (3, 16) and torch.allclose(a.norm(dim=1), torch.ones(3))


def test_kd_leaves_the_teacher_untouched_and_in_eval_mode(trained_model: Path, digits_artifact: Path):
    """The teacher's BatchNorm statistics and weights do not move, even when handed over in train mode."""
    dataset = load_dataset(digits_artifact)
    teacher = load_model_package(trained_model).load_module().train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_model(TINY, dataset.input_shape, dataset.num_classes, seed=0)
    distill(teacher, student, dataset, DistillConfig(train=TrainConfig(epochs=1, batch_size=64)), False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--feature-loss", "nope"], "invalid choice"),
        (["--feature-weight", "-1"], "feature_weight must be"),
        (["--feature-weight", "1", "--feature-loss", "attention", "--feature-pairs", "features.0=pool"],
         "cannot be matched by attention maps"),
    ],
)  # fmt: skip
def test_bad_feature_settings_exit_2(
    args, message, trained_model: Path, digits_artifact: Path, tmp_path, capsys
):
    from edgecompress.cli import main

    argv = ["distill", "--teacher", str(trained_model), "--student", TINY, "--dataset", str(digits_artifact),
            "--output", str(tmp_path / "d"), "--epochs", "1", "--no-track", "--no-compare-scratch", *args]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects an unknown choice itself
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_auto_attention_without_stages_falls_back_to_logit_kd(digits_artifact: Path):
    """An MLP has no spatial stages: 'auto' then distils logits alone and says so (the default must not
    make distilling an MLP fail)."""
    dataset = load_dataset(digits_artifact)
    teacher = build_model("mlp", dataset.input_shape, dataset.num_classes, seed=1)
    student = build_model("mlp", dataset.input_shape, dataset.num_classes, seed=2)
    config = DistillConfig(
        feature_loss="attention", feature_weight=10.0, train=TrainConfig(epochs=1, batch_size=64)
    )
    _, history, details = distill(teacher, student, dataset, config, False)
    assert details["feature_loss"] == "none" and "none in common" in details["feature_loss_skipped"]
    assert len(history.epochs) == 1


def test_defaults_are_the_compression_benchmarks_winner_on_validation():
    """Issue 17 item 5: the KD settings `edgecompress distill` and `run --chain …,distill` use by
    default are the ones the committed benchmark chose on validation (not on test)."""
    import json

    results = json.loads((Path(__file__).parents[2] / "benchmarks/compression/results.json").read_text())
    selection = results["kd_selection"]
    assert selection["split"] == "validation"
    winner = selection["winner_settings"]
    defaults = DistillConfig()
    assert (defaults.temperature, defaults.alpha) == (winner["temperature"], winner["alpha"])
    assert (defaults.feature_weight > 0) == (winner.get("feature_weight", 0.0) > 0)
    if defaults.feature_weight > 0:
        assert (defaults.feature_loss, defaults.feature_weight) == (
            winner["feature_loss"],
            winner["feature_weight"],
        )
