"""`edgecompress submit` and `edgecompress schedule`: compile a pipeline with its Kubernetes platform
settings, upload it to a Kubeflow Pipelines endpoint (kfp.Client), then start a run or a recurring run.
Also the options and helpers `edgecompress compile` shares with them."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pkgutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgecompress.entry import add_command
from edgecompress.errors import ConfigError
from edgecompress.platform import PlatformConfig, Toleration

# The Kubernetes Secrets the tasks read, by option: what each holds (and its default name).
SECRET_OPTIONS = {
    "--image-pull-secret": "registry credentials for the task pods",
    "--mlflow-secret": "tracking-uri/username/password (default edgecompress-mlflow; '' for none)",
    "--s3-secret": "access-key-id/secret-access-key/endpoint-url (default edgecompress-s3)",
    "--farm-secret": "the farm client-token (default edgecompress-farm)",
    "--nas-storage-secret": "the NAS fan-out's optuna storage url/password (default edgecompress-nas-storage)",
}


def add_platform_args(parser: argparse.ArgumentParser) -> None:
    """Image and Kubernetes options shared by compile, submit and schedule."""
    g = parser.add_argument_group("image and Kubernetes settings of the tasks")
    g.add_argument(
        "--platform-config",
        type=Path,
        metavar="FILE",
        help="YAML/JSON file of edgecompress.platform.PlatformConfig fields (the options below override it)",
    )
    g.add_argument(
        "--image",
        help="components image for every task (default: --registry/--tag, else "
        "EDGECOMPRESS_IMAGE, else EDGECOMPRESS_REGISTRY/components:<version>)",
    )
    g.add_argument(
        "--registry", help="image registry, e.g. registry.example.com/ml (image <registry>/components:<tag>)"
    )
    g.add_argument("--tag", help="image tag (default: the package version)")
    for option, holds in SECRET_OPTIONS.items():
        g.add_argument(option, help=f"Secret with {holds}")
    g.add_argument(
        "--benchmark-node-selector",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="on-node benchmark mode: run edge_benchmark on nodes with this label (repeatable)",
    )
    g.add_argument(
        "--benchmark-class-label",
        metavar="LABEL",
        help="on-node benchmark mode per device class: each class's edge_benchmark task (one per class) also "
        "selects nodes whose LABEL is the class's name, e.g. edgecompress.io/device-class",
    )
    g.add_argument(
        "--benchmark-toleration",
        action="append",
        default=[],
        metavar="KEY[=VALUE][:EFFECT]",
        help="toleration for the benchmark tasks, e.g. edgecompress.io/device=rpi4:NoSchedule (repeatable)",
    )
    g.add_argument("--train-gpus", type=int, help="GPU limit for the training tasks (default 0: CPU)")
    g.add_argument(
        "--cache",
        action="append",
        default=[],
        metavar="COMPONENT=on|off",
        help="caching for one component's tasks, e.g. train=off (repeatable); benchmarks, isa-check, "
        "the gate, quantize/autotune/nas (they measure latency), drift checks and promotion are never cached",
    )
    for option, what in (("cpu", "CPU, e.g. train=1:2"), ("memory", "memory, e.g. train=1Gi:2Gi")):
        g.add_argument(
            f"--{option}",
            action="append",
            default=[],
            metavar="COMPONENT=REQUEST[:LIMIT]",
            help=f"{what} for one component's tasks (repeatable; defaults sized from measured peaks)",
        )
    g.add_argument("--retries", type=int, help="retries of the network-bound tasks (default 3)")


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def platform_from_args(args: argparse.Namespace) -> PlatformConfig:
    data = {}
    if args.platform_config:
        data = PlatformConfig.from_file(args.platform_config).to_dict()
    if args.image:
        data["image"] = args.image
    elif args.registry or args.tag:
        from edgecompress import __version__
        from edgecompress.settings import DEFAULT_REGISTRY

        registry = (args.registry or os.environ.get("EDGECOMPRESS_REGISTRY", DEFAULT_REGISTRY)).rstrip("/")
        data["image"] = f"{registry}/components:{args.tag or __version__}"
    for opt in (
        "image_pull_secret",
        "mlflow_secret",
        "s3_secret",
        "farm_secret",
        "nas_storage_secret",
        "train_gpus",
        "retries",
        "benchmark_class_label",
    ):
        if getattr(args, opt) is not None:
            data[opt] = getattr(args, opt)
    if args.benchmark_node_selector:
        data["benchmark_node_selector"] = _pairs(args.benchmark_node_selector, "--benchmark-node-selector")
    if args.benchmark_toleration:
        data["benchmark_tolerations"] = [Toleration.parse(t) for t in args.benchmark_toleration]
    caching = dict(data.get("caching", {}))
    for name, value in _pairs(args.cache, "--cache").items():
        if value not in ("on", "off"):
            raise ConfigError(f"--cache {name}={value}: expected on or off")
        caching[name] = value == "on"
    data["caching"] = caching
    resources = {k: dict(v) for k, v in data.get("resources", {}).items()}
    for option in ("cpu", "memory"):
        for name, value in _pairs(getattr(args, option), f"--{option}").items():
            request, _, limit = value.partition(":")
            if not request:
                raise ConfigError(f"--{option} {name}={value}: expected COMPONENT=REQUEST[:LIMIT]")
            resources.setdefault(name, {})[f"{option}_request"] = request
            if limit:
                resources[name][f"{option}_limit"] = limit
    data["resources"] = resources
    platform = PlatformConfig.from_dict(data, where="command-line platform options")
    platform.check_known(known_components())
    return platform


def known_components() -> set[str]:
    """Every component a pipeline of this project can run (components/ + the pipelines' own)."""
    from edgecompress.components import component_names

    return set(component_names()) | {"drift_retrain_field", "end_pipeline_run", "benchmark_node_selector"}


def pipeline_builders() -> dict[str, object]:
    """Every pipeline in edgecompress.pipelines: name -> build_pipeline(…) of its module."""
    import edgecompress.pipelines as package

    out = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        builder = getattr(module, "build_pipeline", None)
        if callable(builder):
            out[getattr(module, "PIPELINE_NAME", info.name.replace("_", "-"))] = builder
    return out


def build(name: str, platform: PlatformConfig, chain: list[str] | None = None, check: bool = True):
    """One pipeline built with the platform config on every task; an option it cannot honour (a
    builder without `platform`, a chain it does not take, a setting naming none of its tasks) is an
    error, never dropped (`check=False`: the caller checks, e.g. `compile --all` over all pipelines)."""
    from edgecompress.pipelines.platform import pipeline_components

    builders = pipeline_builders()
    if name not in builders:
        raise ConfigError(f"pipeline {name!r}: unknown; available: {sorted(builders)}")
    builder = builders[name]
    accepted = inspect.signature(builder).parameters
    if "platform" not in accepted:
        raise ConfigError(
            f"pipeline {name!r}: its builder takes no platform config, so it cannot run on a cluster"
        )
    kwargs = {"platform": platform}
    if chain and "chain" in accepted:
        kwargs["chain"] = chain
    elif chain:
        raise ConfigError(f"pipeline {name!r} takes no --chain")
    pipeline = builder(**kwargs)
    if check:
        platform.check_honoured(name, pipeline_components(pipeline))
    return pipeline


def compile_pipeline(
    name: str, output: Path, platform: PlatformConfig, chain: list[str] | None = None, pipeline=None
) -> Path:
    """Compile pipeline `name` (or the `pipeline` already built) to KFP IR YAML at `output`."""
    from kfp import compiler

    from edgecompress.io import atomic_path

    pipeline = pipeline or build(name, platform, chain)
    with atomic_path(output) as tmp:
        yaml_tmp = tmp.with_suffix(".yaml")
        compiler.Compiler().compile(pipeline, str(yaml_tmp))
        yaml_tmp.replace(tmp)
    return output


def _parse_params(pairs: list[str]) -> dict:
    out = {}
    for key, raw in _pairs(pairs, "--param").items():
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def check_params(package: Path, params: dict) -> None:
    """Every --param must be a parameter of the compiled pipeline."""
    import yaml

    spec = next(yaml.safe_load_all(package.read_text()))  # the pipeline spec; the platform spec follows
    known = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"--param {', '.join(unknown)}: not a parameter of {spec['pipelineInfo']['name']}; "
            f"known: {sorted(known)}"
        )


def _client(args: argparse.Namespace):
    import kfp

    kwargs = {"host": args.host}
    if args.namespace:
        kwargs["namespace"] = args.namespace
    if args.token_env and os.environ.get(args.token_env):
        kwargs["existing_token"] = os.environ[args.token_env]
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # kfp raises plain exceptions for unreachable hosts
        raise ConfigError(f"Kubeflow Pipelines at {args.host}: {exc}") from exc


def _upload(client, package: Path, name: str, description: str) -> tuple[str, str]:
    """Upload the package as pipeline `name` (a new version when it exists); (pipeline id, version id)."""
    pipeline_id = client.get_pipeline_id(name)
    version_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=name, description=description)
        pipeline_id = pipeline.pipeline_id
    version = client.upload_pipeline_version(
        str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description
    )
    return pipeline_id, version.pipeline_version_id


def _prepare(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Compile, check and upload the pipeline; (the KFP client, the keyword arguments of a run)."""
    platform = platform_from_args(args)
    chain = [s.strip() for s in args.chain.split(",") if s.strip()] if args.chain else None
    params = _parse_params(args.param)
    client = _client(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(args.pipeline, Path(tmp) / f"{args.pipeline}.yaml", platform, chain)
        check_params(package, params)
        pipeline_id, version_id = _upload(
            client,
            package,
            args.pipeline_name or args.pipeline,
            args.description or f"edgecompress {args.pipeline}",
        )
    experiment = client.create_experiment(args.experiment, namespace=args.namespace)
    # what a run and a recurring run both take
    return client, {
        "experiment_id": experiment.experiment_id,
        "params": params,
        "pipeline_id": pipeline_id,
        "version_id": version_id,
        "enable_caching": None if args.enable_caching is None else args.enable_caching == "on",
        "service_account": args.service_account,
    }


def cmd_submit(args: argparse.Namespace) -> int:
    """upload a pipeline to Kubeflow Pipelines and start a run

    Compile a pipeline with its Kubernetes settings, upload it (a new version when it exists) and start a
    run; prints the run id and URL."""
    client, run_kwargs = _prepare(args)
    run_name = args.run_name or f"{args.pipeline} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    run = client.run_pipeline(job_name=run_name, **run_kwargs)
    print(f"run id:  {run.run_id}")
    print(f"run URL: {args.host.rstrip('/')}/#/runs/details/{run.run_id}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    """upload a pipeline and create a recurring run (cron)

    Compile and upload a pipeline, then create a recurring run on a cron schedule; prints the recurring
    run id and URL."""
    if len(args.cron.split()) != 6:
        raise ConfigError(f"--cron {args.cron!r}: KFP takes 6 fields (seconds first), e.g. '0 0 3 * * *'")
    client, run_kwargs = _prepare(args)
    job = client.create_recurring_run(
        job_name=args.job_name or f"{args.pipeline} ({args.cron})",
        cron_expression=args.cron,
        max_concurrency=args.max_concurrency,
        no_catchup=not args.catchup,
        **run_kwargs,
    )
    print(f"recurring run id:  {job.recurring_run_id}")
    print(f"recurring run URL: {args.host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. http://ml-pipeline-ui.kubeflow"
    )
    p.add_argument("--pipeline", default="edge-compression", help="which pipeline (default edge-compression)")
    p.add_argument("--chain", help="edge-compression: compression steps in order, comma-separated")
    p.add_argument("--pipeline-name", help="name of the uploaded pipeline (default: the pipeline's name)")
    p.add_argument("--description", help="description of the uploaded pipeline version")
    p.add_argument("--experiment", default="edgecompress", help="KFP experiment (created when missing)")
    p.add_argument("--namespace", help="Kubeflow namespace (multi-user installs)")
    p.add_argument(
        "--token-env",
        default="KFP_TOKEN",
        help="environment variable holding a bearer token (default KFP_TOKEN)",
    )
    p.add_argument("--service-account", help="Kubernetes service account for the run's pods")
    p.add_argument(
        "--enable-caching", choices=("on", "off"), help="override every task's caching for this run"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameter (JSON values parsed, else a string), repeatable",
    )
    add_platform_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    submit = add_command(sub, cmd_submit)
    _common(submit)
    submit.add_argument("--run-name", help="run name (default: pipeline and time)")

    schedule = add_command(sub, cmd_schedule)
    _common(schedule)
    schedule.add_argument(
        "--cron",
        required=True,
        help="KFP cron expression, 6 fields with seconds first, e.g. '0 0 3 * * *' (03:00 daily)",
    )
    schedule.add_argument("--job-name", help="recurring run name (default: pipeline and schedule)")
    schedule.add_argument("--max-concurrency", type=int, default=1, help="runs at once (default 1)")
    schedule.add_argument("--catchup", action="store_true", help="run missed intervals after a pause")
