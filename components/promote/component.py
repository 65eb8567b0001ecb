"""KFP component: move `<device-class>-production` to a gated model where it is not worse than the
model in production there (champion / challenger, `edgecompress.drift.champion`)."""

from edgecompress.components.factory import technique_component
from edgecompress.drift import promote_step
from edgecompress.gate import GateConfig
from edgecompress.params import build

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
# The gate's own settings: the challenger is held to the gate's accuracy rule against the champion.
SURFACES = (GateConfig,)


def run(gate, dataset, result, drift=None, **settings) -> None:
    out = promote_step(
        gate.path, result.path, build(GateConfig, settings), dataset.path, drift.path if drift else None
    )
    result.metadata.update(out["metadata"])


promote = technique_component(
    "promote",
    run,
    inputs={"gate": "Artifact", "dataset": "Dataset"},
    outputs={"result": "Artifact"},
    optional_inputs={"drift": "Artifact"},
    surfaces=SURFACES,
    doc="""Reads the accuracy gate's result. Per device class, where `<class>-production` points at a model
    already, the gated child (challenger) is compared with it (champion) on `dataset`'s decision split
    with the gate's accuracy rule and in interleaved latency rounds on that class (not slower: the
    speed-up's interval not wholly below 1×; QEMU classes: accuracy only); with no production model
    yet, the gate's verdict decides. `min_speedup` applies to the gate, not to this comparison.
    Refusals (worse or slower than the champion, failed gate, no benchmark on a class) are recorded
    in `result` with the numbers, not raised: a refused promotion is an outcome, not a failure.
    `drift` (drift_check's result): the retrained model's lineage names the drift check's MLflow run,
    the batch digest and the model it replaces.""",
)
