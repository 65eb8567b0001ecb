"""Agents report their CPU at registration; a class whose agents disagree with its profile is
flagged (not refused) by the controller, in `GET /v1/devices` and in `edgecompress farm devices`."""

from __future__ import annotations

import requests

from edgecompress.runtime import profilecheck
from edgecompress.runtime.facts import cpu_features
from tests.conftest import run_cli

PI4_CPU = {"isa": "aarch64", "int8_dot_product": "none", "features": ["fp", "asimd"], "source": "auxv"}
PI5_CPU = {
    "isa": "aarch64",
    "int8_dot_product": "dotprod",
    "features": ["fp", "asimd", "asimddp"],
    "source": "auxv",
}


def test_this_machine_reports_its_isa_and_int8_kernels():
    cpu = cpu_features()
    assert cpu["isa"] == "x86_64" and cpu["source"] == "cpuinfo"
    assert cpu["int8_dot_product"] == (
        "vnni" if {"avx512_vnni", "avx_vnni"} & set(cpu["features"]) else "none"
    )


def test_mismatches_against_the_profile():
    assert profilecheck.mismatches("rpi4-qemu", PI4_CPU) == []
    assert profilecheck.mismatches("rpi5-qemu", PI5_CPU) == []
    (dot,) = profilecheck.mismatches("rpi4-qemu", PI5_CPU)  # a dot-product CPU serving the Pi 4 class
    assert "profile says none" in dot and "dotprod" in dot and "asimddp" in dot
    isa = profilecheck.mismatches("rpi4", cpu_features())  # an x86 agent claiming to be a Pi 4
    assert any(m.startswith("isa: the profile says aarch64, the agent runs x86_64") for m in isa)
    assert profilecheck.mismatches("rpi4-emulated", cpu_features()) == []  # x86 stand-in: host kernels
    assert "no profile" in profilecheck.mismatches("lab-board-7", PI4_CPU)[0]
    assert "no CPU features" in profilecheck.mismatches("rpi4-qemu", None)[0]


def _register(farm, agent_id: str, device_class: str, cpu) -> dict:
    headers = {"Authorization": f"Bearer {farm.agent_token_for(agent_id, device_class)}"}
    body = {"agent_id": agent_id, "device_class": device_class, "hostname": agent_id, "facts": {"cpu": cpu}}
    r = requests.post(f"{farm.url}/v1/agents/register", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text  # flagged, never refused
    return r.json()


def test_a_class_whose_agents_disagree_is_flagged(farm_factory, backend):
    farm = farm_factory()
    assert _register(farm, "pi4-a", "rpi4-qemu", PI4_CPU)["profile_check"] == {
        "agrees": True,
        "mismatches": [],
    }
    assert _register(farm, "pi5-a", "rpi5-qemu", PI5_CPU)["profile_check"]["agrees"]
    answer = _register(farm, "pi4-b", "rpi4-qemu", PI5_CPU)  # the odd one out
    assert not answer["profile_check"]["agrees"]
    devices = farm.client().devices()
    assert profilecheck.flagged_classes(devices).keys() == {"rpi4-qemu"}
    assert "pi4-b: int8_dot_product" in profilecheck.flagged_classes(devices)["rpi4-qemu"][0]
    out = run_cli(
        "farm", "devices", "--farm-url", farm.url, env={"EDGECOMPRESS_FARM_CLIENT_TOKEN": farm.client_token}
    )
    assert out.returncode == 0, out.stderr
    flagged = [line for line in out.stdout.splitlines() if line.startswith("FLAGGED")]
    assert len(flagged) == 1 and flagged[0].startswith("FLAGGED rpi4-qemu:") and "pi4-b" in flagged[0], (
        out.stdout
    )
    assert "aarch64/none" in out.stdout and "aarch64/dotprod" in out.stdout
