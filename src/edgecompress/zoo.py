"""Model families, and user models given as `package.module:factory`.

A model is described by a JSON-able *spec*, so that an artifact, an MLflow run or a NAS trial can
say exactly which architecture it holds: `{"family": "cnn", "kwargs": {...}}` for the zoo, or
`{"factory": "pkg.mod:make", "kwargs": {...}, "weights": "path.pt"}` for a user's own model.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickletools
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from edgecompress.errors import ConfigError, EdgeCompressError, ModelError


@dataclass
class ModelChoice:
    """Which model to build."""

    model_spec: str = field(
        default="cnn",
        metadata={"help": "zoo family (mlp, lenet5, cnn, mobilenet), package.module:factory, or a JSON spec"},
    )


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 with 'same' padding so that it also fits 8×8 digits; ReLU and max-pooling."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, activation: str = "relu") -> None:
        super().__init__()
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            _activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            _activation(activation),
            nn.MaxPool2d(2),
        )
        flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            _activation(activation),
            nn.Linear(120, 84),
            _activation(activation),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """Stages of conv-BN-activation blocks, downsampling between stages, global average pooling.

    `kernel_size` is one size or one per stage; `downsample` is "maxpool" (a 2×2 max-pool between
    stages) or "stride" (the first conv of the next stage has stride 2): NAS searches both."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (2, 2, 2),
        kernel_size: int | Sequence[int] = 3,
        activation: str = "relu",
        dropout: float = 0.1,
        downsample: str = "maxpool",
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ConfigError(
                f"cnn: widths {list(widths)} and depths {list(depths)} must be non-empty and of equal length"
            )
        kernels = [kernel_size] * len(widths) if isinstance(kernel_size, int) else list(kernel_size)
        if len(kernels) != len(widths):
            raise ConfigError(f"cnn: kernel_size {kernels} needs one entry per stage ({len(widths)})")
        if downsample not in ("maxpool", "stride"):
            raise ConfigError(f"cnn: downsample must be 'maxpool' or 'stride', got {downsample!r}")
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for i, (width, depth, k) in enumerate(zip(widths, depths, kernels, strict=True)):
            for j in range(depth):
                stride = 2 if downsample == "stride" and i > 0 and j == 0 else 1
                layers += [
                    nn.Conv2d(channels, width, k, stride=stride, padding=k // 2, bias=False),
                    nn.BatchNorm2d(width),
                    _activation(activation),
                ]
                channels = width
            if downsample == "maxpool" and i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class InvertedResidual(nn.Module):
    def __init__(
        self, cin: int, cout: int, stride: int, expansion: int, kernel_size: int, activation: str
    ) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), _activation(activation)]
        layers += [
            nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            _activation(activation),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetLike(nn.Module):
    """MobileNetV2-style: stem, inverted-residual stages [expansion, channels, repeats, stride] with
    an optional fifth entry, the stage's depthwise kernel size (else `kernel_size`)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        stages: Sequence[Sequence[int]] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 48, 2, 2), (4, 96, 1, 1)),
        width_mult: float = 1.0,
        stem_channels: int = 16,
        kernel_size: int = 3,
        activation: str = "relu6",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not stages:
            raise ConfigError("mobilenet: at least one stage is needed")

        def scaled(c: int) -> int:
            return max(8, int(round(c * width_mult / 8)) * 8)

        channels = scaled(stem_channels)
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            _activation(activation),
        ]
        for stage in stages:
            if len(stage) not in (4, 5):
                raise ConfigError(
                    f"mobilenet: stage {list(stage)} must be [expansion, channels, repeats, stride(, kernel)]"
                )
            expansion, c, repeats, stride = stage[:4]
            k = stage[4] if len(stage) == 5 else kernel_size
            for r in range(repeats):
                out = scaled(c)
                layers.append(
                    InvertedResidual(channels, out, stride if r == 0 else 1, expansion, k, activation)
                )
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


FAMILIES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "lenet5": LeNet5,
    "cnn": SmallCNN,
    "mobilenet": MobileNetLike,
}


def parse_spec(text: str | dict[str, Any]) -> dict[str, Any]:
    """Accept a family name (`cnn`), a factory path (`pkg.mod:fn`), JSON, or a spec dict."""
    if isinstance(text, dict):
        spec = dict(text)
    elif text.strip().startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model spec is not valid JSON: {exc}") from exc
    elif ":" in text:
        spec = {"factory": text}
    else:
        spec = {"family": text}
    if ("family" in spec) == ("factory" in spec):
        raise ConfigError(f"model spec needs exactly one of 'family' or 'factory': {spec}")
    if "family" in spec and spec["family"] not in FAMILIES:
        raise ConfigError(
            f"unknown model family {spec['family']!r}; expected one of {sorted(FAMILIES)} or a 'module:factory' path"
        )
    spec.setdefault("kwargs", {})
    return spec


# torchvision ops registered by its compiled extension that its Python code also registers a fake
# (meta) kernel for without checking that the extension loaded.
_UNGUARDED_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fallback_library = None


def import_torchvision() -> ModuleType:
    """`import torchvision`, also where its compiled extension cannot load.

    PyPI's torchvision 0.28.0 (the release for torch 2.13.0) is built against CUDA torch; with the
    CPU torch build its extension (`torchvision._C`: nms, roi_align …) does not load, which
    torchvision tolerates except for two fake-kernel registrations that then fail the import
    ("operator torchvision::nms does not exist"). Declaring those two schemas lets the pure-Python
    part (models, transforms) import; the detection ops stay unavailable, as they would be anyway.
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    global _fallback_library
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _fallback_library is None:
        _fallback_library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _UNGUARDED_OPS.values():
            _fallback_library.define(schema)
    return importlib.import_module("torchvision")


def prepare_import(module_name: str) -> None:
    """Import torchvision through `import_torchvision` first where `module_name` is torchvision or
    timm, so that its broken extension does not fail the import that follows."""
    if module_name.partition(".")[0] not in ("torchvision", "timm") or "torchvision" in sys.modules:
        return
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()


def pickled_modules(path: Path) -> set[str]:
    """Top-level module names a `torch.save`d file's pickle refers to (its classes' modules)."""
    names: set[str] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in [e for e in archive.namelist() if e.endswith(".pkl")]:
                for _, arg, _ in pickletools.genops(archive.read(entry)):
                    if isinstance(arg, str):  # GLOBAL's "module name", or STACK_GLOBAL's pushed module
                        names.add(arg.split(" ")[0].partition(".")[0])
    except (OSError, zipfile.BadZipFile, ValueError):
        return set()
    return names


def _import_factory(path: str) -> Callable[..., nn.Module]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model factory {path!r} must look like 'package.module:function'")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users point at a module in their working directory
    prepare_import(module_name)  # torchvision.models:resnet18 where torchvision's extension fails to load
    try:
        try:
            module = importlib.import_module(module_name)
        except RuntimeError as exc:  # a user's module that imports torchvision or timm
            if "torchvision::" not in str(exc):
                raise
            prepare_import("torchvision")
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import model factory module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the module's own code failed: SyntaxError, an error at import time …
        raise ConfigError(
            f"cannot import model factory module {module_name!r}: it raised {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"model factory {path!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def build_model(
    spec: str | dict[str, Any], input_shape: Sequence[int], num_classes: int, seed: int | None = None
) -> nn.Module:
    """Instantiate a spec and check that it maps `input_shape` to `num_classes` logits.

    With `seed`, the initial weights come from that seed alone, not from whatever drew from torch's
    global generator before (other models built, libraries imported), and that generator is left as it
    was: a seeded training run is then the same in any process."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(spec, input_shape, num_classes)
    spec = parse_spec(spec)
    kwargs = dict(spec["kwargs"])
    if "family" in spec:
        try:
            model = FAMILIES[spec["family"]](
                input_shape=tuple(input_shape), num_classes=num_classes, **kwargs
            )
        except TypeError as exc:
            raise ConfigError(f"model family {spec['family']!r}: bad arguments {kwargs}: {exc}") from exc
    else:
        factory = _import_factory(spec["factory"])
        # a factory that imports torchvision or timm where it uses them (inside the function) meets
        # torchvision's broken extension there: torchvision is imported the working way first
        prepare_import("torchvision")
        try:
            model = factory(**kwargs)
        except EdgeCompressError:
            raise
        except Exception as exc:  # the user's code: name it and what it raised, not a traceback
            raise ModelError(f"model factory {spec['factory']!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ModelError(
                f"factory {spec['factory']!r} returned {type(model).__name__}, not a torch.nn.Module"
            )
        if spec.get("weights"):
            load_weights(model, Path(spec["weights"]))
    check_model_fits(model, input_shape, num_classes)
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"cannot load weights {path} into the model: {exc}") from exc


def check_model_fits(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
    """Fail early, with the shapes named, when the model and the data do not match."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ModelError(
            f"model does not accept inputs of shape (N, {', '.join(map(str, input_shape))}): {exc}"
        ) from exc
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ModelError(
            f"model outputs shape {tuple(out.shape)} for a batch of 2; the data has {num_classes} classes, so (2, {num_classes}) is needed"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
