"""KFP component: the NAS fan-out's first task: create (or resume) the optuna study the workers share."""

from edgecompress.components.factory import technique_component
from edgecompress.nas import Constraints, NasConfig, NasStepOptions
from edgecompress.nas.distributed import FanoutConfig, create_study
from edgecompress.params import build
from edgecompress.step import Lineage

# The settings of all three fan-out components (one pipeline parameter each).
SURFACES = (NasStepOptions, NasConfig, Constraints, FanoutConfig, Lineage)


def run(dataset, **settings) -> str:
    options = build(NasStepOptions, settings)
    return create_study(
        options.storage, options.study_name, dataset.path, options.search_space, build(Constraints, settings),
        build(NasConfig, settings), options.farm_url, build(Lineage, settings), build(FanoutConfig, settings),
    )  # fmt: skip


nas_create_study = technique_component(
    "nas_create_study",
    run,
    inputs={"dataset": "Dataset"},
    surfaces=SURFACES,
    returns="str",
    doc="""Creates the optuna study (or loads it: a re-run resumes it, refusing another space, constraints or
    fidelity) and the MLflow search run every trial nests under; returns the study's name
    (`study_name`, or a name derived from the data and settings). Settings are the `nas` component's (search space, budget `n_trials`, fidelity, constraints, `strategy`,
    `seed`) plus the fan-out's heartbeat (`heartbeat_interval_s`, `grace_period_s`, `max_retry`). `storage`: the
    optuna RDB storage URL every task shares; empty: $EDGECOMPRESS_NAS_STORAGE (on a cluster from the
    `nas_storage_secret` Secret, the password as $PGPASSWORD).""",
)
