"""The one step runner every technique's step goes through (`run_step`), and its pieces: where
lineage goes, how a parent is loaded, how a child is exported, checked, saved and logged.

A step = validate its config(s) once -> check tracking -> load the dataset and the named parents
(torch or ONNX-only) -> the technique makes the child (`Child`: a torch module, or an ONNX file) ->
export + parity check (torch children) -> save -> log the model and its lineage (params
`<step>.<flat name>`) -> record the MLflow model id -> publish the Model artifact atomically ->
`StepResult`. train, prune, distill, nas, quantize and autotune are `run_step` calls; components and
CLI commands call those step functions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress import __version__, lineage
from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.export import (
    ModelPackage,
    check_parity,
    count_onnx_parameters,
    export_onnx,
    load_model_package,
    save_model_package,
)
from edgecompress.io import write_text

# What a child model inherits from its parent's model.json.
INHERITED_KEYS = ("spec", "input_shape", "num_classes", "class_names", "dataset_sha256", "dataset_name")


@dataclass
class Lineage:
    """Where a step records lineage. An empty `pipeline_run_id` (and no EDGECOMPRESS_PIPELINE_RUN_ID in
    the environment) makes a standalone run."""

    pipeline_run_id: str = field(default="", metadata={"help": "the pipeline run this step belongs to"})
    pipeline_name: str = field(default="standalone", metadata={"help": "the pipeline's name in MLflow"})
    experiment: str = field(default=lineage.DEFAULT_EXPERIMENT, metadata={"help": "MLflow experiment"})
    enabled: bool = field(default=True, metadata={"flat_name": "track", "help": "record lineage in MLflow"})

    def __post_init__(self) -> None:
        # a pipeline task finds its run in its environment (an input would defeat KFP's cache)
        self.pipeline_run_id = self.pipeline_run_id or os.environ.get(lineage.PIPELINE_RUN_ENV, "")
        # not a field: whether this step owns its parent run (and so ends it), not a setting
        self._standalone = not self.pipeline_run_id
        if not self.pipeline_run_id:
            self.pipeline_run_id = f"standalone-{uuid.uuid4().hex[:12]}"

    def check(self) -> None:
        if self.enabled:
            lineage.setup(self.experiment)

    def task(self, name: str, params: dict[str, Any] | None = None):
        if not self.enabled:
            return contextlib.nullcontext("")
        return lineage.task_run(
            self.pipeline_run_id,
            self.pipeline_name,
            name,
            self.experiment,
            params,
            end_parent=self._standalone,
        )


def write_report(path: Path | str, text: str) -> None:
    """Write a step's report (atomically) and, inside a tracked task, log it to the task's MLflow run."""
    write_text(Path(path), text)
    lineage.log_report(Path(path))


def dataset_meta(dataset: Dataset) -> dict[str, Any]:
    return {"sha256": dataset.digest, "name": dataset.name, "source": dataset.source}


def inherited_info(parent_info: dict[str, Any]) -> dict[str, Any]:
    return {k: parent_info.get(k) for k in INHERITED_KEYS}


def load_parent(model_dir: Path, dataset: Dataset, role: str = "model"):
    """A Model artifact with a torch module whose shapes fit the dataset: (package, module)."""
    from edgecompress.zoo import check_model_fits

    package = load_model_package(Path(model_dir))
    if not package.has_module:
        raise ModelError(
            f"the {role} {model_dir} has no torch module (module.pt): pruning and distillation need "
            "a trainable model, not an ONNX-only (e.g. already quantized) one"
        )
    if package.num_classes != dataset.num_classes:
        raise ConfigError(
            f"the {role} {model_dir} outputs {package.num_classes} classes; the dataset "
            f"{dataset.name!r} has {dataset.num_classes}"
        )
    module = package.load_module()
    check_model_fits(module, dataset.input_shape, dataset.num_classes)
    return package, module


def save_torch_child(model, dataset: Dataset, output_dir: Path, info: dict[str, Any]) -> ModelPackage:
    """Export a torch model to ONNX, check parity on validation data, and write the Model artifact
    (ONNX + module.pt, so the architecture round-trips) atomically."""
    import onnx

    from edgecompress.zoo import count_parameters

    with tempfile.TemporaryDirectory(prefix="edgecompress-child-") as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        export_onnx(model, dataset.input_shape, onnx_file)
        x_val, _ = dataset.split("val", 512)
        parity = check_parity(model, onnx_file, x_val)
        info = {
            **info,
            # one count everywhere: the deployed graph's (BatchNorm folded), as evaluate and run report;
            # torch's own count (BatchNorm affine and running-stat-free) is kept, labelled
            "params": count_onnx_parameters(onnx.load(str(onnx_file)))[0],
            "torch_params": count_parameters(model),
            "export_parity": parity.as_dict(),
            "package_version": __version__,
        }
        return save_model_package(Path(output_dir), info, onnx_file, module=model)


def log_child(
    package: ModelPackage,
    name: str,
    technique: str,
    dataset: Dataset | None,
    params: dict[str, Any],
    metrics: dict[str, float],
    ctx: Lineage,
    dataset_info: dict[str, Any] | None = None,
) -> str | None:
    """Record the model as an MLflow LoggedModel whose parent is the model it was made from, and
    write its id into the package. `dataset_info` replaces the dataset's own metadata (e.g. with the
    stored artifact's URI)."""
    if not ctx.enabled:
        return None
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    model_id = lineage.log_model(
        package.onnx_path,
        name,
        technique=technique,
        input_shape=package.info["input_shape"],
        num_classes=package.info["num_classes"],
        parent_model_id=package.info.get("parent_model_id"),
        dataset_meta=dataset_info or (dataset_meta(dataset) if dataset is not None else None),
        params=params,
        metrics=numeric,
        pipeline_run_id=ctx.pipeline_run_id,
    )
    package.record_model_id(model_id)
    return model_id


@dataclass
class Child:
    """What a technique makes from its inputs: a torch `module` (exported to ONNX and parity-checked
    by the runner) or an ONNX file (`onnx_path`, e.g. a quantized model); what model.json says about
    how it was made (`info`, over what the child inherits); the metrics and extra params of its
    LoggedModel; tags for it; outputs beside the model (`extra`, returned in `StepResult.extra`);
    files copied into the Model artifact; and `finish`, run on the saved (not yet published) package
    before it is logged: reports, measurements of the saved ONNX, more info (`package.update_info`)."""

    module: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    onnx_path: Path | None = None
    technique: str = ""  # the model's technique where it is not the step's (prune-structured, static-int8)
    name: str = ""  # the LoggedModel's name (default: "<dataset>-<technique>")
    params: dict[str, Any] = field(default_factory=dict)  # LoggedModel-only params (e.g. the NAS trial)
    tags: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    dataset_info: dict[str, Any] | None = None  # replaces the dataset's metadata on the LoggedModel
    finish: Callable[[ModelPackage, Child], None] | None = None


@dataclass
class StepInputs:
    """What the runner hands a technique: the dataset, the named parents it loaded (packages, and
    torch modules for those that needed one), the step's MLflow run id ("" untracked), its params, and
    a scratch folder that lives until the child is saved (e.g. for an ONNX child's file)."""

    dataset: Dataset
    packages: dict[str, ModelPackage]
    modules: dict[str, Any]
    run_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    workdir: Path = Path()


@dataclass
class StepResult:
    """What every technique's step returns: the saved Model artifact and its extra outputs (e.g.
    `stats` of a prune, `nas_summary`, `autotune_result`)."""

    package: ModelPackage
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any]:
        return self.package.info

    @property
    def model_id(self) -> str | None:
        return self.package.info.get("mlflow_model_id")


@dataclass
class Parent:
    """A named input model of a step: its directory (None: not given) and whether the technique
    needs its torch module (else an ONNX-only package is enough)."""

    path: Path | str | None
    torch: bool = True
    role: str = ""


def step_params(name: str, configs: Any) -> dict[str, Any]:
    """The one MLflow parameter naming of every step: each config's flat parameters
    (`edgecompress.params.flat_values`, the names of the CLI and the component) under the step's name,
    e.g. `prune.ratio`, `quantize.calibration_method`, `train.epochs`."""
    from edgecompress.params import flat_values

    out: dict[str, Any] = {}
    for config in configs:
        for key, value in flat_values(config).items():
            if f"{name}.{key}" in out:
                raise ConfigError(f"{name}: the setting {key!r} is defined by two of its configs")
            out[f"{name}.{key}"] = value
    return out


def _as_tuple(configs: Any) -> tuple[Any, ...]:
    return tuple(configs) if isinstance(configs, list | tuple) else (configs,)


def _load_parents(parents: dict[str, Parent], dataset: Dataset) -> tuple[dict, dict]:
    packages, modules = {}, {}
    for name, parent in parents.items():
        if parent.path is None:
            continue
        if parent.torch:
            packages[name], modules[name] = load_parent(Path(parent.path), dataset, parent.role or name)
        else:
            packages[name] = load_model_package(Path(parent.path))
    return packages, modules


def dataset_model_info(dataset: Dataset) -> dict[str, Any]:
    """What model.json says about the data a model was made for (a child without a parent model)."""
    return {
        "spec": None,
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,
        "dataset_sha256": dataset.digest,
        "dataset_name": dataset.name,
    }


def _save_child(child: Child, dataset: Dataset, directory: Path, info: dict[str, Any]) -> ModelPackage:
    if child.module is not None:
        return save_torch_child(child.module, dataset, directory, info)
    if child.onnx_path is None:
        raise ModelError("a technique's child needs a torch module or an ONNX file")
    return save_model_package(directory, {**info, "package_version": __version__}, Path(child.onnx_path))


def run_step(
    name: str,
    configs: Any,
    dataset_path: Path | str,
    output_dir: Path | str,
    make: Callable[[StepInputs], Child],
    parents: dict[str, Parent] | None = None,
    lineage_ctx: Lineage | None = None,
    prepare: Callable[[StepInputs], dict[str, Any] | None] | None = None,
    technique: str = "",
) -> StepResult:
    """THE step of every technique: validate its config(s) once -> check tracking -> load the dataset
    and the named `parents` (torch or ONNX-only) -> `prepare` (the technique's own checks of its inputs,
    before any work; may return more params) -> an MLflow task run named `name` with the params ->
    `make` the child -> save it (a torch child exported to ONNX with a parity check) into a staging
    folder -> `child.finish` -> publish the Model artifact atomically at `output_dir` -> log it as a
    LoggedModel (parent: the first parent given) -> record its id in the published model.json.

    MLflow params: `technique` plus every config's flat parameters under the step's name
    (`<name>.<flat name>`, see `step_params`) plus what `prepare` returns; the LoggedModel gets those
    and `child.params`. The child inherits `spec`, shapes, classes and the dataset from its first
    parent (or, without one, from the dataset); `child.info` overrides."""
    from edgecompress.data import load_dataset
    from edgecompress.io import atomic_path

    ctx = lineage_ctx or Lineage()
    configs = _as_tuple(configs)
    for config in configs:
        config.validate()
    technique = technique or name
    params = {"technique": technique, **step_params(name, configs)}
    ctx.check()
    dataset = load_dataset(Path(dataset_path))
    packages, modules = _load_parents(parents or {}, dataset)
    inputs = StepInputs(dataset, packages, modules, params=params)
    if prepare is not None:
        params.update(prepare(inputs) or {})
    lineage_parent = next(iter(packages.values()), None)
    with ctx.task(name, params) as run_id, tempfile.TemporaryDirectory(prefix="edgecompress-step-") as tmp:
        inputs.run_id, inputs.workdir = run_id or "", Path(tmp) / "work"
        inputs.workdir.mkdir()
        child = make(inputs)
        child_technique = child.technique or technique
        info = {
            **(inherited_info(lineage_parent.info) if lineage_parent else dataset_model_info(dataset)),
            "technique": child_technique,
            "parent_model_id": lineage_parent.info.get("mlflow_model_id") if lineage_parent else None,
            **child.info,
        }
        package = _save_child(child, dataset, Path(tmp) / "model", info)
        for file_name, source in child.files.items():
            shutil.copyfile(source, package.directory / file_name)
        if child.finish is not None:
            child.finish(package, child)
        # published before it is logged: a tracking server failing now costs the lineage, not the work
        # (the error still fails the step; tests/lineage/test_lineage_server.py)
        with atomic_path(Path(output_dir), directory=True) as out:
            shutil.copytree(package.directory, out, dirs_exist_ok=True)
        package = ModelPackage(Path(output_dir), package.info)
        model_id = log_child(
            package,
            child.name or f"{dataset.name}-{child_technique}",
            child_technique,
            dataset,
            {**params, **child.params},
            child.metrics,
            ctx,
            child.dataset_info,
        )
        if model_id and child.tags:
            lineage.set_model_tags(model_id, child.tags)
    return StepResult(package, child.extra)


def run_torch_step(
    technique: str,
    config: Any,
    model_dir: Path,
    dataset_path: Path,
    output_dir: Path,
    transform: Callable[[Any, Dataset], Child],
    lineage_ctx: Lineage | None = None,
) -> StepResult:
    """`run_step` for the common case: one torch parent (`model`) in, a torch child out."""
    return run_step(
        technique,
        config,
        dataset_path,
        output_dir,
        lambda inputs: transform(inputs.modules["model"], inputs.dataset),
        parents={"model": Parent(model_dir, role=f"model to {technique}")},
        lineage_ctx=lineage_ctx,
    )
