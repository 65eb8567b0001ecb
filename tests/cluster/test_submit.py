"""`edgecompress submit` / `schedule` against a Kubeflow Pipelines API stand-in on loopback: the
uploaded package, the run / recurring run request bodies, and the printed ids and URLs."""

from __future__ import annotations

import json

import pytest
import yaml

from edgecompress.cli import main
from tests.cluster.kfp_stub import KfpStub, serve


@pytest.fixture
def kfp_api():
    stub = KfpStub()
    server, url = serve(stub)
    yield stub, url
    server.shutdown()
    server.server_close()


def uploaded_spec(stub: KfpStub, path: str) -> dict:
    body = stub.find("POST", path)[-1].body
    text = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0].decode()  # the multipart file part
    return {k: v for doc in yaml.safe_load_all(text) for k, v in doc.items()}


def printed(capsys, *argv: str) -> str:
    """What `edgecompress ARGV` prints; the command must succeed."""
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_submit_uploads_and_runs(kfp_api, capsys, monkeypatch):
    stub, url = kfp_api
    monkeypatch.setenv("KFP_TOKEN", "bearer-abc")
    out = printed(
        capsys,
        "submit",
        "--host",
        url,
        "--param",
        "epochs=2",
        "--param",
        'device_classes=["rpi4-emulated"]',
        "--param",
        "dataset=fashion-mnist",
        "--tag",
        "9.9",
        "--run-name",
        "nightly",
        "--enable-caching",
        "off",
    )
    assert "run id:  run-42" in out
    assert f"run URL: {url}/#/runs/details/run-42" in out
    upload = stub.find("POST", "/apis/v2beta1/pipelines/upload")[0]
    assert upload.query["name"] == ["edge-compression"]
    assert upload.headers["authorization"] == "Bearer bearer-abc"
    spec = uploaded_spec(stub, "/apis/v2beta1/pipelines/upload_version")
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "ghcr.io/edgecompress/components:9.9"
    }
    assert "platforms" in spec  # Kubernetes settings travel with the package
    run = stub.find("POST", "/apis/v2beta1/runs")[0].json()
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "experiment-1"
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipeline-1",
        "pipeline_version_id": "version-1",
    }
    assert run["runtime_config"]["parameters"] == {
        "epochs": 2,
        "device_classes": ["rpi4-emulated"],
        "dataset": "fashion-mnist",
    }
    exp = stub.find("POST", "/apis/v2beta1/experiments")[0].json()
    assert exp["display_name"] == "edgecompress"


def test_second_submit_adds_a_version_to_the_existing_pipeline(kfp_api, capsys):
    stub, url = kfp_api
    assert main(["submit", "--host", url]) == 0
    assert main(["submit", "--host", url]) == 0
    assert len(stub.find("POST", "/apis/v2beta1/pipelines/upload")) == 1
    versions = stub.find("POST", "/apis/v2beta1/pipelines/upload_version")
    assert len(versions) == 2 and all(v.query["pipelineid"] == ["pipeline-1"] for v in versions)
    assert len(stub.find("POST", "/apis/v2beta1/experiments")) == 1  # reused


def test_schedule_creates_a_recurring_run(kfp_api, capsys):
    stub, url = kfp_api
    out = printed(
        capsys,
        "schedule",
        "--host",
        url,
        "--cron",
        "0 0 3 * * *",
        "--param",
        "epochs=3",
        "--max-concurrency",
        "2",
        "--job-name",
        "nightly-retrain",
    )
    assert "recurring run id:  recurring-7" in out
    assert f"{url}/#/recurringrun/details/recurring-7" in out
    job = stub.find("POST", "/apis/v2beta1/recurringruns")[0].json()
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert job["display_name"] == "nightly-retrain"
    assert job["max_concurrency"] in (2, "2")
    assert job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["runtime_config"]["parameters"] == {"epochs": 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedule", "--cron", "0 3 * * *"], "KFP takes 6 fields"),
        (["submit", "--param", "epochz=3"], "--param epochz: not a parameter of edge-compression"),
        (["submit", "--pipeline", "nope"], "pipeline 'nope': unknown"),
    ],
)
def test_bad_input_exits_2_before_anything_is_created(kfp_api, capsys, args, message):
    stub, url = kfp_api
    assert main([*args, "--host", url]) == 2
    assert message in capsys.readouterr().err
    assert not [r for r in stub.requests if r.method == "POST"]


def test_unreachable_host_is_a_clear_error(capsys):
    assert main(["submit", "--host", "http://127.0.0.1:9"]) == 2
    assert "error: Kubeflow Pipelines at http://127.0.0.1:9" in capsys.readouterr().err


def test_platform_options_reach_the_uploaded_package(kfp_api, capsys):
    stub, url = kfp_api
    assert (
        main(["submit", "--host", url, "--benchmark-node-selector", "edgecompress.io/device-class=jetson"])
        == 0
    )
    spec = uploaded_spec(stub, "/apis/v2beta1/pipelines/upload_version")
    k8s = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-edge-benchmark"]["nodeSelector"]["labels"] == {"edgecompress.io/device-class": "jetson"}
    # every tracked task (all but isa-check) reads the MLflow Secret
    assert json.dumps(k8s).count('"secretName": "edgecompress-mlflow"') == len(k8s) - 1
    assert "secretAsEnv" not in k8s["exec-isa-check"]
