"""Lineage names the code: one function decides the git commit every run and model records."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgecompress import lineage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(monkeypatch):
    lineage.code_version.cache_clear()
    yield monkeypatch
    lineage.code_version.cache_clear()


def _head() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ("-dirty" if dirty else "")


def test_the_commit_baked_into_the_image_wins(fresh):
    fresh.setenv(lineage.GIT_COMMIT_ENV, "0123abcd")
    fresh.setenv(lineage.IMAGE_ENV, "registry.example.com/ml/components@sha256:" + "f" * 64)
    code = lineage.code_version()
    assert code["git_commit"] == "0123abcd" and code["git_commit_source"] == "image build"
    assert code["image_digest"] == "sha256:" + "f" * 64
    assert lineage.code_tags()["edgecompress.git_commit"] == "0123abcd"


def test_a_source_checkout_records_its_head(fresh):
    fresh.delenv(lineage.GIT_COMMIT_ENV, raising=False)
    fresh.setenv(lineage.GIT_COMMIT_ENV, "unknown")  # what the image holds when built without git
    code = lineage.code_version()
    assert code["git_commit"] == _head() and code["git_commit_source"] == "source checkout"


def test_the_image_bakes_the_commit_in():
    """docker/build.sh passes the checkout's commit as REVISION; the Dockerfile makes it the
    environment every task's lineage reads (not only an OCI label)."""
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "ENV EDGECOMPRESS_GIT_COMMIT=${REVISION}" in dockerfile
    assert dockerfile.index("ARG REVISION") < dockerfile.index("ENV EDGECOMPRESS_GIT_COMMIT")
    assert '--build-arg REVISION="$revision"' in (REPO / "docker" / "build.sh").read_text()
