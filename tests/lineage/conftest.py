"""MLflow as deployed: a real `mlflow server` (SQL store, artifacts proxied to S3) over moto's S3
server, both on loopback free ports; and an embedded-store lineage built with the real steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecompress.farm.local import free_port
from tests.conftest import tracking_store, train_model, use_tracking_store

BIN = Path(sys.executable).parent
BUCKET = "edgecompress-artifacts"
SMALL_CNN = {"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass
class MlflowServer:
    uri: str
    s3_endpoint: str
    bucket: str
    artifacts_prefix: str

    def s3_keys(self) -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_endpoint, **_boto_kwargs())
        keys, token = [], None
        while True:
            kw = {"Bucket": self.bucket, **({"ContinuationToken": token} if token else {})}
            page = s3.list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    import boto3

    tmp = tmp_path_factory.mktemp("mlflow-server")
    procs: list[subprocess.Popen] = []
    try:
        s3_port = free_port()
        s3_log = tmp / "moto.log"
        procs.append(
            subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                stdout=s3_log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        endpoint = f"http://127.0.0.1:{s3_port}"
        wait_http(endpoint + "/moto-api/", procs[-1], 30, s3_log)
        boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs()).create_bucket(Bucket=BUCKET)
        port = free_port()
        log = tmp / "mlflow.log"
        env = {**os.environ, **S3_ENV, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        env.pop("MLFLOW_TRACKING_URI", None)
        procs.append(subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/mlartifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True,
        ))  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        wait_http(uri + "/health", procs[-1], 300, log)  # ~7 s idle; minutes on a loaded machine
        yield MlflowServer(uri, endpoint, BUCKET, "mlartifacts")
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture
def server_env(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """Point this process's MLflow client at the server (clients need no S3 credentials)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    return mlflow_server


def build_lineage(workdir: Path, digits_artifact: Path, experiment: str = "edgecompress") -> dict:
    """The edge-compression chain through the real steps (in-process): train → quantize → evaluate
    both → benchmark both → gate; returns the step results."""
    from edgecompress.edge import EdgeBenchmarkConfig, Measurement, edge_benchmark_step
    from edgecompress.evaluate import evaluate_step
    from edgecompress.gate import GateConfig, gate_step
    from edgecompress.quantize import StaticQuantConfig, quantize_step
    from edgecompress.rules import AccuracyRule
    from edgecompress.step import Lineage
    from edgecompress.train import TrainConfig

    ctx = Lineage(
        pipeline_run_id=f"test-{time.time_ns()}", pipeline_name="edge-compression", experiment=experiment
    )
    train_model(
        digits_artifact, workdir / "parent", TrainConfig(epochs=3, batch_size=64), ctx, spec=SMALL_CNN
    )
    quantize_step(
        workdir / "parent",
        digits_artifact,
        workdir / "child",
        StaticQuantConfig(calibration_samples=64),
        ctx,
        Measurement(
            bench_min_runs=20, bench_min_duration_s=0.05
        ),  # as the pipeline's quantize task checks latency
    )
    bench = EdgeBenchmarkConfig(["rpi4-emulated"], Measurement(bench_min_runs=20, bench_min_duration_s=0.05))
    for role in ("parent", "child"):
        evaluate_step(workdir / role, digits_artifact, workdir / f"{role}-eval.json", lineage_ctx=ctx)
        edge_benchmark_step(workdir / role, bench, workdir / f"{role}-bench.json", lineage_ctx=ctx)
    gate_config = GateConfig(
        rule=AccuracyRule(0.5), min_speedup=0.0, registered_model_name="digits-small",
        device_classes=["rpi4-emulated"], latency_rounds=8, measurement=bench.measurement,
    )  # fmt: skip
    gate = gate_step(
        workdir / "parent", workdir / "child", digits_artifact, workdir / "parent-eval.json",
        workdir / "child-eval.json", gate_config, results_path=workdir / "gate.json", lineage_ctx=ctx,
    )  # fmt: skip
    return {"gate": gate, "workdir": workdir}


@pytest.fixture(scope="session")
def embedded_store(tmp_path_factory: pytest.TempPathFactory, digits_artifact: Path) -> Iterator[dict]:
    """A SQLite MLflow store holding one pipeline's lineage (the embedded default)."""

    tmp = tmp_path_factory.mktemp("embedded")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with tracking_store(uri):
        out = build_lineage(tmp, digits_artifact)
        yield {**out, "uri": uri}


@pytest.fixture
def embedded(embedded_store: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    use_tracking_store(embedded_store["uri"], monkeypatch)
    return embedded_store


@pytest.fixture
def failing_proxy(mlflow_server: MlflowServer) -> Iterator[str]:
    """A loopback proxy in front of the real server that answers 503 to every attempt to create a
    logged model: the server is up (health, runs, artifacts work) but fails mid-task."""
    import threading
    import urllib.error
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    upstream = mlflow_server.uri
    hop = {"host", "content-length", "transfer-encoding", "connection"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.command == "POST" and self.path.split("?")[0].rstrip("/").endswith(
                "/mlflow/logged-models"
            ):
                status, headers, data = 503, {"Content-Type": "text/plain"}, b"overloaded"
            else:
                req = urllib.request.Request(
                    upstream + self.path,
                    data=body if body else None,
                    method=self.command,
                    headers={k: v for k, v in self.headers.items() if k.lower() not in hop},
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, headers, data = resp.status, dict(resp.headers), resp.read()
                except urllib.error.HTTPError as exc:
                    status, headers, data = exc.code, dict(exc.headers), exc.read()
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() not in hop:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
