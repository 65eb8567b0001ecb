"""Retrain on drift: drift_check → dsl.If(drifted) → the edge-compression pipeline (train → compression
chain → evaluate → edge-benchmark → gate) on reference + new data → promote.

Triggers: a KFP recurring run of the compiled YAML (`edgecompress schedule`), the chart's CronJob,
and locally `edgecompress drift BATCH.npz --model models:/NAME@ALIAS --retrain`.
"""

# No `from __future__ import annotations` here: KFP reads the annotations.
import inspect
from collections.abc import Sequence

from kfp import dsl

from edgecompress.components.drift_check.component import drift_check, drift_retrain_field
from edgecompress.components.promote.component import promote
from edgecompress.pipelines.edge_compression import component_parameters
from edgecompress.pipelines.platform import on_platform

PIPELINE_NAME = "retrain-on-drift"
# Parameters of the inner edge-compression pipeline that come from drift_check's retrain plan.
FROM_PLAN = {"dataset": "source", "model": "model_spec", "registered_model_name": "registered_model_name"}
# drift_check inputs that are not pipeline parameters.
CHECK_FIXED = {"prepare_retrain": True}


def build_pipeline(chain: Sequence[str] = ("quantize",), platform=None):
    """The pipeline's parameters are drift_check's (batch, model, alpha, …) and the inner
    edge-compression pipeline's (epochs, device_classes, max_accuracy_drop, …), never written twice.
    `platform` (an `edgecompress.platform.PlatformConfig`) applies to every task, the inner ones too."""
    from edgecompress.pipelines.edge_compression import build_pipeline as build_edge_compression

    edge_compression = build_edge_compression(chain, platform, exit_handler=False)
    inner = [
        p
        for n, p in inspect.signature(edge_compression.pipeline_func).parameters.items()
        if n not in FROM_PLAN
    ]
    check_inputs = [p for n, p in component_parameters(drift_check).items() if n not in CHECK_FIXED]
    check_names = {p.name for p in check_inputs}
    params = check_inputs + [p for p in inner if p.name not in check_names]
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # required ones first
    names = [p.name for p in params]
    inner_names = [p.name for p in inner]

    def retrain_on_drift(*args):
        values = dict(zip(names, args, strict=True))
        check = drift_check(**{p.name: values[p.name] for p in check_inputs}, **CHECK_FIXED)
        check.set_caching_options(False)  # a new batch under the same path is new data
        with dsl.If(check.outputs["Output"] == True, name="drifted"):  # noqa: E712
            plan = {}
            for field in FROM_PLAN.values():
                task = drift_retrain_field(result=check.outputs["result"], field=field)
                task.set_display_name(f"retrain-{field}")
                plan[field] = task.output
            retrained = edge_compression(
                **{name: plan[field] for name, field in FROM_PLAN.items()},
                **{name: values[name] for name in inner_names},
            )
            # challenger (the gated child) vs champion (the model <class>-production points at now),
            # on the retrain's decision split (it holds part of the drifted batch), with the gate's settings
            promoted = promote(
                gate=retrained.output,
                dataset=check.outputs["retrain_dataset"],
                drift=check.outputs["result"],
                **{
                    n: plan[FROM_PLAN[n]] if n in FROM_PLAN else values[n]
                    for n in component_parameters(promote)
                },
            )
            promoted.set_caching_options(False)

    retrain_on_drift.__signature__ = inspect.Signature(params)
    description = (
        f"drift check → if drifted: train → {' → '.join(chain)} → evaluate → edge-benchmark → gate → promote"
    )
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(on_platform(retrain_on_drift, platform))


retrain_on_drift = build_pipeline()
