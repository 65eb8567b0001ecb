"""`edgecompress farm …` (and `python -m edgecompress.farm …`): the device farm's controller, agent,
client commands and a local farm. Registered by the CLI adapter and by the farm's own entry point."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from edgecompress.entry import add_command
from edgecompress.errors import ConfigError
from edgecompress.runtime.devices import DEFAULT_DEVICE_CLASSES, PROFILES_ENV

CLIENT_HELP = "farm controller URL (default: $EDGECOMPRESS_FARM_URL or http://127.0.0.1:8080)"


def register(sub: argparse._SubParsersAction) -> None:
    farm = sub.add_parser(
        "farm",
        help="device farm: controller, agent, submit jobs, inspect devices and jobs",
        description="A pull-based device farm: a controller with a durable job queue, and agents "
        "on the devices that claim benchmark jobs for their device class.",
    )
    fsub = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND", required=True)
    _controller_parser(fsub)
    _agent_parser(fsub)
    _client_parsers(fsub)
    _up_parser(fsub)
    _admin_parsers(fsub)


def _controller_parser(fsub: argparse._SubParsersAction) -> None:
    p = add_command(fsub, cmd_controller)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--db-url", default="sqlite:///farm.db", help="SQLAlchemy URL: sqlite:///farm.db or postgresql://…"
    )
    p.add_argument(
        "--blob-dir", type=Path, default=Path("farm-blobs"), help="where uploaded models are stored"
    )
    p.add_argument("--admin-token-file", type=Path, help="file holding the admin bearer token")
    p.add_argument(
        "--lease-s", type=float, default=30.0, help="lease length; heartbeats renew it (default 30)"
    )
    p.add_argument(
        "--deadline-grace-s",
        type=float,
        default=30.0,
        help="a lease never outlives claim + the job's timeout_s + this (default 30)",
    )
    p.add_argument(
        "--restart-grace-s",
        type=float,
        help="after start-up, expired leases wait this long for their agents to report (default: --lease-s)",
    )
    p.add_argument(
        "--backoff-s",
        type=float,
        default=1.0,
        help="a released job's first wait before a new claim (doubles)",
    )
    p.add_argument(
        "--retention-days",
        type=float,
        default=30.0,
        help="delete finished jobs and unreferenced model blobs older than this (0 keeps them; default 30)",
    )
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM, chain first)")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    p.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json (token required)")
    p.add_argument("--max-attempts", type=int, default=3, help="leases per job before it fails (default 3)")
    p.add_argument("--live-after-s", type=float, default=30.0, help="an agent is live if it beat within this")
    p.add_argument("--max-model-mb", type=float, default=256, help="model upload limit in MiB (default 256)")
    p.add_argument(
        "--max-json-mb", type=float, default=16, help="other request bodies' limit in MiB (default 16)"
    )
    p.add_argument(
        "--sweep-interval-s", type=float, default=1.0, help="how often expired leases are requeued"
    )
    p.add_argument("--log-level", default="warning", help="uvicorn log level")


def _agent_parser(fsub: argparse._SubParsersAction) -> None:
    p = add_command(fsub, cmd_agent)
    p.add_argument("--controller", required=True, help="controller URL, e.g. http://farm:8080")
    p.add_argument("--device-class", required=True, help="the device class this agent serves, e.g. rpi4")
    p.add_argument(
        "--emulate",
        help=f"emulate a device class on this machine: an `emulated: true` class of the device profiles "
        f"(device_profiles.yaml, ${PROFILES_ENV})",
    )
    p.add_argument(
        "--agent-id", help="agent id (default: the one its token is bound to; hostname-class to enrol)"
    )
    p.add_argument(
        "--token-file", type=Path, help="file holding the agent's own token (re-read when it is rotated)"
    )
    p.add_argument(
        "--enrolment-token-file",
        type=Path,
        help="file holding an enrolment token, exchanged at start for the agent's own token "
        "(default $EDGECOMPRESS_FARM_ENROLMENT_TOKEN; used when no agent token is given)",
    )
    p.add_argument("--ca-bundle", type=Path, help="CA certificates that verify an HTTPS controller")
    p.add_argument("--poll-wait-s", type=float, default=10.0, help="long-poll wait per claim (default 10)")
    p.add_argument(
        "--memory-limit-mb", type=float, default=4096, help="benchmark child's address-space limit"
    )
    p.add_argument("--max-model-mb", type=float, default=256, help="largest model the agent downloads")
    p.add_argument("--work-dir", type=Path, help="where models are downloaded (default: system temp)")
    p.add_argument("--max-jobs", type=int, help="exit after this many jobs")


def _client_parsers(fsub: argparse._SubParsersAction) -> None:
    p = add_command(fsub, cmd_submit)
    p.add_argument("model", type=Path, help="ONNX model file or Model artifact directory")
    p.add_argument("--device-classes", required=True, help="comma-separated device classes")
    p.add_argument("--settings", default="{}", help="benchmark settings as JSON, e.g. '{\"min_runs\": 500}'")
    p.add_argument("--timeout-s", type=float, default=600.0, help="give up after this long (default 600)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (-1000…1000)")
    p.add_argument(
        "--paired-with",
        type=Path,
        help="a second ONNX model (or Model artifact directory) benchmarked in the same job, the two "
        "alternating in short blocks: their p50s and ratio come from the same moments of the device",
    )
    p.add_argument("--output", type=Path, help="write the full results JSON here")
    _client_args(p)

    p = add_command(fsub, cmd_devices)
    _client_args(p)

    p = add_command(fsub, cmd_jobs)
    p.add_argument("--state", choices=["queued", "leased", "done", "failed"], help="only jobs in this state")
    p.add_argument("--device-class", help="only this device class")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    _client_args(p)


def _up_parser(fsub: argparse._SubParsersAction) -> None:
    p = add_command(fsub, cmd_up)
    p.add_argument("--local", action="store_true", required=True, help="emulated agents on this machine")
    p.add_argument(
        "--device-classes",
        default=",".join(DEFAULT_DEVICE_CLASSES),
        help=f"comma-separated emulated classes of the device profiles (device_profiles.yaml, ${PROFILES_ENV})",
    )
    p.add_argument("--port", type=int, default=8080, help="controller port (default 8080)")
    p.add_argument("--dir", type=Path, default=Path("edgecompress-farm"), help="database, blobs and logs")


def _admin_parsers(fsub: argparse._SubParsersAction) -> None:
    admin = fsub.add_parser(
        "admin",
        help="enrol clients and agents, rotate and revoke tokens",
        description="Admin calls (token: $EDGECOMPRESS_FARM_ADMIN_TOKEN or --token-file). A token is "
        "printed once, when it is issued or rotated; the controller keeps only its hash. Rotation and "
        "revocation apply without a restart.",
    )
    asub = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)
    p = asub.add_parser("add-client", help="enrol a client (a team, a pipeline): prints its token")
    p.add_argument("name")
    _client_args(p)
    p.set_defaults(func=cmd_admin, action="add-client")
    p = asub.add_parser("add-agent", help="enrol an agent for device classes: prints its token")
    p.add_argument("agent_id")
    p.add_argument("--device-classes", required=True, help="comma-separated classes it may serve")
    p.add_argument("--emulated", action="store_true", help="its results are labelled emulated")
    _client_args(p)
    p.set_defaults(func=cmd_admin, action="add-agent")
    p = asub.add_parser(
        "add-enrolment-token", help="a token agents exchange for their own (a DaemonSet's Secret)"
    )
    p.add_argument("name")
    p.add_argument("--device-classes", required=True, help="comma-separated classes its agents may serve")
    p.add_argument("--emulated", action="store_true", help="its agents' results are labelled emulated")
    p.add_argument("--expires-in-s", type=float, help="stop accepting it after this many seconds")
    _client_args(p)
    p.set_defaults(func=cmd_admin, action="add-enrolment-token")
    for action, what in (
        ("rotate", "issue a new token (the old one stops working)"),
        ("revoke", "revoke"),
        ("readmit", "lift a revocation: the identity may enrol again through an enrolment token"),
    ):
        p = asub.add_parser(action, help=what)
        p.add_argument("kind", choices=["client", "agent", "enrolment"])
        p.add_argument("name")
        _client_args(p)
        p.set_defaults(func=cmd_admin, action=action)
    p = asub.add_parser("list", help="enrolled identities (never their tokens)")
    _client_args(p)
    p.set_defaults(func=cmd_admin, action="list")


def _same_named(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The options that are `config`'s fields under the same name, as its keyword arguments."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}


def _mib_bytes(mib: float) -> int:
    """An option's size in MiB as bytes."""
    return int(mib * 1024 * 1024)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--farm-url",
        default=os.environ.get("EDGECOMPRESS_FARM_URL", "http://127.0.0.1:8080"),
        help=CLIENT_HELP,
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the token (default $EDGECOMPRESS_FARM_CLIENT_TOKEN, for admin commands "
        "$EDGECOMPRESS_FARM_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--ca-bundle",
        type=Path,
        help="CA certificates that verify an HTTPS controller ($EDGECOMPRESS_FARM_CA_BUNDLE)",
    )


def _client(args: argparse.Namespace):
    from edgecompress.farm.client import FarmClient
    from edgecompress.farm.controller import CLIENT_TOKEN_ENV, read_token

    token = read_token(None, args.token_file, CLIENT_TOKEN_ENV) or None
    return FarmClient(args.farm_url, token, ca_bundle=args.ca_bundle)


def cmd_controller(args: argparse.Namespace) -> int:
    """serve the farm controller (HTTP API + job store)

    Serve the controller. The admin token ($EDGECOMPRESS_FARM_ADMIN_TOKEN or --admin-token-file) enrols
    clients and agents (`edgecompress farm admin …`); their tokens live hashed in the database."""
    from edgecompress.farm.controller import ADMIN_TOKEN_ENV, ControllerConfig, read_token, serve

    config = ControllerConfig(
        **_same_named(args, ControllerConfig),
        admin_token=read_token(None, args.admin_token_file, ADMIN_TOKEN_ENV),
        max_model_bytes=_mib_bytes(args.max_model_mb),
        max_json_bytes=_mib_bytes(args.max_json_mb),
        retention_s=args.retention_days * 86_400.0,
    )
    config.validate()
    serve(config, args.host, args.port, args.log_level)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """run a device agent that pulls benchmark jobs

    Pull jobs for one device class from the controller and benchmark them in a child process. Token:
    $EDGECOMPRESS_FARM_AGENT_TOKEN or --token-file."""
    from edgecompress.farm.agent import (
        AGENT_TOKEN_ENV,
        CA_BUNDLE_ENV,
        ENROLMENT_TOKEN_ENV,
        AgentConfig,
        run_agent,
    )
    from edgecompress.farm.tokens import read_token

    token = read_token(None, args.token_file, AGENT_TOKEN_ENV)
    enrolment = "" if token else read_token(None, args.enrolment_token_file, ENROLMENT_TOKEN_ENV)
    ca_bundle = args.ca_bundle or (Path(os.environ[CA_BUNDLE_ENV]) if os.environ.get(CA_BUNDLE_ENV) else None)
    config = AgentConfig(
        **{**_same_named(args, AgentConfig), "ca_bundle": ca_bundle},
        token=token,
        enrolment_token=enrolment,
        memory_limit_bytes=_mib_bytes(args.memory_limit_mb),
        max_model_bytes=_mib_bytes(args.max_model_mb),
    )
    n = run_agent(config)
    print(f"agent stopped after {n} job(s)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """benchmark a model on device classes through the farm

    Upload an ONNX model, submit one job per device class, wait, print results."""
    from edgecompress.farm.client import benchmark_on_farm
    from edgecompress.farm.controller import CLIENT_TOKEN_ENV, read_token
    from edgecompress.io import atomic_path
    from edgecompress.runtime.devices import parse_device_classes

    model = _onnx_file(args.model)
    paired_with = _onnx_file(args.paired_with) if args.paired_with else None
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--settings is not JSON: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigError("--settings must be a JSON object")
    results = benchmark_on_farm(
        args.farm_url,
        model,
        parse_device_classes(args.device_classes),
        settings,
        timeout_s=args.timeout_s,
        token=read_token(None, args.token_file, CLIENT_TOKEN_ENV) or None,
        priority=args.priority,
        ca_bundle=args.ca_bundle,
        paired_with=paired_with,
    )
    for cls, r in results.items():
        job = f"job {r['job_id']} on {r['agent_id']}"
        if "pairing" not in r:
            older = (
                "  (the agent ran the first model only: it is older than paired jobs)" if paired_with else ""
            )
            print(f"{cls}{_label(r)}: {_latency_line(r)}  {job}{older}")
            continue
        print(f"{cls}{_label(r['results'][0])}: {job}, paired ({r['pairing']['method']})")
        for path, one in zip((model, paired_with), r["results"], strict=True):
            print(f"  {path.name}: {_latency_line(one)}")
        print(f"  p50 ratio {model.name} / {paired_with.name}: {r['pairing']['ratio']:.4f}")
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output}")
    return 0


def _onnx_file(path: Path) -> Path:
    return path / "model.onnx" if path.is_dir() else path


def _label(result: dict[str, Any]) -> str:
    label = " (emulated)" if result.get("emulated") else ""
    return label + (" (QEMU: timing not meaningful)" if result.get("timing_meaningful") is False else "")


def _latency_line(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return (
        f"p50 {lat['p50']:.4f} ms  p90 {lat['p90']:.4f} ms  p99 {lat['p99']:.4f} ms  runs {result['runs']}  "
        f"provider {result['provider_used']}"
    )


def cmd_devices(args: argparse.Namespace) -> int:
    """list agents and their last heartbeat

    List registered agents."""
    from edgecompress.runtime.profilecheck import flagged_classes

    devices = _client(args).devices()
    if not devices:
        print("no agents registered")
    for d in devices:
        f = d["facts"]
        cpu = f.get("cpu") or {}
        print(
            f"{'live' if d['live'] else 'DOWN':4}  {d['device_class']:28} {d['id']:40} last beat "
            f"{d['seconds_since_heartbeat']:.0f} s ago  {f.get('cpu_model', '?')} ×{f.get('cpu_count', '?')}  "
            f"ORT {f.get('onnxruntime_version', '?')} {','.join(f.get('execution_providers', []))}"
            + f"  {cpu.get('isa', '?')}/{cpu.get('int8_dot_product') or '?'}"
            + ("  emulated" if f.get("emulated") else "")
        )
    for cls, why in flagged_classes(devices).items():
        print(f"FLAGGED {cls}: its agents disagree with its profile: " + "; ".join(why))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """list jobs and queue depth

    Job history, newest first."""
    client = _client(args)
    for cls, depth in sorted(client.queue()["depth"].items()):
        print(f"{cls}: " + "  ".join(f"{k} {v}" for k, v in depth.items()))
    for j in client.jobs(args.state, args.device_class, args.limit):
        print(
            f"#{j['id']:<6} {j['state']:7} {j['device_class']:28} {j['model_name'][:30]:30} attempts {j['attempts']}"
            + (f"  agent {j['agent_id']}" if j["agent_id"] else "")
            + (f"  {j['error']}" if j["error"] else "")
        )
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """start a farm on this machine (controller + emulated agents)

    Start a controller on loopback with one emulated agent per class; Ctrl-C stops it."""
    import signal
    import time

    from edgecompress.farm.local import local_farm
    from edgecompress.runtime.devices import parse_device_classes

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the farm's processes too, like Ctrl-C
    classes = parse_device_classes(args.device_classes)
    with local_farm(classes, directory=args.dir, port=args.port) as farm:
        print(f"farm controller: {farm.url}  (agents: {', '.join(classes)}; emulated)")
        print(f"export EDGECOMPRESS_FARM_URL={farm.url}")
        print(f"export EDGECOMPRESS_FARM_CLIENT_TOKEN={farm.client_token}")
        print(f"export EDGECOMPRESS_FARM_ADMIN_TOKEN={farm.admin_token}   # enrol more clients and agents")
        print(f"logs and database: {args.dir}   Ctrl-C stops the farm", flush=True)
        try:
            while farm.controller.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    from edgecompress.farm.admin import ADMIN_TOKEN_ENV, FarmAdmin
    from edgecompress.farm.tokens import read_token
    from edgecompress.runtime.devices import parse_device_classes

    admin = FarmAdmin(
        args.farm_url, read_token(None, args.token_file, ADMIN_TOKEN_ENV) or None, ca_bundle=args.ca_bundle
    )
    if args.action == "list":
        for i in admin.identities():
            state = (
                "active"
                if i["active"]
                else "revoked"
                if i["revoked_at"]
                else "awaiting-enrolment"
                if i.get("awaiting_enrolment")
                else "expired"
            )
            classes = ",".join(i["device_classes"])
            print(
                f"{i['kind']:10} {i['name']:40} {state:8} {classes}" + ("  emulated" if i["emulated"] else "")
            )
        return 0
    if args.action == "add-client":
        out = admin.add_client(args.name)
    elif args.action == "add-agent":
        out = admin.add_agent(args.agent_id, parse_device_classes(args.device_classes), args.emulated)
    elif args.action == "add-enrolment-token":
        out = admin.add_enrolment_token(
            args.name, parse_device_classes(args.device_classes), args.emulated, args.expires_in_s
        )
    elif args.action == "rotate":
        out = admin.rotate(args.kind, args.name)
    elif args.action == "readmit":
        out = admin.readmit(args.kind, args.name)
        print(f"re-admitted {args.kind} {args.name}: it may enrol again with {out['enrol_with']}")
        return 0
    else:
        admin.revoke(args.kind, args.name)
        print(f"revoked {args.kind} {args.name}")
        return 0
    print(out["token"])  # the only time it is shown
    return 0
