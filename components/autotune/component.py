"""KFP component: accuracy-aware quantization auto-tuning (PTQ variants → mixed precision → QAT)."""

from kfp import dsl

from edgecompress.quantize import AutotuneConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (AutotuneConfig, Lineage)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def autotune(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    tuned_model: dsl.Output[dsl.Model],
    results: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
    max_drop: float = 0.01,
    relative: bool = False,
    objective: str = "latency",
    device_class: str = "rpi4-emulated",
    farm_url: str = "",
    bench_min_runs: int = 200,
    bench_min_duration_s: float = 1.0,
    min_gain: float = 1.0,
    calibration_samples: int = 256,
    seed: int = 0,
    include_mixed: bool = True,
    include_qat: bool = True,
    qat_epochs: int = 2,
    qat_lr: float = 0.0001,
    qat_max_train_samples: int = 0,
    probe_samples: int = 1000,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
) -> bool:
    """Stops at the first trial that keeps accuracy within `max_drop` (absolute, or relative to the
    parent) AND beats the parent on `objective` (latency on `device_class`, or size) by more than
    `min_gain`. Returns whether one passed; when none did, `tuned_model` is the closest trial, marked
    `autotune_passed = false`, and the report says why each trial failed. Each trial is a child run
    in MLflow."""
    from edgecompress.components import stamp_model
    from edgecompress.params import build
    from edgecompress.quantize import AutotuneConfig, autotune_step
    from edgecompress.step import Lineage

    out = autotune_step(model.path, dataset.path, tuned_model.path, results.path, build(AutotuneConfig, locals()),
                        report.path, lineage_ctx=build(Lineage, locals()))  # fmt: skip
    result = out["autotune_result"]
    stamp_model(tuned_model, out, autotune_passed=result["passed"], autotune_pick=result["pick"])
    results.metadata["passed"] = result["passed"]
    metrics.log_metric("trials", len(result["trials"]))
    for key, value in result["trials"][result["pick_index"]]["check"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    return result["passed"]
