"""Drift detection between a new batch and the data a model was trained on, and the retrain trigger.

- Tabular inputs (samples are 1-D feature vectors): per-feature two-sample Kolmogorov–Smirnov
  (numeric) or chi-squared (categorical) tests, Bonferroni-corrected over features, plus the
  population stability index (PSI) per feature.
- Images: black-box shift detection (Lipton et al. 2018; Rabanser et al. 2019): univariate KS tests
  on each class probability of the deployed model's softmax output, Bonferroni-corrected over
  classes, and a kernel MMD permutation test on the model's penultimate-layer embeddings (read from
  the ONNX graph by exposing the classifier's input as an extra output). The two families are
  combined with a second Bonferroni factor of 2, so the false-positive rate stays at most alpha.
- The reference data is found through the model's lineage in MLflow (the Dataset artifact stored
  with its training run, verified by digest): a check needs only the model and the new batch.
  Reference samples are the held-out val + test splits, which the model never fitted.

Bad input (wrong shape or feature names, an empty batch, a model without dataset lineage, an
unreachable tracking server) raises before anything is written, and never starts a retrain.

Modules: `statistics` (the two-sample tests), `reference` (the batch and the lineage-resolved
reference data), `detectors` (DriftConfig and the tabular and image detectors), `report` (HTML
report), `step` (the CLI's and components' entry points), `champion` (challenger vs the production
model before `<class>-production` moves).
"""

from edgecompress.drift.detectors import (
    DriftConfig,
    EmbeddingModel,
    ImageDriftDetector,
    penultimate_output,
    tabular_drift,
)
from edgecompress.drift.statistics import bonferroni, mmd_permutation_test, psi
from edgecompress.drift.step import (
    DriftCheckOptions,
    check_and_report,
    drift_check_step,
    promote_step,
    retrain_arguments,
    retrain_plan_field,
)

__all__ = [
    "DriftCheckOptions",
    "DriftConfig",
    "EmbeddingModel",
    "ImageDriftDetector",
    "bonferroni",
    "check_and_report",
    "drift_check_step",
    "mmd_permutation_test",
    "penultimate_output",
    "promote_step",
    "psi",
    "retrain_arguments",
    "retrain_plan_field",
    "tabular_drift",
]
