"""Seeded, deterministic (on CPU) training and fine-tuning, shared by train, prune, distill and NAS.

Training may run on a GPU (`device`); the model comes back on the CPU either way, since everything
after training (export, parity, pruning, quantization) is CPU work for a CPU edge runtime.

`fit` takes an optional loss hook so that distillation and quantization-aware training reuse the
same loop (data order, schedule, progress bar, history) instead of each writing their own.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecompress import lineage
from edgecompress.data import Dataset, DatasetSource, write_dataset
from edgecompress.errors import ConfigError
from edgecompress.progress import progress_bar
from edgecompress.step import Child, Lineage, StepInputs, StepResult, run_step
from edgecompress.zoo import build_model, parse_spec

log = logging.getLogger(__name__)

# loss(model, inputs, targets) -> scalar tensor
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata={"help": "training epochs"})
    batch_size: int = field(default=64, metadata={"help": "batch size"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW, one-cycle)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seed of the initial weights and the batch order"})
    augment: bool = field(
        default=False,
        metadata={"help": "random flips and 2-pixel shifts (off for digits: flips change them)"},
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of the loss"})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "train on at most this many samples (0: all)"}
    )
    device: str = field(
        default="cpu",
        metadata={"help": "torch device to train on: cpu, cuda or cuda:N (bit-deterministic on cpu only)"},
    )

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        training_device(self.device)


def training_device(name: str) -> torch.device:
    """The torch device `name`, refused with a clear error where this torch cannot use it."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {name!r}") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; train with --device cpu"
            )
        if (device.index or 0) >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s)")
    return device


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@dataclass
class TrainHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_val_accuracy(self) -> float:
        return self.epochs[-1]["val_accuracy"] if self.epochs else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return lambda model, x, y: criterion(model(x), y)


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    model.eval()
    device, correct = model_device(model), 0
    for i in range(0, len(x), batch_size):
        logits = model(torch.from_numpy(x[i : i + batch_size]).to(device))
        correct += int((logits.argmax(1).cpu().numpy() == y[i : i + batch_size]).sum())
    return correct / max(1, len(x))


@torch.no_grad()
def split_accuracy(
    model: nn.Module, dataset: Dataset, split: str, limit: int | None = None, batch_size: int = 512
) -> float:
    """`accuracy` on a dataset split read batch by batch (the same batches as on an in-memory split)."""
    model.eval()
    device, correct, seen = model_device(model), 0, 0
    for xb, yb in dataset.batches(split, batch_size, limit):
        correct += int((model(torch.from_numpy(xb).to(device)).argmax(1).cpu().numpy() == yb).sum())
        seen += len(yb)
    return correct / max(1, seen)


def _train_batches(
    dataset: Dataset, config: TrainConfig, generator: torch.Generator
) -> tuple[int, Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]]:
    """(samples per epoch, epoch -> its shuffled batches). In memory: a permutation of the split per
    epoch from `generator`; streamed: shards in a seeded order, each permuted (`Dataset.batches`)."""
    if dataset.streamed:
        limit = config.max_train_samples or None
        n = min(dataset.size("train"), limit or dataset.size("train"))

        def streamed(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            seed = config.seed * 100_003 + epoch
            for xb, yb in dataset.batches("train", config.batch_size, limit, shuffle=True, seed=seed):
                yield torch.from_numpy(xb), torch.from_numpy(yb)

        return n, streamed
    x_train, y_train = dataset.split("train", config.max_train_samples)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)

    def in_memory(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(xt), config.batch_size):
            idx = order[i : i + config.batch_size]
            yield xt[idx], yt[idx]

    return len(xt), in_memory


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    description: str = "train",
    progress: bool = True,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> TrainHistory:
    """AdamW with a one-cycle schedule; validation accuracy after every epoch.

    `on_epoch_end(epoch, val_accuracy)` may raise to stop training early (NAS's successive halving).
    On `config.device` the model (and whatever `loss_fn` holds, e.g. a teacher: the caller moves it)
    trains there; it is back on the CPU when `fit` returns or raises."""
    config.validate()
    device = training_device(config.device)
    model.to(device)
    try:
        return _fit_on(model, dataset, config, device, loss_fn, description, progress, on_epoch_end)
    finally:
        model.to("cpu")


def _fit_on(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    device: torch.device,
    loss_fn: LossFn | None,
    description: str,
    progress: bool,
    on_epoch_end: Callable[[int, float], None] | None,
) -> TrainHistory:
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    n_train, epoch_batches = _train_batches(dataset, config, generator)
    loss_fn = loss_fn or cross_entropy_loss(config.label_smoothing)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (n_train + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    history = TrainHistory()
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(description, total=config.epochs * steps_per_epoch)
        for epoch in range(config.epochs):
            model.train()
            total_loss, seen = 0.0, 0
            for xb, yb in epoch_batches(epoch):
                if config.augment:
                    xb = _augment(xb, generator)
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, xb, yb)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += float(loss.detach()) * len(yb)
                seen += len(yb)
                bar.advance(task)
            val_acc = split_accuracy(model, dataset, "val")
            history.epochs.append(
                {"epoch": epoch + 1, "train_loss": total_loss / seen, "val_accuracy": val_acc}
            )
            bar.update(
                task, description=f"{description} epoch {epoch + 1}/{config.epochs} val_acc={val_acc:.4f}"
            )
            log.info(
                "%s epoch %d/%d: loss %.4f, val accuracy %.4f",
                description,
                epoch + 1,
                config.epochs,
                total_loss / seen,
                val_acc,
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, val_acc)
    model.eval()
    return history


# --- the dataset and train steps --------------------------------------------------------------


def load_dataset_step(
    source: DatasetSource, output_path: Path, lineage_ctx: Lineage | None = None, progress: bool = True
) -> dict[str, Any]:
    ctx = lineage_ctx or Lineage()
    source.validate()
    ctx.check()
    meta = write_dataset(source, Path(output_path), progress)
    with ctx.task(
        "load-dataset", {k: v for k, v in asdict(source).items() if v not in ("", 0) or k == "seed"}
    ):
        if ctx.enabled:
            lineage.log_dataset(meta, context="source")
    return meta


def train_step(
    dataset_path: Path,
    model_spec: str | dict[str, Any],
    output_dir: Path,
    config: TrainConfig,
    lineage_ctx: Lineage | None = None,
    progress: bool = True,
) -> StepResult:
    """Train a zoo or user model on the dataset (the chain's root: no parent model)."""
    spec = parse_spec(model_spec)
    built: dict[str, nn.Module] = {}

    def prepare(inputs: StepInputs) -> dict[str, Any]:  # a spec that cannot build fails before any run
        dataset = inputs.dataset
        built["model"] = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
        return {"model_spec": json.dumps(spec)}

    def make(inputs: StepInputs) -> Child:
        dataset, model = inputs.dataset, built["model"]
        history = fit(model, dataset, config, description="train", progress=progress)

        def finish(package, child: Child) -> None:
            child.metrics["export_max_abs_error"] = package.info["export_parity"]["max_abs_error"]
            if inputs.run_id:
                lineage.log_dataset(dataset.metadata(), context="training")
                stored = lineage.log_dataset_artifact(Path(dataset_path), dataset.metadata())
                child.dataset_info = {**dataset.metadata(), "uri": stored}

        info = {
            "spec": spec,
            "input_transform": dataset.transform,
            "train_config": asdict(config),
            "history": history.as_dict(),
        }
        metrics = {"val_accuracy": history.final_val_accuracy}
        name = f"{dataset.name}-{spec.get('family') or 'user'}"
        return Child(model, info, metrics, name=name, finish=finish)

    return run_step(
        "train",
        config,
        dataset_path,
        output_dir,
        make,
        lineage_ctx=lineage_ctx,
        prepare=prepare,
    )
