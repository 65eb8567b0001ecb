"""NAS fanned out over many workers: one optuna study in an RDB storage (PostgreSQL on a cluster, a
local PostgreSQL or SQLite file on one machine), many processes asking it for trials.

Three plain functions, what the pipeline's tasks and the one-process CLI call:

- `create_study` opens the study (idempotent: `load_if_exists`; a resumed study must be the same
  search), records its identity and the MLflow search run the trials nest under, and returns its name.
- `run_worker` asks the shared study for trials until it holds `n_trials` finished trials
  (COMPLETE, PRUNED, or FAIL and not retried): N workers split them, none runs a trial twice. A
  worker does not start a trial when the ones running would reach the budget; it waits for them.
  Workers that pass that check at the same instant each get a trial, numbered by the storage one at
  a time: a trial whose lower-numbered trials already fill the budget is surplus, pruned unrun and
  never counted (`search.surplus`), so the study runs exactly `n_trials`.
- `finish_study` re-measures the front, picks, retrains the pick: what the one-process `nas` step
  does after its search (it is that step, on a study that already holds its trials).

Worker death: the storage has a heartbeat (`FanoutConfig.heartbeat_interval_s`); a RUNNING trial
whose heartbeat is older than `grace_period_s` becomes FAIL when any worker (or `finish_study`)
next looks, and `RetryHeartbeatStaleTrialCallback` enqueues it again with the same parameters (up to
`max_retry` times), so the budget still ends with that many results. Successive halving reads every
worker's rung results from the study, never from process memory. Every trial is an MLflow child run
of the search run that `create_study` opened.

The storage URL comes from the `storage` setting or, where it is empty, from
$EDGECOMPRESS_NAS_STORAGE (on a cluster: a Kubernetes Secret, see docs/kubernetes.md). Put the
PostgreSQL password in $PGPASSWORD (the Secret's second key), not in the URL: URLs end up in reports.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.errors import ConfigError
from edgecompress.nas.search import (  # noqa: F401 (accounted, fail_stale, optimize_until: the fan-out's API)
    Constraints,
    NasConfig,
    accounted,
    fail_stale,
    make_objective,
    optimize_until,
    prepare_search,
    redact,
)
from edgecompress.step import StepResult

log = logging.getLogger(__name__)
STORAGE_ENV = "EDGECOMPRESS_NAS_STORAGE"
SEARCH_RUN_ATTR = "mlflow_search_run_id"
TRIAL_RUN_ATTR = "mlflow_trial_run_"


@dataclass
class FanoutConfig:
    """How workers share one study: the storage heartbeat that turns a dead worker's trial into FAIL."""

    heartbeat_interval_s: int = field(
        default=10, metadata={"help": "seconds between a running trial's heartbeats in the storage"}
    )
    grace_period_s: int = field(
        default=60,
        metadata={"help": "a running trial without a heartbeat for this long is FAIL (its worker died)"},
    )
    max_retry: int = field(
        default=1, metadata={"help": "times a dead worker's trial is run again with the same parameters"}
    )

    def validate(self) -> None:
        if self.heartbeat_interval_s < 1:
            raise ConfigError(
                f"NAS fan-out: heartbeat_interval_s must be ≥ 1, got {self.heartbeat_interval_s}"
            )
        if self.grace_period_s <= self.heartbeat_interval_s:
            raise ConfigError(
                f"NAS fan-out: grace_period_s ({self.grace_period_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s}), or live trials would be failed"
            )
        if self.max_retry < 0:
            raise ConfigError(f"NAS fan-out: max_retry must be ≥ 0, got {self.max_retry}")


def resolve_storage(storage: str) -> str:
    """The storage URL: `storage`, else $EDGECOMPRESS_NAS_STORAGE; a fan-out needs one both ends see."""
    url = storage or os.environ.get(STORAGE_ENV, "")
    if not url:
        raise ConfigError(
            f"NAS fan-out: no optuna storage: set `storage` or ${STORAGE_ENV} (e.g. "
            "postgresql+psycopg://user@host:5432/db, or sqlite:///study.db on one machine)"
        )
    if url.startswith("sqlite:///:memory:") or url == "sqlite://":
        raise ConfigError("NAS fan-out: an in-memory SQLite storage cannot be shared by workers")
    return url


def rdb_storage(url: str, fanout: FanoutConfig | None = None) -> Any:
    """An optuna RDBStorage with a heartbeat and a retry of a dead worker's trials."""
    import optuna

    fanout = fanout or FanoutConfig()
    fanout.validate()
    url = resolve_storage(url)
    # a worker holds at most 4 connections: its trial loop and its heartbeat thread, one spare each
    pg = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
    engine = pg if url.startswith("postgresql") else {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in optuna 5: we rely on them, tested
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=fanout.heartbeat_interval_s,
                grace_period=fanout.grace_period_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    fanout.max_retry
                ),
            )
    except Exception as exc:
        raise ConfigError(f"NAS: cannot open optuna storage {redact(url)}: {exc}") from exc


def _open(
    dataset_path: Path,
    search_space: Any,
    constraints: Constraints,
    config: NasConfig,
    storage: str,
    study_name: str,
    farm_url: str | None,
    fanout: FanoutConfig | None,
):
    from edgecompress.data import load_dataset
    from edgecompress.nas.space import SearchSpace

    space = SearchSpace.load(search_space)
    dataset = load_dataset(Path(dataset_path))
    storage_obj = rdb_storage(storage, fanout)
    study, meter = prepare_search(dataset, space, constraints, config, storage_obj, study_name, farm_url)
    return study, meter, dataset, space


def resolve_study_name(
    study_name: str, dataset_path: Path, search_space: Any, constraints: Constraints, config: NasConfig
) -> str:
    """`study_name`, or the deterministic default (data, space, constraints, fidelity): every task of a
    fan-out derives the same name, so the same search resumes."""
    if study_name:
        return study_name
    from edgecompress.data import load_dataset
    from edgecompress.nas.space import SearchSpace
    from edgecompress.nas.step import default_study_name

    space, dataset = SearchSpace.load(search_space), load_dataset(Path(dataset_path))
    return default_study_name(dataset, space, config, constraints)


def create_study(
    storage: str,
    study_name: str,
    dataset_path: Path,
    search_space: Any,
    constraints: Constraints,
    config: NasConfig,
    farm_url: str | None = None,
    lineage_ctx: Any = None,
    fanout: FanoutConfig | None = None,
) -> str:
    """Create (or load) the study and its MLflow search run; returns the study's name (`study_name`
    or the deterministic default, so that the same search resumes)."""
    from edgecompress.step import Lineage

    ctx = lineage_ctx or Lineage()
    ctx.check()
    study_name = resolve_study_name(study_name, dataset_path, search_space, constraints, config)
    study, *_ = _open(dataset_path, search_space, constraints, config, storage, study_name, farm_url, fanout)
    if ctx.enabled and SEARCH_RUN_ATTR not in study.user_attrs:
        params = {"technique": "nas-search", "study_name": study_name, "n_trials": config.n_trials}
        with ctx.task("nas-search", params) as run_id:
            study.set_user_attr(SEARCH_RUN_ATTR, run_id)
    log.info(
        "NAS study %r in %s: %d trials so far",
        study_name,
        redact(storage or resolve_storage("")),
        len(study.trials),
    )
    return study_name


def run_worker(
    storage: str,
    study_name: str,
    dataset_path: Path,
    search_space: Any,
    constraints: Constraints,
    config: NasConfig,
    worker: int = 0,
    farm_url: str | None = None,
    lineage_ctx: Any = None,
    fanout: FanoutConfig | None = None,
    progress: bool = False,
) -> list[int]:
    """One worker: trials of the shared study until it holds `config.n_trials` accounted trials.
    Returns the numbers of the trials this worker ran; each is an MLflow child run of the search run."""
    from edgecompress.step import Lineage

    ctx = lineage_ctx or Lineage()
    ctx.check()
    study_name = resolve_study_name(study_name, dataset_path, search_space, constraints, config)
    study, meter, dataset, space = _open(
        dataset_path, search_space, constraints, config, storage, study_name, farm_url, fanout
    )
    on_trial = None
    if ctx.enabled and study.user_attrs.get(SEARCH_RUN_ATTR):
        from edgecompress.nas.step import _TrialRuns

        runs = _TrialRuns(study.user_attrs[SEARCH_RUN_ATTR], ctx.pipeline_run_id)

        def on_trial(record: dict[str, Any]) -> None:
            runs(record)
            study.set_user_attr(f"{TRIAL_RUN_ATTR}{record['number']}", runs.run_ids[record["number"]])

    search_trial = make_objective(study, dataset, space, constraints, config, meter)
    who = f"{socket.gethostname()}:{os.getpid()}:worker-{worker}"

    def objective(trial: Any) -> Any:
        trial.set_user_attr("worker", who)  # which pod/process ran it
        return search_trial(trial)

    ran = optimize_until(
        study, objective, config, on_trial, progress, label=f"NAS worker {worker} ({study_name})"
    )
    log.info("NAS worker %d ran trials %s", worker, ran)
    return ran


def finish_study(
    storage: str,
    study_name: str,
    dataset_path: Path,
    output_dir: Path,
    front_path: Path,
    report_path: Path | None,
    search_space: Any,
    constraints: Constraints,
    config: NasConfig,
    farm_url: str | None = None,
    reference_model: Path | None = None,
    lineage_ctx: Any = None,
    fanout: FanoutConfig | None = None,
) -> StepResult:
    """Fail what dead workers left RUNNING, then re-measure the front, pick, retrain: the `nas` step on
    the finished study (it runs no trial while the study holds its budget)."""
    from edgecompress.nas.step import nas_step

    url = resolve_storage(storage)
    study_name = resolve_study_name(study_name, dataset_path, search_space, constraints, config)
    study, *_ = _open(dataset_path, search_space, constraints, config, url, study_name, farm_url, fanout)
    fail_stale(study)
    done = accounted(study.get_trials(deepcopy=False))
    if done < config.n_trials and not config.timeout_s:
        raise ConfigError(
            f"NAS: study {study_name!r} holds {done} of its {config.n_trials} trials: run the workers "
            "(again: the study resumes) before finishing it"
        )
    return nas_step(
        dataset_path,
        output_dir,
        front_path,
        report_path,
        search_space,
        constraints,
        config,
        url,
        study_name,
        farm_url,
        reference_model,
        lineage_ctx,
        progress=False,
    )
