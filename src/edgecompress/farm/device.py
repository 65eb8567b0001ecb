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
    for line in info.splitlines():
        key = line.split(":")[0].strip().lower()
        if key in ("model name", "hardware", "model"):
            return line.split(":", 1)[1].strip()
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
    return state


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
    }
