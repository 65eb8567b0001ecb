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
    infos = [json.loads(p.read_text()) for p in outputs]
    assert len(infos) == 2 and "dynamic-int8" in [i["technique"] for i in infos]
    results = json.loads(next(Path(tmp_path / "root").rglob("results")).read_text())
    assert results["passed"] is True
    # autotune on size returns the first trial (in its fixed order) that keeps accuracy and is smaller
    parent_bytes = json.loads((Path(trained_model) / "model.json").read_text())["onnx_bytes"]
    tuned = next(
        i for i in infos if i["technique"] != "dynamic-int8" or len({j["technique"] for j in infos}) == 1
    )
    assert tuned["onnx_bytes"] < parent_bytes
