"""The agents' executors: run a benchmark on an emulated device class (thread cap and CPU affinity on
this machine) or on this device as a real one (its own execution providers). Contract: needs only
ONNX Runtime and numpy, never torch, so the arm64 and Jetson agent images can run it; every path
goes through `runner.run_isolated` (child process, timeout, memory limit) and returns the runner's
result schema plus `device_class`, `emulated`, `device` (facts) and `backend`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from edgecompress.runtime import facts as device_facts
from edgecompress.runtime.devices import emulated_classes, emulated_device_class
from edgecompress.runtime.runner import BenchmarkSettings, run_isolated

DEFAULT_MEMORY_LIMIT_BYTES = 4 * 1024**3


def benchmark_locally(
    model_path: Path,
    device_class: str,
    settings: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
    memory_limit_bytes: int | None = None,
    start_method: str = "spawn",
    cancel: threading.Event | None = None,
    paired_with: Path | None = None,
) -> dict[str, Any]:
    """Benchmark on an emulated device class in a child process on this machine; with `paired_with`,
    both models in that one process, alternating (`runner.benchmark_paired`: one result per model)."""
    cls = emulated_device_class(device_class)
    opts = BenchmarkSettings.from_dict(
        {**(settings or {}), "threads": cls.threads, "providers": cls.providers}
    )
    result = run_isolated(
        Path(model_path),
        opts,
        timeout_s=timeout_s,
        cpu_affinity=cls.cpu_affinity(),
        memory_limit_bytes=memory_limit_bytes,
        start_method=start_method,
        cancel=cancel,
        paired_with=Path(paired_with) if paired_with else None,
    )
    where = {
        "device_class": cls.name,
        "emulated": cls.emulated,
        "device_description": cls.description,
        "device": {**device_facts.facts(), "cpu_affinity": cls.cpu_affinity()},
        "backend": "local",
    }
    for each in [result, *result.get("results", [])]:
        each.update(where)
    return result


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def default_providers() -> list[str]:
    """The execution providers to ask for on this device, best first. On a Jetson TensorRT and CUDA
    are always requested, so a build without them falls back to CPU and the runner records it."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if is_jetson():
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "XnnpackExecutionProvider"]
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def benchmark_on_this_device(
    model_path: Path,
    device_class: str,
    settings: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
    memory_limit_bytes: int | None = None,
    backend: str = "node",
    start_method: str = "spawn",
    cancel: threading.Event | None = None,
    paired_with: Path | None = None,
) -> dict[str, Any]:
    """Benchmark on the machine this runs on, as a real device of `device_class` (with `paired_with`,
    both models in one process, alternating: `runner.benchmark_paired`)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    merged = {"threads": usable, "providers": default_providers(), **(settings or {})}
    result = run_isolated(
        Path(model_path),
        BenchmarkSettings.from_dict(merged),
        timeout_s=timeout_s,
        memory_limit_bytes=memory_limit_bytes,
        start_method=start_method,
        cancel=cancel,
        paired_with=Path(paired_with) if paired_with else None,
    )
    where = {
        "device_class": device_class,
        "emulated": False,
        "device_description": f"{device_class} (real device)",
        "device": device_facts.facts(),
        "backend": backend,
    }
    for each in [result, *result.get("results", [])]:
        each.update(where)
    return result


def run_on_device(
    model_path: Path,
    device_class: str,
    emulate: str | None,
    settings: dict[str, Any] | None,
    timeout_s: float,
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
    cancel: threading.Event | None = None,
    paired_with: Path | None = None,
) -> dict[str, Any]:
    """The agent's executor: an emulated class (`emulate`, or a class named like one) or this device.
    `cancel` stops the benchmark child (runner.Cancelled) when set; `paired_with`: a paired job."""
    profile = emulate or (device_class if device_class in emulated_classes() else None)
    if profile:
        result = benchmark_locally(
            model_path,
            profile,
            settings,
            timeout_s,
            memory_limit_bytes,
            start_method="forkserver",
            cancel=cancel,
            paired_with=paired_with,
        )
        for each in [result, *result.get("results", [])]:
            each.update({"device_class": device_class, "emulated_profile": profile})
        return result
    return benchmark_on_this_device(
        model_path,
        device_class,
        settings,
        timeout_s,
        memory_limit_bytes,
        backend="farm",
        start_method="forkserver",
        cancel=cancel,
        paired_with=paired_with,
    )
