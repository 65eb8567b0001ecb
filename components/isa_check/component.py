"""KFP component: check the child's numerics on each target device class's ISA before it ships."""

from edgecompress.components.factory import technique_component
from edgecompress.isa import IsaCheckConfig, isa_check_step
from edgecompress.params import build

# The component's settings: every flat field of these, with their defaults (edgecompress.params).
SURFACES = (IsaCheckConfig,)


def run(parent_model, child_model, dataset, results, report, **settings) -> str:
    out = isa_check_step(parent_model.path, child_model.path, dataset.path, build(IsaCheckConfig, settings),
                         results.path, report.path)  # fmt: skip
    results.metadata["rejected_device_classes"] = ",".join(out["rejected_device_classes"])
    return ",".join(out["rejected_device_classes"])


isa_check = technique_component(
    "isa_check",
    run,
    inputs={"parent_model": "Model", "child_model": "Model", "dataset": "Dataset"},
    outputs={"results": "Artifact", "report": "Markdown"},
    surfaces=SURFACES,
    returns="str",
    doc="""Runs the child and its float parent on the ONNX Runtime build of every device class whose ISA
    differs from the task's machine (aarch64 on x86: the arm64 agent image under QEMU, which needs podman
    and binfmt on the node; natively on an arm64 node) on `decision_split`, and rejects the child for a
    class where its accuracy there breaks the gate's rule. Returns the rejected classes, comma-separated;
    the accuracy gate takes `results` and withholds those classes.""",
)
