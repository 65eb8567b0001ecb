"""Every command the Helm chart schedules (CronJob) or runs once (Job), rendered from the chart with
the real Helm library, run as written in the components image under podman, as the pod would run
it: its user, a read-only root filesystem with /tmp writable, the rendered environment with the
Secrets' keys filled in, against a real MLflow server and an S3 (moto) server on this machine.

On d9a55b6 the nightly drift check (`edgecompress drift check --reference … --current …`) ended
`error: argument --reference-samples: invalid int value`, exit 2."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.chart.test_chart import by_kind, render, values_of
from tests.conftest import train_model
from tests.lineage.conftest import S3_ENV, _boto_kwargs, mlflow_server  # noqa: F401 (a fixture)


def scheduled_containers(values: dict) -> list[dict]:
    docs = render(values, namespace="edgecompress")
    out = []
    for cron in by_kind(docs, "CronJob"):
        out += cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    for job in by_kind(docs, "Job"):
        out += job["spec"]["template"]["spec"]["containers"]
    return out


@pytest.fixture
def production_model(mlflow_server, digits_artifact, tmp_path, monkeypatch):  # noqa: F811
    """What values-devices.yaml's drift check reads: models:/fashion-mnist-cnn@rpi4-production (a
    small CNN trained here, its data set logged to MLflow's S3 store) and the new batch at
    s3://edgecompress/production/latest.npz."""
    import boto3

    from edgecompress import lineage
    from edgecompress.data import load_digits
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.uri)
    info = train_model(
        digits_artifact, tmp_path / "model", TrainConfig(epochs=1, batch_size=64), Lineage()
    ).info
    lineage.register(info["mlflow_model_id"], "fashion-mnist-cnn", ["rpi4-production"])
    d = load_digits(seed=7)
    batch = tmp_path / "latest.npz"
    np.savez(batch, x=d.arrays["x_test"], y=d.arrays["y_test"])
    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3_endpoint, **_boto_kwargs())
    s3.create_bucket(Bucket="edgecompress")
    s3.upload_file(str(batch), "edgecompress", "production/latest.npz")
    return mlflow_server, len(d.arrays["x_test"])


def secret_values(server) -> dict[tuple[str, str], str]:
    """What the Secrets of docs/kubernetes.md hold, for this machine's servers."""
    return {
        ("edgecompress-mlflow", "tracking-uri"): server.uri,
        ("edgecompress-s3", "access-key-id"): S3_ENV["AWS_ACCESS_KEY_ID"],
        ("edgecompress-s3", "secret-access-key"): S3_ENV["AWS_SECRET_ACCESS_KEY"],
        ("edgecompress-s3", "endpoint-url"): server.s3_endpoint,
    }


def test_drift_cronjob_runs_in_the_image(component_image, production_model, tmp_path):
    server, batch_size = production_model
    (container,) = scheduled_containers(values_of("values-devices.yaml"))
    secrets = secret_values(server)
    env = {}  # only what the rendered pod spec sets
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
    assert env["MLFLOW_TRACKING_URI"] == server.uri  # from the Secret, as the pod gets it
    scratch = tmp_path / "pod-tmp"
    scratch.mkdir()
    scratch.chmod(0o777)
    ctx = container["securityContext"]
    user = f"{ctx.get('runAsUser', 10001)}:{ctx.get('runAsGroup', 10001)}"
    cmd = ["podman", "run", "--rm", "--network=host", "--user", user, "-v", f"{scratch}:/tmp"]
    cmd += ["--read-only"] if ctx.get("readOnlyRootFilesystem") else []
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    cmd += [
        "--entrypoint",
        container["command"][0],
        component_image,
        *container["command"][1:],
        *container.get("args", []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(container['command'] + container.get('args', []))}:\n{proc.stderr[-3000:]}"
    )
    assert proc.stdout.startswith("drift: "), proc.stdout
    result = json.loads((scratch / "drift" / "result.json").read_text())
    assert result["batch_size"] == batch_size and "p_value" in result
    assert (scratch / "drift" / "report.html").stat().st_size > 0
    print(proc.stdout.splitlines()[0])


def test_every_scheduled_command_of_the_chart_is_covered():
    """The chart's CronJobs and Jobs, across its values files: one drift check (the test above)."""
    commands = {
        tuple(c["command"]) for name in (None, "values-devices.yaml", "values-postgres.yaml")
        for c in scheduled_containers(values_of(name) if name else {"driftCheck": {"enabled": True}})
    }  # fmt: skip
    assert commands == {("edgecompress", "drift")}
