"""The NAS fan-out as a pipeline of its own, a step of other pipelines: create the optuna study →
`dsl.ParallelFor` workers (each asks the shared study for trials) → re-measure the front and retrain
the pick. The `nas_fanout` step of the edge-compression chain, and the heart of the `nas` pipeline
(pipelines/nas.py). On a cluster the study lives in the PostgreSQL named by the `nas_storage_secret`
Secret (platform config); locally in the storage the `storage` parameter names, or
$EDGECOMPRESS_NAS_STORAGE (the local runner sets an SQLite file). The number of workers is fixed
when the pipeline is compiled (KFP's `parallelism` is a compile-time constant).
"""

# No `from __future__ import annotations` here: KFP reads the annotations.
import inspect

from kfp import dsl

from edgecompress.components import KFP_TYPES
from edgecompress.components.nas_create_study.component import nas_create_study
from edgecompress.components.nas_finish.component import nas_finish
from edgecompress.components.nas_worker.component import nas_worker
from edgecompress.pipelines.platform import on_platform

FANOUT_NAME = "nas-fanout"
WORKERS = 2


def fanout_parameters() -> list[inspect.Parameter]:
    """The fan-out's settings: the three components' own (the same surfaces, so the same defaults)."""
    params: dict[str, inspect.Parameter] = {}
    for component in (nas_create_study, nas_worker, nas_finish):
        for name, spec in component.component_spec.inputs.items():
            kind = KFP_TYPES.get(spec.type)
            if kind is None or not spec.optional:  # artifacts, and the data inputs the DAG wires
                continue
            default = float(spec.default) if kind is float else spec.default
            p = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
            if params.setdefault(name, p).default != p.default:
                raise ValueError(f"NAS fan-out setting {name!r} has two defaults: {params[name]} and {p}")
    return list(params.values())


def build_fanout(workers: int = WORKERS, platform=None):
    """The fan-out as a pipeline (a step of another pipeline): inputs `dataset` and `reference_model`,
    output the retrained pick (`searched_model`)."""
    if workers < 1:
        from edgecompress.errors import ConfigError

        raise ConfigError(f"NAS fan-out: workers must be ≥ 1, got {workers}")
    settings = fanout_parameters()
    names = [p.name for p in settings]
    artifacts = [
        inspect.Parameter("dataset", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dsl.Input[dsl.Dataset]),
        inspect.Parameter("reference_model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dsl.Input[dsl.Model]),
    ]  # fmt: skip

    def nas_fanout(dataset, reference_model, *args):
        values = dict(zip(names, args, strict=True))
        create = nas_create_study(dataset=dataset, **values).set_display_name("nas-create-study")
        # Workers derive the study's name as create does (kfp.local 2.17 hands a loop task the loop
        # item in place of any other task's output), and start after it.
        with dsl.ParallelFor(items=list(range(workers)), parallelism=workers, name="nas-workers") as worker:
            trials = nas_worker(worker=worker, dataset=dataset, **values).set_display_name("nas-worker")
            trials.after(create)
        finish = nas_finish(
            worker_trials=dsl.Collected(trials.output), dataset=dataset, reference_model=reference_model,
            **{**values, "study_name": create.output},
        ).set_display_name("nas-finish")  # fmt: skip
        for task in (create, trials, finish):
            task.set_caching_options(False)  # the study changes under them: never a cached value
        return finish.outputs["searched_model"]

    nas_fanout.__signature__ = inspect.Signature(
        artifacts + [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in settings],
        return_annotation=dsl.Model,
    )
    body = on_platform(nas_fanout, platform, exit_task=False)
    description = f"NAS fan-out: create study → {workers} workers (ParallelFor) → finish"
    return dsl.pipeline(name=FANOUT_NAME, description=description)(body)


nas_fanout = build_fanout()
