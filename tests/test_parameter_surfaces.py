"""One parameter surface per technique: every setting of a component, a CLI command and a pipeline has
one definition, its config dataclass. Components keep literal signatures (KFP needs them); this test
holds them to the dataclasses. CLI options and pipeline parameters are derived, and checked here too."""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from edgecompress.components import component_names, surface_mismatches
from edgecompress.params import surface
from edgecompress.pipelines.edge_compression import (
    CHAIN_STEPS,
    FED,
    FIXED_TASKS,
    build_pipeline,
    component_parameters,
    parameter_routes,
)


def _component(name: str):
    module = importlib.import_module(f"edgecompress.components.{name}.component")
    return module, getattr(module, name)


def _with_surfaces() -> list[str]:
    return [n for n in component_names() if hasattr(_component(n)[0], "SURFACES")]


@pytest.mark.parametrize("name", _with_surfaces())
def test_component_inputs_are_exactly_its_configs_fields(name):
    module, component = _component(name)
    assert surface_mismatches(component, module.SURFACES) == []


def test_the_check_catches_a_drifted_default():
    from edgecompress.components.quantize.component import SURFACES, quantize

    assert surface_mismatches(quantize, SURFACES) == []
    spec = quantize.component_spec.inputs["qat_epochs"]
    saved, spec.default = spec.default, 3
    try:
        assert surface_mismatches(quantize, SURFACES) == [
            "qat_epochs: component (<class 'int'>, 3) != config (<class 'int'>, 2)"
        ]
    finally:
        spec.default = saved


def test_every_component_takes_its_settings_from_configs():
    assert _with_surfaces() == component_names()
    for name in component_names():
        module, component = _component(name)
        assert component.surfaces == module.SURFACES  # built by technique_component from them


def _subcommand(name: str) -> argparse.ArgumentParser:
    from edgecompress.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize(
    ("command", "configs"),
    [
        ("quantize", ("edgecompress.quantize.config:QuantConfig", "edgecompress.edge:Measurement")),
        ("autotune", ("edgecompress.quantize.autotune:AutotuneConfig",)),
        ("train", ("edgecompress.train:TrainConfig", "edgecompress.zoo:ModelChoice")),
        ("benchmark", ("edgecompress.edge:EdgeBenchmarkConfig",)),
        ("evaluate", ("edgecompress.evaluate:EvaluateConfig",)),
        ("dataset", ("edgecompress.data:DatasetSource",)),
        ("prune", ("edgecompress.prune:PruneConfig",)),
        ("distill", ("edgecompress.distill:DistillConfig",)),
        ("drift", ("edgecompress.drift:DriftConfig",)),
        (
            "nas",
            ("edgecompress.nas:NasConfig", "edgecompress.nas:Constraints", "edgecompress.nas:NasStepOptions"),
        ),
    ],
)
def test_cli_options_take_their_names_and_defaults_from_the_configs(command, configs):
    parser = _subcommand(command)
    defaults = {a.dest: a.default for a in parser._actions}
    options = {o for a in parser._actions for o in a.option_strings}
    positional = {a.dest for a in parser._actions if not a.option_strings}
    for ref in configs:
        module, cls = ref.split(":")
        for p in surface(getattr(importlib.import_module(module), cls)):
            if p.name in positional:
                continue  # a required positional (`edgecompress dataset SOURCE`) has no default
            assert defaults[p.name] == p.default, p.name
            assert "--" + p.name.replace("_", "-") in options


@pytest.mark.parametrize(
    "chain", [["quantize"], ["autotune"], ["prune", "distill", "quantize"], ["nas", "quantize"]]
)
def test_pipeline_parameters_are_the_components_parameters(chain):
    """Every pipeline parameter feeds component inputs with its own default, and every component input
    of a task in the pipeline is fed by one (no setting silently follows another's value)."""
    pipeline = build_pipeline(chain)
    signature = inspect.signature(pipeline.pipeline_func).parameters
    tasks = {**FIXED_TASKS, **{s: CHAIN_STEPS[s].component for s in chain}}
    fed = set()
    for name, routes in parameter_routes(chain).items():
        for task, component_input in routes:
            param = component_parameters(tasks[task])[component_input]
            assert signature[name].default == param.default, (name, task, component_input)
            fed.add((task, component_input))
    for task, component in tasks.items():
        for component_input in component_parameters(component):
            # the collected benchmarks are fed by the edge-benchmark tasks, not by a pipeline parameter
            assert (task, component_input) in fed | FED, (task, component_input)


def test_quantize_latency_check_has_its_own_device_class():
    """It used to read `autotune_device_class`: changing the tuner's target moved quantize's check."""
    routes = parameter_routes(["quantize", "autotune"])
    # one setting: the class quantize is checked on is also the class it is quantized for
    assert sorted(routes["quantize_device_class"]) == [("quantize", "device_class"), ("quantize", "target")]
    assert routes["autotune_device_class"] == [("autotune", "device_class")]
