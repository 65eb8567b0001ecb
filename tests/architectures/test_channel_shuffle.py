"""Issue 29, architectures users bring: ShuffleNetV2's channel shuffle (split, concat, then a view to
(N, groups, C/groups, H, W), transpose and view back) ended structured pruning with
`torch-pruning cannot trace the model (ShuffleNetV2): ZeroDivisionError: integer division or modulo
by zero`. Torch-Pruning 1.6.1 cannot map channel indices through the shuffle (its reshape index
mapping divides by the channels it infers after the 5-D view, 0), and removing channels without that
mapping would misalign every layer after it. The error now names that cause and the workarounds, and
the workaround named (unstructured pruning) works on the same model."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from edgecompress.data import load_dataset
from edgecompress.errors import ModelError
from edgecompress.prune import StructuredConfig, UnstructuredConfig, prune_structured, prune_unstructured
from tests.conftest import skip_or_fail_in_ci

if importlib.util.find_spec("torchvision") is None:
    skip_or_fail_in_ci("torchvision is not installed")


def shufflenet() -> nn.Module:
    """torchvision's ShuffleNetV2 0.5x for digits (one input channel, 10 classes)."""
    from edgecompress.zoo import import_torchvision

    torch.manual_seed(0)
    model = import_torchvision().models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    model.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)
    return model


def test_a_channel_shuffle_gets_internal_width_pruning(digits_artifact, tmp_path):
    """Structured pruning of ShuffleNetV2 now removes channels: the middle widths of its pointwise →
    depthwise → pointwise branches, which never cross the shuffle; the result runs, exports to ONNX with
    parity, and is smaller. The report says why and what was pruned."""
    from edgecompress.export import check_parity, export_onnx

    dataset = load_dataset(digits_artifact)
    model = shufflenet()
    pruned, report = prune_structured(model, (1, 8, 8), 10, StructuredConfig(ratio=0.5), dataset, False)
    internal = report["internal_widths"]
    assert "channel shuffle" in internal["why"] and len(internal["blocks"]) == 16  # every branch2 of 0.5x
    assert report["params_reduction"] > 1.2 and report["macs_reduction"] > 1.2
    for name, mod in pruned.named_modules():  # each middle width halved, the block boundaries untouched
        if name.endswith("branch2.0"):
            original = dict(model.named_modules())[name].out_channels
            assert mod.out_channels == round(original * 0.5)
    x = torch.randn(4, 1, 8, 8)
    assert pruned(x).shape == (4, 10)
    export_onnx(pruned, (1, 8, 8), tmp_path / "m.onnx")
    assert check_parity(pruned.eval(), tmp_path / "m.onnx", x.numpy()).top1_agreement == 1.0
    assert model.stage2[0].branch2[0].out_channels == 24  # the input model is left alone


def test_a_channel_shuffle_with_a_budget_is_named_with_the_workarounds(digits_artifact):
    dataset = load_dataset(digits_artifact)
    config = StructuredConfig(budget_metric="macs", budget=1e6)
    with pytest.raises(ModelError) as caught:
        prune_structured(shufflenet(), (1, 8, 8), 10, config, dataset, False)
    message = str(caught.value)
    assert message.startswith("torch-pruning cannot trace the model (ShuffleNetV2): ")
    assert "channel shuffle" in message and "uniform ratio only" in message
    assert "--method unstructured" in message and "shufflenet_v2_x0_5" in message
    model = shufflenet()  # the workaround named works on the same model
    report = prune_unstructured(model, UnstructuredConfig(sparsity=0.5))
    assert report["weight_sparsity"] > 0.45 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_a_traceable_model_never_takes_the_internal_width_path(digits_artifact):
    from edgecompress.zoo import build_model
    from tests.conftest import SMALL_CNN

    _, report = prune_structured(build_model(SMALL_CNN, (1, 8, 8), 10), (1, 8, 8), 10,
                                 StructuredConfig(ratio=0.5), load_dataset(digits_artifact), False)  # fmt: skip
    assert "internal_widths" not in report and report["macs_reduction"] > 2
