"""Knowledge distillation (Hinton et al. 2015), with an optional intermediate-feature loss.

The student learns from the teacher's softened outputs (temperature T) and the hard labels:

    loss = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)  [+ β · feature loss]

The optional feature term is one of
- `hint` (FitNets, Romero et al. 2015): MSE between a student activation, mapped by a learned 1×1
  convolution to the teacher's channels, and the teacher activation of the same spatial size;
- `attention` (attention transfer, Zagoruyko & Komodakis 2017): squared distance between the
  L2-normalised spatial attention maps (channel mean of squared activations) at matched stages,
  summed over positions (so β does not depend on the map size). It needs no
  adapter, so it serves any channel counts, e.g. prune → distill where the student is the pruned
  teacher.

A sparse student (unstructured pruning: zero weights) keeps its zeros by default: it is fine-tuned
under its zero mask (`torch.nn.utils.prune.custom_from_mask`, as the pruning step's own masked
fine-tune), so the weights that were zero stay zero; the sparsity before and after is in the result and
the report. With `keep_sparsity` off the zeros may fill in, and a warning gives the numbers.

The teacher is a frozen copy in eval mode (no dropout, BatchNorm running statistics, no gradients)
and sees exactly the (augmented) batch the student sees. Training reuses `train.fit` (its loss
hook), so data order, schedule and augmentation are identical to plain training: a distilled
student and a scratch student trained with the same config differ only in the loss.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgecompress.data import Dataset
from edgecompress.errors import ConfigError, ModelError
from edgecompress.params import Codec
from edgecompress.step import StepResult, write_report
from edgecompress.train import LossFn, TrainConfig, TrainHistory, fit, training_device

log = logging.getLogger(__name__)


def _feature_pairs_flat(pairs: Sequence[tuple[str, str]]) -> str:
    if list(pairs) == [("auto", "auto")]:
        return "auto"
    return ";".join(f"{a}={b}" for a, b in pairs)


FEATURE_PAIRS = Codec(
    str, lambda v: parse_feature_pairs(v) if isinstance(v, str) else list(v), _feature_pairs_flat
)
FEATURE_LOSSES = ("hint", "attention")
# The student when distillation starts a chain (no student artifact connected): a small CNN.
DEFAULT_STUDENT_SPEC = '{"family": "cnn", "kwargs": {"widths": [16, 32, 64], "depths": [1, 1, 1]}}'


@dataclass
class DistillStepOptions:
    """What the distill step does besides distilling."""

    student_spec: str = field(
        default=DEFAULT_STUDENT_SPEC,
        metadata={"help": "the student when no student model is given (zoo family, module:factory or JSON)"},
    )
    compare_scratch: bool = field(
        default=True, metadata={"help": "also train the student without the teacher, for the report"}
    )


@dataclass
class DistillConfig:
    # T and alpha: the compression benchmark's winner on validation (benchmarks/compression/results.json,
    # kd_selection; tests/compression/test_distill.py keeps the two equal)
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature T (> 0)"})
    alpha: float = field(
        default=0.5, metadata={"help": "weight of the soft-target term; 1 - alpha weighs the hard labels"}
    )
    feature_loss: str = field(
        default="hint",
        metadata={
            "help": "feature term: hint (1×1-adapted MSE, FitNets) or attention (attention transfer)",
            "choices": FEATURE_LOSSES,
        },
    )
    feature_weight: float = field(default=0.0, metadata={"help": "weight β of the feature loss (0: off)"})
    keep_sparsity: bool = field(
        default=True,
        metadata={
            "help": "fine-tune under the student's zero mask: weights that are zero (unstructured pruning) "
            "stay zero; off: they may fill in (a warning gives the sparsity before and after)"
        },
    )
    feature_pairs: Sequence[tuple[str, str]] = field(
        default_factory=lambda: [("auto", "auto")],
        metadata={
            "codec": FEATURE_PAIRS,
            "help": "auto (hint: last conv/BN each; attention: every stage end of equal size), "
            "or 'student.layer=teacher.layer;…'",
        },
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, batch_size=128, lr=1e-3), metadata={"flatten": True}
    )

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.feature_weight >= 0:
            raise ConfigError(f"feature_weight must be ≥ 0, got {self.feature_weight}")
        if self.feature_loss not in FEATURE_LOSSES:
            raise ConfigError(f"feature_loss must be one of {FEATURE_LOSSES}, got {self.feature_loss!r}")
        self.train.validate()

    def as_params(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "feature_loss": self.feature_loss if self.feature_weight > 0 else "none",
            "feature_weight": self.feature_weight,
            "keep_sparsity": self.keep_sparsity,
            "feature_pairs": ";".join(f"{a}={b}" for a, b in self.feature_pairs)
            if self.feature_weight > 0
            else "",
            **{f"train.{k}": v for k, v in asdict(self.train).items()},
        }


def parse_feature_pairs(text: str) -> list[tuple[str, str]]:
    """`"auto"`, `""`, or `"student.layer=teacher.layer;…"`."""
    text = text.strip()
    if not text:
        return []
    if text == "auto":
        return [("auto", "auto")]
    pairs = []
    for item in text.split(";"):
        s, sep, t = item.partition("=")
        if not sep or not s.strip() or not t.strip():
            raise ConfigError(f"feature pair {item!r} must look like 'student.module=teacher.module'")
        pairs.append((s.strip(), t.strip()))
    return pairs


def check_compatible(
    teacher: nn.Module, student: nn.Module, input_shape: Sequence[int], num_classes: int
) -> None:
    """Teacher and student must map the same inputs to the same classes."""
    outs = {}
    for role, model in (("teacher", teacher), ("student", student)):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                outs[role] = model(torch.zeros(2, *input_shape))
        except Exception as exc:
            raise ModelError(
                f"the {role} does not accept inputs of shape (N, {', '.join(map(str, input_shape))}): {exc}"
            ) from exc
        finally:
            model.train(was)
    t, s = outs["teacher"].shape[-1], outs["student"].shape[-1]
    if t != s or s != num_classes:
        raise ConfigError(
            f"the teacher outputs {t} classes and the student {s}, the dataset has {num_classes}: "
            "distillation needs all three to agree"
        )


def _last_feature_module(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    if not names:
        raise ConfigError(f"feature_pairs 'auto': {type(model).__name__} has no Conv2d/BatchNorm2d layer")
    return names[-1]


def _probe(model: nn.Module, input_shape: Sequence[int]) -> None:
    """One eval-mode forward pass of a zero input (for hooks), leaving the model's mode as it was."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was)


def _stage_ends(model: nn.Module, input_shape: Sequence[int]) -> dict[tuple[int, int], str]:
    """The last leaf module producing each spatial size (a stage's output), keyed by (H, W); 1×1
    outputs (global pooling) are not a stage."""
    order: list[tuple[str, tuple[int, int]]] = []
    handles = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):

            def hook(_m, _i, out, name=name):
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
                    order.append((name, (int(out.shape[2]), int(out.shape[3]))))

            handles.append(module.register_forward_hook(hook))
    try:
        _probe(model, input_shape)
    finally:
        for h in handles:
            h.remove()
    ends: dict[tuple[int, int], str] = {}
    for name, size in order:
        ends.pop(size, None)  # keep the last producer of each size, in execution order
        ends[size] = name
    return ends


def auto_feature_pairs(
    student: nn.Module, teacher: nn.Module, input_shape: Sequence[int], feature_loss: str
) -> list[tuple[str, str]]:
    """`hint`: the last conv/BN of each (one hint layer, as FitNets); `attention`: every stage end
    whose spatial size both networks have."""
    if feature_loss == "hint":
        return [(_last_feature_module(student), _last_feature_module(teacher))]
    s_ends, t_ends = _stage_ends(student, input_shape), _stage_ends(teacher, input_shape)
    pairs = [(s_ends[size], t_ends[size]) for size in s_ends if size in t_ends]
    if not pairs:
        raise ConfigError(
            f"feature_pairs 'auto': the student's stage sizes {sorted(s_ends)} and the teacher's "
            f"{sorted(t_ends)} have none in common; name the pairs"
        )
    return pairs


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention of a (N, C, H, W) activation: channel mean of squares, L2-normalised per sample."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


class _Capture:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, names: Sequence[str], role: str) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"feature_pairs: the {role} has no module named {missing[0]!r}")
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _StudentWithProjections(nn.Module):
    """Holds the student and its 1×1 projections so that `fit` optimises both; forward = the student."""

    def __init__(self, student: nn.Module, projections: nn.ModuleList) -> None:
        super().__init__()
        self.student = student
        self.projections = projections

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def _feature_shapes(
    model: nn.Module, names: Sequence[str], input_shape: Sequence[int]
) -> dict[str, torch.Size]:
    cap = _Capture(model, names, "model")
    try:
        _probe(model, input_shape)
    finally:
        cap.remove()
    return {n: cap.outputs[n].shape for n in names}


_MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layers unstructured pruning zeroes


def weight_sparsity(model: nn.Module) -> dict[str, Any]:
    """Zero weights of the Conv/Linear layers (what unstructured pruning zeroes): count, total, fraction."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, _MASKABLE)]
    total = sum(int(w.numel()) for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return {"weights": total, "zeros": zeros, "sparsity": zeros / max(1, total)}


@contextlib.contextmanager
def keeping_zeros(model: nn.Module, keep: bool = True) -> Iterator[nn.Module]:
    """While the block runs (training), every zero weight of a Conv/Linear layer stays zero: the
    layer's weight is `weight_orig * mask` (torch's pruning re-parametrisation); afterwards the product
    is made permanent and the layer is plain again."""
    from torch.nn.utils import prune as torch_prune

    masked = []
    if keep:
        for module in model.modules():
            if isinstance(module, _MASKABLE) and bool((module.weight == 0).any()):
                torch_prune.custom_from_mask(module, "weight", module.weight.detach() != 0)
                masked.append(module)
    try:
        yield model
    finally:
        for module in masked:
            torch_prune.remove(module, "weight")


def _sparsity_details(before: dict[str, Any], after: dict[str, Any], keep: bool) -> dict[str, Any]:
    """The sparsity record of a run, warning where a sparse student lost zeros because it was asked to."""
    if not keep and before["zeros"] and after["zeros"] < before["zeros"]:
        log.warning(
            "keep_sparsity is off: the student had %.1f %% zero weights (%d of %d) and has %.1f %% (%d) "
            "after distillation; its unstructured sparsity (and the smaller gzip artifact) is gone",
            100 * before["sparsity"],
            before["zeros"],
            before["weights"],
            100 * after["sparsity"],
            after["zeros"],
        )
    return {"kept": keep, "before": before, "after": after}


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def distill(
    teacher: nn.Module,
    student: nn.Module,
    dataset: Dataset,
    config: DistillConfig,
    progress: bool = True,
    description: str = "distill",
) -> tuple[nn.Module, TrainHistory, dict[str, Any]]:
    """Train (a copy of) `student` from `teacher`; the teacher is frozen. Returns the student, its
    history and details of the loss (feature pairs and their shapes). `description` names the
    progress bar (a recovery says which pruning step it follows)."""
    config.validate()
    input_shape, num_classes = dataset.input_shape, dataset.num_classes
    student = copy.deepcopy(student)
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_compatible(teacher, student, input_shape, num_classes)
    pairs = list(config.feature_pairs) if config.feature_weight > 0 else []
    skipped = "no feature pairs given"
    if pairs == [("auto", "auto")]:
        try:
            pairs = auto_feature_pairs(student, teacher, input_shape, config.feature_loss)
        except ConfigError as exc:  # e.g. an MLP: 'auto' then means logit KD alone, said in the details
            log.warning("no feature term: %s", exc)
            pairs, skipped = [], str(exc)
    hint = config.feature_loss == "hint"
    s_shapes = _feature_shapes(student, [s for s, _ in pairs], input_shape)
    t_shapes = _feature_shapes(teacher, [t for _, t in pairs], input_shape)
    torch.manual_seed(config.train.seed)  # the projections' initialisation is part of the seeded run
    projections = nn.ModuleList()
    details: dict[str, Any] = {"feature_loss": config.feature_loss if pairs else "none", "feature_pairs": []}
    if config.feature_weight > 0 and not pairs:
        details["feature_loss_skipped"] = skipped
    for s_name, t_name in pairs:
        ss, ts = s_shapes[s_name], t_shapes[t_name]
        if len(ss) != 4 or len(ts) != 4 or ss[2:] != ts[2:]:
            how = "a 1×1 projection" if hint else "attention maps"
            raise ConfigError(
                f"feature pair {s_name}={t_name}: shapes {tuple(ss)} and {tuple(ts)} cannot be matched "
                f"by {how} (need 4-D activations with equal height and width)"
            )
        if hint:
            projections.append(nn.Conv2d(ss[1], ts[1], 1, bias=False))
        details["feature_pairs"].append(
            {"student": s_name, "teacher": t_name, "student_shape": list(ss), "teacher_shape": list(ts)}
        )
    s_cap = _Capture(student, [s for s, _ in pairs], "student") if pairs else None
    t_cap = _Capture(teacher, [t for _, t in pairs], "teacher") if pairs else None
    wrapper = _StudentWithProjections(student, projections)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = model(x)
        loss = kd_loss(s_logits, t_logits, y, config.temperature, config.alpha)
        for i, (s_name, t_name) in enumerate(pairs):
            fs, ft = s_cap.outputs[s_name], t_cap.outputs[t_name]
            if hint:
                term = F.mse_loss(projections[i](fs), ft)
            else:
                # squared L2 distance of the normalised maps per sample (in [0, 2]): independent of map size
                term = (attention_map(fs) - attention_map(ft)).pow(2).sum(1).mean()
            loss = loss + config.feature_weight * term
        return loss

    before = weight_sparsity(student)
    teacher.to(training_device(config.train.device))
    try:
        with keeping_zeros(student, config.keep_sparsity):
            history = fit(
                wrapper, dataset, config.train, loss_fn=loss_fn, description=description, progress=progress
            )
    finally:
        teacher.to("cpu")
        for cap in (s_cap, t_cap):
            if cap:
                cap.remove()
    details["sparsity"] = _sparsity_details(before, weight_sparsity(student), config.keep_sparsity)
    return student.eval(), history, details


def train_scratch(
    student: nn.Module,
    dataset: Dataset,
    train: TrainConfig,
    progress: bool = True,
    keep_sparsity: bool = True,
) -> tuple[nn.Module, TrainHistory]:
    """The control: the same student, same data order and schedule (and zero mask), hard labels only."""
    student = copy.deepcopy(student)
    ce: LossFn = lambda model, x, y: F.cross_entropy(model(x), y)  # noqa: E731
    with keeping_zeros(student, keep_sparsity):
        history = fit(
            student, dataset, train, loss_fn=ce, description="student (no teacher)", progress=progress
        )
    return student.eval(), history


# --- pipeline step ------------------------------------------------------------------------------


def load_student(student: str, dataset: Dataset, seed: int = 0):
    """A Model artifact directory (e.g. a pruned model: its weights are the starting point) or a
    zoo/user spec (a fresh model, initialised from `seed`). Returns (module, parent package or None, spec)."""
    from pathlib import Path

    from edgecompress.step import load_parent
    from edgecompress.zoo import build_model, parse_spec

    path = Path(student)
    if path.is_dir():
        package, module = load_parent(path, dataset, "student")
        return module, package, package.info.get("spec")
    spec = parse_spec(student)
    return build_model(spec, dataset.input_shape, dataset.num_classes, seed=seed), None, spec


def distill_step(
    teacher_dir,
    dataset_path,
    student: str,
    output_dir,
    config: DistillConfig,
    compare_scratch: bool = True,
    report_path=None,
    lineage_ctx=None,
    progress: bool = True,
) -> StepResult:
    """Distil `teacher_dir` into `student` (through `edgecompress.step.run_step`, parents `student`
    and `teacher`). The child's parent (lineage) is the student artifact when one is given (prune →
    distill), else the teacher. With `compare_scratch`, the same student is also trained on hard
    labels only, same config, and the report shows teacher, scratch and distilled."""
    from pathlib import Path

    from edgecompress.evaluate import model_stats, module_params
    from edgecompress.step import Child, Parent, StepInputs, inherited_info, run_step
    from edgecompress.train import accuracy

    student_dir = Path(student) if Path(student).is_dir() else None
    built: dict[str, Any] = {}

    def prepare(inputs: StepInputs) -> dict[str, Any]:
        dataset, teacher_pkg = inputs.dataset, inputs.packages["teacher"]
        if student_dir is not None:
            built["module"] = inputs.modules["student"]
            built["spec"] = inputs.packages["student"].info.get("spec")
        else:  # a zoo/user spec: a fresh model, initialised from the training seed
            built["module"], _, built["spec"] = load_student(student, dataset, config.train.seed)
        check_compatible(inputs.modules["teacher"], built["module"], dataset.input_shape, dataset.num_classes)
        return {"student": str(student), "teacher_model_id": teacher_pkg.info.get("mlflow_model_id") or ""}

    def make(inputs: StepInputs) -> Child:
        dataset, teacher, teacher_pkg = inputs.dataset, inputs.modules["teacher"], inputs.packages["teacher"]
        student_module = built["module"]
        child, history, details = distill(teacher, student_module, dataset, config, progress)
        x_test, y_test = dataset.split("test")
        x_val, y_val = dataset.split("val")
        rows = {"teacher": teacher, "student (start)": student_module}
        if compare_scratch:
            rows["student, hard labels only"], _ = train_scratch(
                student_module, dataset, config.train, progress, config.keep_sparsity
            )
        rows["student, distilled"] = child
        comparison = {
            name: {
                "val_accuracy": accuracy(m, x_val, y_val),
                "test_accuracy": accuracy(m, x_test, y_test),
                "params": module_params(m, dataset.input_shape),  # the deployed count, as evaluate's
            }
            for name, m in rows.items()
        }
        summary = {
            "config": config.as_params(),
            "history": history.as_dict(),
            "loss": {k: v for k, v in details.items() if k != "sparsity"},
            "sparsity": details["sparsity"],
            "comparison": comparison,
            "student_source": str(student),
        }
        info = {
            **inherited_info(teacher_pkg.info),
            "spec": built["spec"],
            "teacher_model_id": teacher_pkg.info.get("mlflow_model_id"),
            "distill": summary,
        }
        metrics = {
            "weight_sparsity": details["sparsity"]["after"]["sparsity"],
            "val_accuracy": comparison["student, distilled"]["val_accuracy"],
            "teacher_val_accuracy": comparison["teacher"]["val_accuracy"],
        }
        if compare_scratch:
            metrics["scratch_val_accuracy"] = comparison["student, hard labels only"]["val_accuracy"]

        def finish(package, made: Child) -> None:
            if report_path is not None:
                stats = {
                    "teacher": model_stats(teacher_pkg.onnx_path).as_dict(),
                    "student": model_stats(package.onnx_path).as_dict(),
                }
                write_report(report_path, distill_report(summary, stats))

        return Child(child, info, metrics, name=f"{dataset.name}-distilled", finish=finish)

    return run_step(
        "distill",
        config,
        dataset_path,
        output_dir,
        make,
        parents={
            "student": Parent(student_dir, role="student"),
            "teacher": Parent(teacher_dir, role="teacher"),
        },
        lineage_ctx=lineage_ctx,
        prepare=prepare,
    )


def distill_report(d: dict[str, Any], stats: dict[str, dict[str, Any]]) -> str:
    from edgecompress.reports import html_page, html_table

    rows = [[name, v["val_accuracy"], v["test_accuracy"], v["params"]] for name, v in d["comparison"].items()]
    note = (
        "<p>'hard labels only' is the same student, same data order, schedule and epochs, trained without the "
        "teacher: the difference to 'distilled' is the teacher's contribution.</p>"
        if "student, hard labels only" in d["comparison"]
        else "<p>No scratch comparison was requested (compare_scratch off).</p>"
    )
    cfg = d["config"]
    settings = html_table(
        ["temperature", "alpha", "feature loss", "feature weight", "feature pairs", "epochs", "lr"],
        [
            [
                cfg["temperature"],
                cfg["alpha"],
                cfg.get("feature_loss", "none"),
                cfg["feature_weight"],
                cfg["feature_pairs"] or "none",
                cfg["train.epochs"],
                cfg["train.lr"],
            ]
        ],
    )
    size = html_table(
        ["", "params", "MACs", "ONNX bytes", "gzip bytes"],
        [[k, v["params"], v["macs"], v["onnx_bytes"], v["gzip_bytes"]] for k, v in stats.items()],
    )
    sp = d.get("sparsity")
    sparsity = ""
    if sp:
        sparsity = html_table(
            ["", "zero weights", "Conv/Linear weights", "sparsity"],
            [[k, sp[k]["zeros"], sp[k]["weights"], sp[k]["sparsity"]] for k in ("before", "after")],
        ) + (
            "<p>Fine-tuned under the student's zero mask: its zero weights stayed zero.</p>"
            if sp["kept"]
            else "<p><b>keep_sparsity was off:</b> the student's zero weights were free to change.</p>"
        )
    hist = html_table(
        ["epoch", "train loss", "val accuracy"],
        [[e["epoch"], e["train_loss"], e["val_accuracy"]] for e in d["history"]["epochs"]],
    )
    return html_page(
        "Knowledge distillation",
        [
            (
                "Teacher vs student",
                html_table(["model", "val accuracy", "test accuracy", "params"], rows) + note,
            ),
            ("Settings", settings),
            ("Size (ONNX)", size),
            *([("Student sparsity (Conv/Linear weights)", sparsity)] if sparsity else []),
            ("Distillation history", hist),
        ],
    )
