"""KFP component: per-layer latency of a model on an emulated device class (ONNX Runtime's profiler)."""

from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.profile import HEADLINE, ProfileConfig, profile_step
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    ProfileConfig,
    Lineage,
)


def run(model, results, metrics, report, compared=None, **settings) -> None:
    out = profile_step(
        model.path,
        build(ProfileConfig, settings),
        results.path,
        report.path,
        compared.path if compared is not None else None,
        build(Lineage, settings),
    )
    m = out["models"]["model"]
    for key in HEADLINE:
        metrics.log_metric(key, m[key])
    metrics.metadata["device_class"] = out["device_class"]
    metrics.metadata["emulated"] = True
    metrics.metadata["parts_add_up"] = bool(m["parts_add_up"])


profile = technique_component(
    "profile",
    run,
    inputs={"model": "Model"},
    outputs={"results": "Artifact", "metrics": "Metrics", "report": "HTML"},
    optional_inputs={"compared": "Model"},
    surfaces=SURFACES,
    doc="""Per-node p50 on an emulated class, shares of the end-to-end p50 and the parts-add-up check;
    `compared` (e.g. the INT8 child) is profiled in alternating rounds and compared per op family.""",
)
