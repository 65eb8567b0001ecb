"""KFP component: one unit of a pruning sensitivity analysis, measured (a task of the fan-out)."""

from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.prune.sensitivity import SensitivityConfig, sensitivity_unit_step

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (SensitivityConfig,)


def run(unit, model, dataset, **settings) -> str:
    return sensitivity_unit_step(model.path, dataset.path, unit, build(SensitivityConfig, settings))


sensitivity_unit = technique_component(
    "sensitivity_unit",
    run,
    data={"unit": "str"},
    inputs={"model": "Model", "dataset": "Dataset"},
    surfaces=SURFACES,
    returns="str",
    doc="""`unit`: one item of `sensitivity_units`. Each of its layers alone is pruned by each of `ratios`
    (a copy, no fine-tuning) and measured on `samples` images of validation's selection part. Returns
    the unit's result as a JSON string (a parameter, gathered with `dsl.Collected`, not an artifact).""",
)
