"""Issue 28 items 3-4: the edge-compression pipeline benchmarks each model with one edge-benchmark task
per device class (`dsl.ParallelFor` over `device_classes`, parallelism 2), each on its own farm class
and, on a cluster in on-node mode, its own node selector; the gate takes their JSON summaries through
`dsl.Collected` and decides as before (its interleaved rounds). Compiled IR and a kfp.local run."""

import json
from pathlib import Path

import pytest
import yaml

from edgecompress.cli.cluster import compile_pipeline
from edgecompress.errors import ConfigError
from edgecompress.gate import collected_benchmarks
from edgecompress.platform import PlatformConfig
from tests.conftest import SMALL_CNN, assert_gate_follows_its_rule

CLASSES = ["rpi4-emulated", "jetson-orin-nano-emulated"]
LABEL = "edgecompress.io/device-class"


def dags(spec: dict) -> dict[str, dict]:
    return {"root": spec["root"], **spec["components"]}


def find_task(spec: dict, name: str) -> dict:
    (task,) = [
        d["dag"]["tasks"][name] for d in dags(spec).values() if name in d.get("dag", {}).get("tasks", {})
    ]
    return task


@pytest.fixture(scope="module", params=["edge-compression", "retrain-on-drift"])
def compiled(request, tmp_path_factory) -> tuple[str, dict, dict]:
    platform = PlatformConfig(benchmark_class_label=LABEL, benchmark_node_selector={"pool": "devices"})
    out = compile_pipeline(request.param, tmp_path_factory.mktemp("ir") / "p.yaml", platform)
    spec, k8s = yaml.safe_load_all(Path(out).read_text())
    return request.param, spec, k8s["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_ir_fans_out_one_benchmark_task_per_device_class_with_its_parallelism(compiled):
    name, spec, _ = compiled
    gate = find_task(spec, "accuracy-gate")
    for role in ("parent", "child"):
        source = gate["inputs"]["parameters"][f"{role}_benchmarks"]["taskOutputParameter"]
        loop = find_task(spec, source["producerTask"])
        assert loop["taskInfo"]["name"] == f"benchmark-{role}", name
        assert loop["iteratorPolicy"] == {"parallelismLimit": 2}, name
        items = loop["parameterIterator"]["items"]["inputParameter"]
        assert items.endswith("device_classes"), (name, items)  # the pipeline's device_classes parameter
        body = spec["components"][loop["componentRef"]["name"]]
        bench = next(
            t
            for t in body["dag"]["tasks"].values()
            if t["componentRef"]["name"].startswith("comp-edge-benchmark")
        )
        item = loop["parameterIterator"]["itemInput"]
        assert bench["inputs"]["parameters"]["device_classes"] == {"componentInputParameter": item}, name
        # dsl.Collected: the loop's output is the list of every iteration's JSON summary
        out = body["dag"]["outputs"]["parameters"][source["outputParameterKey"]]["valueFromParameter"]
        assert out["outputParameterKey"] == "Output", name
        assert (
            body["outputDefinitions"]["parameters"][source["outputParameterKey"]]["parameterType"] == "LIST"
        )
    assert not any(
        t["componentRef"]["name"].startswith("comp-edge-benchmark")
        for t in spec["root"]["dag"]["tasks"].values()
    )


def test_ir_gives_each_class_its_own_node_selector(compiled):
    name, spec, k8s = compiled
    benches = [e for e in k8s if e.startswith("exec-edge-benchmark")]
    assert len(benches) == 2, (name, sorted(k8s))
    for executor in benches:
        selector = k8s[executor]["nodeSelector"]
        producer = selector["nodeSelectorJson"]["taskOutputParameter"]["producerTask"]
        assert producer.startswith("benchmark-node-selector"), name
        node_task = find_task(spec, producer)
        params = node_task["inputs"]["parameters"]
        assert params["label"] == {"runtimeValue": {"constant": LABEL}}, name
        assert params["labels"] == {"runtimeValue": {"constant": {"pool": "devices"}}}, name
        assert "componentInputParameter" in params["device_class"], name  # the loop's item


def test_the_node_selector_is_the_platform_labels_plus_the_class():
    from edgecompress.pipelines.platform import benchmark_node_selector

    assert benchmark_node_selector.python_func("rpi4", LABEL, {"pool": "devices"}) == {
        "pool": "devices",
        LABEL: "rpi4",
    }


def test_collected_benchmarks_refuse_a_class_measured_twice_or_a_bad_part():
    row = json.dumps([{"device_class": "rpi4-emulated", "p50_ms": 1.0}])
    assert collected_benchmarks([row], "child") == {
        "rpi4-emulated": {"device_class": "rpi4-emulated", "p50_ms": 1.0}
    }
    with pytest.raises(ConfigError, match="child benchmarks: device class 'rpi4-emulated' measured twice"):
        collected_benchmarks([row, row], "child")
    with pytest.raises(ConfigError, match="parent benchmarks, part 1: not JSON"):
        collected_benchmarks([row, "{"], "parent")


def test_kfp_local_runs_one_benchmark_task_per_class_two_at_a_time_and_the_gate_collects_them(tmp_path):
    from edgecompress.cli.pipeline import print_summary
    from edgecompress.pipelines.local import run_edge_compression

    arguments = {
        "dataset": "digits", "model": json.dumps(SMALL_CNN), "epochs": 1, "device_classes": CLASSES,
        "bench_min_runs": 20, "bench_min_duration_s": 0.05, "track": False, "max_accuracy_drop": 0.5,
    }  # fmt: skip
    result = run_edge_compression(["quantize"], arguments, tmp_path)
    run = next(result.pipeline_root.glob("edge-compression-*"))
    gate = result.gate
    assert_gate_follows_its_rule(gate)
    assert set(gate["device_classes"]) == set(CLASSES)  # the decision: every class, interleaved rounds
    for role in ("parent", "child"):
        assert set(gate["benchmarks"][role]) == set(CLASSES), role
    from edgecompress.gate import GateResult

    assert GateResult.from_json(gate).to_json() == gate  # the typed result holds the collected benchmarks
    tasks = sorted(run.glob("for-loop-*-iteration-*/edge-benchmark*/results"))
    assert len(tasks) == 2 * len(CLASSES)  # one task per model and class
    seen = {}
    for path in tasks:
        out = json.loads(path.read_text())
        ((cls, measured),) = out["results"].items()  # each task measured its one class
        role = "parent" if out["model"]["technique"] == "train" else "child"
        assert gate["benchmarks"][role][cls]["p50_ms"] == measured["latency_ms"]["p50"]
        assert gate["benchmarks"][role][cls]["emulated"] is True
        seen[(role, cls)] = True
    assert len(seen) == 4
    log = (tmp_path / "pipeline.log").read_text()
    assert log.count("Executing task 'edge-benchmark") == 4
    print_summary(result)  # `edgecompress run`'s table reads the gate result as before
    report = (run / "accuracy-gate" / "report").read_text()
    assert "Stand-alone edge benchmarks" in report
