"""KFP component: the units' results of a pruning sensitivity analysis joined (the fan-in)."""

from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.prune.sensitivity import SensitivityConfig, sensitivity_combine_step

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (SensitivityConfig,)


def run(parts, results, report, **settings) -> str:
    import json

    out = sensitivity_combine_step(parts, build(SensitivityConfig, settings), results.path, report.path)
    results.metadata["units"] = out["units"]
    results.metadata["layers"] = len(out["accuracy"])
    return json.dumps(out["suggested_layer_ratios"])


sensitivity_combine = technique_component(
    "sensitivity_combine",
    run,
    data={"parts": "list"},
    outputs={"results": "Artifact", "report": "HTML"},
    surfaces=SURFACES,
    returns="str",
    doc="""`parts`: the `sensitivity_unit` results (`dsl.Collected`, JSON strings, any order). Writes the
    analysis (the same result as the one-process analysis of `prune --sensitivity`) and its report;
    returns the suggested per-layer ratios as JSON (`{}` unless `max_drop` > 0), which `prune`'s
    `layer_ratios` accepts.""",
)
