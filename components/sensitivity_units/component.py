"""KFP component: the work units of a pruning sensitivity analysis (the fan-out's items)."""

from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.prune.sensitivity import SensitivityConfig, sensitivity_units_step

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (SensitivityConfig,)


def run(model, dataset, **settings) -> list:
    return sensitivity_units_step(model.path, dataset.path, build(SensitivityConfig, settings))


sensitivity_units = technique_component(
    "sensitivity_units",
    run,
    inputs={"model": "Model", "dataset": "Dataset"},
    surfaces=SURFACES,
    returns="list",
    doc="""The model's prunable layers (less `keep_layers`) in groups of `layers_per_unit`, in the model's
    order, as JSON strings `{"index": i, "layers": [...]}`: the items of the `sensitivity` pipeline's
    `dsl.ParallelFor`, one `sensitivity_unit` task each.""",
)
