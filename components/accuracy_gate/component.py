"""KFP component: accept a compressed model only if it keeps accuracy and is faster than its parent."""

from edgecompress.components.factory import technique_component
from edgecompress.gate import GateConfig, collected_benchmarks, gate_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    GateConfig,
    Lineage,
)


def run(
    parent_model,
    child_model,
    dataset,
    parent_evaluation,
    child_evaluation,
    results,
    report,
    isa_check=None,
    parent_benchmarks=None,
    child_benchmarks=None,
    **settings,
) -> str:
    benchmarks = None
    if parent_benchmarks is not None or child_benchmarks is not None:
        benchmarks = {"parent": collected_benchmarks(parent_benchmarks, "parent"),
                      "child": collected_benchmarks(child_benchmarks, "child")}  # fmt: skip
    out = gate_step(parent_model.path, child_model.path, dataset.path, parent_evaluation.path, child_evaluation.path,
                    build(GateConfig, settings), results.path, report.path, build(Lineage, settings),
                    isa_check.path if isa_check is not None else None, benchmarks)  # fmt: skip
    results.metadata["verdict"] = out["verdict"]
    return out["verdict"]


accuracy_gate = technique_component(
    "accuracy_gate",
    run,
    inputs={
        "parent_model": "Model",
        "child_model": "Model",
        "dataset": "Dataset",
        "parent_evaluation": "Artifact",
        "child_evaluation": "Artifact",
    },
    outputs={"results": "Artifact", "report": "Markdown"},
    optional_inputs={"isa_check": "Artifact"},
    optional_data={"parent_benchmarks": "list", "child_benchmarks": "list"},
    surfaces=SURFACES,
    returns="str",
    doc="""Decides on `decision_split` (validation): the paired accuracy drop with its interval, and per
    device class the interleaved speed-up's interval (parent and child in alternating rounds). Returns the
    verdict (`accepted` or `rejected`); a rejection is a result, not a task failure. The evaluations
    (test split) are reported next to the decision. `isa_check` (the isa_check component's results):
    the classes it rejected are withheld, with its reasons. `parent_benchmarks`, `child_benchmarks`: the
    edge-benchmark tasks' outputs (`dsl.Collected`, one per device class), reported next to the decision,
    never deciding it.""",
)
