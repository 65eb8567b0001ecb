"""Facts about the device a benchmark runs on, read where the device exposes them."""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def current_rss_bytes() -> int:
    statm = _read("/proc/self/statm")
    return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") if statm else 0


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    fields = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    # x86 "model" is a number; a Pi's "Model" is the board name; ARM SoCs have "Hardware".
    for key in ("model name", "hardware", "model"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


def thermal_state() -> dict[str, Any]:
    """Zone temperatures (°C) and, on a Raspberry Pi, the firmware's throttle flags."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(f"{zone}/temp")
        if raw and raw.lstrip("-").isdigit():
            temps[_read(f"{zone}/type") or Path(zone).name] = int(raw) / 1000.0
    state: dict[str, Any] = {"temperatures_c": temps}
    if shutil.which("vcgencmd"):
        try:
            out = subprocess.run(
                ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5
            ).stdout
            flags = int(out.strip().split("=")[1], 16)
            state["throttled_flags"] = hex(flags)
            state["throttled_now"] = bool(flags & 0x4)
            state["under_voltage_now"] = bool(flags & 0x1)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    if shutil.which("tegrastats"):  # Jetson: one line of RAM/CPU/GPU load, clocks and temperatures
        line = _tegrastats_line()
        if line:
            state["tegrastats"] = line
    return state


def _tegrastats_line(timeout_s: float = 3.0) -> str | None:
    try:
        proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)
    except OSError:
        return None
    try:
        import select

        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        return proc.stdout.readline().strip() if ready and proc.stdout else None
    finally:
        proc.kill()
        proc.wait(timeout=5)


# Linux auxiliary vector (AT_HWCAP/AT_HWCAP2) bits of arm64 features that select ONNX Runtime's INT8
# kernels (asm/hwcap.h). Read from /proc/self/auxv, which QEMU user mode emulates for the CPU it
# emulates (QEMU_CPU), unlike /proc/cpuinfo (QEMU 7.2 shows the host's there).
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_ARM64_HWCAP = {"fp": 1 << 0, "asimd": 1 << 1, "asimdhp": 1 << 10, "asimddp": 1 << 20, "sve": 1 << 22}
_ARM64_HWCAP2 = {"sve2": 1 << 1, "i8mm": 1 << 13, "bf16": 1 << 14}
# x86 /proc/cpuinfo flags that decide the INT8 path (VNNI or the saturating AVX2 vpmaddubsw).
_X86_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def normalize_isa(machine: str) -> str:
    """`platform.machine()` spellings → the profiles' ISA names (x86_64, aarch64)."""
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


def _auxv() -> dict[int, int]:
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return {}
    words = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw) - 7, 8)]
    return dict(zip(words[::2], words[1::2], strict=False))


def cpu_features() -> dict[str, Any]:
    """The ISA and the INT8-relevant CPU features of this machine (as its processes see it, so under
    QEMU the emulated CPU's), and the INT8 dot-product kind the profiles name: `vnni`, `dotprod` or
    `none`. What an agent reports at registration and the farm checks against the class's profile."""
    isa = normalize_isa(platform.machine())
    features: list[str] = []
    source = None
    if isa == "aarch64":
        aux = _auxv()
        if _AT_HWCAP in aux:
            source = "auxv"
            features = [n for n, bit in _ARM64_HWCAP.items() if aux[_AT_HWCAP] & bit]
            features += [n for n, bit in _ARM64_HWCAP2.items() if aux.get(_AT_HWCAP2, 0) & bit]
        dot = "dotprod" if "asimddp" in features else "none"
    else:
        for line in (_read("/proc/cpuinfo") or "").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "flags":
                source = "cpuinfo"
                flags = set(value.split())
                features = [f for f in _X86_FLAGS if f in flags]
                break
        dot = "vnni" if {"avx512_vnni", "avx_vnni"} & set(features) else "none"
    return {"isa": isa, "int8_dot_product": dot if source else None, "features": features, "source": source}


# /proc/cpuinfo of the Arm CPUs QEMU emulates for the *-qemu classes (MIDR part, Linux feature names).
_QEMU_ARM_CPUS = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": (
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
}


def emulated_cpuinfo(qemu_cpu: str, cpus: int | None = None) -> str:
    """An aarch64 /proc/cpuinfo for a container under QEMU user mode. QEMU 7.2 passes the host's x86
    file through, which ONNX Runtime's cpuinfo library cannot parse on aarch64: its import then
    segfaults (measured here). Mounted over /proc/cpuinfo, this one names the emulated core; the
    features ONNX Runtime's kernels select on still come from the auxiliary vector (QEMU_CPU)."""
    if qemu_cpu not in _QEMU_ARM_CPUS:
        raise ValueError(f"no /proc/cpuinfo known for QEMU CPU {qemu_cpu!r}; known: {sorted(_QEMU_ARM_CPUS)}")
    part, features = _QEMU_ARM_CPUS[qemu_cpu]
    n = cpus or os.cpu_count() or 1
    return "\n".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n"
        for i in range(n)
    )


def facts() -> dict[str, Any]:
    """What an auditor needs to know about the machine behind a latency figure."""
    import onnxruntime as ort

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(cpus),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "max_freq_khz": _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
        "jetson_model": _read("/proc/device-tree/model") if Path("/etc/nv_tegra_release").exists() else None,
        "onnxruntime_version": ort.__version__,
        "execution_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "cpu": cpu_features(),
    }
