"""Channel importance as plug-ins (issue 27): one registry, Torch-Pruning's `Importance` shape, and every
place that lists importances (config validation, CLI choices, the component's doc) reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgecompress.errors import ConfigError
from edgecompress.prune import StructuredConfig, prune_structured
from edgecompress.prune.importance import (
    IMPORTANCES,
    Importance,
    importance_names,
    make_importance,
    register,
)
from edgecompress.zoo import build_model


@pytest.fixture
def digits(digits_artifact: Path):
    from edgecompress.data import load_dataset

    return load_dataset(digits_artifact)


@pytest.fixture
def keep_first(monkeypatch):
    """A plug-in registered for one test: it scores channels by index, so the first ones stay."""
    monkeypatch.setattr("edgecompress.prune.importance.IMPORTANCES", dict(IMPORTANCES))

    @register
    class KeepFirst(Importance, tp.importance.Importance):
        name = "keep-first"
        help = "the lower the index, the more important"

        def __call__(self, group) -> torch.Tensor:
            n = len(group[0].idxs)
            return torch.arange(n, 0, -1, dtype=torch.float32)

    return KeepFirst


def test_the_builtins_are_torch_pruning_scorers():
    for name in ("l1", "l2", "bn", "taylor"):
        scorer = make_importance(name)
        assert isinstance(scorer, tp.importance.Importance) and isinstance(scorer, Importance)
        assert scorer.name == name
    assert make_importance("l1").p == 1 and make_importance("l2").p == 2


def test_a_registered_plug_in_prunes_through_the_pruner(digits, keep_first):
    torch.manual_seed(0)
    model = build_model("lenet5", digits.input_shape, digits.num_classes)
    first = model.features[0].weight.detach().clone()
    config = StructuredConfig(ratio=0.5, importance="keep-first")
    pruned, _ = prune_structured(model, digits.input_shape, digits.num_classes, config, progress=False)
    conv = pruned.features[0]
    assert conv.out_channels == first.shape[0] // 2
    assert torch.equal(conv.weight.detach(), first[: conv.out_channels])  # the plug-in chose which stay


def test_an_unknown_importance_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"importance 'median' not in \('l1', 'l2', 'bn', 'taylor'"):
        StructuredConfig(importance="median").validate()


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        register(type("Again", (Importance,), {"name": "l2", "help": ""}))


def test_bn_importance_on_a_model_without_batchnorm_names_the_alternatives():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(ConfigError, match="needs BatchNorm.*use l1, l2, taylor"):
        IMPORTANCES["bn"].check_fits(model)


def test_choices_and_docs_come_from_the_registry():
    from edgecompress.cli import build_parser
    from edgecompress.components.prune.component import prune
    from edgecompress.params import surface
    from edgecompress.prune import PruneConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    option = next(a for a in sub["sensitivity"]._actions if a.dest == "importance")
    assert tuple(option.choices) == importance_names()
    assert {p.name: p.choices for p in surface(PruneConfig)}["importance"] == importance_names()
    assert " | ".join(importance_names()) in prune.component_spec.description
