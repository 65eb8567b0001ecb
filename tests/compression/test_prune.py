"""Pruning through the library's public functions, on real digits data and real models."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import load_model_package
from edgecompress.params import build
from edgecompress.prune import (
    PruneConfig,
    StructuredConfig,
    UnstructuredConfig,
    prune_step,
    prune_structured,
    prune_unstructured,
    sensitivity,
    suggest_layer_ratios,
)
from edgecompress.step import Lineage
from edgecompress.zoo import build_model
from tests.conftest import io_args

OFF = Lineage(enabled=False)

# A user model outside the zoo: two branches concatenated, and flatten → Linear with no global pooling.
USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(1, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.mix = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.head(self.mix(torch.cat([self.a(x), self.b(x)], dim=1)))

    class Untraceable(nn.Module):
        """Its forward leaves autograd (numpy round trip), so no dependency graph reaches `conv`."""
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            h = torch.from_numpy(self.conv(x).detach().numpy())
            return self.fc(h.flatten(1))

    def branchy():
        return Branchy()

    def untraceable():
        return Untraceable()
''')


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("usermodels")
    (folder / "my_models.py").write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    yield "my_models"
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def digits(digits_artifact: Path):
    return load_dataset(digits_artifact)


def _macs(model, shape):
    from edgecompress.evaluate import module_macs

    return module_macs(model, tuple(shape))


def test_structured_step_removes_channels_and_round_trips(
    trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    config = build(
        PruneConfig,
        dict(ratio=0.5, steps=2, finetune_epochs_between=1, finetune_epochs_after=1, batch_size=64),
    )
    config.sensitivity, config.sensitivity_ratios = True, (0.25, 0.5)
    out, report = tmp_path / "pruned", tmp_path / "report.html"
    result = prune_step(trained_model, digits_artifact, out, config, report, OFF, False)
    info = result.info
    parent, child = result.extra["stats"]["parent"], result.extra["stats"]["child"]
    assert child["macs"] < parent["macs"] / 2.5 and child["params"] < parent["params"] / 2.5
    schedule = info["prune"]["schedule"]
    assert [s["step"] for s in schedule] == [1, 2] and schedule[0]["macs"] > schedule[1]["macs"]
    assert all("val_accuracy_finetuned" in s for s in schedule)
    # the pruned architecture round-trips through module.pt and matches the ONNX file
    package = load_model_package(out)
    module = package.load_module()
    width = load_model_package(trained_model).load_module().features[0].out_channels
    assert module.features[0].out_channels == module.features[1].num_features == width // 2
    assert info["parent_model_id"] is None and info["technique"] == "prune-structured"
    html = report.read_text()
    assert "Sensitivity" in html and "data:image/png;base64" in html and "features.4" in html


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "taylor"])
def test_mobilenet_residual_and_depthwise_stay_consistent(digits, importance: str, tmp_path: Path):
    from edgecompress.export import check_parity, export_onnx

    torch.manual_seed(0)
    model = build_model(
        {"family": "mobilenet", "kwargs": {"stages": [[1, 16, 1, 1], [2, 24, 2, 2]]}},
        digits.input_shape,
        digits.num_classes,
    )
    pruned, report = prune_structured(
        model,
        digits.input_shape,
        digits.num_classes,
        StructuredConfig(ratio=0.5, importance=importance),
        digits,
        progress=False,
    )
    block = pruned.features[5].block  # the residual block (stride 1, 24 → 24)
    assert pruned.features[5].residual
    depthwise = block[3]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels < 48
    assert block[6].out_channels == pruned.features[4].block[6].out_channels  # both sides of the residual add
    assert report["macs_reduction"] > 2.0
    export_onnx(pruned, digits.input_shape, tmp_path / "m.onnx")
    check_parity(pruned, tmp_path / "m.onnx", digits.split("val")[0][:64])


def test_user_factory_with_concat_and_flatten(digits, user_models: str):
    model = build_model(f"{user_models}:branchy", digits.input_shape, digits.num_classes)
    before = _macs(model, digits.input_shape)
    pruned, report = prune_structured(
        model,
        digits.input_shape,
        digits.num_classes,
        StructuredConfig(ratio=0.5, keep_layers=("b.0",)),
        digits,
        progress=False,
    )
    assert pruned.b[0].out_channels == 8  # kept by name
    assert pruned.a[0].out_channels == 4
    assert pruned.mix[0].in_channels == 12  # concat of 4 + 8
    assert pruned.head[1].in_features == pruned.mix[0].out_channels * 16  # flatten → Linear follows
    assert pruned.head[3].out_features == 10  # the classifier keeps its classes
    assert _macs(pruned, digits.input_shape) < before
    assert pruned(torch.zeros(3, *digits.input_shape)).shape == (3, 10)


def test_macs_and_params_budgets_are_met(digits):
    torch.manual_seed(0)
    model = build_model("cnn", digits.input_shape, digits.num_classes)
    base = _macs(model, digits.input_shape)
    for metric, budget in (("macs", base / 5), ("params", sum(p.numel() for p in model.parameters()) / 3)):
        _, report = prune_structured(
            model,
            digits.input_shape,
            digits.num_classes,
            StructuredConfig(budget_metric=metric, budget=budget),
            digits,
            progress=False,
        )
        assert report["budget"]["met"] and report["budget"]["achieved"] <= budget
        assert 0 < report["ratio"] <= 0.9
        assert report["budget_trace"][-2]["cost"] > budget  # the smallest ratio that meets it


def test_sensitivity_sets_layer_ratios(digits, trained_model: Path):
    module = load_model_package(trained_model).load_module()
    result = sensitivity(module, digits, ratios=(0.25, 0.5, 0.75), samples=200)
    assert set(result["accuracy"]) == {"features.0", "features.4"}
    assert all(0 <= a <= 1 for accs in result["accuracy"].values() for a in accs.values())
    suggested = suggest_layer_ratios(result, max_drop=1.0)  # everything tolerated → the largest ratio
    assert suggested == {"features.0": 0.75, "features.4": 0.75}
    strict = suggest_layer_ratios({**result, "baseline_accuracy": 2.0}, max_drop=0.0)
    assert strict == {}
    w0, w1 = module.features[0].out_channels, module.features[4].out_channels
    pruned, _ = prune_structured(
        module,
        digits.input_shape,
        digits.num_classes,
        StructuredConfig(ratio=0.25, layer_ratios={"features.0": 0.75}),
        progress=False,
    )
    assert pruned.features[0].out_channels == w0 - int(w0 * 0.75)
    assert pruned.features[4].out_channels == w1 - int(w1 * 0.25)


def test_unstructured_global_and_per_layer(
    digits, trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    module = load_model_package(trained_model).load_module()
    report = prune_unstructured(module, UnstructuredConfig(sparsity=0.6, scope="layer"))
    for name, layer in report["per_layer"].items():
        assert layer["sparsity"] == pytest.approx(0.6, abs=0.02), name
    config = build(
        PruneConfig, dict(method="unstructured", sparsity=0.85, finetune_epochs_after=1, batch_size=64)
    )
    out, html = tmp_path / "sparse", tmp_path / "sparse.html"
    result = prune_step(
        trained_model, digits_artifact, out, config, report_path=html, lineage_ctx=OFF, progress=False
    )
    info = result.info
    parent, child = result.extra["stats"]["parent"], result.extra["stats"]["child"]
    assert info["prune"]["weight_sparsity"] == pytest.approx(0.85, abs=0.01)
    assert child["macs"] == parent["macs"] and child["params"] == parent["params"]  # same dense shapes
    assert child["gzip_bytes"] < parent["gzip_bytes"] * 0.75
    assert "No speed-up" in html.read_text()
    # the zeros are permanent (no masks / weight_orig left in the saved module)
    module = load_model_package(out).load_module()
    assert not any("weight_orig" in n for n, _ in module.named_parameters())


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_open_interval(
    ratio: float, trained_model: Path, digits_artifact: Path, tmp_path: Path
):
    for method in ("structured", "unstructured"):
        config = build(PruneConfig, dict(method=method, ratio=ratio, sparsity=ratio))
        with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
            prune_step(trained_model, digits_artifact, tmp_path / "out", config, lineage_ctx=OFF)
    assert not (tmp_path / "out").exists()


def test_unknown_layer_name(trained_model: Path, digits_artifact: Path, tmp_path: Path):
    config = build(PruneConfig, dict(keep_layers="features.99"))
    with pytest.raises(ConfigError, match="no layer named 'features.99'.*features.0"):
        prune_step(trained_model, digits_artifact, tmp_path / "out", config, lineage_ctx=OFF)
    config = build(PruneConfig, dict(layer_ratios="classifier.9=0.5"))
    with pytest.raises(ConfigError, match="classifier.9"):
        prune_step(trained_model, digits_artifact, tmp_path / "out", config, lineage_ctx=OFF)
    assert not (tmp_path / "out").exists()


def test_untraceable_model(digits, user_models: str):
    model = build_model(f"{user_models}:untraceable", digits.input_shape, digits.num_classes)
    with pytest.raises(ModelError, match="torch-pruning cannot trace.*conv"):
        prune_structured(model, digits.input_shape, digits.num_classes, StructuredConfig(), progress=False)


def test_bn_importance_needs_batchnorm(digits):
    model = build_model("lenet5", digits.input_shape, digits.num_classes)
    with pytest.raises(ConfigError, match="needs BatchNorm"):
        prune_structured(model, digits.input_shape, digits.num_classes, StructuredConfig(importance="bn"))


def test_cli_bad_input_exits_2_and_writes_nothing(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, capsys
):
    from edgecompress.cli import main

    out = tmp_path / "out"
    base = [
        "prune",
        *io_args(trained_model, digits_artifact, out),
        "--no-track",
    ]
    assert main([*base, "--ratio", "1.2"]) == 2
    assert "ratio must be in (0, 1), got 1.2" in capsys.readouterr().err
    assert main([*base, "--keep-layer", "nope"]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "sensitivity",
                *io_args(trained_model, digits_artifact, tmp_path / "s.json"),
                "--ratios",
                "0.5,1.0",
            ]
        )
        == 2
    )
    assert "(0, 1)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "s.json").exists()
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.iterdir()))) == []


def test_cli_prune_then_sensitivity_ratios(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, capsys
):
    from edgecompress.cli import main

    sens = tmp_path / "sens.json"
    assert (
        main(
            [
                "sensitivity",
                *io_args(trained_model, digits_artifact, sens),
                "--plot",
                str(tmp_path / "s.png"),
                "--ratios",
                "0.5",
                "--samples",
                "100",
            ]
        )
        == 0
    )
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert (
        main(
            [
                "prune",
                *io_args(trained_model, digits_artifact, tmp_path / "p"),
                "--layer-ratios-from",
                str(sens),
                "--sensitivity-max-drop",
                "1.0",
                "--sensitivity-ratios",
                "",
                "--ratio",
                "0.25",
                "--finetune-epochs-after",
                "0",
                "--no-track",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    module = load_model_package(trained_model).load_module()
    assert (
        printed["channels"]["features.0"] == module.features[0].out_channels // 2
    )  # 0.5 from the sensitivity
    assert printed["channels"]["features.4"] == module.features[4].out_channels // 2


def test_latency_budget_is_measured_on_the_device_class(digits):
    """A latency budget is checked against a real ONNX Runtime measurement on an emulated class."""
    torch.manual_seed(0)
    model = build_model("cnn", digits.input_shape, digits.num_classes)
    with pytest.raises(ConfigError, match="unknown device class 'pi-zero'"):
        prune_structured(
            model,
            digits.input_shape,
            digits.num_classes,
            StructuredConfig(budget_metric="latency", budget=1.0, device_class="pi-zero"),
        )
    with pytest.raises(ConfigError, match="already meets the latency budget"):
        prune_structured(
            model,
            digits.input_shape,
            digits.num_classes,
            StructuredConfig(budget_metric="latency", budget=1e6),
            digits,
            progress=False,
        )
