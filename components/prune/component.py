"""KFP component: structured channel pruning (torch-pruning dependency graph) or unstructured magnitude pruning."""

from edgecompress.components import stamp_model
from edgecompress.components.factory import technique_component
from edgecompress.params import build
from edgecompress.prune import PruneConfig, prune_step
from edgecompress.prune.importance import importance_names
from edgecompress.step import Lineage

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (
    PruneConfig,
    Lineage,
)


def run(model, dataset, pruned_model, report, **settings) -> None:
    result = prune_step(
        model.path,
        dataset.path,
        pruned_model.path,
        build(PruneConfig, settings),
        report_path=report.path,
        lineage_ctx=build(Lineage, settings),
        progress=False,
    )
    stamp_model(pruned_model, result)


prune = technique_component(
    "prune",
    run,
    inputs={"model": "Model", "dataset": "Dataset"},
    outputs={"pruned_model": "Model", "report": "HTML"},
    surfaces=SURFACES,
    doc=f"""`method`: structured (physically removes channels: fewer MACs, faster) or unstructured (zeroes
    weights: smaller gzip artifact, no dense-kernel speed-up). Structured target: `ratio`, or
    `budget_metric` (macs | params | latency) with an absolute `budget` (MACs, parameters, p50 ms on
    `device_class`). `importance`: {" | ".join(importance_names())}. `layer_ratios`: `name=0.3,…` or JSON;
    `keep_layers`: comma-separated names never pruned. `steps` > 1 prunes iteratively with
    `finetune_epochs_between` epochs between steps and `finetune_epochs_after` after the last
    (`schedule`: linear or geometric in kept channels); structured pruning's `recovery` in those
    epochs is finetune (default), kd (from the unpruned parent, `kd_temperature`/`kd_alpha`) or auto (both at
    the same budget and seed, the higher validation accuracy kept, ties to finetune); `device`: cpu or
    cuda for that training.
    `sensitivity` (off by default: layers x `sensitivity_ratios` pruned copies, often several times the
    prune) adds the per-layer sensitivity table and plot to the report; `sensitivity_max_drop` > 0 runs
    it and sets per-layer ratios from it. Transformers: whole attention heads go
    (`prune_heads`), found by their head-count attribute or named in `attention_heads` (`name=4,…`);
    a layer whose removal breaks the forward is skipped and named. `sparsity`/`scope` are for unstructured.""",
)
