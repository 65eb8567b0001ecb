"""KFP component: the NAS fan-out's last task: re-measure the front, pick, retrain the pick."""

from edgecompress.components.factory import technique_component
from edgecompress.components.nas.component import record_outputs
from edgecompress.components.nas_create_study.component import SURFACES
from edgecompress.nas import Constraints, NasConfig, NasStepOptions
from edgecompress.nas.distributed import FanoutConfig, finish_study
from edgecompress.params import build
from edgecompress.step import Lineage


def run(
    worker_trials, dataset, searched_model, pareto_front, metrics, report, reference_model=None, **settings
):
    options, constraints = build(NasStepOptions, settings), build(Constraints, settings)
    result = finish_study(
        options.storage, options.study_name, dataset.path, searched_model.path, pareto_front.path, report.path,
        options.search_space, constraints, build(NasConfig, settings), options.farm_url,
        reference_model.path if reference_model is not None else None, build(Lineage, settings),
        build(FanoutConfig, settings),
    )  # fmt: skip
    record_outputs(result, constraints, searched_model, pareto_front, metrics)
    pareto_front.metadata["worker_trials"] = list(worker_trials)


nas_finish = technique_component(
    "nas_finish",
    run,
    data={"worker_trials": "list"},
    inputs={"dataset": "Dataset"},
    outputs={"searched_model": "Model", "pareto_front": "Artifact", "metrics": "Metrics", "report": "HTML"},
    optional_inputs={"reference_model": "Model"},
    surfaces=SURFACES,
    doc="""After every worker (`worker_trials`: the trials each ran, from `dsl.Collected`): fails what a
    dead worker left running, refuses a study short of `n_trials`, then does what the `nas` component
    does after its search: re-measures the Pareto front, picks the fastest member within
    `accuracy_tolerance` of the best accuracy, retrains it `final_epochs` on the whole training split,
    and logs it with lineage (`reference_model` is its parent). Settings are the `nas` component's (search space, budget `n_trials`, fidelity, constraints, `strategy`,
    `seed`) plus the fan-out's heartbeat (`heartbeat_interval_s`, `grace_period_s`, `max_retry`). `storage`: the
    optuna RDB storage URL every task shares; empty: $EDGECOMPRESS_NAS_STORAGE (on a cluster from the
    `nas_storage_secret` Secret, the password as $PGPASSWORD).""",
)
