"""The data path holds a shard and a batch, never the dataset (issue 19, item 4), measured in process:
Fashion-MNIST images exported as PNG files, written into shards as 3x64x64 inputs by the recorded
transform, then read as training (shuffled), calibration and evaluation read them. numpy arrays are
traced by tracemalloc. Two criteria, at N = 4,000 and 3N = 12,000 images:

- streaming: the peaks do not grow with the dataset: 3N's within 4 MiB of N's while the decoded
  size grows by 94 MiB uint8. What may grow is bounded by a batch or is per-file bookkeeping: the
  samples a shard leaves over for the next batch (< one batch as uint8, 3 MiB; 85 samples at N,
  255 at 3N) and the writer's list of source files for sources.tsv (path, hash, label, split: a
  few hundred bytes per image);
- absolute: at 3N, below a quarter of the decoded uint8 size (35 MiB of 141 MiB; 562 MiB float32),
  the bound set before the first measurement.

Measured (this commit, 2-core machine, ~25 s for both sizes):
     N=4,000: writing 20.9 MiB, reading 28.4 MiB
    3N=12,000: writing 23.4 MiB, reading 31.1 MiB
What reading holds at its peak (a tracemalloc snapshot when a batch is made): the consumer's
previous 256-sample evaluation batch and the one being made (2 x 12 MiB float32), the shard being
read (4 MiB) and the previous shard's leftover. "Reading" is measured from the traced memory when
reading starts: writing leaves ~4.7 MiB of interpreter caches (interned paths, imported modules)
that no read holds.

History: first measured on 5482d69 (loaded machine, 758 s) at 12k as write 32.0 MiB, read 52.3 MiB
(from before writing), failing the quarter bound: hashing a shard copied it (`tobytes`), a shuffled
shard was copied whole for its permutation and again when joined to the previous shard's leftover,
the writer concatenated per-sample arrays, and `to_model_input` made two float arrays per batch.
Without those copies, the single 12k measurement read 34.3 MiB from before writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from edgecompress.data import FASHION_MNIST_DIR, SPLITS, DatasetSource, load_dataset, write_dataset
from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[2]
SMALL, LARGE = 4_000, 12_000
SIZE, CHANNELS = 64, 3
MiB = 2**20


def _export(root: Path, x, y) -> None:
    from PIL import Image

    for label in range(10):
        (root / f"class-{label}").mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(img[0]).save(root / f"class-{label}" / f"{i:05d}.png")


def _measure(folder: Path, artifact: Path, n: int) -> tuple[float, float]:
    """Peak traced bytes above the start of each phase: (writing the artifact, reading it)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        src = DatasetSource(str(folder), image_size=f"{SIZE}x{SIZE}", image_channels=CHANNELS)
        write_dataset(src, artifact, progress=False)
        written = tracemalloc.get_traced_memory()[1] - base
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        data = load_dataset(artifact)
        seen = sum(len(yb) for _, yb in data.batches("train", 64, shuffle=True, seed=1))  # training
        seen += sum(len(yb) for s in ("val", "test") for _, yb in data.batches(s, 256))  # evaluation
        calibration = data.sample("train", 256, seed=0)  # static quantization's calibration draw
        read = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert seen == n == sum(data.size(s) for s in SPLITS)
    assert calibration.shape == (256, CHANNELS, SIZE, SIZE)
    return written, read


def _measure_in_fresh_process(folder: Path, artifact: Path, n: int) -> tuple[float, float]:
    """`_measure` in a process of its own: tracemalloc traces every thread of its process, and a
    server or worker thread left by an earlier test in the same pytest worker adds its allocations to
    the peak (seen as a flaky failure under `-n 2`)."""
    code = (
        "import json, sys; from pathlib import Path; from tests.unit.test_streaming_memory import _measure; "
        "print(json.dumps(_measure(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(artifact), str(n)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "EDGECOMPRESS_NO_PROGRESS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written, read = json.loads(proc.stdout.strip().splitlines()[-1])
    return written, read


def test_writing_and_reading_a_sharded_image_dataset_holds_a_shard_not_the_dataset(tmp_path):
    from edgecompress.data import load_fashion_mnist

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        skip_or_fail_in_ci(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    started = time.monotonic()
    ds = load_fashion_mnist()
    x, y = ds.arrays["x_train"], ds.arrays["y_train"]
    _export(tmp_path / "small", x[:SMALL], y[:SMALL])
    _export(tmp_path / "large", x[SMALL : SMALL + LARGE], y[SMALL : SMALL + LARGE])
    del ds, x, y
    peaks = {n: _measure_in_fresh_process(tmp_path / name, tmp_path / f"{name}-artifact", n)
             for n, name in ((SMALL, "small"), (LARGE, "large"))}  # fmt: skip
    decoded = {n: n * CHANNELS * SIZE * SIZE for n in peaks}
    report = "\n".join(
        f"{n:>6} images: decoded {decoded[n] / MiB:.0f} MiB uint8 / {4 * decoded[n] / MiB:.0f} MiB float32; "
        f"peak traced while writing {w / MiB:.1f} MiB, while reading {r / MiB:.1f} MiB"
        for n, (w, r) in peaks.items()
    )
    print(f"\n{report}\n({time.monotonic() - started:.0f} s)")
    (w_small, r_small), (w_large, r_large) = peaks[SMALL], peaks[LARGE]
    assert w_large < w_small + 4 * MiB and r_large < r_small + 4 * MiB, report  # does not grow with N
    assert w_large < decoded[LARGE] / 4 and r_large < decoded[LARGE] / 4, report
