"""How a quantized child compares with its float parent on real data: accuracy, top-1 agreement, max
|logit| difference, size and, with a `Measurement`, the interleaved speed-up on a device class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data import Dataset, selection_size
from edgecompress.edge import Measurement
from edgecompress.errors import ConfigError
from edgecompress.export import split_logits
from edgecompress.stats import MIN_LATENCY_ROUNDS


def check_against_parent(
    parent_onnx: Path,
    child_onnx: Path,
    dataset: Dataset,
    split: str = "val",
    measurement: Measurement | None = None,
    rounds: int = MIN_LATENCY_ROUNDS,
) -> dict[str, Any]:
    """Accuracy, output agreement, size and (with a device class) the interleaved speed-up with its
    interval of a child next to its parent. On validation it looks only at the selection part: what
    chooses a child never sees the images the gate decides on."""
    size = dataset.size(split)
    if size == 0:
        raise ConfigError(f"the dataset's {split} split is empty: nothing to check the quantized model on")
    limit = selection_size(size) if split == "val" else None
    if limit == 0:
        raise ConfigError(f"the dataset's val split ({size} images) has no selection part to check on")
    (a, y), (b, _) = (
        split_logits(Path(parent_onnx), dataset, split, limit),
        split_logits(Path(child_onnx), dataset, split, limit),
    )
    parent_bytes, child_bytes = Path(parent_onnx).stat().st_size, Path(child_onnx).stat().st_size
    check: dict[str, Any] = {
        "split": split if limit is None else f"{split}[:{limit}] (selection part)",
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
        speed = measurement.compare(Path(parent_onnx), Path(child_onnx), rounds)
        check.update(
            {
                "device_class": measurement.device_class,
                "emulated": speed["emulated"],
                "timing_meaningful": speed["timing_meaningful"],
                "parent_p50_ms": speed["parent_p50_ms"],
                "p50_ms": speed["child_p50_ms"],
                "speedup": speed["speedup"],
                "speedup_ci_low": speed["ci_low"],
                "speedup_ci_high": speed["ci_high"],
                "latency_rounds": speed["rounds"],
            }
        )
    return check
