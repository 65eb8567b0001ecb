"""`edgecompress farm controller` / `farm agent`: every option reaches its ControllerConfig / AgentConfig
field (same-named options pass straight through, MiB options become bytes, days seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgecompress.farm.agent as agent
import edgecompress.farm.controller as controller
from edgecompress.cli import main


@pytest.fixture
def configs(monkeypatch):
    got = {}
    monkeypatch.setattr(controller, "serve", lambda config, host, port, level: got.update(controller=config))
    monkeypatch.setattr(agent, "run_agent", lambda config: got.update(agent=config) or 0)
    monkeypatch.setenv("EDGECOMPRESS_FARM_ADMIN_TOKEN", "a" * 40)
    monkeypatch.setenv("EDGECOMPRESS_FARM_AGENT_TOKEN", "b" * 40)
    return got


def test_controller_options_reach_its_config(configs, tmp_path):
    argv = ["farm", "controller", "--db-url", "sqlite:///x.db", "--blob-dir", str(tmp_path), "--lease-s", "12",
            "--max-attempts", "5", "--live-after-s", "9", "--deadline-grace-s", "8", "--restart-grace-s", "7",
            "--backoff-s", "0.5", "--max-model-mb", "3", "--max-json-mb", "2", "--sweep-interval-s", "4",
            "--retention-days", "2", "--docs"]  # fmt: skip
    assert main(argv) == 0
    c = configs["controller"]
    assert (c.db_url, c.blob_dir, c.admin_token) == ("sqlite:///x.db", tmp_path, "a" * 40)
    assert (c.lease_s, c.max_attempts, c.live_after_s, c.deadline_grace_s, c.restart_grace_s) == (
        12,
        5,
        9,
        8,
        7,
    )
    assert (c.backoff_s, c.sweep_interval_s, c.retention_s, c.docs) == (0.5, 4, 2 * 86_400, True)
    assert (c.max_model_bytes, c.max_json_bytes) == (3 * 2**20, 2 * 2**20)


def test_agent_options_reach_its_config(configs, tmp_path):
    argv = ["farm", "agent", "--controller", "http://c:1", "--device-class", "rpi4", "--emulate", "rpi4-emulated",
            "--agent-id", "pi-1", "--ca-bundle", str(tmp_path / "ca.pem"), "--poll-wait-s", "3",
            "--memory-limit-mb", "100", "--max-model-mb", "5", "--work-dir", str(tmp_path), "--max-jobs", "2"]  # fmt: skip
    assert main(argv) == 0
    a = configs["agent"]
    assert (a.controller, a.device_class, a.emulate, a.agent_id) == (
        "http://c:1",
        "rpi4",
        "rpi4-emulated",
        "pi-1",
    )
    assert (a.token, a.enrolment_token, a.ca_bundle, a.work_dir) == (
        "b" * 40,
        "",
        tmp_path / "ca.pem",
        tmp_path,
    )
    assert (a.poll_wait_s, a.max_jobs) == (3, 2)
    assert (a.memory_limit_bytes, a.max_model_bytes) == (100 * 2**20, 5 * 2**20)
    assert isinstance(a.work_dir, Path)
