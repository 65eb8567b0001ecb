"""The NAS fan-out as KFP tasks: the compiled IR holds the ParallelFor with its parallelism and the
study's storage URL from a Secret; kfp.local runs it with two parallel workers on one PostgreSQL study,
every trial an MLflow child run of the search run."""

# No `from __future__ import annotations`: the kfp.local test builds a pipeline.

import json
from pathlib import Path

import pytest
import yaml

from tests.nas.test_fanout import postgres  # noqa: F401 (fixture)
from tests.nas.test_nas import TINY_SPACE


def compiled_nas(tmp_path: Path, workers: int) -> dict:
    from kfp import compiler

    from edgecompress.pipelines.nas import build_pipeline
    from edgecompress.platform import PlatformConfig

    out = tmp_path / "nas.yaml"
    config = PlatformConfig(nas_storage_secret="team-optuna-db")
    compiler.Compiler().compile(build_pipeline(("quantize",), config, workers=workers), str(out))
    return out.read_text()


@pytest.mark.parametrize("workers", [2, 5])
def test_ir_fans_out_with_parallelism_and_storage_from_a_secret(tmp_path: Path, workers: int):
    text = compiled_nas(tmp_path, workers)
    spec, platform = list(yaml.safe_load_all(text))
    loops = [
        (name, task)
        for comp in spec["components"].values()
        for name, task in comp.get("dag", {}).get("tasks", {}).items()
        if "iteratorPolicy" in task
    ]

    def body(loop):
        return [
            t["componentRef"]["name"]
            for t in spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"].values()
        ]

    # the NAS workers' loop (the benchmark's per-class loops are the pipeline's other fan-outs)
    nas_loops = [loop for _, loop in loops if "comp-nas-worker" in body(loop)]
    assert len(nas_loops) == 1, loops
    loop = nas_loops[0]
    assert loop["iteratorPolicy"]["parallelismLimit"] == workers
    items = loop["parameterIterator"]["items"]["raw"]
    assert json.loads(items) == list(range(workers))
    assert body(loop) == ["comp-nas-worker"]
    # the finish task waits for every worker through dsl.Collected
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    nas_tasks = {
        n for n in executors if n.startswith(("exec-nas-create-study", "exec-nas-worker", "exec-nas-finish"))
    }
    assert len(nas_tasks) == 3, sorted(executors)
    for task in nas_tasks:
        env = {
            m["envVar"]: (s["secretName"], m["secretKey"])
            for s in executors[task].get("secretAsEnv", [])
            for m in s["keyToEnv"]
        }
        assert env["EDGECOMPRESS_NAS_STORAGE"] == ("team-optuna-db", "url"), task
        assert env["PGPASSWORD"] == ("team-optuna-db", "password"), task
    others = [n for n in executors if n not in nas_tasks]
    assert all("team-optuna-db" not in json.dumps(executors[n]) for n in others)  # least privilege
    assert "postgresql" not in text  # no URL inline: it comes from the Secret


def test_the_storage_secret_is_a_platform_option():
    import argparse

    from edgecompress.cli.cluster import add_platform_args, platform_from_args

    parser = argparse.ArgumentParser()
    add_platform_args(parser)
    assert platform_from_args(parser.parse_args([])).nas_storage_secret == "edgecompress-nas-storage"
    args = parser.parse_args(["--nas-storage-secret", "team-optuna-db"])
    assert platform_from_args(args).secrets_for("nas_worker")[-1] == (
        "team-optuna-db",
        {"url": "EDGECOMPRESS_NAS_STORAGE", "password": "PGPASSWORD"},
    )


@pytest.mark.slow
def test_kfp_local_runs_the_fanout_with_two_workers_on_postgres(
    postgres,  # noqa: F811
    tracking_uri: str,
    tmp_path: Path,
):
    import optuna

    from edgecompress import lineage
    from edgecompress.pipelines.local import run_edge_compression

    url = postgres.new_database("nasfan")
    arguments = {
        "dataset": "digits", "model": json.dumps({"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}),
        "epochs": 2, "batch_size": 32, "device_classes": ["rpi4-emulated"], "bench_min_runs": 20,
        "bench_min_duration_s": 0.05, "max_accuracy_drop": 0.5, "registered_model_name": "nas-fanout",
        "nas_fanout_storage": url, "nas_fanout_study_name": "fanout-test",
        "nas_fanout_search_space": json.dumps(TINY_SPACE), "nas_fanout_n_trials": 6,
        "nas_fanout_search_epochs": 1, "nas_fanout_train_samples": 600, "nas_fanout_holdout_samples": 300,
        "nas_fanout_final_epochs": 1, "nas_fanout_batch_size": 32, "nas_fanout_eta": 1,
        "nas_fanout_heartbeat_interval_s": 2, "nas_fanout_grace_period_s": 20,
    }  # fmt: skip
    result = run_edge_compression(["nas_fanout"], arguments, tmp_path)
    study = optuna.load_study(study_name="fanout-test", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    workers = {t.user_attrs["worker"].split(":")[-1] for t in trials}
    assert workers <= {"worker-0", "worker-1"} and len({t.user_attrs["worker"] for t in trials}) >= 1
    child = result.gate["child"]
    assert child["technique"] == "nas"
    nas_model = lineage.get_model(child["model_id"])
    client = lineage.connect()
    search_run = study.user_attrs["mlflow_search_run_id"]
    trial_runs = client.search_runs(
        [client.get_run(search_run).info.experiment_id], f"tags.mlflow.parentRunId = '{search_run}'"
    )
    assert len(trial_runs) == 6 and all(r.data.tags["edgecompress.task"] == "nas-trial" for r in trial_runs)
    assert nas_model.tags["edgecompress.parent_model_id"] == result.gate["parent"]["model_id"]
    finish = json.loads(next(Path(result.pipeline_root).rglob("pareto_front")).read_text())
    assert finish["budget"]["trials_finished"] == 6 and finish["pick"]["final"]["p50_ms"] > 0
