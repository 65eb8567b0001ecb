"""KFP component: benchmark a model on each requested device class (farm, or local emulation)."""

from edgecompress.components.factory import technique_component
from edgecompress.edge import EdgeBenchmarkConfig, benchmark_summary, edge_benchmark_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    EdgeBenchmarkConfig,
    Lineage,
)


def run(model, results, metrics, report, **settings) -> str:
    import json

    config = build(EdgeBenchmarkConfig, settings)
    out = edge_benchmark_step(model.path, config, results.path, report.path, build(Lineage, settings))
    for cls, r in out["results"].items():
        for q in ("p50", "p90", "p99"):
            metrics.log_metric(f"{cls}.{q}_ms", r["latency_ms"][q])
        metrics.metadata[f"{cls}.emulated"] = bool(r.get("emulated"))
    return json.dumps(benchmark_summary(out))


edge_benchmark = technique_component(
    "edge_benchmark",
    run,
    inputs={"model": "Model"},
    outputs={"results": "Artifact", "metrics": "Metrics", "report": "HTML"},
    surfaces=SURFACES,
    returns="str",
    doc="""Empty `farm_url` runs emulated device classes locally (labelled emulated in every result).
    Returns per device class a JSON summary (p50/p90/p99 ms, runs, provider, emulated, the model's
    sha256): the edge-compression pipeline runs one task per class under `dsl.ParallelFor` and gathers
    these with `dsl.Collected` for the gate.""",
)
