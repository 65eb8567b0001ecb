"""Applies an `edgecompress.platform.PlatformConfig` to the tasks of the pipeline being built, with
kfp-kubernetes: Secrets as environment variables, node selectors and tolerations for on-node
benchmarks, GPU limits for training, caching per task, the components image and pull settings.

Call `apply_platform_config(config)` at the end of a `@dsl.pipeline` function body: it walks every
task of the pipeline under construction (nested groups included).
"""

# No `from __future__ import annotations` here: pipeline modules keep their annotations for KFP.
from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from edgecompress.platform import PlatformConfig
from edgecompress.settings import component_image


def component_name(task: dsl.PipelineTask) -> str:
    """The component's function name (`edge_benchmark`) of a task."""
    return (task.component_spec.name or "").replace("-", "_")


def current_tasks() -> list[dsl.PipelineTask]:
    pipeline = pipeline_context.Pipeline.get_default_pipeline()
    if pipeline is None:
        raise RuntimeError("apply_platform_config must be called inside a @dsl.pipeline function")
    return list(pipeline.tasks.values())


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
        if name in config.caching:
            task.set_caching_options(config.caching[name])
        if config.run_as_user is not None:
            kubernetes.set_security_context(
                task,
                run_as_user=config.run_as_user,
                run_as_group=config.run_as_user,
                run_as_non_root=config.run_as_user != 0,
            )
