"""`edgecompress farm …`: the device farm's controller, agent, client commands and a local farm."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgecompress.errors import ConfigError

CLIENT_HELP = "farm controller URL (default: $EDGECOMPRESS_FARM_URL or http://127.0.0.1:8080)"


def register(sub: argparse._SubParsersAction) -> None:
    farm = sub.add_parser(
        "farm",
        help="device farm: controller, agent, submit jobs, inspect devices and jobs",
        description="A pull-based device farm: a controller with a durable job queue, and agents "
        "on the devices that claim benchmark jobs for their device class.",
    )
    fsub = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND", required=True)

    p = fsub.add_parser(
        "controller",
        help="serve the farm controller (HTTP API + job store)",
        description="Serve the controller. Tokens: $EDGECOMPRESS_FARM_CLIENT_TOKEN and "
        "$EDGECOMPRESS_FARM_AGENT_TOKEN, or --client-token-file/--agent-token-file.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--db-url", default="sqlite:///farm.db", help="SQLAlchemy URL: sqlite:///farm.db or postgresql://…"
    )
    p.add_argument(
        "--blob-dir", type=Path, default=Path("farm-blobs"), help="where uploaded models are stored"
    )
    p.add_argument("--client-token-file", type=Path, help="file holding the client bearer token")
    p.add_argument("--agent-token-file", type=Path, help="file holding the agent bearer token")
    p.add_argument(
        "--lease-s", type=float, default=30.0, help="lease length; heartbeats renew it (default 30)"
    )
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
    p.set_defaults(func=cmd_controller)

    p = fsub.add_parser(
        "agent",
        help="run a device agent that pulls benchmark jobs",
        description="Pull jobs for one device class from the controller and benchmark them in a "
        "child process. Token: $EDGECOMPRESS_FARM_AGENT_TOKEN or --token-file.",
    )
    p.add_argument("--controller", required=True, help="controller URL, e.g. http://farm:8080")
    p.add_argument("--device-class", required=True, help="the device class this agent serves, e.g. rpi4")
    p.add_argument(
        "--emulate", help="emulate a device class on this machine (rpi4-emulated, jetson-orin-nano-emulated)"
    )
    p.add_argument("--agent-id", help="stable agent id (default: hostname-class-random)")
    p.add_argument("--token-file", type=Path, help="file holding the agent bearer token")
    p.add_argument("--poll-wait-s", type=float, default=10.0, help="long-poll wait per claim (default 10)")
    p.add_argument(
        "--memory-limit-mb", type=float, default=4096, help="benchmark child's address-space limit"
    )
    p.add_argument("--max-model-mb", type=float, default=256, help="largest model the agent downloads")
    p.add_argument("--work-dir", type=Path, help="where models are downloaded (default: system temp)")
    p.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    p.set_defaults(func=cmd_agent)

    p = fsub.add_parser(
        "submit",
        help="benchmark a model on device classes through the farm",
        description="Upload an ONNX model, submit one job per device class, wait, print results.",
    )
    p.add_argument("model", type=Path, help="ONNX model file or Model artifact directory")
    p.add_argument("--device-classes", required=True, help="comma-separated device classes")
    p.add_argument("--settings", default="{}", help="benchmark settings as JSON, e.g. '{\"min_runs\": 500}'")
    p.add_argument("--timeout-s", type=float, default=600.0, help="give up after this long (default 600)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (-1000…1000)")
    p.add_argument("--output", type=Path, help="write the full results JSON here")
    _client_args(p)
    p.set_defaults(func=cmd_submit)

    p = fsub.add_parser(
        "devices", help="list agents and their last heartbeat", description="List registered agents."
    )
    _client_args(p)
    p.set_defaults(func=cmd_devices)

    p = fsub.add_parser("jobs", help="list jobs and queue depth", description="Job history, newest first.")
    p.add_argument("--state", choices=["queued", "leased", "done", "failed"], help="only jobs in this state")
    p.add_argument("--device-class", help="only this device class")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    _client_args(p)
    p.set_defaults(func=cmd_jobs)

    p = fsub.add_parser(
        "up",
        help="start a farm on this machine (controller + emulated agents)",
        description="Start a controller on loopback with one emulated agent per class; Ctrl-C stops it.",
    )
    p.add_argument("--local", action="store_true", required=True, help="emulated agents on this machine")
    p.add_argument(
        "--device-classes", default="rpi4-emulated,jetson-orin-nano-emulated", help="comma-separated"
    )
    p.add_argument("--port", type=int, default=8080, help="controller port (default 8080)")
    p.add_argument("--dir", type=Path, default=Path("edgecompress-farm"), help="database, blobs and logs")
    p.set_defaults(func=cmd_up)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--farm-url",
        default=os.environ.get("EDGECOMPRESS_FARM_URL", "http://127.0.0.1:8080"),
        help=CLIENT_HELP,
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the client token (default $EDGECOMPRESS_FARM_CLIENT_TOKEN)",
    )


def _client(args: argparse.Namespace):
    from edgecompress.farm.client import FarmClient
    from edgecompress.farm.controller import CLIENT_TOKEN_ENV, read_token

    return FarmClient(args.farm_url, read_token(None, args.token_file, CLIENT_TOKEN_ENV) or None)


def cmd_controller(args: argparse.Namespace) -> int:
    from edgecompress.farm.controller import (
        AGENT_TOKEN_ENV,
        CLIENT_TOKEN_ENV,
        ControllerConfig,
        read_token,
        serve,
    )

    config = ControllerConfig(
        db_url=args.db_url, blob_dir=args.blob_dir,
        client_token=read_token(None, args.client_token_file, CLIENT_TOKEN_ENV),
        agent_token=read_token(None, args.agent_token_file, AGENT_TOKEN_ENV),
        lease_s=args.lease_s, max_attempts=args.max_attempts, live_after_s=args.live_after_s,
        max_model_bytes=int(args.max_model_mb * 1024 * 1024), max_json_bytes=int(args.max_json_mb * 1024 * 1024),
        sweep_interval_s=args.sweep_interval_s,
    )  # fmt: skip
    config.validate()
    serve(config, args.host, args.port, args.log_level)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from edgecompress.farm.agent import AGENT_TOKEN_ENV, AgentConfig, run_agent
    from edgecompress.farm.controller import read_token

    config = AgentConfig(
        controller=args.controller, token=read_token(None, args.token_file, AGENT_TOKEN_ENV),
        device_class=args.device_class, emulate=args.emulate, agent_id=args.agent_id, poll_wait_s=args.poll_wait_s,
        memory_limit_bytes=int(args.memory_limit_mb * 1024 * 1024), max_model_bytes=int(args.max_model_mb * 1024 * 1024),
        work_dir=args.work_dir, max_jobs=args.max_jobs,
    )  # fmt: skip
    n = run_agent(config)
    print(f"agent stopped after {n} job(s)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from edgecompress.farm.client import benchmark_on_farm
    from edgecompress.farm.controller import CLIENT_TOKEN_ENV, read_token
    from edgecompress.farm.devices import parse_device_classes
    from edgecompress.io import atomic_path

    model = args.model / "model.onnx" if args.model.is_dir() else args.model
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
    )
    for cls, r in results.items():
        lat = r["latency_ms"]
        label = " (emulated)" if r.get("emulated") else ""
        print(
            f"{cls}{label}: p50 {lat['p50']:.4f} ms  p90 {lat['p90']:.4f} ms  p99 {lat['p99']:.4f} ms  "
            f"runs {r['runs']}  provider {r['provider_used']}  job {r['job_id']} on {r['agent_id']}"
        )
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.output}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    devices = _client(args).devices()
    if not devices:
        print("no agents registered")
    for d in devices:
        f = d["facts"]
        print(
            f"{'live' if d['live'] else 'DOWN':4}  {d['device_class']:28} {d['id']:40} last beat "
            f"{d['seconds_since_heartbeat']:.0f} s ago  {f.get('cpu_model', '?')} ×{f.get('cpu_count', '?')}  "
            f"ORT {f.get('onnxruntime_version', '?')} {','.join(f.get('execution_providers', []))}"
            + ("  emulated" if f.get("emulated") else "")
        )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
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
    import signal
    import time

    from edgecompress.farm.devices import parse_device_classes
    from edgecompress.farm.local import local_farm

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the farm's processes too, like Ctrl-C
    classes = parse_device_classes(args.device_classes)
    with local_farm(classes, directory=args.dir, port=args.port) as farm:
        print(f"farm controller: {farm.url}  (agents: {', '.join(classes)}; emulated)")
        print(f"export EDGECOMPRESS_FARM_URL={farm.url}")
        print(f"export EDGECOMPRESS_FARM_CLIENT_TOKEN={farm.client_token}")
        print(f"logs and database: {args.dir}   Ctrl-C stops the farm", flush=True)
        try:
            while farm.controller.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0
