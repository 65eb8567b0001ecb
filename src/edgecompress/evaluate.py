"""Evaluate an ONNX model as it will be deployed: accuracy, confusion matrix, size and cost.

Everything is measured on the ONNX file (not the torch module), so float, pruned and quantized
models are compared on what would actually ship.
"""

from __future__ import annotations

import contextlib
import gzip
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

from edgecompress import lineage
from edgecompress.data import Dataset, load_dataset
from edgecompress.errors import ModelError
from edgecompress.export import (
    ModelPackage,
    check_onnx_fits,
    count_onnx_parameters,
    load_model_package,
    split_logits,
    validate_onnx,
)
from edgecompress.io import field_values, write_json
from edgecompress.reports import confusion_matrix_png, html_page, html_table, png_img_tag
from edgecompress.runtime.numerics import evaluation_numerics
from edgecompress.runtime.runner import BenchmarkSettings, run_isolated
from edgecompress.step import Lineage, write_report


@dataclass
class EvaluateConfig:
    split: str = field(
        default="test", metadata={"help": "the split evaluated", "choices": ("train", "val", "test")}
    )


@dataclass
class ModelStats:
    params: int
    nonzero_params: int
    macs: int
    onnx_bytes: int
    gzip_bytes: int
    opset: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**field_values(self), "sparsity": self.sparsity}


@dataclass
class Evaluation:
    split: str
    accuracy: float
    samples: int
    confusion_matrix: list[list[int]]
    class_names: list[str]
    stats: ModelStats
    latency_ms: dict[str, float] = field(default_factory=dict)
    # how this machine ran the model for its accuracy (runtime.numerics): its kernels or the QDQ graph
    numerics: dict[str, str] = field(default_factory=dict)

    def per_class_accuracy(self) -> dict[str, float]:
        cm = np.asarray(self.confusion_matrix)
        totals = cm.sum(1)
        return {
            n: float(cm[i, i] / totals[i]) if totals[i] else float("nan")
            for i, n in enumerate(self.class_names)
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **field_values(self),
            "per_class_accuracy": self.per_class_accuracy(),
            "stats": self.stats.as_dict(),
        }


# op -> (the input whose shape, with the weight's, gives the MACs: "out" or "in"; weight input index)
_CONV_OPS = {
    "Conv": ("out", 1),
    "ConvInteger": ("out", 1),
    "QLinearConv": ("out", 3),
    "ConvTranspose": ("in", 1),
}
_MATMUL_OPS = ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")


def _known(shape: onnx.TensorShapeProto) -> list[int] | None:
    """The dims of a fully concrete shape; None when any dim is symbolic or unknown."""
    dims = list(shape.dim)
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]


def _batch_one(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs have batch 1 (and any other free dim 1): MACs are per inference."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        for dim in inp.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return model


def _runtime_shapes(model: onnx.ModelProto, names: set[str]) -> dict[str, list[int]]:
    """Shapes of `names` from one batch-1 run of ONNX Runtime on zeros: for graphs whose shapes static
    inference cannot resolve (data-dependent reshapes, ops it does not know)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - outputs))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {}
        for inp in session.get_inputs():
            dtype = onnx.helper.tensor_dtype_to_np_dtype(
                next(i for i in model.graph.input if i.name == inp.name).type.tensor_type.elem_type
            )
            feeds[inp.name] = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], dtype=dtype)
        values = session.run(sorted(names), feeds)
    except Exception as exc:
        raise ModelError(f"cannot determine the tensor shapes to count MACs: {exc}") from exc
    return {n: list(v.shape) for n, v in zip(sorted(names), values, strict=True)}


def count_macs(proto: onnx.ModelProto) -> int:
    """Multiply-accumulates of one batch-1 inference, for Conv/ConvTranspose/Gemm/MatMul and their
    quantized forms: depthwise, grouped and dilated convolutions through the weight's shape, attention
    through MatMuls of two activations.

    Shapes come from ONNX shape inference with data propagation (so a batch read back through
    Shape/Gather/Concat, as a class token's expand does, stays 1); what it leaves unresolved comes
    from one batch-1 run of ONNX Runtime."""
    model = _batch_one(proto)
    with contextlib.suppress(Exception):  # onnx raises several types; the runtime fallback still works
        model = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        known = _known(vi.type.tensor_type.shape) if vi.type.HasField("tensor_type") else None
        if known is not None:
            shapes[vi.name] = known
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    # QDQ graphs feed Conv/MatMul from DequantizeLinear: its output has its input's (the weight's) shape
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])

    counted = [n for n in model.graph.node if n.op_type in _CONV_OPS or n.op_type in _MATMUL_OPS]
    needed: set[str] = set()
    for node in counted:
        if node.op_type in _CONV_OPS:
            side, w = _CONV_OPS[node.op_type]
            needed |= {node.input[w], node.output[0] if side == "out" else node.input[0]}
        else:
            needed |= {node.input[0], node.output[0]}
    missing = {n for n in needed if n not in shapes}
    if missing:
        shapes.update(_runtime_shapes(model, missing))

    total = 0
    for node in counted:
        op = node.op_type
        if op in _CONV_OPS:
            side, w_index = _CONV_OPS[op]
            w = shapes[node.input[w_index]]
            # Conv weight (C_out, C_in/groups, *k): each output element takes C_in/groups x k MACs.
            # ConvTranspose weight (C_in, C_out/groups, *k): each input element scatters C_out/groups x k.
            x = shapes[node.output[0] if side == "out" else node.input[0]]
            total += int(np.prod(x)) * int(np.prod(w[1:]))
        else:
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            k = a[-1] if a else 1
            if op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute):
                k = a[0]
            total += int(np.prod(out)) * int(k)
    return total


def module_params(model: Any, input_shape: tuple[int, ...]) -> int:
    """Parameters of a torch module counted as every report counts them: on its ONNX export, after
    BatchNorm folding (what is deployed), so that train, prune, distill, evaluate and run agree."""
    import tempfile

    from edgecompress.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgecompress-params-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, tuple(input_shape), path)
        return count_onnx_parameters(onnx.load(str(path)))[0]


def module_macs(model: Any, input_shape: tuple[int, ...]) -> int:
    """MACs of a torch module counted as every report counts them: on its ONNX export (`count_macs`),
    so that a pruning budget, a NAS constraint and the evaluation of the result agree."""
    import tempfile

    from edgecompress.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgecompress-macs-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, tuple(input_shape), path)
        return count_macs(onnx.load(str(path)))


def model_stats(onnx_path: Path) -> ModelStats:
    proto = validate_onnx(onnx_path)
    raw = Path(onnx_path).read_bytes()
    params, nonzero = count_onnx_parameters(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelStats(params, nonzero, count_macs(proto), len(raw), len(gzip.compress(raw, 9)), opset)


def evaluate_onnx(
    onnx_path: Path, dataset: Dataset, split: str = "test", limit: int | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy, confusion matrix and logits on one split."""
    proto = validate_onnx(onnx_path)
    check_onnx_fits(proto, dataset.input_shape, str(onnx_path))
    logits, y = split_logits(onnx_path, dataset, split, limit)
    if logits.ndim != 2 or logits.shape[1] != dataset.num_classes:
        raise ModelError(
            f"model {onnx_path} outputs shape {logits.shape}; the dataset has {dataset.num_classes} classes"
        )
    pred = logits.argmax(1)
    cm = np.zeros((dataset.num_classes, dataset.num_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return float((pred == y).mean()), cm, logits


def evaluate_model(
    package: ModelPackage,
    dataset: Dataset,
    split: str = "test",
    measure_latency: bool = True,
    latency_settings: dict[str, Any] | None = None,
) -> Evaluation:
    accuracy, cm, _ = evaluate_onnx(package.onnx_path, dataset, split)
    latency: dict[str, float] = {}
    if measure_latency:
        settings = BenchmarkSettings.from_dict({"threads": 1, "batch_size": 1, **(latency_settings or {})})
        latency = run_isolated(package.onnx_path, settings)["latency_ms"]
    return Evaluation(
        split,
        accuracy,
        int(cm.sum()),
        cm.tolist(),
        list(dataset.class_names),
        model_stats(package.onnx_path),
        latency,
        evaluation_numerics(package.onnx_path),
    )


# --- the evaluate step ----------------------------------------------------------------------------


def evaluate_step(
    model_dir: Path,
    dataset_path: Path,
    results_path: Path,
    report_path: Path | None = None,
    split: str = "test",
    lineage_ctx: Lineage | None = None,
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    ctx.check()
    package = load_model_package(Path(model_dir))
    dataset = load_dataset(Path(dataset_path))
    model_id = package.info.get("mlflow_model_id")
    with ctx.task(
        "evaluate", {"model_id": model_id, "split": split, "technique": package.info.get("technique")}
    ):
        evaluation = evaluate_model(package, dataset, split)
        result = {"model": package.info, **evaluation.as_dict()}
        if report_path is not None:
            write_report(report_path, evaluation_report(result))
        write_json(Path(results_path), result)
        if ctx.enabled and model_id:
            stats = evaluation.stats.as_dict()
            lineage.log_model_metrics(
                model_id,
                {
                    f"{split}_accuracy": evaluation.accuracy,
                    "params": stats["params"],
                    "macs": stats["macs"],
                    "onnx_bytes": stats["onnx_bytes"],
                    "gzip_bytes": stats["gzip_bytes"],
                    "sparsity": stats["sparsity"],
                    "latency_1thread_p50_ms": evaluation.latency_ms.get("p50", float("nan")),
                },
            )
    return result


def evaluation_report(result: dict[str, Any]) -> str:
    stats = result["stats"]
    title = f"Evaluation: {result['model'].get('technique')} model on {result['split']} ({result['samples']} samples)"
    summary = html_table(
        ["accuracy", "params", "MACs", "ONNX bytes", "gzip bytes", "p50 ms (1 thread)", "p90 ms"],
        [
            [
                result["accuracy"],
                stats["params"],
                stats["macs"],
                stats["onnx_bytes"],
                stats["gzip_bytes"],
                result["latency_ms"].get("p50", float("nan")),
                result["latency_ms"].get("p90", float("nan")),
            ]
        ],
    )
    per_class = html_table(["class", "accuracy"], list(result["per_class_accuracy"].items()))
    cm = png_img_tag(
        confusion_matrix_png(result["confusion_matrix"], result["class_names"], "confusion matrix"),
        "confusion matrix",
    )
    numerics = result.get("numerics") or {}
    sections = [("Summary", summary)]
    if numerics:
        sections.append(
            ("INT8 arithmetic", f"<p>{escape(numerics['numerics'])}: {escape(numerics['why'])}</p>")
        )
    return html_page(title, [*sections, ("Confusion matrix", cm), ("Per-class accuracy", per_class)])
