"""Hardware-aware neural architecture search: the most accurate model that meets a latency budget on
a device class, with latency *measured* by the benchmark runner (local emulation or the farm).

- The search space is data (YAML/JSON, `search_spaces/default.yaml`), validated up front.
- A candidate is checked against the constraints (parameters, MACs, measured p50 latency) before
  any training: latency does not depend on the weights of a float ONNX model, so the untrained
  export is measured, and an infeasible candidate costs seconds, not epochs.
- Feasible candidates train at low fidelity (a subset, few epochs) and are scored on a hold-out
  carved from the training split, so the validation split stays unseen until the final report.
- Successive halving stops weak trials at rungs (epochs 1, eta, eta², …): a trial goes on only if it
  is in the best 1/eta of the trials seen at that rung, ranked by Pareto rank on (accuracy, latency).
- optuna drives the search (TPE or NSGA-II, multi-objective; random search as the baseline); the
  study lives in an optuna storage (SQLite by default), so an interrupted search resumes.
- The Pareto front is re-measured with full benchmark settings; the pick is retrained at full
  fidelity and measured again. Reported latencies are always measurements.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgecompress.data import Dataset
from edgecompress.errors import BenchmarkError, ConfigError, ModelError
from edgecompress.train import TrainConfig, fit
from edgecompress.zoo import ACTIVATIONS, build_model, count_parameters

log = logging.getLogger(__name__)

STRATEGIES = ("tpe", "nsga2", "random")
DEFAULT_SPACE = "default"

# key -> (kind, per-stage?) for each family; kind validates one choice
_KINDS: dict[str, Callable[[Any], bool]] = {
    "pos_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "pos_float": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
    "odd_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1,
    "activation": lambda v: v in ACTIVATIONS,
    "downsample": lambda v: v in ("maxpool", "stride"),
    "stride": lambda v: v in (1, 2),
}
FAMILY_KEYS: dict[str, dict[str, tuple[str, bool]]] = {
    "cnn": {
        "stages": ("pos_int", False), "depth": ("pos_int", True), "width_mult": ("pos_float", True),
        "kernel_size": ("odd_int", True), "activation": ("activation", False),
        "downsample": ("downsample", False),
    },
    "mobilenet": {
        "stages": ("pos_int", False), "depth": ("pos_int", True), "width_mult": ("pos_float", True),
        "kernel_size": ("odd_int", True), "expansion": ("pos_int", True), "stride": ("stride", True),
        "activation": ("activation", False),
    },
}  # fmt: skip
DEFAULTS: dict[str, dict[str, list[Any]]] = {
    "cnn": {"kernel_size": [3], "activation": ["relu"], "downsample": ["maxpool"], "width_mult": [1.0]},
    "mobilenet": {
        "kernel_size": [3], "activation": ["relu6"], "expansion": [4], "stride": [2], "width_mult": [1.0],
    },
}  # fmt: skip


class Infeasible(Exception):
    """A candidate that breaks a constraint (or cannot be built for the data); never trained."""


# --- search space ---------------------------------------------------------------------------------


@dataclass
class SearchSpace:
    """Per family: a list of choices per key, and `channels`, the base width of each stage."""

    families: dict[str, dict[str, list[Any]]]

    @classmethod
    def load(cls, source: str | Path | dict[str, Any] | None = None) -> SearchSpace:
        """A preset name (`default`), a .yaml/.json file, YAML/JSON text, or an already-parsed dict."""
        if isinstance(source, dict):
            data: Any = source
        else:
            text = str(source or DEFAULT_SPACE).strip()
            if "\n" not in text and len(text) < 4096 and Path(text).is_file():
                text = Path(text).read_text()
            elif re.fullmatch(r"[\w-]+", text):
                preset = resources.files("edgecompress") / "search_spaces" / f"{text}.yaml"
                if not preset.is_file():
                    names = sorted(p.name[:-5] for p in preset.parent.iterdir() if p.name.endswith(".yaml"))
                    raise ConfigError(
                        f"search space {text!r}: not a file, not YAML/JSON text, and not a preset (presets: {names})"
                    )
                text = preset.read_text()
            data = _parse_yaml(text)
        space = cls(families=_validate(data))
        return space

    def max_stages(self, family: str) -> int:
        return max(self.families[family]["stages"])

    def as_dict(self) -> dict[str, Any]:
        return {"families": copy.deepcopy(self.families)}

    def size(self) -> int:
        """Number of distinct architectures (per-stage choices multiply once per stage)."""
        total = 0
        for fam, keys in self.families.items():
            per_stage = math.prod(
                len(v) for k, v in keys.items() if k != "channels" and FAMILY_KEYS[fam][k][1]
            )
            shared = math.prod(
                len(v)
                for k, v in keys.items()
                if k not in ("channels", "stages") and not FAMILY_KEYS[fam][k][1]
            )
            total += sum(per_stage**s * shared for s in keys["stages"])
        return total

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask optuna for one candidate. Every per-stage parameter is asked for all stages up to the
        family's maximum, used or not, so that the space is fixed (what NSGA-II's crossover needs)."""
        names = sorted(self.families)
        family = names[0] if len(names) == 1 else trial.suggest_categorical("family", names)
        params: dict[str, Any] = {"family": family}
        keys = self.families[family]
        for key, choices in keys.items():
            if key == "channels":
                continue
            if FAMILY_KEYS[family][key][1]:
                for i in range(self.max_stages(family)):
                    params[f"{family}.s{i}.{key}"] = trial.suggest_categorical(
                        f"{family}.s{i}.{key}", choices
                    )
            else:
                params[f"{family}.{key}"] = trial.suggest_categorical(f"{family}.{key}", choices)
        return self.decode(params)

    def smallest(self, family: str) -> dict[str, Any]:
        """The cheapest candidate of a family (fewest stages, shallowest, narrowest, most downsampling):
        if it breaks a parameter or MAC limit, no candidate of the family can meet it."""
        keys = self.families[family]
        params: dict[str, Any] = {"family": family, f"{family}.stages": min(keys["stages"])}
        for key, choices in keys.items():
            if key in ("channels", "stages"):
                continue
            if key in ("activation",):
                value = choices[0]
            elif key == "downsample":
                value = "stride" if "stride" in choices else choices[0]
            else:
                value = max(choices) if key == "stride" else min(choices)
            if FAMILY_KEYS[family][key][1]:
                params.update({f"{family}.s{i}.{key}": value for i in range(self.max_stages(family))})
            else:
                params[f"{family}.{key}"] = value
        return self.decode(params)

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """optuna parameters -> a zoo model spec."""
        family = params.get("family") or sorted(self.families)[0]
        keys = self.families[family]
        n = params[f"{family}.stages"]

        def stage(key: str, i: int) -> Any:
            return params.get(f"{family}.s{i}.{key}", keys[key][0])

        widths = [_round_channels(keys["channels"][i] * stage("width_mult", i)) for i in range(n)]
        depths = [stage("depth", i) for i in range(n)]
        kernels = [stage("kernel_size", i) for i in range(n)]
        activation = params.get(f"{family}.activation", keys["activation"][0])
        if family == "cnn":
            kwargs = {
                "widths": widths, "depths": depths, "kernel_size": kernels, "activation": activation,
                "downsample": params.get(f"{family}.downsample", keys["downsample"][0]),
            }  # fmt: skip
        else:
            stages = [
                [stage("expansion", i), widths[i], depths[i], stage("stride", i), kernels[i]]
                for i in range(n)
            ]
            kwargs = {"stages": stages, "stem_channels": widths[0], "activation": activation}
        return {"family": family, "kwargs": kwargs}


def _round_channels(c: float) -> int:
    return max(8, int(round(c / 8)) * 8)


def _parse_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space is not valid YAML/JSON: {exc}") from exc


def _validate(data: Any) -> dict[str, dict[str, list[Any]]]:
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict) or not data["families"]:
        raise ConfigError("search space: needs a non-empty `families` mapping (e.g. families: {cnn: {...}})")
    extra = set(data) - {"families"}
    if extra:
        raise ConfigError(f"search space: unknown top-level keys {sorted(extra)}; only `families` is allowed")
    families: dict[str, dict[str, list[Any]]] = {}
    for fam, keys in data["families"].items():
        where = f"search space family {fam!r}"
        if fam not in FAMILY_KEYS:
            raise ConfigError(f"{where}: unknown family; searchable families are {sorted(FAMILY_KEYS)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{where}: must be a mapping of key -> list of choices")
        allowed = set(FAMILY_KEYS[fam]) | {"channels"}
        unknown = set(keys) - allowed
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        for required in ("stages", "depth", "channels"):
            if required not in keys:
                raise ConfigError(f"{where}: `{required}` is required")
        merged = {**copy.deepcopy(DEFAULTS[fam]), **keys}
        for key, choices in merged.items():
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: `{key}` must be a non-empty list, got {choices!r}")
            check = _KINDS["pos_int"] if key == "channels" else _KINDS[FAMILY_KEYS[fam][key][0]]
            bad = [c for c in choices if not check(c)]
            if bad:
                raise ConfigError(f"{where}: invalid `{key}` values {bad}")
            if key != "channels" and len(set(map(json.dumps, choices))) != len(choices):
                raise ConfigError(f"{where}: `{key}` lists a choice twice: {choices}")
        if max(merged["stages"]) > len(merged["channels"]):
            raise ConfigError(
                f"{where}: `stages` goes up to {max(merged['stages'])} but `channels` names only "
                f"{len(merged['channels'])} stage widths"
            )
        families[fam] = merged
    return families


# --- configuration --------------------------------------------------------------------------------


@dataclass
class Constraints:
    """Hard limits; 0 means no limit. Latency is p50, batch 1, on `device_class`."""

    device_class: str = "rpi4-emulated"
    max_params: int = 0
    max_macs: int = 0
    max_latency_ms: float = 0.0

    def validate(self) -> None:
        if self.max_params < 0 or self.max_macs < 0 or self.max_latency_ms < 0:
            raise ConfigError(f"constraints must be ≥ 0 (0 = no limit): {asdict(self)}")
        if not self.device_class:
            raise ConfigError("constraints: a device class is needed to measure latency")


@dataclass
class NasConfig:
    strategy: str = "tpe"
    n_trials: int = 24
    timeout_s: float = 0.0  # wall-clock budget for the search; 0 = trials only
    search_epochs: int = 3
    train_samples: int = 10_000  # low fidelity: this many training images per trial
    holdout_samples: int = 5_000  # scored on this many images held out from the training split
    eta: int = 3  # successive halving factor; 1 = off
    final_epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    augment: bool = False
    seed: int = 0
    accuracy_tolerance: float = 0.0  # pick the fastest front member within this of the best accuracy
    startup_trials: int = 0  # random trials before the model-based sampler starts; 0 = max(4, n_trials // 4)
    search_bench: dict[str, Any] = field(
        default_factory=lambda: {"warmup_runs": 10, "min_runs": 50, "min_duration_s": 0.25}
    )
    final_bench: dict[str, Any] = field(default_factory=lambda: {"min_runs": 200, "min_duration_s": 1.0})

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown NAS strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.n_trials < 1:
            raise ConfigError(f"NAS budget: n_trials must be ≥ 1, got {self.n_trials}")
        if self.timeout_s < 0:
            raise ConfigError(f"NAS budget: timeout_s must be ≥ 0, got {self.timeout_s}")
        if self.search_epochs < 1 or self.final_epochs < 0:
            raise ConfigError("NAS: search_epochs must be ≥ 1 and final_epochs ≥ 0")
        if self.train_samples < 1 or self.holdout_samples < 1:
            raise ConfigError("NAS: train_samples and holdout_samples must be ≥ 1")
        if self.eta < 1:
            raise ConfigError(f"NAS: eta must be ≥ 1 (1 = no successive halving), got {self.eta}")
        if not 0 <= self.accuracy_tolerance < 1:
            raise ConfigError(
                f"NAS: accuracy_tolerance is a fraction in [0, 1), got {self.accuracy_tolerance}"
            )

    def rungs(self) -> list[int]:
        """Epochs after which successive halving decides (never the last one)."""
        if self.eta <= 1:
            return []
        out, e = [], 1
        while e < self.search_epochs:
            out.append(e)
            e *= self.eta
        return out


# --- objectives -----------------------------------------------------------------------------------


def search_split(dataset: Dataset, train_samples: int, holdout_samples: int) -> Dataset:
    """A dataset whose train split is a subset of the training data and whose val split is a
    hold-out from the *end* of the training data: search never sees the real validation split."""
    n = len(dataset.arrays["y_train"])
    if n < 2:
        raise ConfigError(f"NAS: the training split has {n} samples; at least 2 are needed")
    holdout = min(holdout_samples, n // 2)
    train = min(train_samples, n - holdout)
    arrays = {
        "x_train": dataset.arrays["x_train"][:train], "y_train": dataset.arrays["y_train"][:train],
        "x_val": dataset.arrays["x_train"][n - holdout :], "y_val": dataset.arrays["y_train"][n - holdout :],
    }  # fmt: skip
    for split in ("test",):
        if f"x_{split}" in dataset.arrays:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = (
                dataset.arrays[f"x_{split}"],
                dataset.arrays[f"y_{split}"],
            )
    return Dataset(dataset.name, dataset.source, arrays, dataset.class_names, {"nas_search_split": True})


def search_identity(space: SearchSpace, constraints: Constraints, config: NasConfig) -> str:
    """What must not change when a study is resumed: its results would not be comparable."""
    fidelity = {k: getattr(config, k) for k in ("search_epochs", "train_samples", "holdout_samples", "batch_size",
                                                "lr", "augment", "seed", "strategy", "search_bench")}  # fmt: skip
    blob = json.dumps([space.as_dict(), asdict(constraints), fidelity], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class LatencyMeter:
    """p50 latency of a spec's (untrained) ONNX export on one device class, through the benchmark
    runner: on the farm when `farm_url` is set, else in a pinned child process (local emulation)."""

    def __init__(
        self, device_class: str, farm_url: str | None, input_shape: tuple[int, ...], num_classes: int
    ):
        from edgecompress.farm.devices import emulated_device_class

        self.device_class, self.farm_url = device_class, farm_url or None
        self.input_shape, self.num_classes = input_shape, num_classes
        self.emulated: bool | None = None
        if not self.farm_url:
            emulated_device_class(device_class)  # unknown class -> ConfigError now, not mid-search

    def measure_onnx(self, onnx_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
        from edgecompress.edge import benchmark_locally, edge_benchmark

        if self.farm_url:
            r = edge_benchmark(onnx_path, [self.device_class], settings, self.farm_url)[self.device_class]
        else:
            r = benchmark_locally(onnx_path, self.device_class, settings, start_method="forkserver")
        self.emulated = bool(r.get("emulated"))
        return {"p50_ms": r["latency_ms"]["p50"], "p90_ms": r["latency_ms"]["p90"], "emulated": self.emulated}

    def measure_spec(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        from edgecompress.export import export_onnx

        model = build_model(spec, self.input_shape, self.num_classes)
        with tempfile.TemporaryDirectory(prefix="edgecompress-nas-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            export_onnx(model, self.input_shape, path)
            return self.measure_onnx(path, settings)


def candidate_cost(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """Parameters and MACs of a spec (its ONNX export), or Infeasible when it does not fit the data."""
    import onnx

    from edgecompress.evaluate import count_macs
    from edgecompress.export import export_onnx

    try:
        model = build_model(spec, input_shape, num_classes)
    except (ModelError, ConfigError, RuntimeError) as exc:
        raise Infeasible(f"cannot be built for inputs {tuple(input_shape)}: {str(exc)[:200]}") from exc
    with tempfile.TemporaryDirectory(prefix="edgecompress-nas-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        export_onnx(model, tuple(input_shape), path)
        macs = count_macs(onnx.load(str(path)))
    return {"params": count_parameters(model), "macs": int(macs)}


def check_satisfiable(
    space: SearchSpace, constraints: Constraints, meter: LatencyMeter, bench: dict[str, Any]
) -> None:
    """Fail before searching when even the cheapest candidate of every family breaks a limit."""
    problems = []
    for family in sorted(space.families):
        spec = space.smallest(family)
        try:
            cost = candidate_cost(spec, meter.input_shape, meter.num_classes)
        except Infeasible as exc:
            problems.append(f"{family}: the smallest candidate {exc}")
            continue
        if constraints.max_params and cost["params"] > constraints.max_params:
            problems.append(
                f"{family}: the smallest candidate has {cost['params']} parameters > max_params {constraints.max_params}"
            )
        elif constraints.max_macs and cost["macs"] > constraints.max_macs:
            problems.append(
                f"{family}: the smallest candidate has {cost['macs']} MACs > max_macs {constraints.max_macs}"
            )
        elif (
            constraints.max_latency_ms
            and (p50 := meter.measure_spec(spec, bench)["p50_ms"]) > constraints.max_latency_ms
        ):
            problems.append(
                f"{family}: the smallest candidate measures {p50:.3f} ms on {constraints.device_class} > "
                f"max_latency_ms {constraints.max_latency_ms}"
            )
        else:
            return
    raise ConfigError(
        "NAS: no candidate in the search space can meet the constraints: " + "; ".join(problems)
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, maximizing the first value and minimizing the second."""
    front = []
    for i, (a, lat) in enumerate(points):
        dominated = any(
            (b >= a and m <= lat) and (b > a or m < lat) for j, (b, m) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_ranks(points: list[tuple[float, float]]) -> list[int]:
    remaining, ranks, rank = list(range(len(points))), [0] * len(points), 0
    while remaining:
        sub = [points[i] for i in remaining]
        layer = {remaining[i] for i in pareto_front(sub)}
        for i in layer:
            ranks[i] = rank
        remaining = [i for i in remaining if i not in layer]
        rank += 1
    return ranks


def hypervolume(points: list[tuple[float, float]], ref_accuracy: float, ref_latency_ms: float) -> float:
    """Area dominated by (accuracy ↑, latency ↓) points and bounded by the reference point, in
    accuracy × milliseconds; points worse than the reference in either objective add nothing."""
    pts = sorted({(a, m) for a, m in points if a > ref_accuracy and m < ref_latency_ms}, key=lambda p: p[1])
    area, best_acc = 0.0, ref_accuracy
    for i, (acc, lat) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][1] if i + 1 < len(pts) else ref_latency_ms
        area += (best_acc - ref_accuracy) * (next_lat - lat)
    return area


# --- the search -----------------------------------------------------------------------------------


@dataclass
class SearchResult:
    study_name: str
    storage: str
    trials: list[dict[str, Any]]
    front: list[dict[str, Any]]
    pick: dict[str, Any]
    reference: dict[str, Any] | None
    device_class: str
    emulated: bool | None
    seconds: float
    budget: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Halving:
    """Multi-objective successive halving: at a rung a trial continues only if it is among the best
    ceil(n/eta) of the n trials recorded at that rung, ranked by (Pareto rank, -accuracy)."""

    def __init__(self, study: Any, eta: int, rungs: list[int], min_trials: int) -> None:
        self.study, self.eta, self.rungs, self.min_trials = study, eta, set(rungs), min_trials

    def keep(self, trial: Any, epoch: int, accuracy: float, latency_ms: float) -> bool:
        if epoch not in self.rungs:
            return True
        trial.set_user_attr(f"rung_{epoch}", accuracy)
        records = [(accuracy, latency_ms, trial.number)]
        for t in self.study.get_trials(deepcopy=False):
            if t.number != trial.number and f"rung_{epoch}" in t.user_attrs and "p50_ms" in t.user_attrs:
                records.append((t.user_attrs[f"rung_{epoch}"], t.user_attrs["p50_ms"], t.number))
        if len(records) < self.min_trials:
            return True
        ranks = pareto_ranks([(a, m) for a, m, _ in records])
        order = sorted(range(len(records)), key=lambda i: (ranks[i], -records[i][0]))
        keep = {records[i][2] for i in order[: math.ceil(len(records) / self.eta)]}
        return trial.number in keep


def _sampler(strategy: str, seed: int, n_trials: int, startup: int) -> Any:
    import optuna

    startup = startup or max(4, n_trials // 4)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, startup))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


def _trial_record(t: Any) -> dict[str, Any]:
    import optuna

    attrs = t.user_attrs
    if t.state == optuna.trial.TrialState.COMPLETE:
        state = "complete"
    elif "infeasible" in attrs:
        state = "infeasible"
    elif t.state == optuna.trial.TrialState.PRUNED:
        state = "pruned"
    else:
        state = t.state.name.lower()
    return {
        "number": t.number, "state": state, "spec": attrs.get("spec"),
        "accuracy": t.values[0] if t.values else attrs.get("last_accuracy"),
        "p50_ms": attrs.get("p50_ms"), "params": attrs.get("params"), "macs": attrs.get("macs"),
        "epochs": attrs.get("epochs_trained", 0), "reason": attrs.get("infeasible", ""),
        "seconds": attrs.get("seconds"),
    }  # fmt: skip


def open_study(storage: str, study_name: str, strategy: str, seed: int, n_trials: int, startup: int = 0):
    """Create or resume a study (`load_if_exists`), checking that a resumed one is the same search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            study_name=study_name, storage=storage, load_if_exists=True,
            directions=["maximize", "minimize"], sampler=_sampler(strategy, seed, n_trials, startup),
        )  # fmt: skip
    except Exception as exc:
        raise ConfigError(
            f"NAS: cannot open optuna storage {storage!r} (study {study_name!r}): {exc}"
        ) from exc


def search(
    dataset: Dataset,
    space: SearchSpace,
    constraints: Constraints,
    config: NasConfig,
    storage: str,
    study_name: str,
    farm_url: str | None = None,
    reference_spec: dict[str, Any] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> tuple[Any, LatencyMeter]:
    """Run (or resume) the search until the study holds `n_trials` finished trials or the
    wall-clock budget is spent. `on_trial` sees each finished trial's record (MLflow child runs)."""
    import optuna

    from edgecompress.progress import progress_bar

    config.validate()
    constraints.validate()
    meter = LatencyMeter(constraints.device_class, farm_url, dataset.input_shape, dataset.num_classes)
    check_satisfiable(space, constraints, meter, config.search_bench)
    low = search_split(dataset, config.train_samples, config.holdout_samples)
    study = open_study(
        storage, study_name, config.strategy, config.seed, config.n_trials, config.startup_trials
    )
    identity = search_identity(space, constraints, config)
    if study.user_attrs.get("identity", identity) != identity:
        raise ConfigError(
            f"NAS: study {study_name!r} in {storage} was made with another search space, constraints or "
            f"fidelity ({study.user_attrs['identity']}); resume it with the same settings or use a new study name"
        )
    study.set_user_attr("identity", identity)
    study.set_user_attr("search_space", space.as_dict())
    study.set_user_attr("constraints", asdict(constraints))
    halving = _Halving(study, config.eta, config.rungs(), min_trials=max(3, config.eta))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    remaining = config.n_trials - len(finished)
    if finished:
        log.info("NAS: resuming study %r with %d finished trials", study_name, len(finished))
    # Same spec, same seed, same result: a repeated architecture is answered from its first trial.
    known: dict[str, dict[str, Any]] = {}

    def remember(spec: dict[str, Any], values: Any, attrs: dict[str, Any]) -> None:
        kept = {k: v for k, v in attrs.items() if not k.startswith("rung_") and k != "duplicate_of_spec"}
        known.setdefault(spec_key(spec), {"values": values, "attrs": kept})

    for t in finished:
        if t.user_attrs.get("spec") and t.state in (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
        ):
            remember(t.user_attrs["spec"], t.values, t.user_attrs)

    def objective(trial: Any) -> tuple[float, float]:
        started = time.monotonic()
        spec = space.suggest(trial)
        trial.set_user_attr("spec", spec)
        key = spec_key(spec)
        if key in known:
            for k, v in known[key]["attrs"].items():
                trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of_spec", key)
            if known[key]["values"] is None:
                raise optuna.TrialPruned("same architecture as an earlier stopped or infeasible trial")
            return tuple(known[key]["values"])  # type: ignore[return-value]
        try:
            cost = candidate_cost(spec, dataset.input_shape, dataset.num_classes)
            trial.set_user_attr("params", cost["params"])
            trial.set_user_attr("macs", cost["macs"])
            if constraints.max_params and cost["params"] > constraints.max_params:
                raise Infeasible(f"{cost['params']} parameters > max_params {constraints.max_params}")
            if constraints.max_macs and cost["macs"] > constraints.max_macs:
                raise Infeasible(f"{cost['macs']} MACs > max_macs {constraints.max_macs}")
            latency = meter.measure_spec(spec, config.search_bench)["p50_ms"]
            trial.set_user_attr("p50_ms", latency)
            if constraints.max_latency_ms and latency > constraints.max_latency_ms:
                raise Infeasible(
                    f"p50 {latency:.3f} ms on {constraints.device_class} > max_latency_ms {constraints.max_latency_ms}"
                )
        except Infeasible as exc:
            trial.set_user_attr("infeasible", str(exc))
            trial.set_user_attr("seconds", time.monotonic() - started)
            remember(spec, None, trial.user_attrs)
            raise optuna.TrialPruned(str(exc)) from exc
        model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)

        def rung(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs_trained", epoch)
            trial.set_user_attr("last_accuracy", accuracy)
            if not halving.keep(trial, epoch, accuracy, latency):
                raise optuna.TrialPruned(f"successive halving at epoch {epoch}: accuracy {accuracy:.4f}")

        train_cfg = TrainConfig(
            epochs=config.search_epochs, batch_size=config.batch_size, lr=config.lr,
            augment=config.augment, seed=config.seed,
        )  # fmt: skip
        try:
            history = fit(
                model, low, train_cfg, description=f"trial {trial.number}", progress=False, on_epoch_end=rung
            )
        except optuna.TrialPruned:
            remember(spec, None, trial.user_attrs)
            raise
        finally:
            trial.set_user_attr("seconds", time.monotonic() - started)
        accuracy = history.final_val_accuracy
        remember(spec, (accuracy, latency), trial.user_attrs)
        return accuracy, latency

    if remaining > 0:
        with progress_bar(enabled=progress) as bar:
            task = bar.add_task(f"NAS {config.strategy} ({study_name})", total=remaining)

            def callback(study: Any, frozen: Any) -> None:
                bar.advance(task)
                record = _trial_record(frozen)
                log.info(
                    "trial %d %s: accuracy %s, p50 %s ms %s", record["number"], record["state"],
                    _fmt(record["accuracy"]), _fmt(record["p50_ms"]), record["reason"],
                )  # fmt: skip
                if on_trial:
                    on_trial(record)

            study.optimize(
                objective, n_trials=remaining, timeout=config.timeout_s or None, callbacks=[callback],
                catch=(BenchmarkError,), gc_after_trial=True,
            )  # fmt: skip
    return study, meter


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def summarize(
    study: Any,
    meter: LatencyMeter,
    constraints: Constraints,
    config: NasConfig,
    remeasure: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(trials, front, pick): the front re-measured with the final benchmark settings and
    the pick chosen on the re-measured latency. Raises ConfigError when no candidate was feasible."""
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        reasons = sorted({t["reason"] for t in trials if t["reason"]})[:5]
        raise ConfigError(
            f"NAS: none of the {len(trials)} trials met the constraints {asdict(constraints)}; "
            f"reasons: {reasons or ['(all pruned or failed)']}. Relax the constraints or widen the search space."
        )
    unique: dict[str, dict[str, Any]] = {}
    for t in complete:
        unique.setdefault(spec_key(t["spec"]), t)
    pool = list(unique.values())
    idx = pareto_front([(t["accuracy"], t["p50_ms"]) for t in pool])
    front = sorted((dict(pool[i], search_p50_ms=pool[i]["p50_ms"]) for i in idx), key=lambda t: t["p50_ms"])
    if remeasure:
        for member in front:
            member["p50_ms"] = meter.measure_spec(member["spec"], config.final_bench)["p50_ms"]
    feasible = [
        m for m in front if not constraints.max_latency_ms or m["p50_ms"] <= constraints.max_latency_ms
    ]
    if not feasible:
        raise ConfigError(
            f"NAS: re-measured, every Pareto-front member is over max_latency_ms {constraints.max_latency_ms} "
            f"(fastest {min(m['p50_ms'] for m in front):.3f} ms): the search-time measurement was too optimistic"
        )
    best = max(m["accuracy"] for m in feasible)
    pick = min(
        (m for m in feasible if m["accuracy"] >= best - config.accuracy_tolerance), key=lambda m: m["p50_ms"]
    )
    return trials, front, pick


def retrain(
    spec: dict[str, Any], dataset: Dataset, config: NasConfig, progress: bool = True
) -> tuple[Any, Any]:
    """The pick at full fidelity: the whole training split, `final_epochs`, the same recipe."""
    model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
    cfg = TrainConfig(
        epochs=config.final_epochs, batch_size=config.batch_size, lr=config.lr, augment=config.augment,
        seed=config.seed,
    )  # fmt: skip
    history = fit(model, dataset, cfg, description="retrain NAS pick", progress=progress)
    return model, history


def front_png(
    trials: list[dict[str, Any]], front: list[dict[str, Any]], pick: dict[str, Any],
    reference: dict[str, Any] | None, title: str,
) -> bytes:  # fmt: skip
    """Every trained trial (low fidelity), the re-measured front, the pick and the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png

    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = [t for t in trials if t["state"] == "complete"]
    pruned = [t for t in trials if t["state"] == "pruned" and t["accuracy"] is not None and t["p50_ms"]]
    ax.scatter(
        [t["p50_ms"] for t in done], [100 * t["accuracy"] for t in done], s=18, c="#999", label="trials"
    )
    if pruned:
        ax.scatter([t["p50_ms"] for t in pruned], [100 * t["accuracy"] for t in pruned], s=12, marker="x",
                   c="#bbb", label="stopped early (halving)")  # fmt: skip
    ax.plot([m["p50_ms"] for m in front], [100 * m["accuracy"] for m in front], "o-", c="C0",
            label="Pareto front (re-measured)")  # fmt: skip
    ax.scatter([pick["p50_ms"]], [100 * pick["accuracy"]], s=120, facecolors="none", edgecolors="C3", lw=2,
               label="pick")  # fmt: skip
    if reference:
        ax.axvline(reference["p50_ms"], ls="--", c="C1", label="reference model p50")
    ax.set_xlabel("p50 latency, ms (batch 1)")
    ax.set_ylabel("search accuracy, % (hold-out, low fidelity)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return figure_png(fig)


def low_fidelity_accuracy(spec: dict[str, Any], dataset: Dataset, config: NasConfig) -> float:
    """What the search would have scored for `spec` (e.g. the reference model's architecture)."""
    low = search_split(dataset, config.train_samples, config.holdout_samples)
    model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
    cfg = TrainConfig(
        epochs=config.search_epochs, batch_size=config.batch_size, lr=config.lr, augment=config.augment,
        seed=config.seed,
    )  # fmt: skip
    return fit(model, low, cfg, description="reference (low fidelity)", progress=False).final_val_accuracy


def accuracy_on(model: Any, dataset: Dataset, split: str = "val") -> float:
    from edgecompress.train import accuracy

    x, y = dataset.split(split)
    return accuracy(model, x, y)
