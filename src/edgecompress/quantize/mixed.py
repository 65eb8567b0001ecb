"""Mixed precision: static INT8 with the nodes whose quantization costs the most accuracy kept in
float, found by accuracy probing on the validation split."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompress.data import Dataset, selection_size
from edgecompress.errors import ModelError
from edgecompress.export import onnx_logits
from edgecompress.quantize.config import QUANTIZABLE_OPS, QuantConfig
from edgecompress.quantize.ptq import check_quantizable, quantizable_nodes, quantize_static


def probe_accuracy(proto_or_path: onnx.ModelProto | Path, dataset: Dataset, samples: int) -> float:
    """Accuracy on at most `samples` images of validation's selection part (what chooses never sees
    the images the gate decides on, nor the test split)."""
    x, y = dataset.split("val", min(samples, selection_size(dataset.size("val"))))
    with tempfile.TemporaryDirectory(prefix="edgecompress-probe-") as tmp:
        path = proto_or_path
        if isinstance(proto_or_path, onnx.ModelProto):
            path = Path(tmp) / "m.onnx"
            onnx.save_model(proto_or_path, str(path))
        return float(np.mean(onnx_logits(Path(path), x).argmax(1) == y))


def node_units(onnx_path: Path) -> list[tuple[str, str]]:
    """The per-node analysis's work units: every quantizable node, (name, op type)."""
    return list(quantizable_nodes(onnx_path))


def all_quantized_accuracy(onnx_path: Path, dataset: Dataset, config: QuantConfig) -> float:
    """The probe accuracy of the static INT8 model with every node quantized (what a unit recovers from)."""
    base_cfg = replace(config, method="static", nodes_to_exclude=())
    return probe_accuracy(quantize_static(onnx_path, dataset, base_cfg), dataset, config.probe_samples)


def node_unit(
    onnx_path: Path, dataset: Dataset, config: QuantConfig, node: tuple[str, str], full: float
) -> dict[str, Any]:
    """One unit: the probe accuracy of the static INT8 model with only `node` left in float."""
    name, op = node
    base_cfg = replace(config, method="static", nodes_to_exclude=(name,))
    acc = probe_accuracy(quantize_static(onnx_path, dataset, base_cfg), dataset, config.probe_samples)
    return {
        "node": name,
        "op_type": op,
        "probe_accuracy": acc,
        "recovered": acc - full,
        "all_quantized_accuracy": full,
    }


def combine_nodes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units' rows (given in `node_units` order), most sensitive first; ties keep that order."""
    return sorted(rows, key=lambda r: -r["recovered"])


def node_sensitivity(onnx_path: Path, dataset: Dataset, config: QuantConfig) -> list[dict[str, Any]]:
    """Per-node sensitivity by accuracy probing, most sensitive first (the units of `node_units`,
    each measured by `node_unit`, joined by `combine_nodes`, in one process).

    For each quantizable node: the probe accuracy of the static INT8 model with only that node left
    in float. `recovered` is how much accuracy that buys over quantizing everything.
    """
    full = all_quantized_accuracy(onnx_path, dataset, config)
    return combine_nodes(
        [node_unit(onnx_path, dataset, config, node, full) for node in node_units(onnx_path)]
    )


def quantize_mixed(
    onnx_path: Path, dataset: Dataset, config: QuantConfig
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static INT8 with the most sensitive nodes kept in float; returns the model and what was excluded."""
    config.validate()
    check_quantizable(onnx_path, dataset)
    ranking = node_sensitivity(onnx_path, dataset, config)
    if not ranking:
        raise ModelError(f"{onnx_path} has no quantizable nodes ({', '.join(QUANTIZABLE_OPS)})")
    if config.mixed_exclude:
        counts = [min(config.mixed_exclude, len(ranking))]
    else:
        counts = list(range(1, max(1, len(ranking) - 1) + 1))
    excluded: tuple[str, ...] = ()
    proto, acc = None, float("nan")
    for k in counts:
        excluded = tuple(r["node"] for r in ranking[:k])
        proto = quantize_static(
            onnx_path, dataset, replace(config, method="static", nodes_to_exclude=excluded)
        )
        acc = probe_accuracy(proto, dataset, config.probe_samples)
        if config.target_accuracy is None or acc >= config.target_accuracy:
            break
    details = {"excluded_nodes": list(excluded), "probe_accuracy": acc, "sensitivity": ranking}
    return proto, details
