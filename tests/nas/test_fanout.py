"""NAS fanned out: worker processes share one optuna study on PostgreSQL; a worker killed with
SIGKILL mid-trial leaves the study consistent (its trial FAIL, retried once), none lost, none run
twice; halving and repeated architectures read the study, not a process's memory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecompress.errors import ConfigError
from edgecompress.nas import Constraints, NasConfig
from tests.conftest import skip_or_fail_in_ci
from tests.nas.test_nas import FAST, TINY_SPACE

# Three epochs on 1,000 digits: long enough to be killed mid-trial, short enough for a test.
CONFIG = NasConfig(**{**FAST.__dict__, "n_trials": 6, "search_epochs": 3, "final_epochs": 1})
FANOUT = {"heartbeat_interval_s": 1, "grace_period_s": 4, "max_retry": 1}
ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import json, sys
from edgecompress.nas import Constraints, NasConfig
from edgecompress.nas.distributed import FanoutConfig, run_worker
from edgecompress.step import Lineage
a = json.loads(sys.argv[1])
ran = run_worker(a["storage"], a["study"], a["dataset"], a["space"], Constraints(), NasConfig(**a["config"]),
                 worker=a["worker"], lineage_ctx=Lineage(enabled=False), fanout=FanoutConfig(**a["fanout"]))
print("RAN", json.dumps(ran))
"""


@pytest.fixture(scope="module")
def postgres():
    from edgecompress.farm.pgserver import PostgresUnavailable, temporary_postgres

    try:
        with temporary_postgres(durable=False) as server:
            yield server
    except PostgresUnavailable as exc:
        skip_or_fail_in_ci(f"no PostgreSQL: {exc}")


def start_worker(storage: str, study: str, dataset: Path, worker: int) -> subprocess.Popen:
    args = {"storage": storage, "study": study, "dataset": str(dataset), "space": TINY_SPACE,
            "config": CONFIG.__dict__, "worker": worker, "fanout": FANOUT}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGECOMPRESS_NO_PROGRESS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(args)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_killed_worker_leaves_every_trial_accounted_for(postgres, digits_artifact: Path):
    import optuna

    from edgecompress.nas.distributed import FanoutConfig, accounted, create_study, rdb_storage
    from edgecompress.nas.search import spec_key
    from edgecompress.step import Lineage

    url = postgres.new_database("nas")
    name = create_study(url, "", digits_artifact, TINY_SPACE, Constraints(), CONFIG,
                        lineage_ctx=Lineage(enabled=False))  # fmt: skip
    assert create_study(url, "", digits_artifact, TINY_SPACE, Constraints(), CONFIG,
                        lineage_ctx=Lineage(enabled=False)) == name  # idempotent  # fmt: skip
    study = optuna.load_study(study_name=name, storage=rdb_storage(url, FanoutConfig(**FANOUT)))
    victim = start_worker(url, name, digits_artifact, 0)
    survivor = start_worker(url, name, digits_artifact, 1)
    try:
        killed = None
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if (
                    t.user_attrs.get("worker", "").endswith(f":{victim.pid}:worker-0")
                    and "spec" in t.user_attrs
                ):
                    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: after its spec, before its result
                    killed = t.number
                    break
            time.sleep(0.05)
        assert killed is not None, f"worker 0 never ran a trial: {victim.communicate()[0][-3000:]}"
        out, _ = survivor.communicate(timeout=420)
        assert survivor.returncode == 0, out[-3000:]
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state.name for t in trials}
    assert states[killed] == "FAIL", states  # the heartbeat stopped: FAIL, not RUNNING for ever
    assert set(states.values()) <= {"COMPLETE", "PRUNED", "FAIL"}, states  # nothing left running
    retries = [t for t in trials if killed in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1 and retries[0].params == trials[killed].params  # retried once, same params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")
    assert accounted(trials) == CONFIG.n_trials  # none lost: the budget holds results, the FAIL retried
    assert len(trials) == CONFIG.n_trials + 1  # none run twice: the budget plus the one retry
    assert len({t.number for t in trials}) == len(trials)
    trained = [spec_key(t.user_attrs["spec"]) for t in trials
               if t.state.name != "FAIL" and "duplicate_of_spec" not in t.user_attrs]  # fmt: skip
    assert len(trained) == len(set(trained)), "an architecture was trained twice"
    again = start_worker(url, name, digits_artifact, 2)  # a re-run resumes: the budget is there, no trial
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "RAN []" in out, out[-3000:]
    assert len(study.get_trials(deepcopy=False)) == len(trials)
    # halving decided from both workers' rung results: a trial that stopped at rung 1 did so in the study
    assert all(t.user_attrs.get("epochs_trained") == 1 for t in trials if t.state.name == "PRUNED"
               and "infeasible" not in t.user_attrs and "duplicate_of_spec" not in t.user_attrs)  # fmt: skip


def test_fanout_refuses_a_storage_workers_cannot_share(monkeypatch):
    from edgecompress.nas.distributed import FanoutConfig, resolve_storage

    monkeypatch.delenv("EDGECOMPRESS_NAS_STORAGE", raising=False)
    with pytest.raises(ConfigError, match="EDGECOMPRESS_NAS_STORAGE"):
        resolve_storage("")
    with pytest.raises(ConfigError, match="in-memory"):
        resolve_storage("sqlite:///:memory:")
    monkeypatch.setenv("EDGECOMPRESS_NAS_STORAGE", "postgresql+psycopg://nas@db:5432/nas")
    assert resolve_storage("") == "postgresql+psycopg://nas@db:5432/nas"
    with pytest.raises(ConfigError, match="must exceed heartbeat_interval_s"):
        FanoutConfig(heartbeat_interval_s=10, grace_period_s=10).validate()


def test_a_retried_failure_counts_once_through_its_retry():
    import optuna

    from edgecompress.nas.distributed import accounted

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": optuna.distributions.IntDistribution(0, 9)}
    for state, attrs in [("COMPLETE", {}), ("PRUNED", {}), ("FAIL", {}), ("COMPLETE", {"retry_history": [2]}),
                         ("FAIL", {})]:  # fmt: skip
        values = [0.5, 1.0] if state == "COMPLETE" else None
        study.add_trial(optuna.create_trial(state=optuna.trial.TrialState[state], params={"x": 1},
                                            distributions=dist, values=values, system_attrs=attrs))  # fmt: skip
    # 0 complete, 1 pruned, 2 failed but retried as 3 (counted once, through 3), 4 failed for good
    assert accounted(study.get_trials(deepcopy=False)) == 4


def test_the_front_json_never_holds_the_storage_password():
    """A study URL with a password (e.g. a PostgreSQL URL given on the command line) is written to the
    front JSON and MLflow without it."""
    from types import SimpleNamespace

    from edgecompress.nas.space import SearchSpace
    from edgecompress.nas.step import _summary

    url = "postgresql+psycopg://optuna:s3cret-pw@db.example:5432/studies"
    summary = _summary(
        "s", url, Constraints(), NasConfig(), SearchSpace.load(None), SimpleNamespace(emulated=True),
        ([], [], {}, {}), None, 1.0, {},
    )  # fmt: skip
    assert "s3cret-pw" not in json.dumps(summary)
    assert (
        summary["storage"].startswith("postgresql+psycopg://optuna:")
        and "db.example:5432" in summary["storage"]
    )


def test_two_workers_that_ask_at_the_same_instant_run_the_budget_exactly(tmp_path: Path):
    """The race behind the budget check: a worker reads the study (1 of 2 trials done, none running),
    and before it asks, another worker takes the last place. Its trial, numbered after the other's, is
    surplus: pruned unrun, not counted, not reported; the worker then waits for the other's trial."""
    import threading
    from types import SimpleNamespace

    import optuna

    from edgecompress.nas.distributed import FanoutConfig, accounted, rdb_storage
    from edgecompress.nas.search import SURPLUS_ATTR, optimize_until

    storage = rdb_storage(f"sqlite:///{tmp_path / 'study.db'}", FanoutConfig(**FANOUT))
    study = optuna.create_study(storage=storage, study_name="race")
    study.tell(study.ask(), 0.5)
    snapshot = study.get_trials()  # what this worker read at its budget check
    other = study.ask()  # the other worker's ask lands first: it holds the last place

    class ReadBeforeTheOtherAsked:
        """The study, whose first read is the snapshot taken before the other worker asked."""

        def __init__(self) -> None:
            self.reads = 0

        def get_trials(self, *args, **kwargs):
            self.reads += 1
            return snapshot if self.reads == 1 else study.get_trials(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(study, name)

    threading.Timer(3.0, lambda: study.tell(other, 0.7)).start()  # the other worker finishes its trial
    calls = []
    ran = optimize_until(
        ReadBeforeTheOtherAsked(), lambda t: calls.append(t.number) or 0.1,
        SimpleNamespace(n_trials=2, timeout_s=60), progress=False, poll_s=0.2,
    )  # fmt: skip
    trials = study.get_trials()
    assert calls == [] and ran == []  # the surplus trial ran nothing
    assert [t.number for t in trials if t.user_attrs.get(SURPLUS_ATTR)] == [2]
    assert trials[2].state == optuna.trial.TrialState.PRUNED and accounted(trials) == 2
