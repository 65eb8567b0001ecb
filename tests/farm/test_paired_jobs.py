"""Paired jobs: two models benchmarked in one process on an agent, alternating (a latency comparison
whose two sides see the same moments of the device), through a real controller and agent."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from edgecompress.runtime.runner import PAIR_SCHEMA, SCHEMA
from tests.farm.conftest import TINY, tiny_onnx


@pytest.fixture
def farm(farm_factory):
    return farm_factory("--lease-s", "5")


def test_a_paired_job_runs_both_models_on_one_agent(farm, tmp_path: Path) -> None:
    client = farm.client()
    farm.agent()
    small = tiny_onnx(tmp_path / "small.onnx", width=16)
    large = tiny_onnx(tmp_path / "large.onnx", width=20_000, seed=1)  # ~10^4 × the MACs of `small`
    paired = client.upload(large)
    job = client.submit(client.upload(small), "rpi4-emulated", TINY, timeout_s=120, paired_with=paired)
    done = client.wait([job["id"]], 120)[job["id"]]
    assert done["state"] == "done", done.get("error")
    assert done["paired_sha256"] == paired["sha256"] and done["paired_name"] == "large.onnx"
    result = done["result"]
    assert result["schema"] == PAIR_SCHEMA
    first, second = result["results"]
    for each, path, name in ((first, small, "small.onnx"), (second, large, "large.onnx")):
        # each model's own result, stamped by the controller like a one-model job's
        assert each["schema"] == SCHEMA and each["model_bytes"] == path.stat().st_size
        assert each["model_name"] == name and each["runs"] >= TINY["min_runs"]
        assert each["job_id"] == job["id"] and each["device_class"] == "rpi4-emulated"
        assert each["emulated"] is True and each["agent_id"] == "agent-0"
    # first / second from the same moments: the small model is the faster one
    assert 0 < result["pairing"]["ratio"] < 1

    # the paired model's bytes are checked like the model's: a blob changed after upload fails the job
    other = client.upload(tiny_onnx(tmp_path / "other.onnx", width=24))
    (farm.root / "blobs" / other["sha256"]).write_bytes(small.read_bytes())
    job = client.submit(client.upload(small), "rpi4-emulated", TINY, timeout_s=60, paired_with=other)
    failed = client.wait([job["id"]], 120)[job["id"]]
    assert failed["state"] == "failed" and "sha256 mismatch" in failed["error"], failed


def test_a_paired_model_must_be_the_clients_own(farm, tiny_model: Path, tmp_path: Path) -> None:
    client = farm.client()
    other = tiny_onnx(tmp_path / "never-uploaded.onnx", width=24)
    from edgecompress.io import sha256_file

    body = {
        "model": client.upload(tiny_model),
        "paired_with": {"sha256": sha256_file(other), "name": "never-uploaded.onnx"},
        "device_class": "rpi4-emulated",
        "settings": TINY,
    }
    resp = requests.post(
        f"{farm.url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {farm.client_token}"}, timeout=10
    )
    assert resp.status_code == 422 and "no uploaded model" in resp.json()["detail"]


def test_an_agent_downloads_the_paired_model_only_while_it_holds_the_job(
    farm, tiny_model: Path, tmp_path: Path
) -> None:
    """The controller answers a one-model job's pair result with 422, and accepts a paired job's."""
    from tests.farm.test_identity import valid_result

    url = farm.url
    client = farm.client()
    second = client.upload(tiny_onnx(tmp_path / "second.onnx", width=24))
    job = client.submit(client.upload(tiny_model), "manual-class", TINY, paired_with=second)
    ha = farm.agent_headers("m1", "manual-class")
    blob = f"{url}/v1/blobs/{second['sha256']}"
    assert requests.get(blob, headers=ha, timeout=10).status_code == 404  # not leased yet
    claimed = requests.post(
        f"{url}/v1/agents/m1/claim", params={"device_class": "manual-class"}, headers=ha, timeout=10
    ).json()
    assert claimed["id"] == job["id"] and claimed["paired_url"] == f"/v1/blobs/{second['sha256']}"
    assert claimed["paired_sha256"] == second["sha256"] and claimed["paired_name"] == "second.onnx"
    assert requests.get(blob, headers=ha, timeout=10).status_code == 200
    pair = {
        "schema": PAIR_SCHEMA,
        "results": [valid_result(p50=1.0), valid_result(p50=2.0)],
        "pairing": {"method": "test", "ratio": 0.5, "block_ratios": [0.5, 0.5], "blocks": 2},
    }
    body = {"agent_id": "m1", "lease_id": claimed["lease_id"], "status": "done"}
    bad = {**pair, "pairing": {**pair["pairing"], "ratio": 3.0}}  # outside its block ratios
    resp = requests.post(
        f"{url}/v1/jobs/{job['id']}/result", json={**body, "result": bad}, headers=ha, timeout=10
    )
    assert resp.status_code == 422 and "pairing.ratio" in resp.json()["detail"]
    ok = requests.post(
        f"{url}/v1/jobs/{job['id']}/result", json={**body, "result": pair}, headers=ha, timeout=10
    )
    assert ok.status_code == 200, ok.text
    stored = client.job(job["id"])["result"]
    assert [r["job_id"] for r in stored["results"]] == [job["id"]] * 2  # each model's result stamped
    assert all(r["agent_id"] == "m1" and r["device_class"] == "manual-class" for r in stored["results"])
    assert requests.get(blob, headers=ha, timeout=10).status_code == 404  # the job is done

    # an agent older than paired jobs answers with its first model's result: stored, the client falls back
    older = client.submit(client.upload(tiny_model), "manual-class", TINY, paired_with=second)
    claimed = requests.post(
        f"{url}/v1/agents/m1/claim", params={"device_class": "manual-class"}, headers=ha, timeout=10
    ).json()
    assert claimed["id"] == older["id"]
    body = {"agent_id": "m1", "lease_id": claimed["lease_id"], "status": "done", "result": valid_result()}
    resp = requests.post(f"{url}/v1/jobs/{older['id']}/result", json=body, headers=ha, timeout=10)
    assert resp.status_code == 200 and client.job(older["id"])["result"]["schema"] == SCHEMA

    # a pair is not a one-model job's result
    single = client.submit(client.upload(tiny_model), "manual-class", TINY)
    claimed = requests.post(
        f"{url}/v1/agents/m1/claim", params={"device_class": "manual-class"}, headers=ha, timeout=10
    ).json()
    assert claimed["id"] == single["id"] and claimed.get("paired_sha256") is None
    body = {"agent_id": "m1", "lease_id": claimed["lease_id"], "status": "done", "result": pair}
    resp = requests.post(f"{url}/v1/jobs/{single['id']}/result", json=body, headers=ha, timeout=10)
    assert resp.status_code == 422 and "one model" in resp.json()["detail"]


def test_retention_keeps_a_blob_that_a_job_names_as_its_paired_model(db_url: str) -> None:
    from edgecompress.farm.store import JobStore

    store = JobStore(db_url)
    store.submit(device_class="c", model_name="m", model_sha256="a" * 64, model_uri=None, model_bytes=1,
                 settings={}, timeout_s=60, paired_name="p", paired_sha256="b" * 64)  # fmt: skip
    store.submit(device_class="c", model_name="m", model_sha256="c" * 64, model_uri=None, model_bytes=1,
                 settings={}, timeout_s=60, paired_name="p", paired_sha256="d" * 64,
                 paired_uri="s3://bucket/d.onnx")  # fmt: skip
    assert store.blob_references() == {"a" * 64, "b" * 64, "c" * 64}  # an S3 model is not a blob


def test_a_database_from_before_paired_jobs_gains_their_columns(db_url: str) -> None:
    """A farm upgraded in place: its jobs table lacks the paired columns; the controller's store adds
    them at start-up, and the jobs already there keep their rows."""
    import sqlalchemy as sa

    from edgecompress.farm.store import JobStore
    from edgecompress.farm.tables import jobs

    old = sa.MetaData()
    columns = [c for c in jobs.columns if not c.name.startswith("paired_")]
    sa.Table(
        jobs.name,
        old,
        *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in columns),
    )
    engine = sa.create_engine(db_url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables[jobs.name].insert().values(
            device_class="c", state="queued", priority=0, model_name="m", model_sha256="a" * 64,
            settings="{}", timeout_s=60, created_at=0.0, attempts=0, max_attempts=3))  # fmt: skip
    engine.dispose()
    store = JobStore(db_url)
    job = store.submit(device_class="c", model_name="m", model_sha256="b" * 64, model_uri=None,
                       model_bytes=1, settings={}, timeout_s=60, paired_name="p", paired_sha256="c" * 64)  # fmt: skip
    assert store.get(job["id"])["paired_sha256"] == "c" * 64
    assert store.get(1)["paired_sha256"] is None and store.blob_references() == {"a" * 64, "b" * 64, "c" * 64}


def test_cli_submit_paired_with(farm, tmp_path: Path) -> None:
    """`edgecompress farm submit A --paired-with B`: one paired job per class, each model's p50 and the
    ratio printed, the pair's result in --output; a missing second model is named, nothing written."""
    import json
    import os
    import subprocess
    import sys

    farm.agent()
    small = tiny_onnx(tmp_path / "small.onnx", width=16)
    large = tiny_onnx(tmp_path / "large.onnx", width=20_000, seed=1)
    env = {
        **os.environ,
        "EDGECOMPRESS_FARM_URL": farm.url,
        "EDGECOMPRESS_FARM_CLIENT_TOKEN": farm.client_token,
    }

    def submit(second: Path, output: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edgecompress.farm", "submit", str(small), "--paired-with", str(second),
             "--device-classes", "rpi4-emulated", "--settings", json.dumps(TINY), "--timeout-s", "120",
             "--output", str(output)],
            capture_output=True, text=True, env=env, timeout=180,
        )  # fmt: skip

    out = submit(large, tmp_path / "pair.json")
    assert out.returncode == 0, out.stderr
    assert "rpi4-emulated (emulated): job" in out.stdout and "paired (" in out.stdout
    assert "small.onnx: p50" in out.stdout and "large.onnx: p50" in out.stdout
    result = json.loads((tmp_path / "pair.json").read_text())["rpi4-emulated"]
    assert result["schema"] == PAIR_SCHEMA
    assert f"p50 ratio small.onnx / large.onnx: {result['pairing']['ratio']:.4f}" in out.stdout
    assert result["pairing"]["ratio"] < 1

    missing = submit(tmp_path / "absent.onnx", tmp_path / "none.json")
    assert missing.returncode == 2 and "absent.onnx does not exist" in missing.stderr
    assert not (tmp_path / "none.json").exists()
