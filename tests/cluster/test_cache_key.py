"""KFP's cache key, computed as the KFP v2 backend does (tests/cluster/kfp_cache.py), for two runs of
the same compiled pipeline with the same inputs: dataset, train and the parent's evaluation hit the
cache in the second run; measuring and acting tasks are never cached; a changed input misses."""

from __future__ import annotations

import pytest
import yaml

from tests.cluster.kfp_cache import simulate_runs
from tests.conftest import run_cli

RUNS = ("5c0ffee0-1111-4a4a-8b8b-000000000001", "5c0ffee0-2222-4a4a-8b8b-000000000002")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("cache")
    proc = run_cli("compile", "--all", "--output-dir", str(out), "--registry", "r.example/ml", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {p.stem: next(yaml.safe_load_all(p.read_text())) for p in out.glob("*.yaml")}


def _by_task(run) -> dict[str, str]:
    return {path.rsplit("/", 1)[-1]: key for path, key in run.keys.items()}


@pytest.mark.parametrize("pipeline", ["edge-compression", "retrain-on-drift"])
def test_second_run_with_the_same_inputs_hits_the_cache(compiled, pipeline):
    spec = compiled[pipeline]
    arguments = (
        {"batch": "s3://b/new.npz", "model": "models:/m@rpi4-production"}
        if pipeline != "edge-compression"
        else {}
    )
    first, second = simulate_runs(spec, arguments, RUNS)
    keys1, keys2 = _by_task(first), _by_task(second)
    for task in ("load-dataset", "train", "evaluate"):
        assert keys1[task] == keys2[task], (pipeline, task)
        assert next(hit for path, hit in second.hits.items() if path.endswith(f"/{task}")), (pipeline, task)
    for path, hit in first.hits.items():
        assert not hit, path  # nothing to hit on a first run
    never = ("edge-benchmark", "isa-check", "accuracy-gate", "quantize", "promote", "drift-check")
    for path in second.hits:
        if path.rsplit("/", 1)[-1].rstrip("-0123456789") in never:
            assert path not in second.keys and not second.hits[path], path
    print(pipeline, {t: k[:16] for t, k in keys1.items()})


def test_a_changed_input_changes_the_key(compiled):
    spec = compiled["edge-compression"]
    (first,) = simulate_runs(spec, {}, RUNS[:1])
    (other,) = simulate_runs(spec, {"epochs": 11}, RUNS[1:])
    a, b = _by_task(first), _by_task(other)
    assert a["load-dataset"] == b["load-dataset"]
    assert a["train"] != b["train"] and a["evaluate"] != b["evaluate"]  # a new model downstream


def test_no_task_takes_a_per_run_input(compiled):
    """`{{$.pipeline_job_uuid}}` (a new value every run) is an input of no task: tasks read the run id
    from the pod's `pipeline/runid` label instead."""
    for pipeline, spec in compiled.items():
        text = yaml.safe_dump(spec)
        assert "pipeline_job_uuid" not in text and "pipeline_job_name" not in text, pipeline
