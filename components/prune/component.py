"""KFP component: structured channel pruning (torch-pruning dependency graph) or unstructured magnitude pruning."""

from kfp import dsl

from edgecompress.prune import PruneConfig
from edgecompress.settings import component_image
from edgecompress.step import Lineage

# The settings of this component, one definition each (tests/test_parameter_surfaces.py checks them).
SURFACES = (PruneConfig, Lineage)


@dsl.component(base_image=component_image(), install_kfp_package=False)
def prune(
    model: dsl.Input[dsl.Model],
    dataset: dsl.Input[dsl.Dataset],
    pruned_model: dsl.Output[dsl.Model],
    report: dsl.Output[dsl.HTML],
    method: str = "structured",
    ratio: float = 0.5,
    importance: str = "l2",
    global_pruning: bool = False,
    layer_ratios: str = "",
    keep_layers: str = "",
    budget_metric: str = "",
    budget: float = 0.0,
    device_class: str = "rpi4-emulated",
    steps: int = 1,
    finetune_epochs_between: int = 0,
    finetune_epochs_after: int = 2,
    sparsity: float = 0.8,
    scope: str = "global",
    lr: float = 1e-3,
    batch_size: int = 128,
    augment: bool = False,
    sensitivity_ratios: str = "0.25,0.5,0.75",
    sensitivity_max_drop: float = 0.0,
    seed: int = 0,
    pipeline_run_id: str = "",
    pipeline_name: str = "standalone",
    experiment: str = "edgecompress",
    track: bool = True,
):
    """`method`: structured (physically removes channels: fewer MACs, faster) or unstructured (zeroes
    weights: smaller gzip artifact, no dense-kernel speed-up). Structured target: `ratio`, or
    `budget_metric` (macs | params | latency) with an absolute `budget` (MACs, parameters, p50 ms on
    `device_class`). `importance`: l1 | l2 | bn | taylor. `layer_ratios`: `name=0.3,…` or JSON;
    `keep_layers`: comma-separated names never pruned. `steps` > 1 prunes iteratively with
    `finetune_epochs_between` epochs between steps and `finetune_epochs_after` after the last.
    `sensitivity_ratios` (empty to skip) adds the per-layer sensitivity table and plot to the report;
    `sensitivity_max_drop` > 0 sets per-layer ratios from it. `sparsity`/`scope` are for unstructured."""
    from edgecompress.components import stamp_model
    from edgecompress.params import build
    from edgecompress.prune import PruneConfig, prune_step
    from edgecompress.step import Lineage

    config = build(PruneConfig, locals())
    info = prune_step(model.path, dataset.path, pruned_model.path, **config.step_arguments(), report_path=report.path,
                      lineage_ctx=build(Lineage, locals()), progress=False)  # fmt: skip
    stamp_model(pruned_model, info)
