"""Real architectures as `module:factory` models with random weights (nothing is downloaded):
torchvision's ResNet-18 and MobileNetV3-small, timm's ViT-Tiny and ConvNeXt-Atto.

`edgecompress.architectures:resnet18` (with `{"kwargs": {"num_classes": 10, "in_chans": 3}}` in a
JSON spec) is what a user's own factory looks like; the tests and `benchmarks/architectures` use
these. Every factory takes `num_classes` and `in_chans`; the ViT also `img_size` (its position
embedding depends on it), the convolutional ones accept any resolution.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from edgecompress.zoo import import_torchvision


def import_timm() -> ModuleType:
    import_torchvision()  # timm imports torchvision
    return importlib.import_module("timm")


def resnet18(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = import_torchvision().models.resnet18(weights=None, num_classes=num_classes)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    return model


def mobilenet_v3_small(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = import_torchvision().models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    if in_chans != 3:
        first = model.features[0][0]
        model.features[0][0] = nn.Conv2d(in_chans, first.out_channels, 3, 2, 1, bias=False)
    return model


def vit_tiny(num_classes: int = 10, in_chans: int = 3, img_size: int = 32, patch_size: int = 8) -> nn.Module:
    """timm's `vit_tiny_patch16_224` (12 blocks, width 192, 3 heads); at a small resolution the patch
    is smaller too, so that there are tokens to attend over (32x32 with 8x8 patches: 16 + 1)."""
    return import_timm().create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        patch_size=patch_size,
    )


def convnext_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return import_timm().create_model(
        "convnext_atto", pretrained=False, num_classes=num_classes, in_chans=in_chans
    )


ARCHITECTURES = {
    "resnet18": resnet18,
    "mobilenet_v3_small": mobilenet_v3_small,
    "vit_tiny": vit_tiny,
    "convnext_atto": convnext_atto,
}
