"""Is a downloaded file a self-contained, valid ONNX model? Run only inside the benchmark child.

Parsing and checking an untrusted model can take far more memory than the file's size (nested
subgraphs, huge constants): `runner` calls `check_onnx` in the forked child after its address-space
limit is set, so a hostile model costs one failed job, never the agent. External data files are
refused: a model must not make the device read paths it names.
"""

from __future__ import annotations

from pathlib import Path

from edgecompress.errors import BenchmarkError


class ModelRejected(BenchmarkError):
    """The model failed verification; the job fails with this reason."""


def check_onnx(path: Path) -> None:
    """Raise ModelRejected unless `path` is a valid ONNX model with its weights embedded."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    name = Path(path).name
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except MemoryError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelRejected(
            f"{name} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelRejected(
            f"{name}: ONNX models with external data files are not accepted; embed the weights"
        )
    if not model.graph.node:
        raise ModelRejected(f"{name} is not a valid ONNX model: the graph has no nodes")
    try:
        onnx.checker.check_model(model)
    except MemoryError:
        raise
    except Exception as exc:
        raise ModelRejected(f"{name} is not a valid ONNX model: {str(exc)[:300]}") from exc
