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
FARM_SECRET_KEYS = {"client-token": "EDGECOMPRESS_FARM_CLIENT_TOKEN"}

TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Equal", "Exists")


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
    secrets_optional: bool = True
    # Which components take which Secrets.
    tracked_components: tuple[str, ...] = (
        "load_dataset",
        "train",
        "quantize",
        "prune",
        "distill",
        "nas",
        "evaluate",
        "edge_benchmark",
        "accuracy_gate",
    )
    farm_components: tuple[str, ...] = ("edge_benchmark",)
    # Pod label the chart's NetworkPolicy admits to the farm controller, set on the farm components.
    farm_client_label: dict[str, str] = field(default_factory=lambda: {"edgecompress.io/farm-client": "true"})
    # On-node benchmark mode: pin the benchmark tasks to device nodes.
    benchmark_components: tuple[str, ...] = ("edge_benchmark",)
    benchmark_node_selector: dict[str, str] = field(default_factory=dict)
    benchmark_tolerations: list[Toleration] = field(default_factory=list)
    # Training on GPU nodes: accelerator limit (0 = CPU) for these components.
    training_components: tuple[str, ...] = ("train", "distill", "nas")
    train_gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    # Caching per component (True/False); components not listed keep the pipeline's own choice.
    caching: dict[str, bool] = field(default_factory=dict)
    # Pod securityContext for the task containers (None: the cluster's defaults).
    run_as_user: int | None = None

    def __post_init__(self) -> None:
        self.benchmark_tolerations = [
            t if isinstance(t, Toleration) else Toleration(**t) for t in self.benchmark_tolerations
        ]
        for name in ("tracked_components", "farm_components", "benchmark_components", "training_components"):
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

    def secrets_for(self, component: str) -> list[tuple[str, dict[str, str]]]:
        """(Secret name, {key: env var}) pairs for one component (by its function name)."""
        out = []
        if component in self.tracked_components:
            out += [(self.mlflow_secret, MLFLOW_SECRET_KEYS), (self.s3_secret, S3_SECRET_KEYS)]
        if component in self.farm_components:
            out.append((self.farm_secret, FARM_SECRET_KEYS))
        return [(name, keys) for name, keys in out if name]
