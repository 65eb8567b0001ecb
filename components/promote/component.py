"""KFP component: promote a gated model to `<device-class>-production` on each class it earned."""

from edgecompress.components.factory import technique_component
from edgecompress.drift import PromoteConfig, promote_step
from edgecompress.params import build

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (PromoteConfig,)


def run(gate, result, **settings) -> None:
    out = promote_step(gate.path, result.path, build(PromoteConfig, settings).device_classes)
    result.metadata.update(out["metadata"])


promote = technique_component(
    "promote",
    run,
    inputs={"gate": "Artifact"},
    outputs={"result": "Artifact"},
    surfaces=SURFACES,
    doc="""Reads the accuracy gate's result; refusals (failed gate, no benchmark on a class) are recorded
    in `result`, not raised: a refused promotion is an outcome, not a failure.""",
)
