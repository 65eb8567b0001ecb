"""KFP component: accept a compressed model only if it keeps accuracy and is faster than its parent."""

from edgecompress.components.factory import technique_component
from edgecompress.gate import GateConfig, gate_step
from edgecompress.params import build
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    GateConfig,
    Lineage,
)


def run(
    parent_evaluation, child_evaluation, parent_benchmark, child_benchmark, results, report, **settings
) -> str:
    out = gate_step(
        parent_evaluation.path,
        child_evaluation.path,
        parent_benchmark.path,
        child_benchmark.path,
        build(GateConfig, settings),
        results.path,
        report.path,
        build(Lineage, settings),
    )
    results.metadata["verdict"] = out["verdict"]
    return out["verdict"]


accuracy_gate = technique_component(
    "accuracy_gate",
    run,
    inputs={
        "parent_evaluation": "Artifact",
        "child_evaluation": "Artifact",
        "parent_benchmark": "Artifact",
        "child_benchmark": "Artifact",
    },
    outputs={"results": "Artifact", "report": "Markdown"},
    surfaces=SURFACES,
    returns="str",
    doc="""Returns the verdict (`accepted` or `rejected`); a rejection is a result, not a task failure.""",
)
