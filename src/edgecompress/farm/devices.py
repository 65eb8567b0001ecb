"""Device classes. Emulated classes stand in for real boards on one machine (thread caps and CPU
affinity) and are labelled `emulated` in every result: they are never real board numbers. They are
the `emulated: true` entries of the device profiles (edgecompress.profiles)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgecompress.errors import ConfigError

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # device classes, agent and client names: no paths, no spaces


@dataclass(frozen=True)
class DeviceClass:
    name: str
    threads: int
    emulated: bool
    description: str
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    cores: int | None = None  # cores to pin to (emulation), None = no pinning

    def cpu_affinity(self) -> list[int] | None:
        if self.cores is None or not hasattr(os, "sched_getaffinity"):
            return None
        usable = sorted(os.sched_getaffinity(0))
        return usable[-self.cores :] if len(usable) >= self.cores else usable


def emulated_classes() -> dict[str, DeviceClass]:
    """The emulated classes of the device profiles (edgecompress.profiles), read when first needed:
    a broken profile file is then an error of the command that reads it, not of an import."""
    from edgecompress.profiles import profiles

    return {
        p.name: DeviceClass(
            p.name,
            threads=p.threads,
            emulated=True,
            description=p.description,
            providers=list(p.providers),
            cores=p.cores,
        )  # fmt: skip
        for p in profiles().values()
        if p.emulated is True
    }


DEFAULT_DEVICE_CLASSES = ["rpi4-emulated", "jetson-orin-nano-emulated"]
# Where a single latency check runs unless told otherwise (quantize, autotune, prune budgets, NAS).
DEFAULT_DEVICE_CLASS = DEFAULT_DEVICE_CLASSES[0]


def emulated_device_class(name: str) -> DeviceClass:
    known = emulated_classes()
    if name not in known:
        raise ConfigError(
            f"unknown device class {name!r}; emulated classes available locally: {sorted(known)}"
        )
    return known[name]


def parse_device_classes(value: str | list[str]) -> list[str]:
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise ConfigError("at least one device class is needed")
    if len(set(names)) != len(names):
        raise ConfigError(f"device classes repeat: {names}")
    return names
