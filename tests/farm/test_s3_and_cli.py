"""Models by s3:// URI (presigned download from a moto S3 server) and the `farm` CLI commands."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.farm.local import free_port
from tests.farm.conftest import TINY


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # inherited by the controller process started after this
    yield env
    server.stop()


def test_model_from_s3_uri_is_fetched_by_presigned_url(s3_server, farm_factory, tiny_model: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    data = tiny_model.read_bytes()
    s3.put_object(Bucket="models", Key="team/tiny.onnx", Body=data)
    s3.put_object(Bucket="models", Key="team/liar.onnx", Body=data + b"x")
    farm = farm_factory("--lease-s", "5")
    farm.agent()
    client = farm.client()
    sha = hashlib.sha256(data).hexdigest()
    ok = client.submit(
        {"sha256": sha, "uri": "s3://models/team/tiny.onnx", "name": "tiny.onnx"},
        "rpi4-emulated",
        TINY,
        timeout_s=60,
    )
    bad = client.submit(
        {"sha256": sha, "uri": "s3://models/team/liar.onnx"}, "rpi4-emulated", TINY, timeout_s=60
    )
    done = client.wait([ok["id"], bad["id"]], 90)
    assert done[ok["id"]]["state"] == "done" and done[ok["id"]]["result"]["model_sha256"] == sha
    assert done[bad["id"]]["state"] == "failed" and "sha256 mismatch" in done[bad["id"]]["error"]


def test_cli_submit_devices_jobs(farm_factory, tiny_model: Path, tmp_path: Path) -> None:
    farm = farm_factory()
    farm.agent()
    env = {
        **os.environ,
        "EDGECOMPRESS_FARM_URL": farm.url,
        "EDGECOMPRESS_FARM_CLIENT_TOKEN": farm.client_token,
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edgecompress.farm", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    out = cli(
        "submit",
        str(tiny_model),
        "--device-classes",
        "rpi4-emulated",
        "--settings",
        '{"min_runs": 5}',
        "--timeout-s",
        "60",
        "--output",
        str(tmp_path / "r.json"),
    )
    assert out.returncode == 0, out.stderr
    assert "rpi4-emulated (emulated): p50" in out.stdout and (tmp_path / "r.json").exists()
    devices = cli("devices")
    assert devices.returncode == 0 and "live" in devices.stdout and "emulated" in devices.stdout
    jobs = cli("jobs")
    assert jobs.returncode == 0 and "done" in jobs.stdout
    bad = cli("submit", str(tiny_model), "--device-classes", "rpi4-emulated", "--settings", '{"bogus": 1}')
    assert bad.returncode == 2 and "error:" in bad.stderr and "bogus" in bad.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "edgecompress.farm", "devices"],
        capture_output=True,
        text=True,
        env={**env, "EDGECOMPRESS_FARM_CLIENT_TOKEN": farm.agent_token},
        timeout=60,
    )
    assert refused.returncode == 2 and "403" in refused.stderr
    no_tokens = subprocess.run(
        [sys.executable, "-m", "edgecompress.farm", "controller", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in env.items() if not k.startswith("EDGECOMPRESS_FARM")},
    )
    assert no_tokens.returncode == 2 and "token" in no_tokens.stderr
