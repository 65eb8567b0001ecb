"""The quantize and autotune components in kfp.local (SubprocessRunner, this environment)."""

import json
from pathlib import Path

from kfp import dsl, local

from edgecompress.components.autotune.component import autotune
from edgecompress.components.quantize.component import quantize


def test_quantize_and_autotune_components_run_locally(trained_model, digits_artifact, tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline(name="quant-components")
    def quant_components(model_uri: str, dataset_uri: str):
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        data = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset, reimport=False)
        quantize(model=model.output, dataset=data.output, method="dynamic", device_class="", track=False)
        autotune(
            model=model.output,
            dataset=data.output,
            max_drop=0.5,
            objective="size",
            include_mixed=False,
            include_qat=False,
            calibration_samples=32,
            bench_min_runs=20,
            bench_min_duration_s=0.02,
            track=False,
        )

    run = quant_components(model_uri=str(trained_model), dataset_uri=str(digits_artifact))
    assert run is not None
    outputs = list(Path(tmp_path / "root").rglob("model.json"))
    techniques = sorted(json.loads(p.read_text())["technique"] for p in outputs)
    assert techniques == [
        "dynamic-int8",
        "fp16",
    ]  # autotune on size: the first PTQ variant smaller than float
    results = next(Path(tmp_path / "root").rglob("results"))
    assert json.loads(results.read_text())["passed"] is True
