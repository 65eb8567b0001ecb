"""Run a pipeline locally with kfp.local (SubprocessRunner in this environment, no venv, no pip).

Inputs are validated before any task starts, so a typo fails in a second with a clear message
rather than minutes later inside a task.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.errors import ConfigError, EdgeCompressError
from edgecompress.farm.devices import emulated_device_class, parse_device_classes
from edgecompress.zoo import parse_spec

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    gate: dict[str, Any]
    gate_path: Path
    pipeline_root: Path
    tracking_uri: str
    seconds: float


def validate_arguments(arguments: dict[str, Any]) -> None:
    """Cheap checks of what the tasks would otherwise find out late."""
    from edgecompress.data import BUILTIN_DATASETS, FASHION_MNIST_DIR

    source = str(arguments.get("dataset", "digits"))
    if source == "fashion-mnist" and not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        raise ConfigError(
            f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}: run scripts/system-deps.sh"
        )
    if source not in BUILTIN_DATASETS and not source.startswith("s3://") and not Path(source).exists():
        raise ConfigError(
            f"dataset {source!r} is neither one of {BUILTIN_DATASETS}, an existing .npz file, nor an s3:// URI"
        )
    parse_spec(arguments.get("model", "cnn"))
    classes = parse_device_classes(arguments.get("device_classes", ["rpi4-emulated"]))
    if not arguments.get("farm_url"):
        for name in classes:
            emulated_device_class(name)
    drop = float(arguments.get("max_accuracy_drop", 0.01))
    if not 0 <= drop < 1:
        raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {drop}")


def run_local(chain: Sequence[str], arguments: dict[str, Any], output_dir: Path) -> LocalRunResult:
    from kfp import local

    from edgecompress.pipelines.edge_compression import build_pipeline

    output_dir = Path(output_dir).resolve()
    pipeline = build_pipeline(chain)
    validate_arguments(arguments)
    if "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = lineage.default_tracking_uri(output_dir)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if arguments.get("track", True):
        lineage.check_reachable(uri)
    os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
    pipeline_root = output_dir / "kfp"
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    start = time.perf_counter()
    try:
        task = pipeline(**arguments)
    except RuntimeError as exc:
        raise EdgeCompressError(f"the pipeline failed: {exc} (the failing task's log is above)") from exc
    gate_path = Path(task.output.path)
    return LocalRunResult(
        json.loads(gate_path.read_text()), gate_path, pipeline_root, uri, time.perf_counter() - start
    )
