"""kfp.local honours caching (kfp 2.17: `local.init(enable_caching=True)`, keyed on the task's
component, image, command and arguments): the same pipeline run twice with the same inputs computes
the same cache keys for load-dataset, train and the parent's evaluation, and skips load-dataset and
train the second time; every measuring task runs again and is never looked up. On d9a55b6 every task
took the run's id as an input (`pipeline_run_id`), so no key was ever the same twice.

kfp.local treats a cache entry as a miss when one of its output artifacts has no file: an evaluation's
Metrics/ClassificationMetrics artifacts have none locally (metadata only), so kfp.local re-runs it with
the same key; KFP's backend (MLMD) has no such check (tests/cluster/test_cache_key.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL_CNN

ARGS = {
    "dataset": "digits", "model": json.dumps(SMALL_CNN), "epochs": 1, "device_classes": ["rpi4-emulated"],
    "bench_min_runs": 20, "bench_min_duration_s": 0.05, "track": False, "max_accuracy_drop": 0.5,
}  # fmt: skip


def test_second_run_hits_the_cache_for_dataset_train_and_evaluate(tmp_path, monkeypatch):
    from kfp import local
    from kfp.local import cache

    from edgecompress.pipelines.edge_compression import build_pipeline

    keys: list[tuple[str, str]] = []
    compute_key = cache.LocalCache.compute_key

    def recorded(self, **kwargs):
        key = compute_key(self, **kwargs)
        keys.append((kwargs["component_name"], key))
        return key

    monkeypatch.setattr(cache.LocalCache, "compute_key", recorded)
    root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=True)
    pipeline = build_pipeline(["quantize"])
    ran, keyed = [], []
    for _ in range(2):
        before, keys[:] = set(root.glob("edge-compression-*")), []
        pipeline(**ARGS)
        (run,) = set(root.glob("edge-compression-*")) - before
        # the edge-benchmark tasks run inside their ParallelFor's iterations (one per device class)
        ran.append({p.name for p in run.iterdir() if p.is_dir()} | {p.name for p in run.glob("for-loop-*/*")})
        keyed.append(dict(keys))
    (first, second), (keys1, keys2) = ran, keyed
    assert {"load-dataset", "train", "evaluate", "quantize", "accuracy-gate"} <= first
    for component in ("comp-load-dataset", "comp-train"):
        assert keys1[component] == keys2[component], component
    evaluations = [c for c in keys1 if c.startswith("comp-evaluate")]
    same = [c for c in evaluations if keys1[c] == keys2.get(c)]
    assert len(evaluations) == 2 and len(same) == 1, (keys1, keys2)  # the parent's; the child is new
    for cached in ("load-dataset", "train"):
        assert cached not in second, f"{cached} ran again: {sorted(second)}"
    for measured in ("quantize", "edge-benchmark", "edge-benchmark-2", "isa-check", "accuracy-gate"):
        assert measured in second, f"{measured} was not run again: {sorted(second)}"
        assert f"comp-{measured}".rstrip("-2") not in keys1, measured  # never even looked up
    gate = json.loads(next(root.glob("edge-compression-*/accuracy-gate/results")).read_text())
    assert gate["verdict"] in ("accepted", "rejected")


@pytest.fixture(autouse=True)
def _reset_local_config():
    yield
    from kfp.local import config

    config.LocalExecutionConfig.instance = None  # later tests init kfp.local their own way
