"""The sensitivity pipeline: pruning sensitivity as a fan-out. load-dataset → train → sensitivity-units
→ `dsl.ParallelFor(units, parallelism=N)` of sensitivity-unit tasks (each measures one group of layers
and returns its result as a JSON string parameter) → sensitivity-combine (the units gathered with
`dsl.Collected`: the analysis, its report and the suggested per-layer ratios).

The result equals the one-process analysis (`edgecompress prune --sensitivity`, the same library
functions: `edgecompress.prune.sensitivity`). Parallelism is a compile-time setting
(`build_pipeline(parallelism=N)`): KFP runs at most N unit tasks at once.
"""

# No `from __future__ import annotations` here: KFP reads the annotations.
from kfp import dsl

from edgecompress.components.load_dataset.component import load_dataset
from edgecompress.components.sensitivity_combine.component import sensitivity_combine
from edgecompress.components.sensitivity_unit.component import sensitivity_unit
from edgecompress.components.sensitivity_units.component import sensitivity_units
from edgecompress.components.train.component import train
from edgecompress.errors import ConfigError
from edgecompress.pipelines import edge_compression as ec
from edgecompress.pipelines.platform import on_platform

PIPELINE_NAME = "sensitivity"
DEFAULT_PARALLELISM = 2
ANALYSIS = {
    "sensitivity_units": sensitivity_units,
    "sensitivity_unit": sensitivity_unit,
    "sensitivity_combine": sensitivity_combine,
}
TASKS = {"load_dataset": load_dataset, "train": train, **ANALYSIS}
# Inputs the fan-out feeds (a unit, the collected results): never pipeline parameters.
FED = frozenset({("sensitivity_unit", "unit"), ("sensitivity_combine", "parts")})


def pipeline_parameter_name(task: str, component_input: str) -> str:
    """The analysis's settings are `sensitivity_<field>` (one parameter feeds all three tasks); the
    data set and training take the edge-compression pipeline's names."""
    if task in ANALYSIS:
        return f"sensitivity_{component_input}"
    return ec.pipeline_parameter_name(task, component_input)


def parameter_routes() -> ec.Routes:
    return ec.routes_for(TASKS, pipeline_parameter_name, FED)


def build_pipeline(platform=None, parallelism: int = DEFAULT_PARALLELISM):
    """The fan-out with at most `parallelism` unit tasks at once (0: no limit); `platform` (an
    `edgecompress.platform.PlatformConfig`) sets the tasks' Kubernetes options and the exit task."""
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 0:
        raise ConfigError(
            f"sensitivity pipeline: parallelism must be an integer ≥ 0 (0: no limit), got {parallelism!r}"
        )
    routes = parameter_routes()
    signature = ec.signature_for(TASKS, routes)
    names = list(signature.parameters)

    def sensitivity(*args):
        params = dict(zip(names, args, strict=True))
        lineage = {"pipeline_name": PIPELINE_NAME}
        data = load_dataset(**ec.inputs_for("load_dataset", params, routes), **lineage)
        dataset = data.outputs["dataset"]
        trained = train(dataset=dataset, **ec.inputs_for("train", params, routes), **lineage)
        model = trained.outputs["model"]
        units = sensitivity_units(
            model=model, dataset=dataset, **ec.inputs_for("sensitivity_units", params, routes)
        )
        with dsl.ParallelFor(units.output, parallelism=parallelism, name="sensitivity-units") as unit:
            one = sensitivity_unit(
                unit=unit, model=model, dataset=dataset, **ec.inputs_for("sensitivity_unit", params, routes)
            )
        combined = sensitivity_combine(
            parts=dsl.Collected(one.output), **ec.inputs_for("sensitivity_combine", params, routes)
        )
        return combined.outputs["results"]

    sensitivity.__signature__ = signature
    sensitivity.__doc__ = (
        f"train → sensitivity units → ParallelFor(parallelism={parallelism}) unit tasks → combine"
    )
    return dsl.pipeline(name=PIPELINE_NAME, description=sensitivity.__doc__)(
        on_platform(sensitivity, platform)
    )


sensitivity = build_pipeline()
