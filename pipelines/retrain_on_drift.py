"""Retrain on drift: drift_check → dsl.If(drifted) → the edge-compression pipeline (train → compression
chain → evaluate → edge-benchmark → gate) on reference + new data → promote.

Triggers: a KFP recurring run of the compiled YAML (`edgecompress schedule`), the chart's CronJob,
and locally `edgecompress drift BATCH.npz --model models:/NAME@ALIAS --retrain`.
"""

# No `from __future__ import annotations` here: KFP reads the annotations.
from collections.abc import Sequence

from kfp import dsl

from edgecompress.components.drift_check.component import drift_check, drift_retrain_field
from edgecompress.components.promote.component import promote

PIPELINE_NAME = "retrain-on-drift"


def build_pipeline(chain: Sequence[str] = ("quantize",)):
    from edgecompress.pipelines.edge_compression import build_pipeline as build_edge_compression

    edge_compression = build_edge_compression(chain)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"drift check → if drifted: train → {' → '.join(chain)} → "
        "evaluate → edge-benchmark → gate → promote",
    )
    def retrain_on_drift(
        batch: str,
        model: str,
        alpha: float = 0.05,
        permutations: int = 200,
        reference_samples: int = 2000,
        epochs: int = 5,
        batch_size: int = 64,
        seed: int = 0,
        calibration_samples: int = 256,
        device_classes: list = ["rpi4-emulated", "jetson-orin-nano-emulated"],  # noqa: B006
        farm_url: str = "",
        bench_min_runs: int = 200,
        bench_min_duration_s: float = 1.0,
        max_accuracy_drop: float = 0.01,
        min_speedup: float = 1.0,
        experiment: str = "edgecompress",
    ):
        check = drift_check(
            batch=batch,
            model=model,
            alpha=alpha,
            permutations=permutations,
            reference_samples=reference_samples,
            seed=seed,
        )
        check.set_caching_options(False)  # a new batch under the same path is new data
        with dsl.If(check.outputs["Output"] == True, name="drifted"):  # noqa: E712
            plan = {}
            for field in ("source", "model_spec", "registered_model_name"):
                task = drift_retrain_field(result=check.outputs["result"], field=field)
                task.set_display_name(f"retrain-{field}")
                plan[field] = task.output
            retrained = edge_compression(
                dataset=plan["source"], model=plan["model_spec"], epochs=epochs,
                batch_size=batch_size, seed=seed, calibration_samples=calibration_samples,
                device_classes=device_classes, farm_url=farm_url, bench_min_runs=bench_min_runs,
                bench_min_duration_s=bench_min_duration_s, max_accuracy_drop=max_accuracy_drop,
                min_speedup=min_speedup, registered_model_name=plan["registered_model_name"],
                experiment=experiment, track=True,
            )  # fmt: skip
            promoted = promote(gate=retrained.output, device_classes=device_classes)
            promoted.set_caching_options(False)

    return retrain_on_drift


retrain_on_drift = build_pipeline()
