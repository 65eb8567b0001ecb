"""NAS fan-out on one PostgreSQL study: a 16-trial search with 1 worker vs 2 workers (each worker a
process running `edgecompress.nas.distributed.run_worker`, as a KFP task does), interleaved runs
(1, 2, 1, 2, …, one seed per pair), the wall-time ratio with its interval, the front's hypervolume
against the seed spread, and the study's coordination overhead: trials/s of an empty objective with
1, 2 and 4 worker processes. From the measured per-trial cost and overhead, the wall time on N nodes
is extrapolated on paper.

    .venv/bin/python -m benchmarks.nas.fanout.run [--pairs 3] [--quick --out DIR]

The machine is what it is (2 cores, shared with other work; the load average is recorded before and
after every run): two workers on two busy cores cannot show what two nodes would.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SPACE = {
    "families": {
        "cnn": {
            "stages": [1, 2], "depth": [1, 2], "channels": [8, 16, 24, 32], "width_mult": [0.5, 0.75, 1.0],
            "kernel_size": [3, 5], "activation": ["relu"], "downsample": ["maxpool"],
        }
    }
}  # fmt: skip
SEARCH = {
    "n_trials": 16, "search_epochs": 2, "train_samples": 600, "holdout_samples": 300, "eta": 2,
    "final_epochs": 1, "batch_size": 32, "lr": 1e-2, "startup_trials": 4,
    "search_bench": {"warmup_runs": 3, "min_runs": 20, "min_duration_s": 0.02},
}  # fmt: skip
FANOUT = {"heartbeat_interval_s": 5, "grace_period_s": 30, "max_retry": 1}
WORKER = """
import json, sys
from edgecompress.nas import Constraints, NasConfig
from edgecompress.nas.distributed import FanoutConfig, run_worker
from edgecompress.step import Lineage
a = json.loads(sys.argv[1])
run_worker(a["storage"], a["study"], a["dataset"], a["space"], Constraints(), NasConfig(**a["config"]),
           worker=a["worker"], lineage_ctx=Lineage(enabled=False), fanout=FanoutConfig(**a["fanout"]))
"""
EMPTY = """
import json, random, sys, time
from edgecompress.nas.distributed import FanoutConfig, optimize_until, rdb_storage
from edgecompress.nas.search import NasConfig, open_study
a = json.loads(sys.argv[1])
study = open_study(rdb_storage(a["storage"], FanoutConfig(**a["fanout"])), a["study"], "tpe", 0, a["n"])
study.set_user_attr(f"ready_{a['worker']}", True)
while sum(k.startswith("ready_") for k in study.user_attrs) < a["workers"]:  # all imported and connected
    time.sleep(0.05)
rng = random.Random(a["worker"])
def objective(trial):
    trial.suggest_int("x", 0, 100)
    return rng.random(), rng.random()
t0 = time.time()
ran = optimize_until(study, objective, NasConfig(n_trials=a["n"]), progress=False, poll_s=0.05)
print(json.dumps({"ran": ran, "t0": t0, "t1": time.time()}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EDGECOMPRESS_NO_PROGRESS": "1"}


def _spawn(code: str, args: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode}): {err[-3000:]}")
        outs.append(out)
    return outs


def search_run(server: Any, dataset: Path, workers: int, seed: int, search: dict[str, Any]) -> dict[str, Any]:
    """One search: create the study, start `workers` processes, wait; wall time from create to done."""
    import optuna

    from edgecompress.nas import Constraints, NasConfig
    from edgecompress.nas.distributed import FanoutConfig, accounted, create_study, rdb_storage
    from edgecompress.nas.pareto import pareto_front
    from edgecompress.step import Lineage

    url = server.new_database(f"w{workers}s{seed}")
    config = {**search, "seed": seed}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    name = create_study(url, f"bench-{workers}-{seed}", dataset, SPACE, Constraints(), NasConfig(**config),
                        lineage_ctx=Lineage(enabled=False), fanout=FanoutConfig(**FANOUT))  # fmt: skip
    args = {"storage": url, "study": name, "dataset": str(dataset), "space": SPACE, "config": config,
            "fanout": FANOUT}  # fmt: skip
    _wait([_spawn(WORKER, {**args, "worker": w}) for w in range(workers)])
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=rdb_storage(url, FanoutConfig(**FANOUT)))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    first = min(t.datetime_start for t in trials if t.datetime_start)
    last = max(t.datetime_complete for t in trials if t.datetime_complete)
    points = [(t.values[0], t.values[1]) for t in complete]
    front = [points[i] for i in pareto_front(points)]
    result = {
        "workers": workers, "seed": seed, "wall_s": wall, "search_s": (last - first).total_seconds(),
        "load_before": load, "load_after": os.getloadavg()[0],
        "trials": len(trials), "accounted": accounted(trials),
        "states": {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trial_seconds": [t.user_attrs.get("seconds") for t in trials if t.user_attrs.get("seconds") is not None],
        "workers_seen": len({t.user_attrs.get("worker") for t in trials}),
        "front": front,
    }  # fmt: skip
    server.drop_database(url)
    return result


def overhead_run(server: Any, workers: int, n: int) -> dict[str, Any]:
    """Trials/s of an empty objective (TPE, 2 objectives, the same loop and heartbeat as NAS)."""
    url = server.new_database(f"empty{workers}")
    load = os.getloadavg()[0]
    # the processes import and connect first; the clock starts when the study is created
    from edgecompress.nas.distributed import FanoutConfig, rdb_storage
    from edgecompress.nas.search import open_study

    open_study(rdb_storage(url, FanoutConfig(**FANOUT)), "empty", "tpe", 0, n)
    args = {"storage": url, "study": "empty", "n": n, "workers": workers, "fanout": FANOUT}
    outs = _wait([_spawn(EMPTY, {**args, "worker": w}) for w in range(workers)])
    done = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    wall = max(d["t1"] for d in done) - min(d["t0"] for d in done)  # from the barrier: no import time
    ran = [len(d["ran"]) for d in done]
    server.drop_database(url)
    return {"workers": workers, "trials": sum(ran), "per_worker": ran, "wall_s": wall,
            "load_before": load, "load_after": os.getloadavg()[0]}  # fmt: skip


def process_start_s(server: Any) -> float:
    """Seconds a worker process takes to import and reach the study (no trial): per task, on a node."""
    url = server.new_database("start")
    started = time.perf_counter()
    code = "import edgecompress.nas.distributed, optuna, torch, sys; from edgecompress.nas.distributed import rdb_storage; rdb_storage(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, url], env=_env(), check=True, capture_output=True)
    server.drop_database(url)
    return time.perf_counter() - started


def analyse(r: dict[str, Any]) -> dict[str, Any]:
    """Ratio with interval, hypervolume vs seed spread, extrapolation: all from the recorded runs."""
    from benchmarks.common import mean_interval
    from edgecompress.nas.pareto import hypervolume
    from edgecompress.stats import speedup_interval

    runs = r["runs"]
    one = {x["seed"]: x for x in runs if x["workers"] == 1}
    two = {x["seed"]: x for x in runs if x["workers"] == 2}
    seeds = sorted(set(one) & set(two))
    out: dict[str, Any] = {"pairs": len(seeds)}
    if len(seeds) >= 2:
        for key in ("wall_s", "search_s"):
            out[f"{key}_ratio_1_over_2"] = speedup_interval(
                [one[k][key] for k in seeds], [two[k][key] for k in seeds]
            )
    ref_ms = max(p[1] for x in runs for p in x["front"]) * 1.1
    out["hypervolume_ref"] = {"accuracy": 0.0, "p50_ms": ref_ms}
    for w, group in (("1", one), ("2", two)):
        hv = [hypervolume([tuple(p) for p in group[k]["front"]], 0.0, ref_ms) for k in seeds]
        out[f"hypervolume_{w}_worker"] = mean_interval(hv) if hv else None
    if seeds:
        hv_1 = out["hypervolume_1_worker"]["values"]
        out["hypervolume_2_within_1_worker_seed_spread"] = [
            min(hv_1) <= v <= max(hv_1) for v in out["hypervolume_2_worker"]["values"]
        ]
        hv1 = out["hypervolume_1_worker"]
        out["hypervolume_2_mean_within_1_worker_interval"] = (
            hv1["low"] is not None and hv1["low"] <= out["hypervolume_2_worker"]["mean"] <= hv1["high"]
        )
    per_trial = [s for k in seeds for s in one[k]["trial_seconds"]]
    out["trial_seconds_mean"] = sum(per_trial) / len(per_trial)
    overhead = {o["workers"]: o for o in r["overhead"]}
    out["overhead_trials_per_s"] = {w: o["trials"] / o["wall_s"] for w, o in overhead.items()}
    n = r["search"]["n_trials"]
    worst = max(1 / v for v in out["overhead_trials_per_s"].values())  # seconds of study work per trial
    out["extrapolation"] = {
        str(nodes): r["process_start_s"]
        + math.ceil(n / nodes) * out["trial_seconds_mean"]
        + n * worst / nodes
        for nodes in (1, 2, 4, 8, 16)
    }
    out["extrapolation_rule"] = (
        "wall(N) ≈ process start + ceil(n_trials / N) × mean trial seconds (1-worker runs) + n_trials × "
        "(1 / the lowest empty-objective trials/s measured), the study's work counted as if serial (conservative); "
        "one worker per node, nodes not shared"
    )
    return out


def markdown(r: dict[str, Any]) -> str:
    from benchmarks.common import format_interval

    a = r["analysis"]
    m = r["machine"]
    lines = [
        f"# NAS fan-out: 1 vs 2 workers on one PostgreSQL study ({r['date']})", "",
        f"Command: `{r['command']}` (git {m['git_commit']}).", "",
        f"**Machine: {m['cpu_count']} cores ({m['cpu_model']}), shared with other engineers' work** — load "
        f"average {m['load_average_at_start'][0]:.1f} at the start, {r['load_at_end']:.1f} at the end; each "
        "run's load is in results.json. Two workers here compete for the same two busy cores (and with "
        "PostgreSQL): this measures the mechanism, not what two nodes would give.", "",
        *[f"Note: {n}" for n in r.get("notes", [])],
        *([""] if r.get("notes") else []),
        f"Search: {r['search']['n_trials']} trials of a {len(SPACE['families'])}-family CNN space on digits, "
        f"{r['search']['search_epochs']} epochs on {r['search']['train_samples']} images, successive halving "
        f"eta={r['search']['eta']}, TPE; each worker a process running `run_worker` (what a KFP task runs), "
        "the study in a local PostgreSQL 15. Runs interleaved 1, 2, 1, 2, …; each pair shares a seed.", "",
        "## Wall time", "",
        "*wall*: create the study → every worker process done (process start and imports included, as a "
        "task pays them); *search*: the study's first trial start → last trial end.", "",
        "| seed | workers | wall s | search s | trials | complete / pruned / fail | load before → after |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]  # fmt: skip
    for x in r["runs"]:
        st = x["states"]
        lines.append(
            f"| {x['seed']} | {x['workers']} | {x['wall_s']:.1f} | {x['search_s']:.1f} | {x['trials']} | "
            f"{st['COMPLETE']} / {st['PRUNED']} / {st['FAIL']} | {x['load_before']:.1f} → {x['load_after']:.1f} |"
        )
    lines += [""]
    for key, label in (("wall_s", "wall"), ("search_s", "search")):
        ratio = a.get(f"{key}_ratio_1_over_2")
        if ratio:
            lines.append(
                f"**{label} time, 1 worker / 2 workers: {ratio['speedup']:.2f}× [{ratio['ci_low']:.2f}, "
                f"{ratio['ci_high']:.2f}]** (95 %, {ratio['method']}, {ratio['rounds']} pairs)."
            )
        else:
            lines.append(f"{label} time ratio: fewer than two pairs, no interval.")
        lines.append("")
    hv1, hv2 = a["hypervolume_1_worker"], a["hypervolume_2_worker"]
    ref = a["hypervolume_ref"]
    lines += [
        "", "## Front quality", "",
        f"Hypervolume of the complete trials' (accuracy, p50 ms) front, reference (0, {ref['p50_ms']:.4f} ms): "
        f"1 worker {format_interval(hv1, digits=4)} vs 2 workers {format_interval(hv2, digits=4)} "
        f"(per seed: {', '.join(f'{v:.4f}' for v in hv1['values'])} vs {', '.join(f'{v:.4f}' for v in hv2['values'])}).",
        f"2-worker mean within the 1-worker seeds' 95 % interval: {a.get('hypervolume_2_mean_within_1_worker_interval')}; "
        f"each 2-worker front within the 1-worker seeds' range [min, max]: {a.get('hypervolume_2_within_1_worker_seed_spread')} "
        "(the budget is the same; which trials run in parallel changes what TPE has seen when it samples).",
        "Latency is measured per trial on an emulated class on this busy machine, so fronts differ by noise too.",
        "", "## Coordination overhead (empty objective, TPE, heartbeat on)", "",
        "| workers | trials/s | seconds of study work per trial |", "|---:|---:|---:|",
    ]  # fmt: skip
    for w, v in sorted(a["overhead_trials_per_s"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {w} | {v:.1f} | {1 / v * 1000:.0f} ms |")
    lines += [
        "", "## On paper: N nodes", "",
        f"Mean trial {a['trial_seconds_mean']:.2f} s (1-worker runs), worker start {r['process_start_s']:.1f} s. "
        f"{a['extrapolation_rule']}. The trial cost is this busy machine's (2 cores at load ≈ 12): on a "
        "dedicated node it is lower and every row scales with it; the study overhead was measured on the "
        "same busy machine, PostgreSQL included.", "",
        "| nodes | extrapolated wall s |", "|---:|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in a["extrapolation"].items()],
        "", "Successive halving makes trial costs uneven (pruned trials stop at the first rung), and a worker "
        "waits when the trials in flight would reach the budget, so the last round of a study is its "
        "slowest trial: with more nodes than trials/2 the gain flattens. ![wall time](walltime.png)", "",
    ]  # fmt: skip
    return "\n".join(lines)


def plot(r: dict[str, Any]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for w, colour in ((1, "tab:blue"), (2, "tab:orange")):
        xs = [x for x in r["runs"] if x["workers"] == w]
        ax1.scatter([x["seed"] for x in xs], [x["wall_s"] for x in xs], color=colour, label=f"{w} worker(s)")
    ax1.set_xlabel("seed (pair)")
    ax1.set_ylabel("wall s (measured, 2 shared cores)")
    ax1.legend()
    ext = r["analysis"]["extrapolation"]
    ax2.plot([int(k) for k in ext], list(ext.values()), marker="o")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("nodes (extrapolated)")
    ax2.set_ylabel("wall s")
    fig.suptitle("NAS fan-out, one PostgreSQL study")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def main() -> int:
    from benchmarks.common import benchmark_parser, machine_info, write_report
    from edgecompress.data import load_digits, save_dataset
    from edgecompress.farm.pgserver import temporary_postgres

    parser = benchmark_parser(__doc__, "2 pairs of 4-trial searches, 20 empty trials")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved (1 worker, 2 workers) pairs")
    parser.add_argument(
        "--render", type=Path, metavar="DIR", help="re-analyse and re-render DIR/results.json only"
    )
    args = parser.parse_args()
    if args.render:
        r = json.loads((args.render / "results.json").read_text())
        r["analysis"] = analyse(r)
        write_report(r, args.render, markdown, plot, "walltime.png")
        return 0
    search = {**SEARCH, "n_trials": 4} if args.quick else SEARCH
    empty_n = 20 if args.quick else 60
    out = args.out or HERE / datetime.now(UTC).strftime("%Y-%m-%d")
    r: dict[str, Any] = {
        "machine": machine_info(), "date": datetime.now(UTC).strftime("%Y-%m-%d"), "search": search,
        "fanout": FANOUT, "space": SPACE, "runs": [], "overhead": [],
        "command": ".venv/bin/python -m benchmarks.nas.fanout.run"
        + (f" --pairs {args.pairs}" if args.pairs != 3 else "") + (" --quick" if args.quick else ""),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, temporary_postgres() as server:
        dataset = Path(tmp) / "digits.npz"
        save_dataset(load_digits(), dataset)
        r["process_start_s"] = process_start_s(server)
        for seed in range(2 if args.quick else args.pairs):
            for workers in (1, 2):
                run = search_run(server, dataset, workers, seed, search)
                print(f"seed {seed} workers {workers}: {run['wall_s']:.1f} s", file=sys.stderr)
                r["runs"].append(run)
        for workers in (1, 2, 4):
            r["overhead"].append(overhead_run(server, workers, empty_n))
            print(f"empty objective, {workers} workers: {r['overhead'][-1]}", file=sys.stderr)
    r["load_at_end"] = os.getloadavg()[0]
    r["analysis"] = analyse(r)
    write_report(r, out, markdown, plot, "walltime.png")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
