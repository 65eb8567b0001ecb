"""Hardware-aware NAS: the search space as data, constraints, budget and resume, the component in the
pipeline with lineage, and bad input (clear error, exit 2, nothing written)."""

# No `from __future__ import annotations`: the kfp.local test builds a pipeline.

import json
from pathlib import Path

import pytest

from edgecompress.errors import ConfigError
from edgecompress.nas import (
    Constraints,
    NasConfig,
    SearchSpace,
    hypervolume,
    pareto_front,
    search,
    summarize,
)

# Six architectures that train on digits in a second or two each.
TINY_SPACE = {
    "families": {
        "cnn": {
            "stages": [1, 2], "depth": [1], "channels": [8, 16], "width_mult": [0.5, 1.0],
            "kernel_size": [3], "activation": ["relu"], "downsample": ["maxpool"],
        }
    }
}  # fmt: skip
FAST = NasConfig(
    n_trials=4, search_epochs=2, train_samples=1000, holdout_samples=300, eta=2, final_epochs=2,
    batch_size=32, lr=1e-2, startup_trials=2,
    search_bench={"warmup_runs": 2, "min_runs": 10, "min_duration_s": 0.02},
    final_bench={"warmup_runs": 2, "min_runs": 20, "min_duration_s": 0.05},
)  # fmt: skip


def test_default_space_is_data_and_every_family_builds():
    import optuna

    from edgecompress.zoo import build_model

    space = SearchSpace.load("default")
    assert set(space.families) == {"cnn", "mobilenet"} and space.size() > 1_000_000
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    for _ in range(12):
        spec = space.suggest(study.ask())
        build_model(spec, (1, 28, 28), 10)  # every sampled candidate is a valid zoo model
    for family in space.families:
        build_model(space.smallest(family), (1, 28, 28), 10)


def test_user_extends_the_space_without_code(tmp_path: Path):
    """New ranges (a 7×7 kernel, four stages, SiLU) are a YAML edit, not a code change."""
    from edgecompress.zoo import build_model

    path = tmp_path / "space.yaml"
    path.write_text(
        "families:\n  cnn:\n    stages: [4]\n    depth: [1]\n    channels: [8, 8, 16, 16]\n"
        "    kernel_size: [7]\n    activation: [silu]\n    downsample: [stride]\n"
    )
    space = SearchSpace.load(str(path))
    spec = space.smallest("cnn")
    assert spec["kwargs"]["kernel_size"] == [7, 7, 7, 7] and spec["kwargs"]["activation"] == "silu"
    model = build_model(spec, (1, 28, 28), 10)
    assert sum(isinstance(m, __import__("torch").nn.Conv2d) for m in model.modules()) == 4


@pytest.mark.parametrize(
    "space, message",
    [
        ({"families": {}}, "non-empty `families`"),
        ("families:\n  cnn: {stages: [], depth: [1], channels: [8]}\n", "`stages` must be a non-empty list"),
        ({"families": {"cnn": {"stages": [3], "depth": [1], "channels": [8, 16]}}}, "names only 2 stage widths"),
        ({"families": {"cnn": {"stages": [1], "depth": [0], "channels": [8]}}}, "invalid `depth` values [0]"),
        ({"families": {"cnn": {"stages": [1], "depth": [1], "channels": [8], "kernel_size": [4]}}}, "invalid `kernel_size`"),
        ({"families": {"cnn": {"stages": [1], "depth": [1], "channels": [8], "widths": [8]}}}, "unknown keys ['widths']"),
        ({"families": {"resnet": {}}}, "unknown family"),
        ("no-such-preset", "not a preset"),
        ("families: [unclosed", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_search_spaces_are_named(space, message):
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(space)
    assert message in str(info.value)


def test_pareto_front_and_hypervolume():
    points = [(0.9, 2.0), (0.8, 1.0), (0.85, 3.0), (0.7, 0.5), (0.9, 2.5)]
    assert sorted(pareto_front(points)) == [0, 1, 3]
    # reference (0.5, 4.0): rectangles 0.2×0.5 + 0.3×1.0 + 0.4×2.0
    assert hypervolume(points, 0.5, 4.0) == pytest.approx(0.1 + 0.3 + 0.8)
    assert hypervolume([(0.4, 1.0)], 0.5, 4.0) == 0.0


def test_search_resumes_from_storage_and_never_trains_a_duplicate(digits_artifact: Path, tmp_path: Path):
    from edgecompress.data import load_dataset

    dataset = load_dataset(digits_artifact)
    space = SearchSpace.load(TINY_SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = search(dataset, space, Constraints(), FAST, storage, "resume", progress=False)
    assert len(study.trials) == 4
    more = NasConfig(**{**FAST.__dict__, "n_trials": 7})
    study, meter = search(dataset, space, Constraints(), more, storage, "resume", progress=False)
    assert len(study.trials) == 7  # three new trials, not seven
    trials, front, pick = summarize(study, meter, Constraints(), more)
    states = {t["state"] for t in trials}
    assert states <= {"complete", "pruned"} and "complete" in states
    for t in trials:
        if t["state"] == "pruned":  # successive halving stopped it at the first rung
            assert t["epochs"] == 1
    specs = [
        json.dumps(t.user_attrs["spec"], sort_keys=True)
        for t in study.trials
        if "duplicate_of_spec" not in t.user_attrs
    ]
    assert len(specs) == len(set(specs)), "a repeated architecture was trained again"
    assert pick in front and all(m["p50_ms"] > 0 and 0 <= m["accuracy"] <= 1 for m in front)
    other = NasConfig(**{**more.__dict__, "search_epochs": 3})  # another fidelity: not the same study
    with pytest.raises(ConfigError, match="another search space, constraints or fidelity"):
        search(dataset, space, Constraints(), other, storage, "resume", progress=False)


def test_constraints_reject_candidates_before_training(digits_artifact: Path, tmp_path: Path):
    from edgecompress.data import load_dataset
    from edgecompress.nas import candidate_cost

    dataset = load_dataset(digits_artifact)
    space = SearchSpace.load(TINY_SPACE)
    limit = candidate_cost(space.smallest("cnn"), dataset.input_shape, 10)["params"] + 1
    config = NasConfig(**{**FAST.__dict__, "n_trials": 6, "eta": 1})
    study, meter = search(
        dataset, space, Constraints(max_params=limit), config, f"sqlite:///{tmp_path / 's.db'}", "c", progress=False
    )  # fmt: skip
    trials, front, pick = summarize(study, meter, Constraints(max_params=limit), config)
    rejected = [t for t in trials if t["state"] == "infeasible"]
    assert rejected, "the tiny space has candidates over the limit; some must be rejected"
    for t in rejected:
        assert "max_params" in t["reason"] and t["epochs"] == 0 and t["p50_ms"] is None
    assert all(m["params"] <= limit for m in front)


def test_impossible_constraints_fail_before_searching(digits_artifact: Path, tmp_path: Path):
    from edgecompress.data import load_dataset

    with pytest.raises(ConfigError, match="no candidate in the search space can meet the constraints"):
        search(
            load_dataset(digits_artifact), SearchSpace.load(TINY_SPACE), Constraints(max_params=10), FAST,
            f"sqlite:///{tmp_path / 's.db'}", "x", progress=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-trials", "0"], "n_trials must be ≥ 1"),
        (["--device-class", "rpi5"], "unknown device class 'rpi5'"),
        (["--search-space", '{"families": {}}'], "non-empty `families`"),
        (["--max-latency-ms", "0.00001"], "no candidate in the search space can meet the constraints"),
        (["--strategy", "grid"], "invalid choice"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(args, message, digits_artifact: Path, tmp_path: Path):
    from tests.conftest import run_cli

    out = tmp_path / "out"
    proc = run_cli(
        "nas", "--dataset", str(digits_artifact), "--output", str(out), "--search-space", json.dumps(TINY_SPACE),
        "--no-track", *args,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("out.*"))


def test_cli_missing_dataset_is_named(tmp_path: Path):
    from tests.conftest import run_cli

    proc = run_cli(
        "nas", "--dataset", str(tmp_path / "none.npz"), "--output", str(tmp_path / "o"), "--no-track"
    )
    assert proc.returncode == 2 and "none.npz" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_nas_then_quantize_in_the_pipeline_records_search_lineage(tracking_uri: str, tmp_path: Path):
    """`--chain nas,quantize` in kfp.local: the pick is retrained, quantized and gated against the
    trained model; MLflow holds the search run, one child run per trial, and the pick's lineage."""
    from edgecompress import lineage
    from edgecompress.pipelines.local import run_edge_compression

    arguments = {
        "dataset": "digits", "model": json.dumps({"family": "cnn", "kwargs": {"widths": [8, 16], "depths": [1, 1]}}),
        "epochs": 3, "batch_size": 32, "device_classes": ["rpi4-emulated"], "bench_min_runs": 20,
        "bench_min_duration_s": 0.05, "max_accuracy_drop": 0.5, "registered_model_name": "nas-chain",
        "quantize_calibration_samples": 32, "nas_search_space": json.dumps(TINY_SPACE), "nas_n_trials": 3,
        "nas_search_epochs": 2, "nas_train_samples": 1000, "nas_holdout_samples": 300, "nas_final_epochs": 3,
    }  # fmt: skip
    result = run_edge_compression(["nas", "quantize"], arguments, tmp_path)
    child = result.gate["child"]
    assert child["technique"] == "static-int8"
    nas_model = lineage.get_model(lineage.get_model(child["model_id"]).tags["edgecompress.parent_model_id"])
    assert nas_model.tags["edgecompress.technique"] == "nas"
    assert nas_model.tags["edgecompress.parent_model_id"] == result.gate["parent"]["model_id"]
    client = lineage.connect()
    search_run = client.get_run(nas_model.source_run_id)
    trial_runs = client.search_runs(
        [search_run.info.experiment_id], f"tags.mlflow.parentRunId = '{search_run.info.run_id}'"
    )
    assert len(trial_runs) == 3 and all(r.data.tags["edgecompress.task"] == "nas-trial" for r in trial_runs)
    assert nas_model.tags["edgecompress.nas.trial_run_id"] in {r.info.run_id for r in trial_runs}
    front = json.loads(next(Path(result.pipeline_root).rglob("pareto_front")).read_text())
    assert front["pick"]["final"]["p50_ms"] > 0 and front["reference"]["p50_ms"] > 0
    assert (Path(next(Path(result.pipeline_root).rglob("searched_model"))) / "nas-study.db").exists()
