"""Progressive prune → recover, and the choice of recovery on validation (issue 26, item 5).

Structured pruning reaches its target in `steps` increments (K, on the structured config's
`schedule`: linear in the ratio, or geometric in the kept channels); each increment is followed by a
recovery of a fixed epoch budget: `finetune_epochs_between` after each increment but the last,
`finetune_epochs_after` after the last (the same budget whichever recovery runs). The recovery is

- `finetune`: hard-label training (`train.fit`), what pruning always did;
- `kd`: knowledge distillation from the **unpruned parent** as teacher (`distill.distill`, logit KD
  with `kd_temperature` / `kd_alpha`; no feature term, no zero mask: a structured child is dense);
- `auto`: both, each from the same parent, pruning schedule, seed and epoch budget; the child kept
  is the one with the higher **validation** accuracy, a tie going to fine-tuning (the cheaper one).
  So on validation KD never ends below fine-tuning at the same budget; test accuracy is only reported
  (benchmarks/compression/recovery). Cost: twice the recovery epochs.

The default is `finetune`: what pruning did before, so every existing pipeline, recorded chain and
benchmark keeps its results and its cost; `auto` is one setting away (`--recovery auto`).

Each training call's seed is the fine-tuning seed + the increment's number (as fine-tuning between
steps always was), so the two branches see the same data order. The decision, both validation
accuracies, the rule and the budget are in the pruning report (`recovery`), hence in the child's
model.json and its MLflow LoggedModel.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from edgecompress.data import Dataset
from edgecompress.distill import DistillConfig, distill
from edgecompress.errors import ConfigError, ModelError
from edgecompress.prune.structured import Recover, StructuredConfig, prune_structured
from edgecompress.train import TrainConfig, accuracy, fit

RECOVERIES = ("auto", "kd", "finetune")
RULE = (
    "auto: fine-tuning and KD from the unpruned parent both run from the same parent, pruning schedule, "
    "seed and epoch budget; the higher validation accuracy is kept, a tie goes to fine-tuning"
)
# KD settings a recovery does not expose: no feature term (a pruned student's widths differ), no zero
# mask (structured children are dense, and fine-tuning keeps no mask either), and its training is
# the fine-tuning's (same epochs, data order and device)
_KD_NOT_EXPOSED = ("feature_loss", "feature_weight", "keep_sparsity", "feature_pairs", "train")


@dataclass
class RecoveryConfig:
    """How a structured child recovers after each pruning increment. `PruneConfig` nests it (flat:
    `recovery`, `kd_temperature`, `kd_alpha`); the epoch budget is the pruning config's fine-tuning
    epochs."""

    recovery: str = field(
        default="finetune",
        metadata={
            "help": "structured: training after each pruning step: finetune (hard labels), kd (from the "
            "unpruned parent), or auto (both at the same budget and seed, the higher validation accuracy "
            "kept, ties to finetune; twice the training time)",
            "choices": RECOVERIES,
        },
    )
    kd: DistillConfig = field(
        default_factory=lambda: DistillConfig(feature_weight=0.0, keep_sparsity=False),
        metadata={
            "flatten": True,
            "exclude": _KD_NOT_EXPOSED,
            "rename": {"temperature": "kd_temperature", "alpha": "kd_alpha"},
        },
    )

    def validate(self) -> None:
        if self.recovery not in RECOVERIES:
            raise ConfigError(f"recovery {self.recovery!r} must be one of {RECOVERIES}")
        dataclasses.replace(self.kd, train=TrainConfig()).validate()

    def distill_config(self, train: TrainConfig) -> DistillConfig:
        return dataclasses.replace(self.kd, train=train, feature_weight=0.0, keep_sparsity=False)


def recovery_budget(config: StructuredConfig) -> list[int]:
    """Epochs of recovery after each of the K increments (between, …, between, after)."""
    between = config.finetune_between.epochs if config.finetune_between else 0
    after = config.finetune_after.epochs if config.finetune_after else 0
    return [between] * (config.steps - 1) + [after]


def majority_share(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / max(1, len(y))) if len(y) else 0.0


def check_teacher(teacher: nn.Module, dataset: Dataset) -> float:
    """The unpruned parent's validation accuracy; a ConfigError when it is no better than always
    answering the most frequent validation class (it has nothing to teach)."""
    x_val, y_val = dataset.split("val")
    acc, chance = accuracy(teacher, x_val, y_val), majority_share(y_val)
    if acc <= chance:
        raise ConfigError(
            f"recovery 'kd': the unpruned parent (the teacher) has validation accuracy {acc:.4f}, no better "
            f"than always answering the most frequent class ({chance:.4f}): it cannot teach. Use "
            "recovery=finetune, or auto (which keeps KD only where it wins on validation)"
        )
    return acc


def _recoverer(
    mode: str,
    teacher: nn.Module,
    dataset: Dataset,
    config: StructuredConfig,
    recovery: RecoveryConfig,
    progress: bool,
) -> Recover:
    """recover(model, step): the increment's epochs of `mode`, in place; returns the row's additions."""
    x_val, y_val = dataset.split("val")

    def recover(model: nn.Module, step: int) -> dict[str, Any]:
        train = config.finetune_after if step == config.steps else config.finetune_between
        if not train:
            return {"recovery": mode, "epochs": 0}
        train = dataclasses.replace(train, seed=train.seed + step)  # as fine-tuning between steps
        what = f"{mode} after prune step {step}/{config.steps}"
        row: dict[str, Any] = {"recovery": mode}
        if mode == "finetune":
            history = fit(model, dataset, train, description=what, progress=progress)
            row["val_accuracy_finetuned"] = history.final_val_accuracy  # as the classic schedule's rows
        else:
            student, history, _ = distill(
                teacher, model, dataset, recovery.distill_config(train), progress, description=what
            )
            model.load_state_dict(student.state_dict())  # the pruner holds this model's modules
        return {**row, "epochs": len(history.epochs), "val_accuracy_recovered": accuracy(model, x_val, y_val)}

    return recover


PruneFn = Callable[..., tuple[nn.Module, dict[str, Any]]]


def prune_and_recover(
    model: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    config: StructuredConfig,
    recovery: RecoveryConfig,
    dataset: Dataset,
    progress: bool = True,
    prune: PruneFn = prune_structured,
) -> tuple[nn.Module, dict[str, Any]]:
    """Structured pruning of (a copy of) `model` in `config.steps` increments, each followed by its
    recovery (see the module's docstring); `prune` is `prune_structured` or `prune_for_latency`.
    Returns the kept child and its pruning report, whose `recovery` records the decision."""
    recovery.validate()
    config.validate()
    budget = recovery_budget(config)
    total = sum(budget)
    x_val, y_val = dataset.split("val")
    record: dict[str, Any] = {
        "asked": recovery.recovery,
        "rule": RULE,
        "budget_epochs": total,
        "epochs_per_step": budget,
        "kd": {"temperature": recovery.kd.temperature, "alpha": recovery.kd.alpha},
    }
    if recovery.recovery == "kd":
        record["teacher_val_accuracy"] = check_teacher(model, dataset)
    if recovery.recovery == "finetune" or total == 0:
        child, report = prune(model, input_shape, num_classes, config, dataset, progress)
        record["chosen"] = "finetune" if total else "none (no recovery epochs)"
        report["recovery"] = record
        return child, report
    bare = dataclasses.replace(config, finetune_between=None, finetune_after=None)
    if config.latency_target:  # measure the allocation once: every branch prunes the same channels
        from edgecompress.prune.latency import latency_plan

        # NetAdapt's short fine-tune of each proposal trains as the user's fine-tuning would
        finetune = config.finetune_after or config.finetune_between
        plan = latency_plan(model, input_shape, num_classes, bare, dataset, finetune)
        prune = functools.partial(prune, plan=plan)
    branches = ("finetune", "kd") if recovery.recovery == "auto" else ("kd",)
    runs: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    for mode in branches:
        recover = _recoverer(mode, model, dataset, config, recovery, progress)
        runs[mode] = prune(model, input_shape, num_classes, bare, dataset, progress, recover=recover)
        ran = sum(row.get("epochs", 0) for row in runs[mode][1]["schedule"])
        if ran != total:  # equal budget is the point of the comparison: enforced, not assumed
            raise ModelError(f"recovery {mode!r} trained {ran} epochs, the budget is {total}")
    val = {mode: accuracy(child, x_val, y_val) for mode, (child, _) in runs.items()}
    chosen = "kd" if recovery.recovery == "kd" or val["kd"] > val["finetune"] else "finetune"
    record.update(
        chosen=chosen,
        val_accuracy=val,
        epochs_run={mode: total for mode in runs},
        schedules={mode: report["schedule"] for mode, (_, report) in runs.items()},
    )
    if "teacher_val_accuracy" not in record:
        record["teacher_val_accuracy"] = accuracy(model, x_val, y_val)
    child, report = runs[chosen]
    report["recovery"] = record
    return child, report
