"""Benchmark reports name the code they ran: a commit, marked dirty when tracked files changed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.common import git_commit
from tests.conftest import skip_or_fail_in_ci


@pytest.fixture(autouse=True)
def _need_git() -> None:
    if shutil.which("git") is None:
        skip_or_fail_in_ci("needs git")


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def test_git_commit_is_marked_dirty_only_when_tracked_files_change(tmp_path):
    assert git_commit(tmp_path) == ""  # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "run.py").write_text("EPOCHS = 6\n")
    _git(tmp_path, "add", "run.py")
    _git(tmp_path, "commit", "-qm", "first")
    short = _git(tmp_path, "rev-parse", "--short", "HEAD").strip()

    assert git_commit(tmp_path) == short
    (tmp_path / "results.json").write_text("{}")  # untracked output: still the committed code
    assert git_commit(tmp_path) == short
    (tmp_path / "run.py").write_text("EPOCHS = 12\n")
    assert git_commit(tmp_path) == f"{short}-dirty"


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Every committed results.json that compares with (or runs) "the baseline" CNN of benchmarks.common.
WITH_BASELINE = [
    "compression/results.json", "quantization/results.json", "drift/results.json", "isa/results.json",
    "nas/results.json", *sorted(str(p.relative_to(BENCHMARKS)) for p in BENCHMARKS.glob("isa/check-*/results.json")),
    *sorted(str(p.relative_to(BENCHMARKS)) for p in BENCHMARKS.glob("nas/kd-*/results.json")),
]  # fmt: skip


def _baseline_test_accuracy(name: str, r: dict) -> float | None:
    """The baseline's test accuracy where a results.json records it (evidence of which instance ran)."""
    if name.startswith("compression/"):
        return next(x for x in r["rows"] if x["name"] == r["baseline"])["seeds"][0]["test_accuracy"]
    if name.startswith("quantization/"):
        return r["models"]["cnn"]["float"]["test_accuracy"]
    if name.startswith("drift/"):
        return r["model"]["clean_test_accuracy"]
    if name.startswith("nas/kd-"):
        return r["baseline"]["test_accuracy"]
    return None


def test_every_benchmark_names_its_baseline_and_they_are_the_same_one():
    """Issue 25: each results.json comparing with "the baseline" records its ONNX sha256, or null with a
    note saying why; all recorded hashes agree; where none is recorded, the recorded test accuracies of
    the runs that claim the shared instance agree, and a run that used another instance says so."""
    hashes, accuracies = {}, {}
    for name in WITH_BASELINE:
        r = json.loads((BENCHMARKS / name).read_text())
        assert "baseline_sha256" in r, f"{name} does not name its baseline"
        if r["baseline_sha256"] is None:
            assert len(r.get("baseline_sha256_note", "")) > 40, f"{name}: no sha256 and no reason"
        else:
            assert len(r["baseline_sha256"]) == 64
            hashes[name] = r["baseline_sha256"]
        note = r.get("baseline_sha256_note", "")
        if "NOT the instance" in note:
            continue  # a different instance, said so
        if (acc := _baseline_test_accuracy(name, r)) is not None:
            accuracies[name] = acc
    assert len(set(hashes.values())) <= 1, hashes
    assert len(set(accuracies.values())) == 1 and len(accuracies) >= 4, accuracies


def test_the_nas_run_says_its_baseline_is_another_instance():
    nas = json.loads((BENCHMARKS / "nas/results.json").read_text())
    kd = json.loads(next(BENCHMARKS.glob("nas/kd-*/results.json")).read_text())
    if nas["baseline"]["accuracy"] != kd["baseline"]["val_accuracy"]:  # a different validation accuracy
        assert nas["baseline_sha256"] is None or nas["baseline_sha256"] != kd.get("baseline_sha256")
        assert "NOT the instance" in nas["baseline_sha256_note"]
        assert f"{100 * nas['baseline']['accuracy']:.2f} %" in nas["baseline_sha256_note"]


def test_baseline_record_is_the_onnx_files_sha256(tmp_path):
    import hashlib

    from benchmarks.common import baseline_record

    (tmp_path / "model.onnx").write_bytes(b"not really onnx")
    record = baseline_record(tmp_path)
    assert record == {
        "baseline_sha256": hashlib.sha256(b"not really onnx").hexdigest(),
        "baseline_dir": tmp_path.name,
    }
