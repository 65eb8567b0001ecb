"""Issue 28 items 2-4: the sensitivity pipeline fans out one task per work unit (`dsl.ParallelFor` with
its parallelism), gathers their JSON results with `dsl.Collected` into the combine task, compiles to IR
that says so, and runs through kfp.local (SubprocessRunner) with parallelism 2, giving the one-process
analysis's result."""

import json
import re
from pathlib import Path

import pytest
import yaml

from edgecompress.cli.cluster import compile_pipeline
from edgecompress.data import load_dataset
from edgecompress.errors import ConfigError
from edgecompress.platform import PlatformConfig
from edgecompress.prune import sensitivity
from edgecompress.step import load_parent
from tests.conftest import SMALL_CNN


def loops(spec: dict) -> dict[str, dict]:
    """Every task of the IR that iterates (a ParallelFor), by name, from every DAG."""
    dags = [spec["root"], *spec["components"].values()]
    return {
        n: t
        for d in dags
        for n, t in d.get("dag", {}).get("tasks", {}).items()
        if "iteratorPolicy" in t or "parameterIterator" in t
    }


def collected_input(spec: dict, task: str, name: str) -> tuple[str, dict]:
    """(the loop task, its DAG output) that feeds `task`'s input `name` with dsl.Collected."""
    dags = [spec["root"], *spec["components"].values()]
    consumer = next(d["dag"]["tasks"][task] for d in dags if task in d.get("dag", {}).get("tasks", {}))
    source = consumer["inputs"]["parameters"][name]["taskOutputParameter"]
    loop = next(
        d["dag"]["tasks"][source["producerTask"]]
        for d in dags
        if source["producerTask"] in d.get("dag", {}).get("tasks", {})
    )
    body = spec["components"][loop["componentRef"]["name"]]
    assert body["outputDefinitions"]["parameters"][source["outputParameterKey"]]["parameterType"] == "LIST"
    return source["producerTask"], body["dag"]["outputs"]["parameters"][source["outputParameterKey"]]


@pytest.mark.parametrize("parallelism", [None, 3])
def test_compiled_ir_has_the_fan_out_with_its_parallelism_and_the_collected_input(tmp_path, parallelism):
    from edgecompress.pipelines.sensitivity import DEFAULT_PARALLELISM, build_pipeline

    platform = PlatformConfig()
    # the default: as `edgecompress compile --all` builds it (its test: tests/cluster/test_compile.py)
    built = build_pipeline(platform) if parallelism is None else build_pipeline(platform, parallelism)
    out = compile_pipeline("sensitivity", tmp_path / "s.yaml", platform, pipeline=built)
    spec = next(yaml.safe_load_all(Path(out).read_text()))
    ((name, loop),) = loops(spec).items()
    assert loop["iteratorPolicy"] == {"parallelismLimit": parallelism or DEFAULT_PARALLELISM}
    assert loop["parameterIterator"]["items"] == {
        "inputParameter": "pipelinechannel--sensitivity-units-Output"
    }
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"sensitivity-unit"}
    unit_input = body["sensitivity-unit"]["inputs"]["parameters"]["unit"]
    assert unit_input == {"componentInputParameter": loop["parameterIterator"]["itemInput"]}
    producer, output = collected_input(spec, "sensitivity-combine", "parts")
    assert producer == name
    assert output == {
        "valueFromParameter": {"outputParameterKey": "Output", "producerSubtask": "sensitivity-unit"}
    }
    # the unit's result travels as a parameter (a JSON string), not an artifact
    unit = spec["components"]["comp-sensitivity-unit"]
    assert unit["outputDefinitions"] == {"parameters": {"Output": {"parameterType": "STRING"}}}


def test_parallelism_must_be_a_count():
    from edgecompress.pipelines.sensitivity import build_pipeline

    with pytest.raises(ConfigError, match="parallelism must be an integer ≥ 0"):
        build_pipeline(parallelism=-1)


def test_kfp_local_runs_the_fan_out_with_parallelism_2_and_matches_the_one_process_analysis(tmp_path):
    from edgecompress.pipelines.local import run_sensitivity

    arguments = {
        "dataset": "digits", "model": json.dumps(SMALL_CNN), "epochs": 3, "track": False,
        "sensitivity_ratios": "0.25,0.5", "sensitivity_samples": 200, "sensitivity_max_drop": 0.05,
    }  # fmt: skip
    result, run = run_sensitivity(arguments, tmp_path, parallelism=2)
    units = sorted(run.glob("for-loop-*-iteration-*/sensitivity-unit"))
    assert len(units) == result["units"] == len(result["accuracy"]) >= 2  # one task per layer
    # the unit tasks ran two at a time: both of the first pair started before either finished
    log = (tmp_path / "pipeline.log").read_text()
    starts = [m.start() for m in re.finditer(r"Executing task 'sensitivity-unit'", log)]
    first_done = log.index("sensitivity-unit/executor_output.json.")
    assert len(starts) == len(units) and starts[1] < first_done
    dataset = load_dataset(run / "load-dataset" / "dataset")
    _, module = load_parent(run / "train" / "model", dataset)
    one_process = sensitivity(module, dataset, (0.25, 0.5), samples=200, progress=False)
    fanned = {
        k: v for k, v in result.items() if k not in ("seconds", "units", "max_drop", "suggested_layer_ratios")
    }
    assert fanned == {k: v for k, v in one_process.items() if k != "seconds"}
    from edgecompress.prune import suggest_layer_ratios

    assert result["suggested_layer_ratios"] == suggest_layer_ratios(one_process, 0.05)
    assert "Pruning sensitivity" in (run / "sensitivity-combine" / "report").read_text()
