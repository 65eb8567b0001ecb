"""Agents that never die or leak (issue 15): the benchmark child dies with its agent, ONNX parsing
happens inside the limited child, and settings out of bounds are refused at submission (422)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.farm.conftest import TINY, alive, descendants, nested_if_onnx, peak_rss_mb


def test_the_benchmark_child_dies_with_a_killed_agent(farm_factory, tiny_model: Path) -> None:
    """Row: 'kill -9 an agent mid-benchmark: the forked benchmark child keeps running (55 % CPU 40 s
    later, past the job's timeout)'."""
    farm = farm_factory("--lease-s", "5")
    agent = farm.agent()
    client = farm.client()
    job = client.submit(client.upload(tiny_model), "rpi4-emulated",
                        {**TINY, "min_duration_s": 60.0, "max_runs": 10**9}, timeout_s=120)  # fmt: skip
    farm.wait_for(lambda: client.job(job["id"])["state"] == "leased", 60, "the job to be leased")
    # the benchmark child is busy once the forkserver and the child exist (a loaded machine may take a while)
    farm.wait_for(lambda: len(descendants(agent.popen.pid)) >= 2, 60, "the agent's benchmark child")
    time.sleep(1.0)
    below = descendants(agent.popen.pid)
    assert len(below) >= 2, below  # the forkserver and the benchmark child (at least)
    os.kill(agent.popen.pid, signal.SIGKILL)  # the agent alone, as `kill -9 <agent pid>` does
    agent.popen.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in below):
        time.sleep(0.1)
    assert not [p for p in below if alive(p)], "processes outlived their agent"


def test_nan_or_infinity_inside_settings_is_a_422(farm_factory, tiny_model: Path) -> None:
    """Row: 'NaN/Infinity inside settings: 500 with a traceback (top-level NaN is 422)'."""
    farm = farm_factory()
    client = farm.client()
    ref = client.upload(tiny_model)
    for settings in (b'{"min_duration_s": NaN}', b'{"min_duration_s": Infinity}', b'{"seed": -Infinity}',
                     b'{"providers": [NaN]}', b'{"threads": 1, "warmup_runs": NaN}'):  # fmt: skip
        body = b'{"model": {"sha256": "%s"}, "device_class": "rpi4-emulated", "settings": %s}' % (
            ref["sha256"].encode(),
            settings,
        )
        r = requests.post(f"{farm.url}/v1/jobs", data=body, timeout=10,
                          headers={**farm.headers(), "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 422 and "settings" in r.text, (settings, r.status_code, r.text[:300])
    assert client.jobs() == []  # nothing stored
    assert farm.healthy()


def test_onnx_checks_run_inside_the_limited_child(farm_factory, tiny_model: Path, tmp_path: Path) -> None:
    """Row: '30 MB nested-If ONNX model: the agent process peaks at 1.37 GB: check_onnx runs outside
    the memory-limited child'. The agent's own peak memory must not grow with the model."""
    farm = farm_factory("--max-model-mb", "64", "--lease-s", "10")
    agent = farm.agent("rpi4-emulated", "--memory-limit-mb", "1024")
    client = farm.client()
    warm = client.submit(client.upload(tiny_model), "rpi4-emulated", TINY, timeout_s=120)
    assert client.wait([warm["id"]], 120)[warm["id"]]["state"] == "done"
    before = peak_rss_mb(agent.popen.pid)
    model = nested_if_onnx(tmp_path / "nested.onnx", depth=20, payload_mb=30)
    job = client.submit(client.upload(model), "rpi4-emulated", TINY, timeout_s=120)
    done = client.wait([job["id"]], 120)[job["id"]]
    assert done["state"] in ("done", "failed"), done
    if done["state"] == "failed":
        assert done["error"] and "Traceback" not in done["error"]
    grown = peak_rss_mb(agent.popen.pid) - before
    assert grown < 25, f"the agent's peak memory grew by {grown:.0f} MiB for a 30 MiB model"
    assert agent.alive() and farm.healthy()


def test_threads_beyond_the_class_cores_are_a_422(farm_factory, tiny_model: Path) -> None:
    """Row: 'threads=100000 on a non-emulated agent: accepted; benchmark child segfaults after 12 s'."""
    from edgecompress.errors import BenchmarkError

    farm = farm_factory()
    agent = farm.agent("real-cpu")  # not an emulated class: runs as this machine
    client = farm.client()
    farm.wait_for(lambda: any(d["live"] for d in client.devices()), 60, "the agent to register")
    cores = next(d for d in client.devices() if d["device_class"] == "real-cpu")["facts"]["cpus_usable"]
    ref = client.upload(tiny_model)
    for settings in ({"threads": 100_000}, {"threads": cores + 1}, {"batch_size": 10**9},
                     {"min_duration_s": 1e9}, {"threads": True}, {"threads": "2"}):  # fmt: skip
        with pytest.raises(BenchmarkError, match="answered 422"):
            client.submit(ref, "real-cpu", {**TINY, **settings}, timeout_s=60)
    assert client.jobs() == []
    ok = client.submit(ref, "real-cpu", {**TINY, "threads": cores}, timeout_s=120)
    done = client.wait([ok["id"]], 120)[ok["id"]]
    assert done["state"] == "done", done["error"]
    assert done["result"]["settings"]["threads"] == cores and done["result"]["emulated"] is False
    assert agent.alive()
