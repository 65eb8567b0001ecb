"""The edge-compression pipeline: train → compress (a chain of steps) → evaluate parent and child →
edge-benchmark both on each device class → target-ISA check → accuracy gate (register or reject).

The benchmarks fan out: per model (parent, child) a `dsl.ParallelFor` over `device_classes` runs one
edge-benchmark task per class (at most `benchmark_parallelism` at once; each its own farm class, and
on a cluster its own node selector where the platform config sets `benchmark_class_label`); their
JSON summaries reach the gate through `dsl.Collected`, which also orders the gate after every one.

The compression chain is a compile-time choice (`build_pipeline(chain=[...])`, `edgecompress run
--chain …`, `edgecompress compile --chain …`): each step in it is its own task whose output model's
parent is the previous step's model.

The pipeline's parameters are not written here: they are the components' own parameters (which a
test checks against each technique's config dataclass). Train, evaluate, edge-benchmark and gate
parameters keep their names (`epochs`, `max_accuracy_drop`, …); a chain step's are prefixed with the
step (`quantize_method`, `prune_ratio`, `autotune_device_class`, …), except the settings every task
shares (`seed`, `farm_url`, `bench_*`, lineage), which are one pipeline parameter each.
"""

# No `from __future__ import annotations` here or in components: KFP reads the annotations.
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes

from edgecompress.components import KFP_TYPES
from edgecompress.components.accuracy_gate.component import accuracy_gate
from edgecompress.components.autotune.component import autotune
from edgecompress.components.distill.component import distill
from edgecompress.components.edge_benchmark.component import edge_benchmark
from edgecompress.components.evaluate.component import evaluate
from edgecompress.components.isa_check.component import isa_check
from edgecompress.components.load_dataset.component import load_dataset
from edgecompress.components.nas.component import nas
from edgecompress.components.prune.component import prune
from edgecompress.components.quantize.component import quantize
from edgecompress.components.train.component import train
from edgecompress.pipelines.nas_fanout import build_fanout, nas_fanout
from edgecompress.pipelines.platform import benchmark_node_selector, on_platform

PIPELINE_NAME = "edge-compression"
DEFAULT_CHAIN = ("quantize",)
# At most this many edge-benchmark tasks of one model at once (KFP's ParallelFor parallelism).
BENCHMARK_PARALLELISM = 2
# Inputs another task's output feeds (the collected benchmarks): never pipeline parameters.
FED = frozenset({("accuracy_gate", "parent_benchmarks"), ("accuracy_gate", "child_benchmarks")})
# Set by the pipeline for every task, never a parameter of one task. `pipeline_run_id` is left empty:
# tasks read the run from their environment (EDGECOMPRESS_PIPELINE_RUN_ID), since an input that
# changes every run would change KFP's cache key of every cached task.
LINEAGE_INPUTS = ("pipeline_run_id", "pipeline_name")
# One pipeline parameter each, handed to every task that has an input of that name.
SHARED = (
    "seed",
    "farm_url",
    "bench_min_runs",
    "bench_min_duration_s",
    "bench_warmup_runs",
    "experiment",
    "track",
)
# Pipeline parameters that feed a component input of another name (one setting, one parameter): the
# auto-tuner keeps the gate's accuracy budget and speed-up unless told otherwise.
LINKED = {
    ("load_dataset", "source"): "dataset",
    ("train", "model_spec"): "model",
    ("autotune", "max_drop"): "max_accuracy_drop",
    ("autotune", "min_gain"): "min_speedup",
    ("quantize", "target"): "quantize_device_class",  # quantized for the class it is checked on
}


@dataclass(frozen=True)
class ChainStep:
    """A compression step: its component, how its input artifacts connect, and its model output."""

    component: Any
    output: str
    connect: Callable[[Any, "ChainContext"], dict[str, Any]]
    cache: bool = True  # False where the task measures latency: a measurement is never a cached value
    # A step that is a pipeline of its own (a fan-out): builds it with the platform config and workers
    build: Callable[..., Any] | None = None


@dataclass
class ChainContext:
    """What a chain step can connect to: the dataset and the trained (teacher) model."""

    dataset: Any
    teacher: Any


def _distill_inputs(parent: Any, ctx: ChainContext) -> dict[str, Any]:
    """The teacher is the trained model; the student is the previous step's model (e.g. the pruned
    one), or a fresh `distill_student_spec` when distill comes first in the chain."""
    student = {} if parent is ctx.teacher else {"student": parent}
    return {"teacher": ctx.teacher, "dataset": ctx.dataset, **student}


CHAIN_STEPS: dict[str, ChainStep] = {
    "quantize": ChainStep(
        quantize, "quantized_model", lambda m, c: {"model": m, "dataset": c.dataset}, False
    ),
    "autotune": ChainStep(autotune, "tuned_model", lambda m, c: {"model": m, "dataset": c.dataset}, False),
    "prune": ChainStep(prune, "pruned_model", lambda m, c: {"model": m, "dataset": c.dataset}),
    "distill": ChainStep(distill, "distilled_model", _distill_inputs),
    # NAS: the trained model is the reference the search is measured against and its lineage parent;
    # later steps (distill from the trained teacher, quantize) take the retrained pick.
    "nas": ChainStep(nas, "searched_model", lambda m, c: {"dataset": c.dataset, "reference_model": m}, False),
    # NAS fanned out over parallel worker tasks sharing one optuna study (pipelines/nas_fanout.py)
    "nas_fanout": ChainStep(
        nas_fanout, "Output", lambda m, c: {"dataset": c.dataset, "reference_model": m}, False, build_fanout
    ),
}
# Tasks outside the chain, in the order their parameters are listed.
FIXED_TASKS = {
    "load_dataset": load_dataset,
    "train": train,
    "evaluate": evaluate,
    "edge_benchmark": edge_benchmark,
    "isa_check": isa_check,
    "accuracy_gate": accuracy_gate,
}


def component_parameters(component: Any) -> dict[str, inspect.Parameter]:
    """A component's non-artifact inputs as signature parameters (name, type, default)."""
    out = {}
    for name, spec in component.component_spec.inputs.items():
        kind = KFP_TYPES.get(spec.type)
        if kind is None or name in LINEAGE_INPUTS:
            continue
        default = spec.default if spec.optional else inspect.Parameter.empty
        if kind is float and isinstance(default, int):
            default = float(default)
        out[name] = inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind
        )
    return out


def _tasks(chain: Sequence[str]) -> dict[str, Any]:
    return {**FIXED_TASKS, **{step: CHAIN_STEPS[step].component for step in chain}}


def pipeline_parameter_name(task: str, component_input: str) -> str:
    if component_input in SHARED:
        return component_input
    if (task, component_input) in LINKED:
        return LINKED[(task, component_input)]
    return component_input if task in FIXED_TASKS else f"{task}_{component_input}"


Routes = dict[str, list[tuple[str, str]]]


def routes_for(tasks: dict[str, Any], name: Callable[[str, str], str], fed=frozenset()) -> Routes:
    """pipeline parameter (named by `name(task, component input)`) -> the (task, input) pairs it feeds;
    `fed`: (task, input) pairs another task's output feeds (no pipeline parameter)."""
    routes: Routes = {}
    for task, component in tasks.items():
        for component_input in component_parameters(component):
            if (task, component_input) in fed:
                continue
            routes.setdefault(name(task, component_input), []).append((task, component_input))
    return routes


def signature_for(tasks: dict[str, Any], routes: Routes) -> inspect.Signature:
    """The pipeline's parameters: each takes its type and default from the components it feeds, which
    must agree (one setting, one default)."""
    params = []
    for name, pairs in routes.items():
        found = {(t, i): component_parameters(tasks[t])[i] for t, i in pairs}
        kinds = {(p.annotation, repr(p.default)) for p in found.values()}
        if len(kinds) != 1:
            raise ValueError(f"pipeline parameter {name!r} feeds inputs that disagree: {found}")
        params.append(next(iter(found.values())).replace(name=name))
    return inspect.Signature(params, return_annotation=dsl.Artifact)


def inputs_for(task: str, params: dict[str, Any], routes: Routes) -> dict[str, Any]:
    """The component inputs of one task, from the pipeline's parameters."""
    return {i: params[name] for name, pairs in routes.items() for t, i in pairs if t == task}


def parameter_routes(chain: Sequence[str]) -> Routes:
    """pipeline parameter -> the (task, component input) pairs it feeds."""
    return routes_for(_tasks(chain), pipeline_parameter_name, FED)


def _signature(chain: Sequence[str]) -> inspect.Signature:
    return signature_for(_tasks(chain), parameter_routes(chain))


def _inputs(task: str, params: dict[str, Any], chain: Sequence[str]) -> dict[str, Any]:
    return inputs_for(task, params, parameter_routes(chain))


def build_pipeline(
    chain: Sequence[str] = DEFAULT_CHAIN,
    platform=None,
    exit_handler: bool = True,
    benchmark_parallelism: int = BENCHMARK_PARALLELISM,
    name: str = PIPELINE_NAME,
    workers: int | None = None,
):
    """A pipeline function for one compression chain (its steps run in the order given). `platform`
    (an `edgecompress.platform.PlatformConfig`) sets the Kubernetes options of its tasks and, unless
    `exit_handler=False` (nested in another pipeline), the exit task that ends the MLflow parent run.
    `benchmark_parallelism`: at most this many edge-benchmark tasks of one model at once (0: no limit).
    `workers`: parallel workers of a fan-out step (default: the step's own)."""
    unknown = [s for s in chain if s not in CHAIN_STEPS]
    if not chain or unknown:
        from edgecompress.errors import ConfigError

        raise ConfigError(
            f"compression chain {list(chain)}: unknown steps {unknown}; available: {sorted(CHAIN_STEPS)}"
        )
    if (
        isinstance(benchmark_parallelism, bool)
        or not isinstance(benchmark_parallelism, int)
        or benchmark_parallelism < 0
    ):
        from edgecompress.errors import ConfigError

        raise ConfigError(
            f"benchmark parallelism must be an integer ≥ 0 (0: no limit), got {benchmark_parallelism!r}"
        )
    class_label = platform.benchmark_class_label if platform is not None else ""
    chain = list(chain)
    signature = _signature(chain)
    names = list(signature.parameters)
    # a step that is a pipeline itself is built here: KFP builds no pipeline inside another's body
    components = {
        s: CHAIN_STEPS[s].build(platform=platform, **({"workers": workers} if workers else {}))
        if CHAIN_STEPS[s].build
        else CHAIN_STEPS[s].component
        for s in chain
    }

    def edge_compression(*args):
        params = dict(zip(names, args, strict=True))
        lineage = {"pipeline_name": name}
        # Cached like train/evaluate: a data set is named by its source (a new batch under the same
        # path needs a new path or --cache load_dataset=off), and a cache hit here keeps the
        # artifact downstream tasks' cache keys are computed from.
        data = load_dataset(**_inputs("load_dataset", params, chain), **lineage)
        dataset = data.outputs["dataset"]
        trained = train(dataset=dataset, **_inputs("train", params, chain), **lineage)
        parent = child = trained.outputs["model"]
        ctx = ChainContext(dataset, parent)
        for step_name in chain:
            step = CHAIN_STEPS[step_name]
            task = components[step_name](
                **step.connect(child, ctx), **_inputs(step_name, params, chain), **lineage
            )
            task.set_display_name(step_name)
            task.set_caching_options(step.cache)
            child = task.outputs[step.output]
        evals, benches = {}, {}
        bench_inputs = _inputs("edge_benchmark", params, chain)
        for role, model_out in (("parent", parent), ("child", child)):
            ev = evaluate(model=model_out, dataset=dataset, **_inputs("evaluate", params, chain), **lineage)
            ev.set_display_name(f"evaluate-{role}")
            evals[role] = ev
            # one task per device class (a class name feeds the task's device_classes, which takes a
            # comma-separated string as well as a list)
            classes = bench_inputs["device_classes"]
            with dsl.ParallelFor(classes, parallelism=benchmark_parallelism, name=f"benchmark-{role}") as cls:
                bench = edge_benchmark(model=model_out, **{**bench_inputs, "device_classes": cls}, **lineage)
                bench.set_display_name(f"edge-benchmark-{role}")
                bench.set_caching_options(False)  # latency is a measurement, never a cached value
                if class_label:  # on-node mode: this class's task on the nodes labelled with it
                    selector = benchmark_node_selector(
                        device_class=cls, label=class_label, labels=platform.benchmark_node_selector
                    ).set_display_name(f"node-selector-{role}")
                    kubernetes.add_node_selector_json(bench, selector.output)
            benches[role] = dsl.Collected(bench.outputs["Output"])
        # The child's numerics on each target class's ISA (a no-op for classes of the build machine's).
        isa = isa_check(
            parent_model=parent, child_model=child, dataset=dataset, **_inputs("isa_check", params, chain)
        )
        isa.set_caching_options(False)
        gate = accuracy_gate(
            parent_model=parent,
            child_model=child,
            dataset=dataset,
            parent_evaluation=evals["parent"].outputs["results"],
            child_evaluation=evals["child"].outputs["results"],
            isa_check=isa.outputs["results"],
            # the collected benchmarks also order the gate after every benchmark task: its interleaved
            # rounds never share the devices with another benchmark
            parent_benchmarks=benches["parent"],
            child_benchmarks=benches["child"],
            **_inputs("accuracy_gate", params, chain),
            **lineage,
        )
        gate.set_caching_options(False)
        return gate.outputs["results"]

    edge_compression.__signature__ = signature
    edge_compression.__doc__ = f"train → {' → '.join(chain)} → evaluate → edge-benchmark → isa-check → gate"
    return dsl.pipeline(name=name, description=edge_compression.__doc__)(
        on_platform(edge_compression, platform, exit_handler)
    )


edge_compression = build_pipeline()
