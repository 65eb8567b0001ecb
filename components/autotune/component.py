"""KFP component: accuracy-aware quantization auto-tuning (PTQ variants → mixed precision → QAT)."""

from edgecompress.components import stamp_model
from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.quantize import AutotuneConfig, autotune_step
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    AutotuneConfig,
    Lineage,
)


def run(model, dataset, tuned_model, results, report, metrics, **settings) -> bool:
    config = build(AutotuneConfig, settings)
    out = autotune_step(
        model.path,
        dataset.path,
        tuned_model.path,
        results.path,
        config,
        report.path,
        lineage_ctx=build(Lineage, settings),
    )
    result = out.extra["autotune_result"]
    stamp_model(tuned_model, out, autotune_passed=result["passed"], autotune_pick=result["pick"])
    results.metadata["passed"] = result["passed"]
    metrics.log_metric("trials", len(result["trials"]))
    for key, value in result["trials"][result["pick_index"]]["check"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    return result["passed"]


autotune = technique_component(
    "autotune",
    run,
    inputs={"model": "Model", "dataset": "Dataset"},
    outputs={"tuned_model": "Model", "results": "Artifact", "report": "HTML", "metrics": "Metrics"},
    surfaces=SURFACES,
    returns="bool",
    doc="""Stops at the first trial that keeps accuracy within `max_drop` (absolute, or relative to the
    parent) AND beats the parent on `objective` (latency on `device_class`, or size) by more than
    `min_gain`. Returns whether one passed; when none did, `tuned_model` is the closest trial, marked
    `autotune_passed = false`, and the report says why each trial failed. Each trial is a child run
    in MLflow.""",
)
