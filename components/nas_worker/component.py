"""KFP component: one NAS fan-out worker: trials of the shared optuna study until it holds its budget."""

from edgecompress.components.factory import technique_component
from edgecompress.components.nas_create_study.component import SURFACES
from edgecompress.nas import Constraints, NasConfig, NasStepOptions
from edgecompress.nas.distributed import FanoutConfig, run_worker
from edgecompress.params import build
from edgecompress.step import Lineage


def run(worker, dataset, **settings) -> int:
    options = build(NasStepOptions, settings)
    ran = run_worker(
        options.storage, options.study_name, dataset.path, options.search_space, build(Constraints, settings),
        build(NasConfig, settings), worker, options.farm_url, build(Lineage, settings), build(FanoutConfig, settings),
    )  # fmt: skip
    return len(ran)


nas_worker = technique_component(
    "nas_worker",
    run,
    data={"worker": "int"},
    inputs={"dataset": "Dataset"},
    surfaces=SURFACES,
    returns="int",
    doc="""Asks the study `study_name` for trials until it holds `n_trials` finished ones (complete,
    pruned, or failed and not retried); N of these in a `dsl.ParallelFor` split the budget, none runs a
    trial twice. A worker killed mid-trial stops beating: after `grace_period_s` its trial is FAIL and
    is run again (`max_retry`). Returns how many trials this worker ran. Settings are the `nas` component's (search space, budget `n_trials`, fidelity, constraints, `strategy`,
    `seed`) plus the fan-out's heartbeat (`heartbeat_interval_s`, `grace_period_s`, `max_retry`). `storage`: the
    optuna RDB storage URL every task shares; empty: $EDGECOMPRESS_NAS_STORAGE (on a cluster from the
    `nas_storage_secret` Secret, the password as $PGPASSWORD).""",
)
