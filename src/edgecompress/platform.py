"""How pipeline tasks run on a Kubernetes cluster: which Secrets feed their credentials, where the
on-node benchmark runs, GPU limits for training, caching per task, and the components image.

A plain dataclass (no KFP imports): `edgecompress.pipelines.platform.apply_platform_config` applies
it to the tasks of a pipeline with kfp-kubernetes when the pipeline is built. Credentials are never
values here, only the names of the Kubernetes Secrets (and keys) that hold them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError

# Secret data key -> environment variable, per Secret.
MLFLOW_SECRET_KEYS = {
    "tracking-uri": "MLFLOW_TRACKING_URI",
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
}
S3_SECRET_KEYS = {
    "access-key-id": "AWS_ACCESS_KEY_ID",
    "secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "endpoint-url": "MLFLOW_S3_ENDPOINT_URL",
}
# The same endpoint for edgecompress's own S3 reads (boto3 reads AWS_ENDPOINT_URL: `dataset=s3://…`,
# drift batches on MinIO); one key maps to one variable per mapping, so it is a second mapping.
S3_ENDPOINT_KEYS = {"endpoint-url": "AWS_ENDPOINT_URL"}
FARM_SECRET_KEYS = {"client-token": "EDGECOMPRESS_FARM_CLIENT_TOKEN"}
# The NAS fan-out's optuna storage: the URL without its password (it lands in reports), and the
# password where libpq (psycopg) reads it.
NAS_STORAGE_SECRET_KEYS = {"url": "EDGECOMPRESS_NAS_STORAGE", "password": "PGPASSWORD"}

# Tasks that measure (latency, a device's numerics, drift on a new batch) or act (promotion) every
# run: never cached, whatever --cache says.
NEVER_CACHED = (
    "accuracy_gate",
    "autotune",
    "drift_check",
    "edge_benchmark",
    "end_pipeline_run",
    "isa_check",
    "nas",
    "nas_create_study",
    "nas_finish",
    "nas_worker",
    "promote",
    "quantize",
)
RESOURCE_KEYS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
# Per-component requests and limits. Memory request: the task's peak RSS (process tree) measured on
# the default run (`edgecompress run`: digits, cnn, 10 epochs, quantize, MLflow on; psutil every
# 0.1 s; d9a55b6+) rounded up: load_dataset 538 MiB, train 648, evaluate 606, quantize 561,
# accuracy_gate 556, edge_benchmark 506, isa_check 332; and with --chain prune,distill,autotune
# (3 epochs): prune 685, distill 649, autotune 695. Limit: twice the request. The training components
# (train, prune, distill, nas, autotune) share one size (nas not measured); the others (drift_check,
# promote, the exit task, the plan fields: not measured) the general one. Larger data sets and models need more:
# `--memory COMPONENT=REQUEST:LIMIT`, `--cpu …` (docs/kubernetes.md).
_GENERAL = {"cpu_request": "500m", "cpu_limit": "2", "memory_request": "768Mi", "memory_limit": "1536Mi"}
_TRAINING = {"cpu_request": "1", "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "2Gi"}
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    **dict.fromkeys(
        (
            "load_dataset",
            "evaluate",
            "quantize",
            "accuracy_gate",
            "edge_benchmark",
            "drift_check",
            "promote",
            "drift_retrain_field",
            "end_pipeline_run",
            "benchmark_node_selector",
            # the sensitivity fan-out (not measured; a unit task holds the model and prunes copies of it)
            "sensitivity_units",
            "sensitivity_unit",
            "sensitivity_combine",
            "nas_create_study",
        ),
        _GENERAL,
    ),
    **dict.fromkeys(("train", "prune", "distill", "nas", "nas_worker", "nas_finish", "autotune"), _TRAINING),
    "isa_check": {**_GENERAL, "memory_request": "512Mi", "memory_limit": "1Gi"},
}

TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")
# PlatformConfig's fields that list component names (stored as tuples, checked against the components)
COMPONENT_LISTS = (
    "tracked_components",
    "farm_components",
    "study_components",
    "benchmark_components",
    "training_components",
    "retry_components",
)


@dataclass
class Toleration:
    key: str
    value: str = ""
    effect: str = "NoSchedule"
    operator: str = "Equal"

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """`key=value:Effect`, `key:Effect` (operator Exists) or `key=value` (NoSchedule)."""
        body, _, effect = text.partition(":")
        key, sep, value = body.partition("=")
        return cls(key=key, value=value, effect=effect or "NoSchedule", operator="Equal" if sep else "Exists")


def _resources(overrides: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    out = {name: dict(values) for name, values in DEFAULT_RESOURCES.items()}
    for name, values in overrides.items():
        out.setdefault(name, {}).update(values)
    return out


@dataclass
class PlatformConfig:
    """Kubernetes settings for the tasks of a pipeline. Empty names switch a feature off."""

    # Components image for every edgecompress task ("" = keep edgecompress.settings.component_image()).
    image: str = ""
    image_pull_secret: str = ""
    image_pull_policy: str = ""  # "", Always, IfNotPresent, Never
    # Secrets mounted as environment variables (optional=True: a missing Secret does not block a run).
    mlflow_secret: str = "edgecompress-mlflow"
    s3_secret: str = "edgecompress-s3"
    farm_secret: str = "edgecompress-farm"
    nas_storage_secret: str = "edgecompress-nas-storage"  # keys `url`, `password` (NAS_STORAGE_SECRET_KEYS)
    secrets_optional: bool = True
    # Which components take which Secrets.
    tracked_components: tuple[str, ...] = (
        "load_dataset",
        "train",
        "quantize",
        "prune",
        "distill",
        "nas",
        "nas_create_study",
        "nas_worker",
        "nas_finish",
        "evaluate",
        "edge_benchmark",
        "accuracy_gate",
        "drift_check",
        "promote",
        "end_pipeline_run",
    )
    farm_components: tuple[str, ...] = ("edge_benchmark",)
    # The NAS fan-out's tasks, which share one optuna study in the storage of `nas_storage_secret`.
    study_components: tuple[str, ...] = ("nas_create_study", "nas_worker", "nas_finish")
    # Pod label the chart's NetworkPolicy admits to the farm controller, set on the farm components.
    farm_client_label: dict[str, str] = field(default_factory=lambda: {"edgecompress.io/farm-client": "true"})
    # On-node benchmark mode: pin the benchmark tasks to device nodes.
    benchmark_components: tuple[str, ...] = ("edge_benchmark",)
    benchmark_node_selector: dict[str, str] = field(default_factory=dict)
    # On-node mode per device class: each class's benchmark task (one per class, a ParallelFor) also
    # selects nodes whose label `benchmark_class_label` is the class's name ("" = off).
    benchmark_class_label: str = ""
    benchmark_tolerations: list[Toleration] = field(default_factory=list)
    # Training on GPU nodes: accelerator limit (0 = CPU) for these components.
    training_components: tuple[str, ...] = ("train", "distill", "nas", "nas_worker", "nas_finish")
    train_gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    # Caching per component (True/False); components not listed keep the pipeline's own choice; those
    # in NEVER_CACHED cannot be switched on.
    caching: dict[str, bool] = field(default_factory=dict)
    # CPU/memory requests and limits per component ({"train": {"memory_limit": "4Gi"}}), over the
    # measured defaults (DEFAULT_RESOURCES); Kubernetes quantities.
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    # Retries for the network-bound tasks (the farm, the registry): count and first backoff.
    retry_components: tuple[str, ...] = ("edge_benchmark", "isa_check", "promote")
    retries: int = 3
    retry_backoff_s: int = 30
    # Pod securityContext for the task containers (None: the cluster's defaults).
    run_as_user: int | None = None

    def __post_init__(self) -> None:
        self.benchmark_tolerations = [
            t if isinstance(t, Toleration) else Toleration(**t) for t in self.benchmark_tolerations
        ]
        self.resources = _resources(self.resources)
        for name in COMPONENT_LISTS:
            setattr(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        for tol in self.benchmark_tolerations:
            if tol.effect not in TOLERATION_EFFECTS:
                raise ConfigError(
                    f"platform config: toleration {tol.key!r} effect {tol.effect!r}; "
                    f"expected one of {TOLERATION_EFFECTS}"
                )
            if tol.operator not in TOLERATION_OPERATORS:
                raise ConfigError(
                    f"platform config: toleration {tol.key!r} operator {tol.operator!r}; "
                    f"expected one of {TOLERATION_OPERATORS}"
                )
            if not tol.key:
                raise ConfigError("platform config: a toleration needs a key")
        if not isinstance(self.train_gpus, int) or isinstance(self.train_gpus, bool) or self.train_gpus < 0:
            raise ConfigError(
                f"platform config: train_gpus must be a non-negative integer, got {self.train_gpus!r}"
            )
        if self.image_pull_policy not in ("", "Always", "IfNotPresent", "Never"):
            raise ConfigError(
                f"platform config: image_pull_policy {self.image_pull_policy!r}; "
                "expected Always, IfNotPresent or Never"
            )
        for name, value in self.caching.items():
            if not isinstance(value, bool):
                raise ConfigError(f"platform config: caching[{name!r}] must be true or false, got {value!r}")
            if value and name in NEVER_CACHED:
                raise ConfigError(
                    f"platform config: caching {name}=on refused: {name} measures or acts every run and is "
                    f"never cached (never cached: {', '.join(NEVER_CACHED)})"
                )
        for name, values in self.resources.items():
            unknown = sorted(set(values) - set(RESOURCE_KEYS))
            if unknown or not all(isinstance(v, str) and v for v in values.values()):
                raise ConfigError(
                    f"platform config: resources[{name!r}] = {values!r}: keys {list(RESOURCE_KEYS)} with "
                    "Kubernetes quantities as strings ('500m', '2Gi')"
                )
        for key in ("retries", "retry_backoff_s"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"platform config: {key} must be a non-negative integer, got {value!r}")
        for label in (self.benchmark_node_selector, self.gpu_node_selector):
            for k, v in label.items():
                if not k or not isinstance(v, str):
                    raise ConfigError(
                        f"platform config: node selector {k!r}: {v!r} must map a label to a string"
                    )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "platform config") -> PlatformConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @classmethod
    def from_file(cls, path: Path) -> PlatformConfig:
        """A YAML or JSON file whose keys are this class's fields."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"platform config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"platform config {path}: expected a mapping of settings")
        return cls.from_dict(data, where=f"platform config {path}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def component_settings(self) -> dict[str, set[str]]:
        """Setting -> the components it names (for the check that a pipeline honours every one)."""
        out = {
            "caching": set(self.caching),
            "resources": {n for n, v in self.resources.items() if v != DEFAULT_RESOURCES.get(n)},
            "retry_components": set(self.retry_components),
        }
        if self.benchmark_node_selector or self.benchmark_tolerations:
            out["benchmark_node_selector/benchmark_tolerations"] = set(self.benchmark_components)
        if self.benchmark_class_label:
            out["benchmark_class_label"] = {"edge_benchmark"}
        if self.train_gpus:
            out["train_gpus"] = set(self.training_components)
        return out

    def check_known(self, known: set[str]) -> None:
        """Every component named in caching, resources and the component lists exists."""
        for setting in ("caching", "resources"):
            unknown = sorted(set(getattr(self, setting)) - known)
            if unknown:
                raise ConfigError(
                    f"platform config: {setting} names unknown components {unknown}; known: {sorted(known)}"
                )
        for setting in COMPONENT_LISTS:
            unknown = sorted(set(getattr(self, setting)) - known)
            if unknown:
                raise ConfigError(
                    f"platform config: {setting} names unknown components {unknown}; known: {sorted(known)}"
                )

    def check_honoured(self, pipeline: str, components: set[str]) -> None:
        """An option a pipeline cannot honour is an error, never silently dropped: each setting that
        names components must meet at least one task of `pipeline`."""
        for setting, names in self.component_settings().items():
            if names and not names & components:
                raise ConfigError(
                    f"pipeline {pipeline!r} cannot honour {setting} for {sorted(names)}: no such task "
                    f"(its components: {sorted(components)})"
                )

    def secrets_for(self, component: str) -> list[tuple[str, dict[str, str]]]:
        """(Secret name, {key: env var}) pairs for one component (by its function name)."""
        out = []
        if component in self.tracked_components:
            out += [
                (self.mlflow_secret, MLFLOW_SECRET_KEYS),
                (self.s3_secret, S3_SECRET_KEYS),
                (self.s3_secret, S3_ENDPOINT_KEYS),
            ]
        if component in self.farm_components:
            out.append((self.farm_secret, FARM_SECRET_KEYS))
        if component in self.study_components:
            out.append((self.nas_storage_secret, NAS_STORAGE_SECRET_KEYS))
        return [(name, keys) for name, keys in out if name]
