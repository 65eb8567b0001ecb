"""Edge benchmark: run one model on each requested device class and collect results per class.

Locally (no farm URL) each emulated class runs the benchmark runner in its own child process with
that class's thread cap and CPU affinity. With a farm URL the same runner runs on real devices
through the farm controller (edgecompress.farm.client); the result schema is the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgecompress.errors import BenchmarkError
from edgecompress.farm import device as device_facts
from edgecompress.farm.devices import emulated_device_class, parse_device_classes
from edgecompress.farm.runner import BenchmarkSettings, run_isolated

log = logging.getLogger(__name__)


def benchmark_locally(
    model_path: Path, device_class: str, settings: dict[str, Any] | None = None, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Benchmark on an emulated device class in a child process on this machine."""
    cls = emulated_device_class(device_class)
    opts = BenchmarkSettings.from_dict(
        {**(settings or {}), "threads": cls.threads, "providers": cls.providers}
    )
    result = run_isolated(Path(model_path), opts, timeout_s=timeout_s, cpu_affinity=cls.cpu_affinity())
    result.update({
        "device_class": cls.name, "emulated": cls.emulated, "device_description": cls.description,
        "device": {**device_facts.facts(), "cpu_affinity": cls.cpu_affinity()}, "backend": "local",
    })  # fmt: skip
    return result


def edge_benchmark(
    model_path: Path,
    device_classes: str | list[str],
    settings: dict[str, Any] | None = None,
    farm_url: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, dict[str, Any]]:
    """One result per device class; raises BenchmarkError naming the class that failed."""
    classes = parse_device_classes(device_classes)
    if farm_url:
        from edgecompress.farm.client import benchmark_on_farm

        return benchmark_on_farm(farm_url, Path(model_path), classes, settings or {}, timeout_s=timeout_s)
    for name in classes:  # validate all names before spending time on any
        emulated_device_class(name)
    results = {}
    for name in classes:
        log.info("benchmarking %s on %s", Path(model_path).name, name)
        try:
            results[name] = benchmark_locally(model_path, name, settings, timeout_s)
        except BenchmarkError as exc:
            raise BenchmarkError(f"device class {name}: {exc}") from exc
    return results
