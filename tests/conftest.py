"""Shared fixtures: real data (sklearn digits), a small trained model, a private MLflow store."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("EDGECOMPRESS_NO_PROGRESS", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). Each test file stays
# on one worker (its module fixtures run once), and so does each directory whose conftest holds
# session fixtures that are expensive (a podman image, an MLflow server with a pipeline run, a farm).
SHARED_SESSION_DIRS = {"containers", "drift", "farm", "lineage"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group into the node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.fspath).relative_to(REPO / "tests")
        group = path.parts[0] if path.parts[0] in SHARED_SESSION_DIRS else path.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """With CI=true nothing is skipped or expected to fail, whatever form it takes (pytest.skip, a skip
    or xfail mark, unittest's skip/skipTest, a parametrisation that collected nothing): it fails."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        why = getattr(report, "wasxfail", None) or (
            report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        )
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test may not skip or xfail ({why})"
        if hasattr(report, "wasxfail"):
            del report.wasxfail  # else pytest counts the failure as expected and exits 0


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip for a missing prerequisite that `make test` installs; with CI=true, fail instead.

    CI runs `make test` on a fresh clone, so a prerequisite missing there is a missing install step,
    which a skip would hide. Every test in this suite skips through this function (a test checks).
    """
    if IN_CI:
        pytest.fail(
            f"{reason} (CI=true: `make test` installs this, so its absence is a failure)", pytrace=False
        )
    pytest.skip(reason, allow_module_level=True)


# A small CNN that trains on digits in a few seconds.
SMALL_CNN = {"family": "cnn", "kwargs": {"widths": [16, 32], "depths": [1, 1]}}
# `edgecompress run` options for a quick end-to-end run: short benchmarks on one emulated class
FAST_RUN_ARGS = (
    "--param",
    "bench_min_runs=30",
    "--param",
    "bench_min_duration_s=0.1",
    "--device-classes",
    "rpi4-emulated",
)


def train_model(dataset: Path, out: Path, config, ctx=None, spec: dict | None = None):
    """Train `spec` (default SMALL_CNN) on `dataset` into the Model artifact `out`, quietly; MLflow
    only where `ctx` (a step.Lineage) tracks. Returns train_step's result."""
    from edgecompress.step import Lineage
    from edgecompress.train import train_step

    return train_step(dataset, spec or SMALL_CNN, out, config, ctx or Lineage(enabled=False), progress=False)


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgecompress.data import load_digits, save_dataset

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    save_dataset(load_digits(), path)
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, digits_artifact: Path) -> Path:
    """A Model artifact directory (ONNX + torch module), trained without MLflow."""
    from edgecompress.train import TrainConfig

    out = tmp_path_factory.mktemp("models") / "cnn"
    train_model(digits_artifact, out, TrainConfig(epochs=6, batch_size=64, lr=1e-2))
    return out


@contextlib.contextmanager
def tracking_store(uri: str) -> Iterator[str]:
    """Point MLflow (this process and child processes) at `uri`; restore the previous store after."""
    import mlflow

    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture
def dead_uri() -> str:
    """A loopback URL where nothing listens."""
    from edgecompress.farm.local import free_port

    return f"http://127.0.0.1:{free_port()}"


def use_tracking_store(uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow (this process and child processes) at `uri` for one test."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private SQLite MLflow store for one test."""
    return use_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)


def log_model_without_lineage(onnx_path: Path, name: str, technique: str) -> str:
    """Log a model with no dataset or parent: what an imported model, or a broken chain, looks like."""
    from edgecompress import lineage

    return lineage.log_model(
        onnx_path, name, technique=technique, input_shape=[1, 8, 8], num_classes=10, parent_model_id=None,
        dataset_meta=None, params={},
    )  # fmt: skip


def io_args(model, dataset, output) -> list[str]:
    """`--model M --dataset D --output O`: what most single-step commands take."""
    return ["--model", str(model), "--dataset", str(dataset), "--output", str(output)]


@pytest.fixture(name="run_cli")
def _run_cli_fixture():
    """`run_cli` as a fixture (MLFLOW_TRACKING_URI is inherited from the test's store)."""
    return run_cli


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600):
    """Run `edgecompress …` in a child process, as a user would: this interpreter, whose installed
    edgecompress (`make setup`, or scripts/dev-venv.sh in a worktree) is the checkout under test."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )


def gate_classes_by_rule(gate: dict) -> list[str]:
    """The device classes a recorded gate result should have accepted, worked out again from the
    numbers it records (not through `edgecompress.gate`): a test of a real run asserts the verdict
    follows its rule, whatever the verdict is."""
    acc = gate["accuracy"]
    bound = acc["drop"] if gate["accuracy_rule"] == "point" else acc["ci_high"]
    if bound > gate["max_accuracy_drop"] + 1e-12:
        return []
    isa_rejected = set((gate.get("isa_check") or {}).get("rejected_device_classes", []))
    return [
        c
        for c, s in gate["device_classes"].items()
        if (gate["min_speedup"] <= 0 or (s["timing_meaningful"] and s["ci_low"] > gate["min_speedup"]))
        and c not in isa_rejected
    ]


def assert_gate_follows_its_rule(gate: dict) -> None:
    accepted = gate_classes_by_rule(gate)
    assert gate["accepted_device_classes"] == accepted, (gate["accepted_device_classes"], accepted)
    assert gate["verdict"] == ("accepted" if accepted else "rejected")
    for s in gate["device_classes"].values():
        assert s["ci_low"] <= s["speedup"] <= s["ci_high"] and s["rounds"] >= 8
    acc = gate["accuracy"]
    assert acc["ci_low"] <= acc["drop"] <= acc["ci_high"] and acc["ci_high"] > acc["ci_low"]
