"""Issue 28 item 2: pruning sensitivity split into work units (layer groups), one unit measured at a time
(a fan-out task each) and the units combined; the combination equals the one-process analysis that
`prune --sensitivity` runs, on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.prune import sensitivity
from edgecompress.prune.sensitivity import (
    SensitivityConfig,
    combine_sensitivity,
    sensitivity_combine_step,
    sensitivity_unit_step,
    sensitivity_units_step,
    suggest_layer_ratios,
)
from edgecompress.step import load_parent

RATIOS = (0.25, 0.5)


def _without_time(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "seconds"}


@pytest.fixture(scope="module")
def one_process(trained_model: Path, digits_artifact: Path) -> dict:
    dataset = load_dataset(digits_artifact)
    _, module = load_parent(trained_model, dataset)
    return sensitivity(module, dataset, RATIOS, samples=200, progress=False)


@pytest.mark.parametrize("layers_per_unit", [1, 2])
def test_fanned_out_units_combine_to_the_one_process_result(
    one_process, trained_model, digits_artifact, tmp_path, layers_per_unit
):
    config = SensitivityConfig(ratios=RATIOS, samples=200, layers_per_unit=layers_per_unit, max_drop=0.02)
    units = sensitivity_units_step(trained_model, digits_artifact, config)
    layers = list(one_process["accuracy"])
    assert len(layers) >= 2 and len(units) == -(-len(layers) // layers_per_unit)
    assert [n for u in units for n in json.loads(u)["layers"]] == layers
    # each unit measured on its own (a task each in the pipeline), gathered in any order
    parts = [sensitivity_unit_step(trained_model, digits_artifact, u, config) for u in units]
    result = sensitivity_combine_step(parts[::-1], config, tmp_path / "r.json", tmp_path / "r.html")
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert result["units"] == len(units)
    assert result["suggested_layer_ratios"] == suggest_layer_ratios(one_process, 0.02)
    suggested = result["suggested_layer_ratios"]
    assert (
        f"<code>{json.dumps(suggested) if suggested else 'none'}</code>" in (tmp_path / "r.html").read_text()
    )
    combined = {k: v for k, v in result.items() if k not in ("units", "max_drop", "suggested_layer_ratios")}
    assert _without_time(combined) == _without_time(one_process)
    assert list(combined["accuracy"]) == layers  # the model's order, whatever order the parts came in


def test_units_that_are_not_one_analysis_are_refused(one_process):
    part = {**one_process, "accuracy": dict(list(one_process["accuracy"].items())[:1])}
    other = {**part, "baseline_accuracy": part["baseline_accuracy"] - 0.1}
    with pytest.raises(ConfigError, match=r"unit 1 differs from unit 0 in \['baseline_accuracy'\]"):
        combine_sensitivity([part, other])
    with pytest.raises(ConfigError, match="are in two units"):
        combine_sensitivity([part, part])
    with pytest.raises(ConfigError, match="no unit results"):
        combine_sensitivity([])


def test_combine_step_refuses_a_missing_or_doubled_unit(one_process, tmp_path):
    config = SensitivityConfig(ratios=RATIOS, samples=200)
    part = json.dumps({"index": 0, **one_process})
    with pytest.raises(ConfigError, match=r"unit indices \[0, 0\], expected 0..1 once each"):
        sensitivity_combine_step([part, part], config, tmp_path / "r.json")
    with pytest.raises(ConfigError, match="sensitivity unit result 1: not JSON"):
        sensitivity_combine_step([part, "{oops"], config, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_bad_settings_and_units_are_named(trained_model, digits_artifact):
    with pytest.raises(ConfigError, match="layers per sensitivity unit must be ≥ 1"):
        sensitivity_units_step(trained_model, digits_artifact, SensitivityConfig(layers_per_unit=0))
    with pytest.raises(ConfigError, match="sensitivity ratio"):
        SensitivityConfig(ratios=(1.5,)).validate()
    with pytest.raises(ConfigError, match="sensitivity unit"):
        sensitivity_unit_step(trained_model, digits_artifact, '["conv"]', SensitivityConfig())
    with pytest.raises(ConfigError, match="nope"):
        unit = json.dumps({"index": 0, "layers": ["nope"]})
        sensitivity_unit_step(trained_model, digits_artifact, unit, SensitivityConfig())


def test_mixed_precision_node_units_measured_apart_combine_to_node_sensitivity(
    trained_model, digits_artifact
):
    """quantize/mixed.py split the same way: units (quantizable nodes), one unit measured, combined."""
    from edgecompress.export import load_model_package
    from edgecompress.quantize.config import QuantConfig
    from edgecompress.quantize.mixed import (
        all_quantized_accuracy,
        combine_nodes,
        node_sensitivity,
        node_unit,
        node_units,
    )

    dataset = load_dataset(digits_artifact)
    onnx_path = load_model_package(trained_model).onnx_path
    config = QuantConfig(method="mixed", calibration_samples=64, probe_samples=200)
    units = node_units(onnx_path)
    assert len(units) >= 2
    full = all_quantized_accuracy(onnx_path, dataset, config)
    rows = {u: node_unit(onnx_path, dataset, config, u, full) for u in units[::-1]}  # measured in any order
    assert combine_nodes([rows[u] for u in units]) == node_sensitivity(onnx_path, dataset, config)
