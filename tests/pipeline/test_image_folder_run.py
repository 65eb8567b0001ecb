"""Fashion-MNIST exported as an image folder runs through `edgecompress run` end to end, streamed
(issue 19, item 4): no task holds the dataset, measured in every task process.

The images are stored as 28x28 grayscale PNG files and turned into 3x64x64 model inputs by the
dataset's recorded transform, so the decoded dataset (188 MiB as uint8, 750 MiB as the float32 the
model takes) dwarfs what a task needs for a shard and a batch. A `sitecustomize` on the tasks'
PYTHONPATH runs tracemalloc in each KFP task process (numpy arrays are traced) and writes at exit its
peak traced memory, its traced memory at exit and its peak RSS. Modules imported stay loaded until
exit, so peak minus exit is the most memory a task held at once for its work (data, batches, logits,
models as numpy): that is what must stay well below the decoded size.

Measured (2-core machine shared with other runs, load average 4.3): the run 5.0 min wall in all
(2 min 46 s CPU; 7.2 min before the hook imported the heavy modules ahead of tracing), held at most
per task: train 56.3 MiB (two 512-sample validation batches of 24 MiB), accuracy_gate 69.6 (both
models and the bootstrap, not the data), quantize 30.7, load_dataset 19.7, evaluate 14.6, against
the bound of 94 MiB (half the uint8 size) and 750 MiB of float32 a task would hold if it loaded
the data. 16,000 images are kept (not fewer) because what a task holds is set by its batch sizes:
with fewer images the 512-sample batches would no longer be small next to the data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, skip_or_fail_in_ci

N_IMAGES = 16_000
SIZE, CHANNELS = 64, 3
HOOK = """
import sys
if any("kfp.dsl.executor_main" in a for a in sys.orig_argv):
    import atexit, json, os, resource, tracemalloc
    # Imported before tracing starts: tracemalloc triples import time (18 s vs 6 s here, per task),
    # and modules loaded while tracing stay loaded to the end, so they cancel in peak minus exit.
    import mlflow, numpy, onnx, onnxruntime, PIL.Image, torch  # noqa: F401
    import edgecompress.data, edgecompress.step  # noqa: F401
    tracemalloc.start()

    def _report():
        current, peak = tracemalloc.get_traced_memory()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        argv = " ".join(sys.orig_argv)
        task = argv.split("--function_to_execute", 1)[1].split()[0] if "--function_to_execute" in argv else "?"
        path = os.path.join(os.environ["EDGECOMPRESS_MEMLOG"], f"{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump({"task": task, "traced_peak": peak, "traced_at_exit": current, "rss_peak": rss}, f)

    atexit.register(_report)
"""


def _export_fashion_mnist(root: Path, n: int) -> None:
    from PIL import Image

    from edgecompress.data import FASHION_MNIST_DIR, load_fashion_mnist

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        skip_or_fail_in_ci(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    ds = load_fashion_mnist()
    x, y = ds.arrays["x_train"][:n], ds.arrays["y_train"][:n]
    names = [c.replace("/", "-") for c in ds.class_names]
    for name in names:
        (root / name).mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(img[0]).save(root / names[label] / f"{i:05d}.png")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fmnist-run")
    started = time.monotonic()
    _export_fashion_mnist(base / "fashion-mnist", N_IMAGES)
    exported = time.monotonic()
    (base / "hook").mkdir()
    (base / "hook" / "sitecustomize.py").write_text(HOOK)
    (base / "mem").mkdir()
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "PYTHONPATH": str(base / "hook"),
        "EDGECOMPRESS_MEMLOG": str(base / "mem"),
    }
    proc = run_cli(
        "run", "--dataset", str(base / "fashion-mnist"), "--model", "mlp", "--epochs", "1",
        "--output-dir", str(base / "out"),
        "--param", f"image_size={SIZE}x{SIZE}", "--param", f"image_channels={CHANNELS}",
        "--device-classes", "rpi4-emulated",
        "--param", "bench_min_runs=50", "--param", "bench_min_duration_s=0.2",
        env=env, timeout=3000,
    )  # fmt: skip
    seconds = {"export": exported - started, "run": time.monotonic() - exported}
    tasks = [json.loads(p.read_text()) for p in sorted((base / "mem").glob("*.json"))]
    return base, proc, tasks, seconds


def test_the_image_folder_runs_end_to_end_as_a_sharded_dataset(image_run):
    base, proc, _, seconds = image_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "parent vs child" in proc.stdout and "test accuracy" in proc.stdout
    artifact = next((base / "out").glob("kfp/*/load-dataset/dataset"))
    meta = json.loads((artifact / "dataset.json").read_text())
    assert meta["input_shape"] == [CHANNELS, SIZE, SIZE] and meta["source_files"] == N_IMAGES
    assert meta["transform"]["size"] == [SIZE, SIZE] and len(meta["shards"]) > 20
    evaluation = json.loads(next((base / "out").glob("kfp/*/evaluate/results")).read_text())
    assert evaluation["samples"] == meta["splits"]["test"]
    assert evaluation["accuracy"] > 0.6  # one epoch of an MLP on upscaled Fashion-MNIST
    assert evaluation["model"]["input_transform"] == meta["transform"]
    assert evaluation["model"]["dataset_sha256"] == meta["sha256"]  # the lineage key
    print(f"\nimage-folder run: export {seconds['export']:.0f} s, edgecompress run {seconds['run']:.0f} s")


def test_no_task_holds_the_dataset_in_memory(image_run):
    _, proc, tasks, _ = image_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    decoded_uint8 = N_IMAGES * CHANNELS * SIZE * SIZE
    decoded_float32 = 4 * decoded_uint8
    names = {t["task"] for t in tasks}
    assert {"load_dataset", "train", "quantize", "evaluate", "accuracy_gate"} <= names, names
    lines = [
        f"decoded dataset: {decoded_uint8 / 2**20:.0f} MiB uint8, {decoded_float32 / 2**20:.0f} MiB float32"
    ]
    for t in sorted(tasks, key=lambda t: t["task"]):
        held = t["traced_peak"] - t["traced_at_exit"]
        lines.append(
            f"{t['task']:>16}: held at most {held / 2**20:6.1f} MiB (traced peak {t['traced_peak'] / 2**20:6.1f},"
            f" at exit {t['traced_at_exit'] / 2**20:6.1f}), peak RSS {t['rss_peak'] / 2**20:6.0f} MiB"
        )
    print("\n" + "\n".join(lines))
    worst = max(t["traced_peak"] - t["traced_at_exit"] for t in tasks)
    # A task holds a shard, a batch and a few hundred samples at most (the parity check's and the
    # validation accuracy's 512 float32 inputs are 24 MiB here): half the uint8 size is far above
    # that and far below any task holding the data (750 MiB as the float32 a model takes).
    assert worst < decoded_uint8 / 2, "\n".join(lines)


def test_every_mlflow_run_the_command_opened_has_ended(image_run):
    """Issue 19, item 5: the pipeline's parent run ends with the command, not RUNNING forever."""
    import mlflow

    base, proc, _, _ = image_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{base / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("edgecompress.role") == "pipeline-run"]
    assert len(parents) == 1 and len(runs) >= 8
    assert {r.info.status for r in runs} == {"FINISHED"} and all(r.info.end_time for r in runs)


def test_an_image_that_fails_to_decode_stops_the_run_with_nothing_written(tmp_path):
    """Bad input through `edgecompress run`: the load-dataset task refuses it (exit 2, `error:`), no
    dataset artifact is left, and no MLflow run is left RUNNING."""
    import mlflow
    from PIL import Image

    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(root / cls / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        "run", "--dataset", str(root), "--model", "mlp", "--epochs", "1", "--output-dir", str(tmp_path / "out"),
        "--device-classes", "rpi4-emulated", env={"MLFLOW_TRACKING_URI": uri}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "error: the edge-compression pipeline failed" in proc.stderr
    assert f"image {root / 'b' / 'broken.png'} cannot be decoded" in proc.stdout + proc.stderr
    assert not list((tmp_path / "out").glob("kfp/*/load-dataset/dataset*"))
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    # the task refuses the folder before it opens a run; any run opened is ended, none left RUNNING
    assert {r.info.status for r in runs} <= {"FAILED"}, {(r.info.run_name, r.info.status) for r in runs}
