"""Leases that always end (issue 15): a lease belongs to one job, heartbeats renew only the leases an
agent lists and never past the job's deadline, a restarted controller waits for agents to report,
transient download errors requeue instead of failing, a refused result releases the job."""

from __future__ import annotations

import time
from pathlib import Path

from tests.farm.conftest import TINY, executions, tiny_onnx

LONG = {**TINY, "min_duration_s": 30.0, "max_runs": 10**9}


def test_an_agent_restarted_with_the_same_id_does_not_keep_its_dead_lease(
    farm_factory, tiny_model: Path
) -> None:
    """Row: 'kill -9 an agent, restart it with the same --agent-id: its job stays leased for 100+ s:
    the new process's heartbeats renew every lease of that id'."""
    farm = farm_factory("--lease-s", "3", "--sweep-interval-s", "0.2")
    client = farm.client()
    first = farm.agent("rpi4-emulated", "--agent-id", "same")
    job = client.submit(client.upload(tiny_model), "rpi4-emulated", LONG, timeout_s=120)
    farm.wait_for(lambda: client.job(job["id"])["state"] == "leased", 60, "the job to be leased")
    first.kill()
    farm.agent("rpi4-emulated", "--agent-id", "same")  # the same identity, a fresh process
    # The dead process's lease ends (at the latest when it runs out) and the job is leased again.
    farm.wait_for(lambda: client.job(job["id"])["attempts"] == 2, 20, "the job to be leased again")
    assert client.job(job["id"])["agent_id"] == "same"
    client.cancel(job["id"])


def test_heartbeats_never_renew_a_lease_past_the_jobs_deadline(farm_factory, tiny_model: Path) -> None:
    """A live agent that never reports (hung benchmark, lost result) holds the job no longer than
    its timeout plus the grace: then the controller takes it back."""
    import requests

    farm = farm_factory("--lease-s", "1", "--deadline-grace-s", "1", "--sweep-interval-s", "0.2",
                        "--max-attempts", "1")  # fmt: skip
    client = farm.client()
    h = farm.agent_headers("hung", "manual-class")
    job = client.submit(client.upload(tiny_model), "manual-class", TINY, timeout_s=2)
    claimed = requests.post(f"{farm.url}/v1/agents/hung/claim", params={"device_class": "manual-class"},
                            headers=h, timeout=10).json()  # fmt: skip
    lease = {"leases": [{"job_id": claimed["id"], "lease_id": claimed["lease_id"]}]}
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8 and client.job(job["id"])["state"] == "leased":
        requests.post(f"{farm.url}/v1/agents/hung/heartbeat", json=lease, headers=h, timeout=10)
        time.sleep(0.3)
    took = time.monotonic() - t0
    done = client.job(job["id"])
    assert done["state"] == "failed" and "deadline" in done["error"], done
    assert took < 6, took  # 2 s timeout + 1 s grace + one sweep


def test_a_controller_outage_during_a_download_requeues_instead_of_failing(
    farm_factory, chaos_proxy, tmp_path: Path
) -> None:
    """Row: 'controller down 8 s during a model download: IncompleteRead becomes a final failed job
    instead of a retry'."""
    farm = farm_factory("--lease-s", "10", "--sweep-interval-s", "0.2")
    proxy = chaos_proxy(farm.port)
    agent = farm.agent("rpi4-emulated", url=proxy.url)
    model = tiny_onnx(tmp_path / "wide.onnx", width=8192)  # ~400 KB: the cut lands mid-body
    client = farm.client()
    ref = client.upload(model)
    farm.wait_for(lambda: any(d["live"] for d in client.devices()), 60, "the agent to register")
    proxy.cut_next_download(after_bytes=64 * 1024, down_s=8.0)
    job = client.submit(ref, "rpi4-emulated", TINY, timeout_s=120)
    done = client.wait([job["id"]], 120)[job["id"]]
    assert proxy.cuts == 1 and proxy.refused > 0  # the outage happened, mid-download
    assert done["state"] == "done", (done["error"], agent.log())
    assert agent.alive()


def test_a_restarted_controller_waits_for_agents_to_report_before_requeuing(
    farm_factory, tiny_model: Path
) -> None:
    """Row: 'controller down 40 s (> lease), then restarted: 3 finished results rejected with 409 and
    the jobs re-run: the sweeper requeues at start-up before agents can report'."""
    farm = farm_factory("--lease-s", "6", "--sweep-interval-s", "0.2")
    client = farm.client()
    ref = client.upload(tiny_model)
    for _ in range(3):
        farm.agent()
    farm.wait_for(lambda: sum(d["live"] for d in client.devices()) == 3, 60, "three agents")
    ids = [client.submit(ref, "rpi4-emulated", {**TINY, "min_duration_s": 3.0}, timeout_s=120)["id"]
           for _ in range(3)]  # fmt: skip
    farm.wait_for(lambda: all(client.job(i)["state"] == "leased" for i in ids), 60, "all three leased")
    farm.wait_for(lambda: all("benchmark of job" in a.log() for a in farm.agents), 60, "three benchmarks")
    farm.controller.kill()
    time.sleep(12)  # down for two leases; the benchmarks finish meanwhile and wait to report
    farm.start_controller()
    farm.wait_for(lambda: all(client.job(i)["state"] == "done" for i in ids), 60, "the reports")
    jobs = [client.job(i) for i in ids]
    assert [j["attempts"] for j in jobs] == [1, 1, 1], ([j["error"] for j in jobs], farm.controller.log())
    runs = executions(farm)
    assert [runs.get(i) for i in ids] == [1, 1, 1], runs


def test_a_result_refused_with_a_4xx_releases_the_job(farm_factory, tiny_model: Path) -> None:
    """Row: 'a result rejected with a 4xx other than 409: the job stays leased, renewed by
    heartbeats, forever'. Here the result is too large for the controller's body limit (413)."""
    farm = farm_factory("--max-json-mb", "0.02", "--lease-s", "2", "--max-attempts", "2",
                        "--sweep-interval-s", "0.2")  # fmt: skip
    agent = farm.agent()
    client = farm.client()
    big = {"min_runs": 3000, "warmup_runs": 0, "min_duration_s": 0.0}  # ~60 KB of samples
    job = client.submit(client.upload(tiny_model), "rpi4-emulated", big, timeout_s=60)
    farm.wait_for(lambda: client.job(job["id"])["state"] in ("done", "failed"), 60, "the job to end")
    done = client.job(job["id"])
    assert done["state"] == "failed" and "413" in done["error"] and done["attempts"] == 2, done
    assert agent.alive()
