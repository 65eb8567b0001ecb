"""KFP component: accuracy, confusion matrix, size, MACs and 1-thread latency of an ONNX model."""

from kfp import dsl

from edgecompress.evaluate import EvaluateConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (
    EvaluateConfig,
    Lineage,
)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    results: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.HTML],
    split: str = "test",
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`results` is the full JSON (read by the accuracy gate); `metrics` and `report` are for the KFP UI."""
    from edgecompress.evaluate import EvaluateConfig, evaluate_step
    from edgecompress.params import build
    from edgecompress.step import Lineage

    split = build(EvaluateConfig, locals()).split
    out = evaluate_step(model.path, dataset.path, results.path, report.path, split, build(Lineage, locals()))
    metrics.log_metric("accuracy", out["accuracy"])
    for key in ("params", "macs", "onnx_bytes", "gzip_bytes"):
        metrics.log_metric(key, out["stats"][key])
    if out["latency_ms"]:
        metrics.log_metric("p50_ms_1thread", out["latency_ms"]["p50"])
    classification.log_confusion_matrix(out["class_names"], out["confusion_matrix"])
