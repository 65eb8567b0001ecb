"""Do a device class's agents match its profile? Agents report their CPU at registration
(`device.cpu_features()`: ISA, INT8 dot-product kind, the features behind it); the controller compares
that with the class's profile (`edgecompress.runtime.devices`) and stores the disagreements with the agent.

Contract: a disagreement flags, it does not refuse. The agent still registers and serves (a board
whose profile is wrong is a finding, not an outage); `GET /v1/devices` shows each agent's
`profile_check` and `edgecompress farm devices` prints a class whose agents disagree as FLAGGED.
The ISA always counts; the INT8 dot-product kind counts where the profile fixes one (`vnni`,
`dotprod`, `none`; an x86 stand-in's `host` has none to compare). A class without a profile and an
agent that reports no CPU are flagged too: nothing vouches for them.
"""

from __future__ import annotations

from typing import Any

from edgecompress.errors import ConfigError


def mismatches(device_class: str, cpu: dict[str, Any] | None) -> list[str]:
    """Why an agent of `device_class` reporting `cpu` disagrees with the profile (empty: it agrees)."""
    from edgecompress.runtime.devices import profile

    try:
        expected = profile(device_class)
    except ConfigError:
        return [f"device class {device_class!r} has no profile to check the agent against"]
    if not isinstance(cpu, dict) or not cpu.get("isa"):
        return ["the agent reported no CPU features (an agent older than the profile check?)"]
    out = []
    if cpu["isa"] != expected.isa:
        out.append(f"isa: the profile says {expected.isa}, the agent runs {cpu['isa']}")
    reported = cpu.get("int8_dot_product")
    if expected.int8_dot_product != "host" and reported is not None and reported != expected.int8_dot_product:
        features = ", ".join(cpu.get("features") or []) or "none"
        out.append(
            f"int8_dot_product: the profile says {expected.int8_dot_product}, the agent's CPU has "
            f"{reported} (features: {features})"
        )
    return out


def check(device_class: str, cpu: dict[str, Any] | None) -> dict[str, Any]:
    """What the controller stores with the agent's facts."""
    found = mismatches(device_class, cpu)
    return {"agrees": not found, "mismatches": found}


def flagged_classes(devices: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Device class → the disagreements of its agents (as `GET /v1/devices` lists them), for the
    classes with any."""
    out: dict[str, list[str]] = {}
    for d in devices:
        pc = (d.get("facts") or {}).get("profile_check") or {}
        if pc and not pc.get("agrees", True):
            out.setdefault(d["device_class"], []).extend(f"{d['id']}: {m}" for m in pc.get("mismatches", []))
    return out
