"""How a quantized child compares with its float parent on real data: accuracy, top-1 agreement, max
|logit| difference, size and, with a `Measurement`, latency on a device class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError
from edgecompress.export import split_logits
from edgecompress.measure import Measurement


def check_against_parent(
    parent_onnx: Path,
    child_onnx: Path,
    dataset: Dataset,
    split: str = "val",
    measurement: Measurement | None = None,
    parent_latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy, output agreement, size and (with a device class) latency of a child next to its parent."""
    if dataset.size(split) == 0:
        raise ConfigError(f"the dataset's {split} split is empty: nothing to check the quantized model on")
    (a, y), (b, _) = (
        split_logits(Path(parent_onnx), dataset, split),
        split_logits(Path(child_onnx), dataset, split),
    )
    parent_bytes, child_bytes = Path(parent_onnx).stat().st_size, Path(child_onnx).stat().st_size
    check: dict[str, Any] = {
        "split": split,
        "samples": int(len(y)),
        "parent_accuracy": float(np.mean(a.argmax(1) == y)),
        "accuracy": float(np.mean(b.argmax(1) == y)),
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "max_abs_logit_error": float(np.max(np.abs(a - b))),
        "parent_onnx_bytes": parent_bytes,
        "onnx_bytes": child_bytes,
        "size_ratio": parent_bytes / child_bytes,
    }
    check["accuracy_drop"] = check["parent_accuracy"] - check["accuracy"]
    if measurement is not None:
        parent_latency = parent_latency or measurement.latency(Path(parent_onnx))
        child = measurement.latency(Path(child_onnx))
        check.update(
            {
                "device_class": measurement.device_class,
                "emulated": child["emulated"],
                "parent_p50_ms": parent_latency["p50_ms"],
                "parent_p90_ms": parent_latency["p90_ms"],
                "p50_ms": child["p50_ms"],
                "p90_ms": child["p90_ms"],
                "speedup": parent_latency["p50_ms"] / child["p50_ms"],
            }
        )
    return check
