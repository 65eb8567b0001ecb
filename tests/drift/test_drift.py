"""Drift detection: the statistics, the `edgecompress drift` command, and every bad-input case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompress import drift
from edgecompress.errors import ConfigError


def _drift(run_cli, batch, model, output_dir, *args, **kwargs):
    """`edgecompress drift BATCH --model MODEL --output-dir OUT …` in a child process."""
    return run_cli(
        "drift", str(batch), "--model", str(model), "--output-dir", str(output_dir), *args, **kwargs
    )


def test_mmd_permutation_test_separates_same_from_shifted():
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    ref, same = x[idx[:600]], x[idx[600:900]]
    _, p_same = drift.mmd_permutation_test(ref, same, permutations=100, seed=1)
    _, p_shift = drift.mmd_permutation_test(
        ref, np.clip(same + rng.normal(0, 0.3, same.shape), 0, 1), 100, seed=1
    )
    assert p_same > 0.05 and p_shift == pytest.approx(1 / 101)


def test_psi_and_bonferroni():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert drift.psi(a, b) < 0.02 and drift.psi(a, b + 1.0) > 0.5
    cats = rng.integers(0, 3, 2000)
    assert drift.psi(cats, rng.integers(0, 3, 2000), categorical=True) < 0.02
    assert drift.psi(cats, np.zeros(500), categorical=True) > 1
    assert drift.bonferroni([0.01, 0.5, 0.9]) == pytest.approx(0.03) and drift.bonferroni([0.5, 0.6]) == 1.0


def test_tabular_drift_per_feature_with_ks_and_chi2(wine):
    ds = wine
    names = ds.extra["feature_names"]
    ref = np.concatenate([ds.arrays["x_train"], ds.arrays["x_val"]])
    new = ds.arrays["x_test"].copy()
    cfg = drift.DriftConfig()
    clean = drift.tabular_drift(ref, new, names, cfg)
    assert not clean["drifted"] and clean["features"]["cultivar"]["test"] == "chi2"
    assert clean["features"]["alcohol"]["test"] == "ks"
    shifted = new.copy()
    shifted[:, names.index("alcohol")] += 1.5 * ref[:, names.index("alcohol")].std()
    res = drift.tabular_drift(ref, shifted, names, cfg)
    assert res["drifted"] and [n for n, f in res["features"].items() if f["drifted"]] == ["alcohol"]
    assert res["features"]["alcohol"]["psi"] > 0.2
    prior = np.concatenate([ds.arrays[f"x_{s}"] for s in ("test", "val")])
    prior = prior[prior[:, names.index("cultivar")] == 0]  # one cultivar only
    res = drift.tabular_drift(ref, prior, names, cfg)
    assert res["features"]["cultivar"]["drifted"]
    with pytest.raises(ConfigError, match="not among the features"):
        drift.tabular_drift(ref, new, names, drift.DriftConfig(categorical=["colour"]))


def test_penultimate_embedding_is_the_classifier_input(drift_store):
    import onnx

    path = drift_store["digits_model"] / "model.onnx"
    name = drift.penultimate_output(onnx.load(str(path)))
    model = drift.EmbeddingModel(path)
    from edgecompress.data import load_digits

    x = load_digits().arrays["x_test"][:50].astype(np.float32) / 255
    probs, emb = model(x)
    assert probs.shape == (50, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert emb.shape == (50, 16) and name  # SMALL_CNN's last stage has 16 channels


def test_drift_cli_on_images(store, digits_batches, run_cli, tmp_path):
    out = tmp_path / "clean"
    res = _drift(
        run_cli, digits_batches["clean"], "models:/digits-drift@rpi4-emulated", out, "--permutations", "100"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "drift: no drift" in res.stdout
    result = json.loads((out / "result.json").read_text())
    assert (
        result["kind"] == "image"
        and not result["drifted"]
        and set(result["classes"]) == {str(i) for i in range(10)}
    )
    from edgecompress.data import load_digits

    held_out = sum(load_digits().size(s) for s in ("val", "test"))  # the reference: every held-out image
    assert result["dataset"]["name"] == "digits" and result["reference_size"] == held_out
    out = tmp_path / "noisy"
    res = _drift(
        run_cli,
        digits_batches["noisy"],
        "models:/digits-drift/1",
        out,
        "--permutations",
        "100",
        "--exit-code",
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "drift: DRIFTED" in res.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["drifted"] and result["p_value"] < 0.05
    assert result["tests"]["embedding MMD (permutation)"]["drifted"]
    assert "<img" in (out / "report.html").read_text()


def test_drift_cli_on_tabular_features(store, wine, run_cli, tmp_path):
    ds = wine
    names = ds.extra["feature_names"]
    x = ds.arrays["x_test"].copy()
    x[:, names.index("magnesium")] += 40
    np.savez(tmp_path / "shifted.npz", x=x, feature_names=np.array(names))
    res = _drift(run_cli, str(tmp_path / "shifted.npz"), "models:/wine-drift/1", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["kind"] == "tabular" and result["drifted"]
    assert result["features"]["magnesium"]["drifted"] and not result["features"]["hue"]["drifted"]
    renamed = [*names[:-1], "region"]
    np.savez(tmp_path / "renamed.npz", x=x, feature_names=np.array(renamed))
    res = _drift(run_cli, str(tmp_path / "renamed.npz"), "models:/wine-drift/1", str(tmp_path / "out2"))
    assert (
        res.returncode == 2 and "feature names differ" in res.stderr and "missing ['cultivar']" in res.stderr
    )
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(("batch", "message"), [
    ("wrong_shape", "samples have shape (1, 28, 28), but the model's training data 'digits' has samples of shape (1, 8, 8)"),
    ("empty", "is empty"),
    ("no_x", "has no array 'x'"),
    ("not_npz", "is not a readable .npz"),
    ("bad_labels", "labels must be in [0, 10)"),
])  # fmt: skip
def test_bad_batches_fail_clearly_write_nothing_and_never_retrain(
    store, digits_batches, run_cli, tmp_path, batch, message
):
    out, runs = tmp_path / "out", tmp_path / "runs"
    res = _drift(
        run_cli,
        str(digits_batches[batch]),
        "models:/digits-drift/1",
        str(out),
        "--retrain",
        "--run-dir",
        str(runs),
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert not out.exists() and not runs.exists()


def test_model_without_dataset_lineage(store, digits_batches, run_cli, tmp_path, trained_model):
    res = _drift(run_cli, str(digits_batches["clean"]), store["bare_model_id"], str(tmp_path / "out"))
    assert res.returncode == 2 and "has no dataset lineage" in res.stderr
    res = _drift(run_cli, str(digits_batches["clean"]), str(trained_model), str(tmp_path / "out"))
    assert res.returncode == 2 and "was never logged to MLflow" in res.stderr
    assert not (tmp_path / "out").exists()


def test_retrain_needs_labels_and_a_reachable_server(store, digits_batches, run_cli, tmp_path, dead_uri):
    out, runs = tmp_path / "out", tmp_path / "runs"
    res = _drift(
        run_cli,
        str(digits_batches["noisy_unlabelled"]),
        "models:/digits-drift/1",
        str(out),
        "--retrain",
        "--run-dir",
        str(runs),
    )
    assert res.returncode == 2 and "has no labels 'y': --retrain needs labelled new data" in res.stderr
    res = _drift(
        run_cli,
        str(digits_batches["noisy"]),
        "models:/digits-drift/1",
        str(out),
        "--retrain",
        "--run-dir",
        str(runs),
        env={"MLFLOW_TRACKING_URI": dead_uri},
    )
    assert (
        res.returncode == 2
        and f"MLflow tracking server {dead_uri} is unreachable after 3 attempts" in res.stderr
    )
    assert not out.exists() and not runs.exists()


def test_retrain_source_is_the_s3_uri_where_there_is_one():
    """KFP names its MinIO store minio://; other tasks read it as s3://, and anything else by path."""
    from edgecompress.drift.step import artifact_source

    assert (
        artifact_source("minio://mlpipeline/v2/a/retrain_dataset", "/m/a")
        == "s3://mlpipeline/v2/a/retrain_dataset"
    )
    assert artifact_source("s3://bucket/key", "/m/a") == "s3://bucket/key"
    assert artifact_source("gs://bucket/key", "/local/key") == "/local/key"
    assert artifact_source("", "/local/key") == "/local/key"


def test_the_drift_check_is_an_mlflow_run(store, digits_batches, run_cli, tmp_path):
    """Its statistics (metrics), settings (params), verdict, model, batch digest and code (tags), and
    its result and report as artifacts; the batch digest is the content's, whatever the file's name."""
    import shutil

    import mlflow

    from edgecompress import lineage

    renamed = tmp_path / "same-content.npz"
    shutil.copyfile(digits_batches["noisy"], renamed)
    results = []
    for batch in (digits_batches["noisy"], renamed):
        out = tmp_path / batch.stem
        res = _drift(run_cli, str(batch), "models:/digits-drift/1", str(out), "--permutations", "50")
        assert res.returncode == 0, res.stderr[-2000:]
        results.append(json.loads((out / "result.json").read_text()))
    first, second = results
    assert first["batch_digest"] == second["batch_digest"] and len(first["batch_digest"]) == 64
    assert first["mlflow_run_id"] != second["mlflow_run_id"]
    run = mlflow.MlflowClient().get_run(first["mlflow_run_id"])
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "drift-check"
    assert tags["edgecompress.role"] == "drift-check" and tags["edgecompress.drift.verdict"] == "drifted"
    assert tags["edgecompress.drift.batch_digest"] == first["batch_digest"]
    assert tags["edgecompress.drift.model_id"] == first["model_id"]
    assert tags["edgecompress.git_commit"] == lineage.code_version()["git_commit"] != "unknown"
    assert run.data.metrics["p_value"] == pytest.approx(first["p_value"])
    assert run.data.metrics["score"] == pytest.approx(first["score"])
    assert run.data.params["permutations"] == "50"
    mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="drift", dst_path=str(tmp_path / "a")
    )
    assert (
        json.loads((tmp_path / "a" / "drift" / "result.json").read_text())["batch_digest"]
        == first["batch_digest"]
    )
    assert "<img" in (tmp_path / "a" / "drift" / "report.html").read_text()
