"""torch → ONNX export with a numerical parity check, and the Model artifact layout.

A Model artifact is a directory: `model.onnx` (the deployable form), `module.pt` (the torch module,
only where training can continue) and `model.json` (spec, shapes, technique, lineage ids, stats).
It is written atomically, so a failed step never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ExportError, ModelError
from edgecompress.io import atomic_path, sha256_file
from edgecompress.runtime.logits import onnx_session

ONNX_FILE, MODULE_FILE, INFO_FILE = "model.onnx", "module.pt", "model.json"
DEFAULT_OPSET = 17


@dataclass
class Parity:
    max_abs_error: float
    top1_agreement: float
    samples: int

    def as_dict(self) -> dict[str, float]:
        return {
            "max_abs_error": self.max_abs_error,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
        }


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = DEFAULT_OPSET
) -> None:
    """Export with a dynamic batch axis. Uses the TorchScript exporter: it handles every zoo model,
    torch-pruning output and fake-quant (QAT) graphs, and writes weights inline."""
    model = model.eval()
    dummy = torch.zeros(1, *input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc


def judged_as_written(onnx_path: Path) -> bool:
    """Does this machine judge the model's accuracy by its QDQ graph as written rather than its own INT8
    kernels (which would saturate a model quantized for a board whose kernels do not; runtime.numerics)?"""
    from edgecompress.runtime.numerics import REFERENCE_QDQ, evaluation_numerics

    return evaluation_numerics(onnx_path)["numerics"] == REFERENCE_QDQ


def onnx_logits(onnx_path: Path, x: np.ndarray, batch_size: int = 256, threads: int = 0) -> np.ndarray:
    """Logits on `x` as this machine judges accuracy (`judged_as_written`)."""
    from edgecompress.runtime.logits import model_logits

    return model_logits(onnx_path, x, threads, batch_size, judged_as_written(onnx_path))


def split_logits(
    onnx_path: Path, dataset: Dataset, split: str, limit: int | None = None, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime logits and labels of a split read batch by batch (only the logits are kept)."""
    session = onnx_session(onnx_path, reference_qdq=judged_as_written(onnx_path))
    name = session.get_inputs()[0].name
    outs, labels = [], []
    for xb, yb in dataset.batches(split, batch_size, limit):
        outs.append(session.run(None, {name: xb})[0])
        labels.append(yb)
    if not outs:
        return np.zeros((0, dataset.num_classes), np.float32), np.zeros(0, np.int64)
    return np.concatenate(outs), np.concatenate(labels)


def check_parity(model: nn.Module, onnx_path: Path, x: np.ndarray, atol: float = 1e-3) -> Parity:
    """Compare torch and ONNX Runtime on real samples; raise if they disagree beyond `atol`."""
    model = model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = onnx_logits(onnx_path, x)
    err = float(np.max(np.abs(expected - got))) if len(x) else 0.0
    agree = float(np.mean(expected.argmax(1) == got.argmax(1))) if len(x) else 1.0
    parity = Parity(err, agree, len(x))
    if err > atol:
        raise ExportError(
            f"ONNX output differs from torch: max |Δlogit| = {err:.2e} > {atol:.0e} (top-1 agreement {agree:.4f})"
        )
    return parity


_QUANT_AUX = ("scale", "zero_point")


def _is_weight(name: str, array: np.ndarray) -> bool:
    return array.ndim >= 1 and not any(tag in name.lower() for tag in _QUANT_AUX) and array.dtype != np.int64


def count_onnx_parameters(proto: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the weights in the graph.

    The exporter merges initializers with equal values (the ones and zeros of freshly initialised
    norms, the zero biases of folded BatchNorms) into one: an initializer is counted once per node
    that reads it, so a layer's parameters do not vanish because another layer's are equal."""
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in set(node.input):
            uses[name] = uses.get(name, 0) + 1
    params = nonzero = 0
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if _is_weight(init.name, array):
            n = max(1, uses.get(init.name, 0))
            params += n * array.size
            nonzero += n * int(np.count_nonzero(array))
    return params, nonzero


def validate_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, naming the file when it is not a valid model."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"ONNX model {path} does not exist")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"{path} is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return proto


def onnx_input_shape(proto: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def check_onnx_fits(proto: onnx.ModelProto, input_shape: tuple[int, ...], where: str) -> None:
    shape = onnx_input_shape(proto)
    sample = tuple(shape[1:])
    if len(sample) != len(input_shape) or any(
        isinstance(a, int) and a > 0 and a != b for a, b in zip(sample, input_shape, strict=False)
    ):
        raise ModelError(
            f"model {where} expects inputs of shape {shape}, but the dataset's samples have shape {tuple(input_shape)}"
        )


@dataclass
class ModelPackage:
    """A loaded Model artifact."""

    directory: Path
    info: dict[str, Any]
    onnx_file: Path | None = None

    @property
    def onnx_path(self) -> Path:
        return self.onnx_file or self.directory / ONNX_FILE

    @property
    def has_module(self) -> bool:
        return (self.directory / MODULE_FILE).exists()

    def load_module(self) -> nn.Module:
        if not self.has_module:
            raise ModelError(
                f"model {self.directory} has no torch module (it is ONNX-only, e.g. already quantized)"
            )
        from edgecompress.zoo import pickled_modules, prepare_import

        if {"torchvision", "timm"} & pickled_modules(self.directory / MODULE_FILE):
            prepare_import("torchvision")  # its classes are unpickled next
        try:
            module = torch.load(self.directory / MODULE_FILE, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"cannot load torch module from {self.directory / MODULE_FILE}: {exc}") from exc
        return module.eval()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    def record_model_id(self, model_id: str) -> None:
        """Write the MLflow model id into model.json (after logging: the id names this package)."""
        self.update_info({"mlflow_model_id": model_id})

    def update_info(self, changes: dict[str, Any]) -> None:
        """Add `changes` to model.json (atomically), e.g. what was measured on the saved ONNX."""
        from edgecompress.io import write_text

        self.info.update(changes)
        write_text(self.directory / INFO_FILE, json.dumps(self.info, indent=2, sort_keys=True))


def save_model_package(
    directory: Path, info: dict[str, Any], onnx_model: onnx.ModelProto | Path, module: nn.Module | None = None
) -> ModelPackage:
    """Write the artifact directory atomically; `info` gains the ONNX file's sha256 and sizes."""
    directory = Path(directory)
    with atomic_path(directory, directory=True) as tmp:
        onnx_file = tmp / ONNX_FILE
        if isinstance(onnx_model, onnx.ModelProto):
            onnx.save_model(onnx_model, str(onnx_file), save_as_external_data=False)
        else:
            if not Path(onnx_model).exists():
                raise ModelError(f"ONNX model {onnx_model} does not exist")
            onnx_file.write_bytes(Path(onnx_model).read_bytes())
        validate_onnx(onnx_file)
        if module is not None:
            torch.save(module, tmp / MODULE_FILE)
        info = {**info, "onnx_sha256": sha256_file(onnx_file), "onnx_bytes": onnx_file.stat().st_size}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    return ModelPackage(directory, info)


def load_model_package(directory: Path) -> ModelPackage:
    """Open a Model artifact: a package directory, or a bare `.onnx` file (e.g. from a user)."""
    directory = Path(directory)
    if directory.is_file():
        return _package_from_bare_onnx(directory)
    info_file = directory / INFO_FILE
    if not info_file.exists():
        raise ModelError(f"{directory} is not an edgecompress model artifact (no {INFO_FILE})")
    try:
        info = json.loads(info_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{info_file} is corrupt: {exc}") from exc
    package = ModelPackage(directory, info)
    validate_onnx(package.onnx_path)
    recorded = info.get("onnx_sha256")
    if recorded and recorded != sha256_file(package.onnx_path):
        raise ModelError(
            f"{package.onnx_path} does not match the sha256 recorded in {info_file}: the file was changed or corrupted"
        )
    return package


def _package_from_bare_onnx(path: Path) -> ModelPackage:
    """A user's own .onnx file: shapes come from the graph; it has no torch module or lineage yet."""
    proto = validate_onnx(path)
    shape = onnx_input_shape(proto)
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    if any(not isinstance(d, int) or d <= 0 for d in shape[1:]) or not out_dims or not out_dims[-1].dim_value:
        raise ModelError(f"{path}: input {shape} / output shape must be static apart from the batch axis")
    info = {
        "spec": None,
        "technique": "imported",
        "input_shape": list(shape[1:]),
        "num_classes": int(out_dims[-1].dim_value),
        "onnx_sha256": sha256_file(path),
        "onnx_bytes": path.stat().st_size,
    }
    return ModelPackage(path.parent, info, onnx_file=path)
