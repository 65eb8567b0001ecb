"""Applies an `edgecompress.platform.PlatformConfig` to the tasks of the pipeline being built, with
kfp-kubernetes: Secrets as environment variables, node selectors and tolerations for on-node
benchmarks, GPU limits for training, CPU/memory requests and limits, retries for the network-bound
tasks, caching per task, the components image and pull settings, the pipeline run id from the pod's
`pipeline/runid` label (never an input: an input that changes every run defeats KFP's cache), and an
exit handler that ends the MLflow parent run FINISHED or FAILED.

Every pipeline builder wraps its body with `on_platform(body, platform)`; `apply_platform_config` walks
every task of the pipeline under construction (nested groups included).
"""

# No `from __future__ import annotations` here: pipeline modules keep their annotations for KFP.
import contextlib
import functools
import inspect
import re

from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from edgecompress.lineage import PIPELINE_RUN_ENV
from edgecompress.platform import NEVER_CACHED, PlatformConfig
from edgecompress.settings import component_image

# Label the KFP v2 API server puts on every pod of a run (backend/src/apiserver/template: the run id).
RUN_ID_FIELD_PATH = "metadata.labels['pipeline/runid']"


@dsl.component(base_image=component_image(), install_kfp_package=False)
def end_pipeline_run(
    status: dsl.PipelineTaskFinalStatus, experiment: str = "edgecompress", track: bool = True
):
    """Exit handler: ends the pipeline's MLflow parent run FINISHED (the pipeline succeeded) or FAILED."""
    import os

    from edgecompress import lineage

    run_id = os.environ.get(lineage.PIPELINE_RUN_ENV, "")
    if track and run_id:
        ended = lineage.end_pipeline_run(run_id, "FINISHED" if status.state == "SUCCEEDED" else "FAILED")
        print(
            f"pipeline {status.pipeline_job_resource_name}: {status.state}; ended {ended} MLflow parent run(s)"
        )


@dsl.component(base_image=component_image(), install_kfp_package=False)
def benchmark_node_selector(device_class: str, label: str, labels: dict) -> dict:
    """On-node benchmark mode, per device class: the node selector of that class's edge-benchmark task
    (the platform's `benchmark_node_selector` labels plus `label`=<device class>)."""
    return {**labels, label: device_class}


def component_name(task: dsl.PipelineTask) -> str:
    """The component's function name (`edge_benchmark`) of a task."""
    return (task.component_spec.name or "").replace("-", "_")


def pipeline_components(pipeline) -> set[str]:
    """Function names of every container component a compiled pipeline runs (nested pipelines too)."""
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    return {re.sub(r"-\d+$", "", name.removeprefix("exec-")).replace("-", "_") for name in executors}


def current_tasks() -> list[dsl.PipelineTask]:
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    if pipeline is None:
        raise RuntimeError("apply_platform_config must be called inside a @dsl.pipeline function")
    return list(pipeline.tasks.values())


@contextlib.contextmanager
def exit_handler(config: PlatformConfig | None, values: dict):
    """On a cluster (a platform config), the body runs under a dsl.ExitHandler whose task ends the
    MLflow parent run; locally the runner ends it."""
    if config is None:
        yield
        return
    task = end_pipeline_run(
        experiment=values.get("experiment", "edgecompress"), track=values.get("track", True)
    ).set_display_name("end-mlflow-run")
    with dsl.ExitHandler(task, name="pipeline-body"):
        yield


def on_platform(body, config: PlatformConfig | None, exit_task: bool = True):
    """`body` (a pipeline function taking *args with a __signature__) run under the exit handler, then
    the platform config applied to every task. `exit_task=False` for a pipeline nested in another."""
    names = list(body.__signature__.parameters)
    handled = config is not None and exit_task

    @functools.wraps(body)
    def pipeline_func(*args):
        with exit_handler(config if exit_task else None, dict(zip(names, args, strict=True))):
            out = body(*args)
        apply_platform_config(config)
        # KFP takes no pipeline output from inside an ExitHandler: on a cluster the gate's result is
        # its task's artifact (the UI, MLflow), not a pipeline output.
        return None if handled else out

    if handled:
        pipeline_func.__signature__ = body.__signature__.replace(return_annotation=inspect.Signature.empty)
    return pipeline_func


def apply_platform_config(config: PlatformConfig | None, tasks: list[dsl.PipelineTask] | None = None) -> None:
    """Set Kubernetes options on each task (of the pipeline being built, unless `tasks` is given)."""
    if config is None:
        return
    default_image = component_image()
    for task in current_tasks() if tasks is None else tasks:
        if task.container_spec is None:  # importer or nested pipeline
            continue
        name = component_name(task)
        ours = task.container_spec.image == default_image
        if ours and config.image:
            task.container_spec.image = config.image
        if ours and config.image_pull_policy:
            kubernetes.set_image_pull_policy(task, config.image_pull_policy)
        if config.image_pull_secret:
            kubernetes.set_image_pull_secrets(task, [config.image_pull_secret])
        kubernetes.use_field_path_as_env(task, env_name=PIPELINE_RUN_ENV, field_path=RUN_ID_FIELD_PATH)
        for secret, keys in config.secrets_for(name):
            kubernetes.use_secret_as_env(
                task, secret_name=secret, secret_key_to_env=keys, optional=config.secrets_optional
            )
        if name in config.farm_components:
            for key, value in config.farm_client_label.items():
                kubernetes.add_pod_label(task, label_key=key, label_value=value)
        if name in config.benchmark_components:
            for key, value in config.benchmark_node_selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            for tol in config.benchmark_tolerations:
                kubernetes.add_toleration(
                    task,
                    key=tol.key,
                    operator=tol.operator,
                    value=tol.value if tol.operator == "Equal" else None,
                    effect=tol.effect,
                )
        if name in config.training_components and config.train_gpus:
            task.set_accelerator_type(config.gpu_resource).set_accelerator_limit(config.train_gpus)
            for key, value in config.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
        resources = config.resources.get(name, {})
        for key, setter in (
            ("cpu_request", task.set_cpu_request),
            ("cpu_limit", task.set_cpu_limit),
            ("memory_request", task.set_memory_request),
            ("memory_limit", task.set_memory_limit),
        ):
            if resources.get(key):
                setter(resources[key])
        if name in config.retry_components and config.retries:
            task.set_retry(
                num_retries=config.retries, backoff_duration=f"{config.retry_backoff_s}s", backoff_factor=2.0
            )
        if name in NEVER_CACHED:
            task.set_caching_options(False)
        elif name in config.caching:
            task.set_caching_options(config.caching[name])
        if config.run_as_user is not None:
            kubernetes.set_security_context(
                task,
                run_as_user=config.run_as_user,
                run_as_group=config.run_as_user,
                run_as_non_root=config.run_as_user != 0,
            )
