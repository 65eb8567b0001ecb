"""The production loop on a real MLflow server (tests/lineage's: `mlflow server` over moto's S3)."""

from tests.lineage.conftest import mlflow_server  # noqa: F401  (the session's server fixture)
