"""The search itself: its configuration (Constraints, NasConfig), low-fidelity training on a split
carved from the training data, measured latency, the constraint checks that run before any
training, successive halving, and the optuna study that drives it all and can be resumed.

Contract: `search(...)` returns the optuna study (every finished trial carries the user attributes
`trial_record` reads) and the LatencyMeter it measured with; `retrain` trains the pick at full
fidelity. Latencies are always measurements (LatencyMeter), never estimates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.data import Dataset
from edgecompress.errors import BenchmarkError, ConfigError, ModelError
from edgecompress.nas.pareto import pareto_ranks
from edgecompress.nas.space import Infeasible, SearchSpace
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASS
from edgecompress.train import TrainConfig, fit
from edgecompress.zoo import build_model, count_parameters

log = logging.getLogger(__name__)

STRATEGIES = ("tpe", "nsga2", "random")
# a trial created past the budget (two workers asked at the same instant): pruned unrun, never counted
SURPLUS_ATTR = "surplus"


@dataclass
class Constraints:
    """Hard limits; 0 means no limit. Latency is p50, batch 1, on `device_class`."""

    device_class: str = field(
        default=DEFAULT_DEVICE_CLASS, metadata={"help": "device class latency is measured on"}
    )
    max_params: int = field(default=0, metadata={"help": "at most this many parameters (0: no limit)"})
    max_macs: int = field(default=0, metadata={"help": "at most this many MACs (0: no limit)"})
    max_latency_ms: float = field(default=0.0, metadata={"help": "p50 latency limit, batch 1 (0: no limit)"})

    def validate(self) -> None:
        if self.max_params < 0 or self.max_macs < 0 or self.max_latency_ms < 0:
            raise ConfigError(f"constraints must be ≥ 0 (0 = no limit): {asdict(self)}")
        if not self.device_class:
            raise ConfigError("constraints: a device class is needed to measure latency")


@dataclass
class NasConfig:
    strategy: str = field(
        default="tpe", metadata={"help": "optuna sampler (or random search)", "choices": STRATEGIES}
    )
    n_trials: int = field(default=24, metadata={"help": "budget: finished trials in the study"})
    timeout_s: float = field(
        default=0.0, metadata={"help": "budget: wall-clock seconds of the search (0: none)"}
    )
    search_epochs: int = field(default=3, metadata={"help": "low fidelity: epochs per trial"})
    train_samples: int = field(default=10_000, metadata={"help": "low fidelity: training images per trial"})
    holdout_samples: int = field(
        default=5_000,
        metadata={"help": "trials are scored on this many images held out from the training split"},
    )
    eta: int = field(default=3, metadata={"help": "successive halving factor (1: off)"})
    final_epochs: int = field(default=10, metadata={"help": "retraining epochs of the pick"})
    batch_size: int = field(default=128, metadata={"help": "batch size of trials and the retraining"})
    lr: float = field(default=3e-3, metadata={"help": "learning rate of trials and the retraining"})
    augment: bool = field(default=False, metadata={"help": "flips and shifts while training"})
    seed: int = field(default=0, metadata={"help": "seed of the sampler and of training"})
    accuracy_tolerance: float = field(
        default=0.0,
        metadata={"help": "pick the fastest front member within this (fraction) of the best accuracy"},
    )
    startup_trials: int = field(
        default=0,
        metadata={"help": "random trials before the model-based sampler (0: max(4, n_trials // 4))"},
    )
    search_bench: dict[str, Any] = field(
        default_factory=lambda: {"warmup_runs": 10, "min_runs": 50, "min_duration_s": 0.25},
        metadata={"flat": False},
    )
    final_bench: dict[str, Any] = field(
        default_factory=lambda: {"min_runs": 200, "min_duration_s": 1.0}, metadata={"flat": False}
    )

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


def search_split(dataset: Dataset, train_samples: int, holdout_samples: int) -> Dataset:
    """A dataset whose train split is a subset of the training data and whose val split is a
    hold-out from the *end* of the training data: search never sees the real validation split."""
    n = len(dataset.arrays["y_train"])
    if n < 2:
        raise ConfigError(f"NAS: the training split has {n} samples; at least 2 are needed")
    holdout = min(holdout_samples, n // 2)
    train = min(train_samples, n - holdout)
    arrays = {
        "x_train": dataset.arrays["x_train"][:train],
        "y_train": dataset.arrays["y_train"][:train],
        "x_val": dataset.arrays["x_train"][n - holdout :],
        "y_val": dataset.arrays["y_train"][n - holdout :],
    }
    for split in ("test",):
        if f"x_{split}" in dataset.arrays:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = (
                dataset.arrays[f"x_{split}"],
                dataset.arrays[f"y_{split}"],
            )
    return Dataset(dataset.name, dataset.source, arrays, dataset.class_names, {"nas_search_split": True})


def search_identity(space: SearchSpace, constraints: Constraints, config: NasConfig) -> str:
    """What must not change when a study is resumed: its results would not be comparable."""
    fidelity = {
        k: getattr(config, k)
        for k in (
            "search_epochs",
            "train_samples",
            "holdout_samples",
            "batch_size",
            "lr",
            "augment",
            "seed",
            "strategy",
            "search_bench",
        )
    }
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
        from edgecompress.runtime.devices import emulated_device_class

        self.device_class, self.farm_url = device_class, farm_url or None
        self.input_shape, self.num_classes = input_shape, num_classes
        self.emulated: bool | None = None
        if not self.farm_url:
            emulated_device_class(device_class)  # unknown class -> ConfigError now, not mid-search

    def measure_onnx(self, onnx_path: Path, settings: dict[str, Any]) -> dict[str, Any]:
        """Through the one latency path (`edgecompress.edge.Measurement`)."""
        from edgecompress.edge import Measurement

        r = Measurement.from_settings(self.device_class, self.farm_url, settings).latency(onnx_path)
        self.emulated = r["emulated"]
        return {"p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "emulated": self.emulated}

    def measure_spec(self, spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        from edgecompress.export import export_onnx

        model = build_model(spec, self.input_shape, self.num_classes)
        with tempfile.TemporaryDirectory(prefix="edgecompress-nas-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            export_onnx(model, self.input_shape, path)
            return self.measure_onnx(path, settings)


def candidate_cost(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """Parameters and MACs of a spec (its ONNX export), or Infeasible when it does not fit the data."""
    from edgecompress.evaluate import module_macs

    try:
        model = build_model(spec, input_shape, num_classes)
    except (ModelError, ConfigError, RuntimeError) as exc:
        raise Infeasible(f"cannot be built for inputs {tuple(input_shape)}: {str(exc)[:200]}") from exc
    return {"params": count_parameters(model), "macs": int(module_macs(model, tuple(input_shape)))}


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
        for t in self.study.get_trials(deepcopy=False):  # every worker's trials: the study is shared
            if (
                t.state.name != "WAITING"
                and t.number != trial.number
                and f"rung_{epoch}" in t.user_attrs
                and "p50_ms" in t.user_attrs
            ):
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


def trial_record(t: Any) -> dict[str, Any]:
    """A finished optuna trial as the plain record that `on_trial`, `summarize` and the reports use:
    number, state (complete | pruned | infeasible | fail), spec, accuracy, p50_ms, params, macs,
    epochs, reason, seconds."""
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
        "number": t.number,
        "state": state,
        "spec": attrs.get("spec"),
        "accuracy": t.values[0] if t.values else attrs.get("last_accuracy"),
        "p50_ms": attrs.get("p50_ms"),
        "params": attrs.get("params"),
        "macs": attrs.get("macs"),
        "epochs": attrs.get("epochs_trained", 0),
        "reason": attrs.get("infeasible", ""),
        "seconds": attrs.get("seconds"),
    }


def open_study(storage: str, study_name: str, strategy: str, seed: int, n_trials: int, startup: int = 0):
    """Create or resume a study (`load_if_exists`), checking that a resumed one is the same search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            study_name=study_name,
            storage=storage,
            load_if_exists=True,
            directions=["maximize", "minimize"],
            sampler=_sampler(strategy, seed, n_trials, startup),
        )
    except Exception as exc:
        raise ConfigError(
            f"NAS: cannot open optuna storage {storage!r} (study {study_name!r}): {exc}"
        ) from exc


def prepare_search(
    dataset: Dataset,
    space: SearchSpace,
    constraints: Constraints,
    config: NasConfig,
    storage: Any,
    study_name: str,
    farm_url: str | None = None,
) -> tuple[Any, LatencyMeter]:
    """Validate, check that the constraints can be met, and open (or resume) the study, refusing one
    made with another space, constraints or fidelity. `storage`: an optuna storage URL or object."""
    config.validate()
    constraints.validate()
    meter = LatencyMeter(constraints.device_class, farm_url, dataset.input_shape, dataset.num_classes)
    check_satisfiable(space, constraints, meter, config.search_bench)
    study = open_study(
        storage, study_name, config.strategy, config.seed, config.n_trials, config.startup_trials
    )
    identity = search_identity(space, constraints, config)
    if study.user_attrs.get("identity", identity) != identity:
        raise ConfigError(
            f"NAS: study {study_name!r} was made with another search space, constraints or "
            f"fidelity ({study.user_attrs['identity']}); resume it with the same settings or use a new study name"
        )
    if "identity" not in study.user_attrs:
        study.set_user_attr("identity", identity)
        study.set_user_attr("search_space", space.as_dict())
        study.set_user_attr("constraints", asdict(constraints))
    return study, meter


def _twin(study: Any, trial: Any, key: str) -> Any:
    """The first trial of the same architecture that has a result (COMPLETE or PRUNED), waiting for
    one that an earlier-numbered trial (of any worker) is still running; None if there is none."""
    import optuna

    States = optuna.trial.TrialState
    while True:
        twins = [
            t
            for t in study.get_trials(deepcopy=False, states=(States.COMPLETE, States.PRUNED, States.RUNNING))
            if t.number < trial.number
            and t.user_attrs.get("spec")
            and "duplicate_of_spec" not in t.user_attrs
            and spec_key(t.user_attrs["spec"]) == key
        ]
        done = [t for t in twins if t.state != States.RUNNING]
        if done or not twins:
            return min(done, key=lambda t: t.number) if done else None
        time.sleep(0.5)  # an earlier trial trains this architecture now: its result is this one's
        fail_stale(study)


def make_objective(
    study: Any,
    dataset: Dataset,
    space: SearchSpace,
    constraints: Constraints,
    config: NasConfig,
    meter: LatencyMeter,
) -> Callable[[Any], tuple[float, float]]:
    """The trial: suggest, answer a repeated architecture from its first trial (across workers: the
    study is the memory), check the constraints, train at low fidelity with successive halving."""
    import optuna

    low = search_split(dataset, config.train_samples, config.holdout_samples)
    halving = _Halving(study, config.eta, config.rungs(), min_trials=max(3, config.eta))

    def objective(trial: Any) -> tuple[float, float]:
        started = time.monotonic()
        spec = space.suggest(trial)
        trial.set_user_attr("spec", spec)
        key = spec_key(spec)
        twin = _twin(study, trial, key)
        if twin is not None:  # same spec, same seed, same result
            for k, v in twin.user_attrs.items():
                if not k.startswith("rung_") and k != "duplicate_of_spec":
                    trial.set_user_attr(k, v)
            trial.set_user_attr("duplicate_of_spec", key)
            if twin.state != optuna.trial.TrialState.COMPLETE:
                raise optuna.TrialPruned("same architecture as an earlier stopped or infeasible trial")
            return tuple(twin.values)  # type: ignore[return-value]
        try:
            latency = _check_constraints(trial, spec, dataset, constraints, meter, config)
        except Infeasible as exc:
            trial.set_user_attr("infeasible", str(exc))
            trial.set_user_attr("seconds", time.monotonic() - started)
            raise optuna.TrialPruned(str(exc)) from exc
        model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)

        def rung(epoch: int, accuracy: float) -> None:
            trial.set_user_attr("epochs_trained", epoch)
            trial.set_user_attr("last_accuracy", accuracy)
            if not halving.keep(trial, epoch, accuracy, latency):
                raise optuna.TrialPruned(f"successive halving at epoch {epoch}: accuracy {accuracy:.4f}")

        train_cfg = _train_config(config, config.search_epochs)
        try:
            history = fit(
                model, low, train_cfg, description=f"trial {trial.number}", progress=False, on_epoch_end=rung
            )
        finally:
            trial.set_user_attr("seconds", time.monotonic() - started)
        return history.final_val_accuracy, latency

    return objective


def _check_constraints(
    trial: Any,
    spec: dict[str, Any],
    dataset: Dataset,
    constraints: Constraints,
    meter: LatencyMeter,
    config: NasConfig,
) -> float:
    """Parameters, MACs and the measured p50 of a candidate (as trial attributes); its p50, or
    Infeasible where it breaks a limit."""
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
    return latency


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
    """Run (or resume) the search in this process until the study holds `n_trials` finished trials
    or the wall-clock budget is spent (the loop every fan-out worker runs too: nas.distributed).
    `on_trial` sees each finished trial's record (MLflow child runs)."""
    study, meter = prepare_search(dataset, space, constraints, config, storage, study_name, farm_url)
    objective = make_objective(study, dataset, space, constraints, config, meter)
    optimize_until(
        study, objective, config, on_trial, progress, label=f"NAS {config.strategy} ({study_name})"
    )
    return study, meter


def fail_stale(study: Any) -> None:
    """Turn trials whose worker stopped beating into FAIL (and enqueue their retries)."""
    import optuna

    optuna.storages.fail_stale_trials(study)


def _counting(trials: list[Any], states: tuple[str, ...]) -> list[Any]:
    """The trials in `states` that count toward the budget, and FAIL ones where no retry was enqueued
    (a retried trial is counted through its retry); never a surplus trial."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [
        t
        for t in trials
        if not t.user_attrs.get(SURPLUS_ATTR)
        and (t.state.name in states or (t.state.name == "FAIL" and t.number not in retried))
    ]


def accounted(trials: list[Any]) -> int:
    """Finished trials that count toward the budget: COMPLETE, PRUNED, and FAIL not retried."""
    return len(_counting(trials, ("COMPLETE", "PRUNED")))


def surplus(trials: list[Any], number: int, n_trials: int) -> bool:
    """Whether trial `number` is past the budget: the trials numbered before it that count or will
    (finished, running, waiting to be retried) already fill it. The storage numbers trials one at a
    time, so of two workers that passed the budget check at the same instant, only one gets the last
    place: the other's trial is surplus."""
    ahead = _counting(trials, ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))
    return sum(t.number < number for t in ahead) >= n_trials


def optimize_until(
    study: Any,
    objective: Callable[[Any], Any],
    config: NasConfig,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    label: str = "NAS",
    poll_s: float = 1.0,
) -> list[int]:
    """Ask the (shared) study for trials one at a time until it holds `config.n_trials` accounted
    trials or `config.timeout_s` is spent; returns the numbers of the trials this process ran. With a
    heartbeat (a fan-out's storage), a trial that another worker's made surplus is pruned unrun."""
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    from edgecompress.progress import progress_bar

    deadline = time.monotonic() + config.timeout_s if config.timeout_s else None
    heartbeat = isinstance(study._storage, BaseHeartbeat) and is_heartbeat_enabled(study._storage)
    ran: list[int] = []
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(label, total=config.n_trials)

        def budgeted(trial: Any) -> Any:
            # without a heartbeat a dead worker's RUNNING trial never ends: only count it when it would
            if heartbeat and surplus(study.get_trials(deepcopy=False), trial.number, config.n_trials):
                trial.set_user_attr(SURPLUS_ATTR, True)
                raise optuna.TrialPruned(f"past the budget of {config.n_trials} trials")
            return objective(trial)

        def callback(study: Any, frozen: Any) -> None:
            if frozen.user_attrs.get(SURPLUS_ATTR):
                log.info("trial %d not run: the trials before it fill the budget", frozen.number)
                return
            ran.append(frozen.number)
            record = trial_record(frozen)
            log.info(
                "trial %d %s: accuracy %s, p50 %s ms %s",
                record["number"],
                record["state"],
                _fmt(record["accuracy"]),
                _fmt(record["p50_ms"]),
                record["reason"],
            )
            if on_trial:
                on_trial(record)

        while deadline is None or time.monotonic() < deadline:
            trials = study.get_trials(deepcopy=False)
            done = accounted(trials)
            bar.update(task, completed=min(done, config.n_trials))
            if done >= config.n_trials:
                break
            running = sum(t.state.name == "RUNNING" for t in trials)
            waiting = any(t.state.name == "WAITING" for t in trials)
            if heartbeat and not waiting and done + running >= config.n_trials:
                fail_stale(study)  # the budget is in flight: wait for it (or for a dead worker's retry)
                time.sleep(poll_s)
                continue
            study.optimize(
                budgeted, n_trials=1, callbacks=[callback], catch=(BenchmarkError,), gc_after_trial=True
            )
    return ran


def _train_config(config: NasConfig, epochs: int) -> TrainConfig:
    """The search's training recipe (batch size, learning rate, augmentation, seed) for `epochs`."""
    return TrainConfig(
        epochs=epochs, batch_size=config.batch_size, lr=config.lr, augment=config.augment, seed=config.seed
    )


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def retrain(
    spec: dict[str, Any], dataset: Dataset, config: NasConfig, progress: bool = True
) -> tuple[Any, Any]:
    """The pick at full fidelity: the whole training split, `final_epochs`, the same recipe."""
    model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
    cfg = _train_config(config, config.final_epochs)
    history = fit(model, dataset, cfg, description="retrain NAS pick", progress=progress)
    return model, history


def low_fidelity_accuracy(spec: dict[str, Any], dataset: Dataset, config: NasConfig) -> float:
    """What the search would have scored for `spec` (e.g. the reference model's architecture)."""
    low = search_split(dataset, config.train_samples, config.holdout_samples)
    model = build_model(spec, dataset.input_shape, dataset.num_classes, seed=config.seed)
    cfg = _train_config(config, config.search_epochs)
    return fit(model, low, cfg, description="reference (low fidelity)", progress=False).final_val_accuracy


def accuracy_on(model: Any, dataset: Dataset, split: str = "val") -> float:
    from edgecompress.train import accuracy

    x, y = dataset.split(split)
    return accuracy(model, x, y)


def redact(url: str) -> str:
    """The URL without its password (for logs and reports)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<storage URL>"
