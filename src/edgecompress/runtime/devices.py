"""The device vocabulary, in one module: device profiles (what a device class is:
`device_profiles.yaml` in the package, plus a YAML file of the same shape named by
$EDGECOMPRESS_DEVICE_PROFILES), the emulated device classes built from them, the default classes and
the rules for class names. One registry read by the farm, the quantizer and the gate; settings that
depend on where a model runs come from here, never from the CPU of the machine that happens to build
it.

Emulated classes stand in for real boards on one machine (thread caps and CPU affinity) and are
labelled `emulated` in every result: they are never real board numbers. They are the
`emulated: true` entries of the device profiles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError

PROFILES_ENV = "EDGECOMPRESS_DEVICE_PROFILES"
ISAS = ("x86_64", "aarch64")
DOT_PRODUCTS = ("vnni", "dotprod", "none", "host")
EMULATION = (False, True, "qemu")
REQUIRED = ("description", "isa", "int8_dot_product", "cores", "threads", "emulated")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    isa: str
    int8_dot_product: str
    cores: int
    threads: int
    emulated: bool | str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    stands_in_for: str = ""
    qemu_cpu: str = ""  # emulated: qemu — the CPU QEMU emulates (QEMU_CPU), e.g. cortex-a72 for a Pi 4
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def emulation(self) -> str:
        """`real`, `emulated` (a stand-in on the farm's host) or `qemu` (timings not meaningful)."""
        return {False: "real", True: "emulated", "qemu": "qemu"}[self.emulated]


def _check(name: str, raw: Any, where: str) -> DeviceProfile:
    if not isinstance(raw, dict):
        raise ConfigError(f"device profile {name!r} in {where} must be a mapping, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"device profile {name!r} in {where} lacks {missing} (needs {list(REQUIRED)})")
    if raw["isa"] not in ISAS:
        raise ConfigError(f"device profile {name!r} in {where}: isa {raw['isa']!r} not in {ISAS}")
    if raw["int8_dot_product"] not in DOT_PRODUCTS:
        raise ConfigError(
            f"device profile {name!r} in {where}: int8_dot_product {raw['int8_dot_product']!r} not in {DOT_PRODUCTS}"
        )
    if raw["emulated"] not in EMULATION:
        raise ConfigError(f"device profile {name!r} in {where}: emulated must be true, false or qemu")
    for key in ("cores", "threads"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
            raise ConfigError(f"device profile {name!r} in {where}: {key} must be an integer ≥ 1")
    if raw["emulated"] == "qemu" and (raw["isa"] != "aarch64" or not raw.get("qemu_cpu")):
        raise ConfigError(
            f"device profile {name!r} in {where}: emulated: qemu needs isa: aarch64 and a qemu_cpu"
        )
    known = {*REQUIRED, "providers", "stands_in_for", "qemu_cpu"}
    return DeviceProfile(
        name=name,
        **{k: raw[k] for k in REQUIRED},
        providers=tuple(raw.get("providers") or ("CPUExecutionProvider",)),
        stands_in_for=raw.get("stands_in_for", ""),
        qemu_cpu=str(raw.get("qemu_cpu", "")),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _read(text: str, where: str) -> dict[str, DeviceProfile]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"device profiles {where} are not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"device profiles {where} must map class names to profiles")
    return {str(name): _check(str(name), raw, where) for name, raw in data.items()}


@cache
def _load(extra_path: str) -> dict[str, DeviceProfile]:
    profiles = _read(
        resources.files("edgecompress").joinpath("device_profiles.yaml").read_text(), "the package"
    )
    if extra_path:
        path = Path(extra_path)
        if not path.exists():
            raise ConfigError(f"{PROFILES_ENV}={extra_path}: no such file")
        profiles.update(_read(path.read_text(), str(path)))
    for p in profiles.values():
        if p.stands_in_for and p.stands_in_for not in profiles:
            raise ConfigError(f"device profile {p.name!r} stands in for unknown class {p.stands_in_for!r}")
    return profiles


def profiles() -> dict[str, DeviceProfile]:
    return _load(os.environ.get(PROFILES_ENV, ""))


def profile(name: str) -> DeviceProfile:
    known = profiles()
    if name not in known:
        raise ConfigError(f"unknown device class {name!r}; profiles: {sorted(known)}")
    return known[name]


def quantization_target(name: str) -> DeviceProfile:
    """The profile whose INT8 kernels a model for `name` will run on: an emulated class's board."""
    p = profile(name)
    return profile(p.stands_in_for) if p.stands_in_for else p


def needs_reduce_range(name: str) -> bool:
    """7-bit weights for x86 targets without VNNI (their u8×s8 multiply saturates), never elsewhere."""
    target = quantization_target(name)
    if target.int8_dot_product == "host":
        raise ConfigError(f"device class {name!r} has no fixed INT8 kernels (int8_dot_product: host)")
    return target.isa == "x86_64" and target.int8_dot_product == "none"


QEMU_TIMING_NOTE = "not meaningful: the target ISA under QEMU (numerics are real, timings are not)"


def timing_note(name: str) -> str | None:
    """Why a latency measured for class `name` means nothing (None: it means what it says). Unknown
    classes get None: the farm serves classes without profiles too."""
    known = profiles()
    return QEMU_TIMING_NOTE if name in known and known[name].emulated == "qemu" else None


# QEMU CPU models with the INT8 features of each Arm dot-product kind (QEMU 7.2 has no A78).
QEMU_CPUS = {"none": "cortex-a72", "dotprod": "cortex-a76"}


def emulated_cpu(name: str) -> str:
    """The QEMU CPU that runs class `name`'s ISA on another machine: its profile's `qemu_cpu`, else
    the one with its board's INT8 dot-product kind (a real `rpi4` is checked as a cortex-a72)."""
    p = profile(name)
    target = quantization_target(name)
    if target.isa != "aarch64":
        raise ConfigError(f"device class {name!r} is {target.isa}: QEMU emulates aarch64 targets only here")
    return p.qemu_cpu or target.qemu_cpu or QEMU_CPUS[target.int8_dot_product]


# --- device classes (the emulated ones are built from the profiles) ------------------------------

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
    """The emulated classes of the device profiles, read when first needed: a broken profile file is
    then an error of the command that reads it, not of an import."""
    return {
        p.name: DeviceClass(
            p.name,
            threads=p.threads,
            emulated=True,
            description=p.description,
            providers=list(p.providers),
            cores=p.cores,
        )
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
