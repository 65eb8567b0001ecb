"""KFP component: accept a compressed model only if it keeps accuracy and is faster than its parent."""

from kfp import dsl

from edgecompress.settings import component_image


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
    pipeline_name: str = "edge-compression",
    experiment: str = "edgecompress",
    track: bool = True,
) -> str:
    """Returns the verdict (`accepted` or `rejected`); a rejection is a result, not a task failure."""
    from edgecompress.step import Lineage
    from edgecompress.steps import gate_step

    out = gate_step(
        parent_evaluation.path,
        child_evaluation.path,
        parent_benchmark.path,
        child_benchmark.path,
        max_accuracy_drop,
        registered_model_name,
        results.path,
        report.path,
        min_speedup,
        Lineage(pipeline_run_id, pipeline_name, experiment, track),
    )
    results.metadata["verdict"] = out["verdict"]
    return out["verdict"]
