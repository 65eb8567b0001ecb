"""Shared pieces of the benchmarks: machine facts, the Fashion-MNIST baseline (teacher), reports.

The baseline CNN is trained once and cached under benchmarks/.cache (ignored by git), keyed by its
configuration, so that the compression, quantization and NAS benchmarks start from the same
float model. A clean clone trains it first: 10 epochs on 55k images (about 30 min on 2 idle cores,
55 min sharing them with other work, measured 2026-11-28); its accuracy is in each benchmark's
results.json, not here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parent / ".cache"

BASELINE_SPEC = {"family": "cnn", "kwargs": {"widths": [32, 64, 128], "depths": [2, 2, 2]}}


def git_commit(directory: Path) -> str:
    """The checkout's short commit, with `-dirty` when tracked files differ from it: a report must not
    claim a commit whose code it did not run. Empty outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=directory, timeout=5
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    except OSError:
        return ""
    return commit


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import torch

    from edgecompress.farm.device import cpu_model
    from edgecompress.quantize import cpu_needs_reduce_range

    commit = git_commit(Path(__file__).parent)
    return {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "git_commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
        # INT8 speed and the reduce_range default depend on it (VNNI dot products vs saturating vpmaddubsw)
        "int8_reduce_range_needed": cpu_needs_reduce_range(),
    }  # fmt: skip


def fashion_mnist_dataset_artifact() -> Path:
    """The Dataset artifact for the full Fashion-MNIST (60k/10k), cached."""
    from edgecompress.data import load_fashion_mnist, save_dataset

    path = CACHE / "fashion-mnist.npz"
    if not path.exists():
        save_dataset(load_fashion_mnist(), path)
    return path


def baseline_model(epochs: int = 10, seed: int = 0, spec: dict[str, Any] | None = None) -> Path:
    """Model artifact directory of the float baseline CNN trained on Fashion-MNIST (cached)."""
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig, train_step

    spec = spec or BASELINE_SPEC
    config = TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, augment=True, seed=seed)
    key = hashlib.sha256(json.dumps([spec, asdict(config)], sort_keys=True).encode()).hexdigest()[:12]
    out = CACHE / f"baseline-{key}"
    if not (out / "model.json").exists():
        train_step(fashion_mnist_dataset_artifact(), spec, out, config, Lineage(enabled=False))
    return out


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
