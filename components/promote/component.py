"""KFP component: promote a gated model to `<device-class>-production` on each class it earned."""

from kfp import dsl

from edgecompress.settings import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def promote(
    gate: dsl.Input[dsl.Artifact],
    result: dsl.Output[dsl.Artifact],
    device_classes: list = ["rpi4-emulated"],  # noqa: B006
):
    """Reads the accuracy gate's result; refusals (failed gate, no benchmark on a class) are recorded
    in `result`, not raised: a refused promotion is an outcome, not a failure."""
    from edgecompress.drift import promote_step

    out = promote_step(gate.path, result.path, list(device_classes))
    result.metadata.update(out["metadata"])
