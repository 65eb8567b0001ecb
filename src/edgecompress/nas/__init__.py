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

Layout: `space` (the search space as data), `pareto` (front, ranks, hypervolume), `search` (config,
constraint checks, the optuna study), `report` (summary, plot, HTML), `step` (the step the component
and the CLI call: search → retrain → artifacts → lineage).
"""

# What code outside the package imports; everything else is reached through its submodule.
from edgecompress.nas.pareto import hypervolume, pareto_front
from edgecompress.nas.report import summarize
from edgecompress.nas.search import (
    Constraints,
    LatencyMeter,
    NasConfig,
    accuracy_on,
    candidate_cost,
    low_fidelity_accuracy,
    retrain,
    search,
)
from edgecompress.nas.space import SearchSpace
from edgecompress.nas.step import NasStepOptions, nas_step

__all__ = [
    "Constraints",
    "LatencyMeter",
    "NasConfig",
    "SearchSpace",
    "accuracy_on",
    "candidate_cost",
    "hypervolume",
    "low_fidelity_accuracy",
    "NasStepOptions",
    "nas_step",
    "pareto_front",
    "retrain",
    "search",
    "summarize",
]
