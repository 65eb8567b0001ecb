"""The data path holds a shard and a batch, never the dataset (issue 19, item 4), measured in process:
Fashion-MNIST images exported as PNG files, written into shards as 3x64x64 inputs by the recorded
transform, then read as training (shuffled), calibration and evaluation read them. numpy arrays are
traced by tracemalloc; the peak above what was allocated before must stay well below the decoded
dataset (tests/pipeline/test_image_folder_run.py measures the same through `edgecompress run`).

Measured on 5482d69 (loaded 2-core machine, 758 s): decoded 141 MiB uint8 / 562 MiB float32; peak
traced 32.0 MiB while writing, 52.3 MiB while reading, so the reading bound below (a quarter of the
uint8 size, 35 MiB, set before the first measurement) FAILS; not yet investigated which read holds
the extra (suspects: the shuffled shard's copies plus the 256-sample float32 calibration draw)."""

from __future__ import annotations

import time
import tracemalloc

from edgecompress.data import FASHION_MNIST_DIR, SPLITS, DatasetSource, load_dataset, write_dataset
from tests.conftest import skip_or_fail_in_ci

N_IMAGES = 12_000
SIZE, CHANNELS = 64, 3


def test_writing_and_reading_a_sharded_image_dataset_holds_a_shard_not_the_dataset(tmp_path):
    from PIL import Image

    from edgecompress.data import load_fashion_mnist

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        skip_or_fail_in_ci(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    ds = load_fashion_mnist()
    x, y = ds.arrays["x_train"][:N_IMAGES], ds.arrays["y_train"][:N_IMAGES]
    del ds
    root = tmp_path / "fashion"
    for label in range(10):
        (root / f"class-{label}").mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(img[0]).save(root / f"class-{label}" / f"{i:05d}.png")
    del x, y
    decoded_uint8 = N_IMAGES * CHANNELS * SIZE * SIZE

    started = time.monotonic()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        src = DatasetSource(str(root), image_size=f"{SIZE}x{SIZE}", image_channels=CHANNELS)
        write_dataset(src, tmp_path / "artifact", progress=False)
        written = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        data = load_dataset(tmp_path / "artifact")
        seen = sum(len(yb) for _, yb in data.batches("train", 64, shuffle=True, seed=1))  # training
        seen += sum(len(yb) for s in ("val", "test") for _, yb in data.batches(s, 256))  # evaluation
        calibration = data.sample("train", 256, seed=0)  # static quantization's calibration draw
        read = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert seen == N_IMAGES == sum(data.size(s) for s in SPLITS)
    assert calibration.shape == (256, CHANNELS, SIZE, SIZE)
    print(
        f"\ndecoded {decoded_uint8 / 2**20:.0f} MiB uint8 / {4 * decoded_uint8 / 2**20:.0f} MiB float32; "
        f"peak traced while writing {written / 2**20:.1f} MiB, while reading {read / 2**20:.1f} MiB "
        f"({time.monotonic() - started:.0f} s)"
    )
    assert written < decoded_uint8 / 4 and read < decoded_uint8 / 4
