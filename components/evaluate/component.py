"""KFP component: accuracy, confusion matrix, size, MACs and 1-thread latency of an ONNX model."""

from edgecompress.components.factory import technique_component
from edgecompress.evaluate import EvaluateConfig, evaluate_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    EvaluateConfig,
    Lineage,
)


def run(model, dataset, results, metrics, classification, report, **settings) -> None:
    split = build(EvaluateConfig, settings).split
    out = evaluate_step(model.path, dataset.path, results.path, report.path, split, build(Lineage, settings))
    metrics.log_metric("accuracy", out["accuracy"])
    for key in ("params", "macs", "onnx_bytes", "gzip_bytes"):
        metrics.log_metric(key, out["stats"][key])
    if out["latency_ms"]:
        metrics.log_metric("p50_ms_1thread", out["latency_ms"]["p50"])
    classification.log_confusion_matrix(out["class_names"], out["confusion_matrix"])


evaluate = technique_component(
    "evaluate",
    run,
    inputs={"model": "Model", "dataset": "Dataset"},
    outputs={
        "results": "Artifact",
        "metrics": "Metrics",
        "classification": "ClassificationMetrics",
        "report": "HTML",
    },
    surfaces=SURFACES,
    doc="""`results` is the full JSON (read by the accuracy gate); `metrics` and `report` are for the KFP UI.""",
)
