"""Reliability: agents and the controller are killed with SIGKILL mid-work; nothing is lost or done twice."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.farm.conftest import TINY


def test_agent_killed_mid_benchmark_job_is_leased_again_and_completed(farm_factory, tiny_model: Path) -> None:
    farm = farm_factory("--lease-s", "1.5", "--sweep-interval-s", "0.2")
    client = farm.client()
    first = farm.agent()
    model = client.upload(tiny_model)
    job = client.submit(
        model, "rpi4-emulated", {**TINY, "min_duration_s": 4.0, "max_runs": 10**9}, timeout_s=120
    )
    farm.wait_for(lambda: client.job(job["id"])["state"] == "leased", 60, "the first agent to lease the job")
    assert client.job(job["id"])["agent_id"] == "agent-0"
    time.sleep(1.5)  # the 4 s benchmark is running in the agent's child process
    first.kill()  # SIGKILL to the agent and its benchmark child
    farm.wait_for(
        lambda: client.job(job["id"])["state"] == "queued", 30, "the expired lease to requeue the job"
    )
    second = farm.agent()
    farm.wait_for(
        lambda: client.job(job["id"])["state"] in ("done", "failed"), 90, "the second agent to finish"
    )
    done = client.job(job["id"])
    assert done["state"] == "done", done["error"]
    assert done["agent_id"] == "agent-1" and done["attempts"] == 2
    assert done["result"]["agent_id"] == "agent-1" and done["result"]["job_id"] == job["id"]
    assert done["result"]["emulated"] is True and done["result"]["runs"] >= TINY["min_runs"]
    assert second.alive()


def test_controller_killed_and_restarted_loses_no_job(farm_factory, tiny_model: Path) -> None:
    farm = farm_factory("--lease-s", "3", "--sweep-interval-s", "0.2")
    client = farm.client()
    model = client.upload(tiny_model)
    ids = [
        client.submit(model, "rpi4-emulated", {**TINY, "min_duration_s": 0.3}, timeout_s=120)["id"]
        for _ in range(12)
    ]
    farm.agent()
    farm.wait_for(lambda: len(client.jobs(state="done")) >= 3, 60, "three jobs to finish")
    before = {j["id"]: j for j in client.jobs(limit=100)}
    farm.controller.kill()
    farm.start_controller()  # same port, same database, same blob directory
    after = {j["id"]: j for j in client.jobs(limit=100)}
    assert set(after) == set(before) == set(ids)
    for job_id, job in before.items():  # nothing went backwards: finished jobs stay finished
        if job["state"] == "done":
            assert after[job_id]["state"] == "done" and after[job_id]["agent_id"] == job["agent_id"]
    farm.wait_for(
        lambda: all(j["state"] == "done" for j in client.jobs(limit=100)), 120, "every job to finish"
    )
    final = client.jobs(limit=100)
    assert len(final) == 12 and all(j["state"] == "done" for j in final)
    assert all(client.job(i)["result"]["job_id"] == i for i in ids)


def test_200_concurrent_jobs_on_4_agents_each_complete_exactly_once(farm_factory, tiny_model: Path) -> None:
    farm = farm_factory()
    client = farm.client()
    model = client.upload(tiny_model)
    for _ in range(4):
        farm.agent()
    settings = {"min_runs": 1, "warmup_runs": 0, "min_duration_s": 0.0}
    with ThreadPoolExecutor(16) as pool:  # 200 submissions in flight at once
        ids = list(
            pool.map(
                lambda _: farm.client().submit(model, "rpi4-emulated", settings, timeout_s=120)["id"],
                range(200),
            )
        )
    assert len(set(ids)) == 200
    farm.wait_for(lambda: client.queue()["depth"]["rpi4-emulated"]["done"] == 200, 240, "200 jobs to finish")
    jobs = client.jobs(limit=1000)
    assert len(jobs) == 200 and all(j["state"] == "done" and j["attempts"] == 1 for j in jobs)
    # Each job was executed by exactly one agent, once: count the agents' own "job N:" log lines.
    executed = [int(m) for a in farm.agents for m in re.findall(r"job (\d+): ", a.log_path.read_text())]
    assert sorted(executed) == sorted(ids)
    assert len({j["agent_id"] for j in jobs}) == 4  # the work was shared
