"""The `nas` pipeline: train → NAS fanned out over parallel worker tasks on one optuna study
(pipelines/nas_fanout.py: create study → `dsl.ParallelFor` workers → finish) → the compression chain →
evaluate → edge-benchmark → gate. The same fan-out is the `nas_fanout` step of any chain
(`edgecompress run --chain nas_fanout,quantize`). Workers: `WORKERS`, or `build_pipeline(workers=…)`.
"""

# No `from __future__ import annotations` here: KFP reads the annotations.
from collections.abc import Sequence

from edgecompress.pipelines.edge_compression import build_pipeline as build_edge_compression
from edgecompress.pipelines.nas_fanout import WORKERS

PIPELINE_NAME = "nas"
DEFAULT_CHAIN = ("quantize",)


def build_pipeline(chain: Sequence[str] = DEFAULT_CHAIN, platform=None, workers: int = WORKERS):
    """train → NAS fan-out (`workers` in parallel) → `chain` → evaluate → edge-benchmark → gate."""
    steps = list(chain)
    if steps[:1] != ["nas_fanout"]:
        steps = ["nas_fanout", *steps]
    return build_edge_compression(steps, platform, name=PIPELINE_NAME, workers=workers)
