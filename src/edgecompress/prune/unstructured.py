"""Unstructured magnitude pruning (`torch.nn.utils.prune`): zero the smallest weights, globally or per
layer, optionally fine-tune with the masks in place, then make the zeros permanent. `prune_unstructured`
changes the model in place and returns a report; tensors keep their dense shape (no speed-up, a smaller
gzip artifact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError
from edgecompress.prune.common import _PRUNABLE, SCOPES, _check_ratio, _modules_by_name
from edgecompress.train import TrainConfig, fit


@dataclass
class UnstructuredConfig:
    """Unstructured pruning's settings, nested in `PruneConfig` (which fills `keep_layers` and the
    fine-tuning from its own)."""

    sparsity: float = field(default=0.8, metadata={"help": "unstructured: fraction of weights zeroed"})
    scope: str = field(
        default="global",
        metadata={"help": "unstructured: one threshold or per layer", "choices": SCOPES},
    )
    keep_layers: tuple[str, ...] = ()
    # fine-tune with the masks in place, then make them permanent
    finetune: TrainConfig | None = field(default=None, metadata={"flat": False})

    def validate(self) -> None:
        _check_ratio("sparsity", self.sparsity)
        if self.scope not in SCOPES:
            raise ConfigError(f"scope {self.scope!r} not in {SCOPES}")
        if self.finetune:
            self.finetune.validate()

    def as_params(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,
            "scope": self.scope,
            "keep_layers": ",".join(self.keep_layers),
            "finetune_epochs": self.finetune.epochs if self.finetune else 0,
        }


def layer_sparsity(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per prunable layer: weights, zeros and the fraction that is zero."""
    report = {}
    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE):
            w = module.weight.detach()
            zeros = int((w == 0).sum())
            report[name] = {"weights": int(w.numel()), "zeros": zeros, "sparsity": zeros / max(1, w.numel())}
    return report


def prune_unstructured(
    model: nn.Module, config: UnstructuredConfig, dataset: Dataset | None = None, progress: bool = True
) -> dict[str, Any]:
    """Magnitude-prune `model` in place; fine-tune with the masks if configured; make the zeros permanent."""
    from torch.nn.utils import prune as torch_prune

    config.validate()
    keep = _modules_by_name(model, config.keep_layers, "keep_layers")
    targets = [(m, "weight") for m in model.modules() if isinstance(m, _PRUNABLE) and m not in keep.values()]
    if not targets:
        raise ConfigError("no prunable layers (Conv/Linear) are left once keep_layers are excluded")
    if config.scope == "global":
        torch_prune.global_unstructured(
            targets, pruning_method=torch_prune.L1Unstructured, amount=config.sparsity
        )
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=config.sparsity)
    history = None
    if config.finetune:
        if dataset is None:
            raise ConfigError("fine-tuning needs a dataset")
        history = fit(
            model, dataset, config.finetune, description="fine-tune (masked)", progress=progress
        ).as_dict()
    for module, name in targets:
        torch_prune.remove(module, name)  # weight = weight_orig * mask, permanently
    model.eval()
    per_layer = layer_sparsity(model)
    total = sum(v["weights"] for v in per_layer.values())
    zeros = sum(v["zeros"] for v in per_layer.values())
    return {
        "method": "unstructured",
        "config": config.as_params(),
        "per_layer": per_layer,
        "weight_sparsity": zeros / max(1, total),
        "finetune_history": history,
        "note": "sparse weights keep their dense shape: no speed-up on dense kernels; the gzip artifact shrinks",
    }
