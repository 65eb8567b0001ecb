"""Logits of ONNX models on this machine's ONNX Runtime build: the part of `isa-check` that runs on the
target ISA (natively, or in the arm64 agent image under QEMU). Contract: needs ONNX Runtime and numpy
only (the agent images have no torch); the CPU execution provider, batches of `batch_size`; logits are
written as float32 whatever the model's output type.

    python -m edgecompress.runtime.logits JOB_DIR

JOB_DIR holds `job.json` ({"models": {name: file}, "inputs": file.npy or {name: file.npy},
"threads": n, "batch_size": b}) and the files it names (one input file for all models, or one per
model: a slow model can run on fewer images); the runner writes `logits-<name>.npy` for each model
and `info.json` (the machine, its CPU features, ONNX Runtime's version and providers, images and
seconds per model) into JOB_DIR.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def onnx_session(model_path: Path, threads: int = 0, reference_qdq: bool = False) -> Any:
    """A quiet ONNX Runtime session on the CPU execution provider (`threads` 0: ONNX Runtime's default);
    `reference_qdq`: QDQ nodes run as written (float), not fused into INT8 kernels (runtime.numerics)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if reference_qdq:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def model_logits(
    model_path: Path, x: np.ndarray, threads: int = 0, batch_size: int = 256, reference_qdq: bool = False
) -> np.ndarray:
    """The model's first output on `x`, batch by batch, CPU execution provider, `threads` threads (0:
    ONNX Runtime's default)."""
    session = onnx_session(model_path, threads, reference_qdq)
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))


def run_job(job_dir: Path) -> dict[str, Any]:
    import platform

    import onnxruntime as ort

    from edgecompress.runtime.facts import cpu_features

    job = json.loads((job_dir / "job.json").read_text())
    inputs = job["inputs"]
    per_model = inputs if isinstance(inputs, dict) else dict.fromkeys(job["models"], inputs)
    arrays = {file: np.load(job_dir / file) for file in set(per_model.values())}
    seconds, samples = {}, {}
    for name, file in job["models"].items():
        x = arrays[per_model[name]]
        t0 = time.perf_counter()
        logits = model_logits(job_dir / file, x, int(job.get("threads", 1)), int(job.get("batch_size", 256)))
        seconds[name], samples[name] = time.perf_counter() - t0, int(len(x))
        np.save(job_dir / f"logits-{name}.npy", logits.astype(np.float32))
    info = {
        "machine": platform.machine(),
        "cpu": cpu_features(),
        "onnxruntime_version": ort.__version__,
        "providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "samples": samples,
        "seconds": seconds,
    }
    (job_dir / "info.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "job.json").is_file():
        print("usage: python -m edgecompress.runtime.logits JOB_DIR (with JOB_DIR/job.json)", file=sys.stderr)
        return 2
    run_job(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
