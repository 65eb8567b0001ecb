"""KFP component: benchmark a model on each requested device class (farm, or local emulation)."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def edge_benchmark(
    model: dsl.Input[dsl.Model],
    results: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    device_classes: list = ["rpi4-emulated", "jetson-orin-nano-emulated"],  # noqa: B006 (KFP default)
    farm_url: str = "",
    min_runs: int = 200,
    min_duration_s: float = 1.0,
    warmup_runs: int = 20,
    timeout_s: float = 600.0,
    pipeline_run_id: str = "",
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """Empty `farm_url` runs emulated device classes locally (labelled emulated in every result)."""
    from edgecompress.step import Lineage
    from edgecompress.steps import edge_benchmark_step

    settings = {"min_runs": min_runs, "min_duration_s": min_duration_s, "warmup_runs": warmup_runs}
    out = edge_benchmark_step(
        model.path,
        list(device_classes),
        results.path,
        report.path,
        farm_url or None,
        settings,
        timeout_s,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
    )
    for cls, r in out["results"].items():
        for q in ("p50", "p90", "p99"):
            metrics.log_metric(f"{cls}.{q}_ms", r["latency_ms"][q])
        metrics.metadata[f"{cls}.emulated"] = bool(r.get("emulated"))
