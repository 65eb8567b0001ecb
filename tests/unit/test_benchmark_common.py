"""Benchmark reports name the code they ran: a commit, marked dirty when tracked files changed."""

from __future__ import annotations

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
