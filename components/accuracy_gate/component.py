"""KFP component: accept a compressed model only if it keeps accuracy and is faster than its parent."""

from kfp import dsl

from edgecompress.gate import GateConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (
    GateConfig,
    Lineage,
)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def accuracy_gate(
    parent_evaluation: dsl.Input[dsl.Artifact],
    child_evaluation: dsl.Input[dsl.Artifact],
    parent_benchmark: dsl.Input[dsl.Artifact],
    child_benchmark: dsl.Input[dsl.Artifact],
    results: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.Markdown],
    max_accuracy_drop: float = 0.01,
    min_speedup: float = 1.0,
    registered_model_name: str = "edgecompress-model",
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
) -> str:
    """Returns the verdict (`accepted` or `rejected`); a rejection is a result, not a task failure."""
    from edgecompress.gate import GateConfig, gate_step
    from edgecompress.params import build
    from edgecompress.step import Lineage

    out = gate_step(parent_evaluation.path, child_evaluation.path, parent_benchmark.path, child_benchmark.path,
                    build(GateConfig, locals()), results.path, report.path, build(Lineage, locals()))  # fmt: skip
    results.metadata["verdict"] = out["verdict"]
    return out["verdict"]
