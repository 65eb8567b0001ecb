"""Issue 30 item 2 (and issue 29's slow MobileViT prune): `prune` ran a per-layer sensitivity
analysis (layers x 3 pruned copies) by default whose result only went into the report, silently
(MobileViT-XXS 1,514 s vs 146 s without). It now runs only when asked (`--sensitivity`) or when it
decides the per-layer ratios (`sensitivity_max_drop` > 0), says its cost in `--help`, logs its size
and the time left while it runs, and runs the safety probe once instead of once per trial (so each
skipped layer is said once, not ~76 times)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from edgecompress.cli import build_parser, main
from edgecompress.data import load_dataset
from edgecompress.prune import PruneConfig, sensitivity
from tests.architectures.models import fixed_layout_vit
from tests.conftest import io_args


def test_the_analysis_runs_only_when_asked_or_when_it_decides():
    assert PruneConfig().analysis_ratios() == ()
    assert PruneConfig(sensitivity=True).analysis_ratios() == (0.25, 0.5, 0.75)
    assert PruneConfig(sensitivity_max_drop=0.02).analysis_ratios() == (0.25, 0.5, 0.75)
    assert PruneConfig(method="unstructured", sensitivity=True).analysis_ratios() == ()


def test_help_states_the_cost():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["prune"].format_help()
    assert "--sensitivity" in text and "trials" in text and "several times the prune" in text


def test_default_prune_runs_no_analysis_and_asked_for_it_reports_progress(
    trained_model: Path, digits_artifact: Path, tmp_path: Path, capsys, caplog
):
    common = ["--ratio", "0.5", "--finetune-epochs-after", "0", "--no-track"]
    assert main(["prune", *io_args(trained_model, digits_artifact, tmp_path / "a"), *common]) == 0
    capsys.readouterr()
    info = json.loads((tmp_path / "a" / "model.json").read_text())
    assert info["prune"]["sensitivity"] is None
    with caplog.at_level(logging.INFO, logger="edgecompress.prune"):
        args = ["--sensitivity", "--sensitivity-ratios", "0.5"]
        assert main(["prune", *io_args(trained_model, digits_artifact, tmp_path / "b"), *common, *args]) == 0
    capsys.readouterr()
    sens = json.loads((tmp_path / "b" / "model.json").read_text())["prune"]["sensitivity"]
    layers = len(sens["accuracy"])
    assert layers >= 2 and sens["seconds"] > 0
    assert f"sensitivity analysis: {layers} layers x 1 ratios = {layers} trials" in caplog.text
    assert f"sensitivity {layers}/{layers} trials" in caplog.text and "left" in caplog.text


def test_each_skipped_layer_is_said_once_and_probed_once(digits_artifact, caplog, monkeypatch):
    """The safety probe (one pruned copy per channel group) ran for every sensitivity trial and logged
    its skip messages each time; now once per analysis (the answer is the same) and said once."""
    from edgecompress.prune import attention, structured

    calls = []
    real = attention.unsafe_groups

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(structured, "unsafe_groups", counting)
    torch.manual_seed(0)
    dataset = load_dataset(digits_artifact)
    with caplog.at_level(logging.WARNING):
        result = sensitivity(fixed_layout_vit(), dataset, ratios=(0.25, 0.5), samples=50, progress=False)
    trials = sum(len(v) for v in result["accuracy"].values())
    assert trials >= 10 and len(calls) == 1
    skips = [r.getMessage() for r in caplog.records if "skips layer" in r.getMessage()]
    assert skips == result["skipped"] and len(skips) == 1 and "'blocks.0.attn.qkv'" in skips[0]


def test_a_budget_prune_probes_and_says_each_skip_once(digits_artifact, caplog):
    """The budget search and the schedule build two pruners of one model: one probe, one message."""
    from edgecompress.evaluate import module_macs
    from edgecompress.prune import StructuredConfig, prune_structured

    torch.manual_seed(0)
    model = fixed_layout_vit()
    config = StructuredConfig(budget_metric="macs", budget=0.8 * module_macs(model, (1, 8, 8)))
    with caplog.at_level(logging.WARNING):
        _, report = prune_structured(model, (1, 8, 8), 10, config, load_dataset(digits_artifact), False)
    skips = [r.getMessage() for r in caplog.records if "skips layer" in r.getMessage()]
    assert skips == report["skipped"] and len(skips) == 1
