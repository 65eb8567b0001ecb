"""The benchmark's --quick mode writes results in the shape the issue gives."""

import json

from benchmarks.quantization.run import main


def test_quick_benchmark_writes_results_in_the_issue_shape(tmp_path):
    assert main(["--quick", "--models", "mlp", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "models"} <= set(results)
    model = results["models"]["mlp"]
    names = [r["name"] for r in model["rows"]]
    assert model["baseline"] == "float" == names[0] and model["autotune_pick"] in names
    for row in model["rows"]:
        assert set(row) == {"name", "group", "accuracy", "top1_agreement", "onnx_bytes", "p50_ms", "p90_ms"}
        assert row["group"] in ("baseline", "peer", "ours")
    assert {"dynamic", "fp16 (weights)", "qat"} <= set(names)
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "Reproduce" in (tmp_path / "results.md").read_text()
