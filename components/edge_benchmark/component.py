"""KFP component: benchmark a model on each requested device class (farm, or local emulation)."""

from kfp import dsl

from edgecompress.edge import EdgeBenchmarkConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (
    EdgeBenchmarkConfig,
    Lineage,
)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def edge_benchmark(
    model: dsl.Input[dsl.Model],
    results: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    device_classes: list = ["rpi4-emulated", "jetson-orin-nano-emulated"],  # noqa: B006 (KFP default)
    farm_url: str = "",
    bench_min_runs: int = 200,
    bench_min_duration_s: float = 1.0,
    bench_warmup_runs: int = 20,
    timeout_s: float = 600.0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Empty `farm_url` runs emulated device classes locally (labelled emulated in every result)."""
    from edgecompress.edge import EdgeBenchmarkConfig, edge_benchmark_step
    from edgecompress.params import build
    from edgecompress.step import Lineage

    out = edge_benchmark_step(model.path, build(EdgeBenchmarkConfig, locals()), results.path, report.path,
                              build(Lineage, locals()))  # fmt: skip
    for cls, r in out["results"].items():
        for q in ("p50", "p90", "p99"):
            metrics.log_metric(f"{cls}.{q}_ms", r["latency_ms"][q])
        metrics.metadata[f"{cls}.emulated"] = bool(r.get("emulated"))
