"""Drift detection between a new batch and the data a model was trained on, and the retrain trigger.

- Tabular inputs (samples are 1-D feature vectors): per-feature two-sample Kolmogorov–Smirnov
  (numeric) or chi-squared (categorical) tests, Bonferroni-corrected over features, plus the
  population stability index (PSI) per feature.
- Images: black-box shift detection (Lipton et al. 2018; Rabanser et al. 2019): univariate KS tests
  on each class probability of the deployed model's softmax output, Bonferroni-corrected over
  classes, and a kernel MMD permutation test on the model's penultimate-layer embeddings (read from
  the ONNX graph by exposing the classifier's input as an extra output). The two families are
  combined with a second Bonferroni factor of 2, so the false-positive rate stays at most alpha.
- The reference data is found through the model's lineage in MLflow (the Dataset artifact stored
  with its training run, verified by digest): a check needs only the model and the new batch.
  Reference samples are the held-out val + test splits, which the model never fitted.

Bad input (wrong shape or feature names, an empty batch, a model without dataset lineage, an
unreachable tracking server) raises before anything is written, and never starts a retrain.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.data import SPLITS, Dataset, load_dataset, to_model_input
from edgecompress.errors import ConfigError, DatasetError, ModelError

log = logging.getLogger(__name__)

CLASSIFIER_OPS = ("Gemm", "MatMul", "Conv", "QLinearMatMul", "QLinearConv", "MatMulInteger")


@dataclass
class DriftConfig:
    alpha: float = 0.05
    permutations: int = 200
    reference_samples: int = 2000
    seed: int = 0
    categorical: list[str] | None = None  # tabular: feature names to test with chi-squared
    max_categories: int = 10  # tabular: integer features with at most this many values count as categorical
    psi_bins: int = 10

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.permutations < 20:
            raise ConfigError(f"permutations must be at least 20, got {self.permutations}")
        if self.reference_samples < 10:
            raise ConfigError(f"reference_samples must be at least 10, got {self.reference_samples}")


@dataclass
class Batch:
    x: np.ndarray
    y: np.ndarray | None = None
    feature_names: list[str] | None = None
    source: str = ""


@dataclass
class Reference:
    """A model and the data it was trained on, resolved through lineage."""

    onnx_path: Path
    dataset: Dataset
    model_id: str | None
    model_spec: Any = None
    registered_name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --- inputs ----------------------------------------------------------------------------------


def load_batch(path: Path | str) -> Batch:
    """A batch file: `.npz` with `x` (required), `y` (labels, needed to retrain) and, for tabular
    data, `feature_names`. An s3:// URI is downloaded first."""
    source = str(path)
    if source.startswith("s3://"):
        from edgecompress.storage import download_s3

        path = download_s3(source)
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"batch file {source} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DatasetError(
            f"batch file {source} is not a readable .npz ({type(exc).__name__}: {exc})"
        ) from exc
    if "x" not in arrays:
        raise DatasetError(f"batch file {source} has no array 'x' (found: {sorted(arrays) or 'nothing'})")
    x = arrays["x"]
    if x.ndim == 0 or len(x) == 0:
        raise DatasetError(f"batch file {source} is empty: 'x' has shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DatasetError(f"batch file {source}: 'x' has non-numeric dtype {x.dtype}")
    y = arrays.get("y")
    if y is not None and len(y) != len(x):
        raise DatasetError(f"batch file {source}: 'x' has {len(x)} samples but 'y' has {len(y)}")
    names = [str(n) for n in arrays["feature_names"].tolist()] if "feature_names" in arrays else None
    return Batch(x, y, names, source)


def feature_names_of(dataset: Dataset) -> list[str]:
    names = dataset.extra.get("feature_names")
    n = int(np.prod(dataset.input_shape))
    return [str(v) for v in names] if names else [f"f{i}" for i in range(n)]


def check_batch(batch: Batch, dataset: Dataset) -> Batch:
    """The batch must look like the reference data: same sample shape, same feature names."""
    shape = tuple(dataset.input_shape)
    if tuple(batch.x.shape[1:]) != shape:
        raise DatasetError(
            f"batch {batch.source}: samples have shape {tuple(batch.x.shape[1:])}, but the model's "
            f"training data {dataset.name!r} has samples of shape {shape}"
        )
    x = (
        to_model_input(batch.x)
        if dataset.arrays["x_train"].dtype == np.uint8 and batch.x.dtype == np.uint8
        else batch.x.astype(np.float32)
    )
    if (
        dataset.arrays["x_train"].dtype == np.uint8
        and batch.x.dtype != np.uint8
        and float(np.nanmax(x)) > 1.0 + 1e-6
    ):
        raise DatasetError(
            f"batch {batch.source}: float images must be scaled to [0, 1] like the training data "
            f"(max is {float(np.nanmax(x)):.3g}); or pass uint8 pixels"
        )
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"batch {batch.source}: 'x' contains NaN or infinite values")
    if len(shape) == 1 and batch.feature_names is not None:
        expected = feature_names_of(dataset)
        if batch.feature_names != expected:
            missing = [n for n in expected if n not in batch.feature_names]
            extra = [n for n in batch.feature_names if n not in expected]
            detail = (
                f"missing {missing}, unexpected {extra}"
                if missing or extra
                else "same names in another order"
            )
            raise DatasetError(
                f"batch {batch.source}: feature names differ from the training data's ({detail})"
            )
    if batch.y is not None:
        y = batch.y.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DatasetError(
                f"batch {batch.source}: labels must be in [0, {dataset.num_classes}), got "
                f"[{int(y.min())}, {int(y.max())}]"
            )
    return Batch(x, batch.y, batch.feature_names, batch.source)


def resolve_reference(model: str | Path, workdir: Path) -> Reference:
    """The model's ONNX file and its training data, found through MLflow lineage.

    `model` is a registry reference or model id, or a local Model artifact directory whose
    model.json carries its MLflow model id."""
    from edgecompress import lineage

    local = Path(str(model))
    info: dict[str, Any] = {}
    model_id = None
    registered = None
    if local.exists():
        from edgecompress.export import load_model_package

        package = load_model_package(local)
        info, onnx_path = package.info, package.onnx_path
        model_id = info.get("mlflow_model_id")
        if not model_id:
            raise DatasetError(
                f"model {local} has no dataset lineage: it was never logged to MLflow "
                "(no mlflow_model_id in its model.json), so its training data is unknown"
            )
        lineage.connect()
    else:
        client = lineage.connect()
        model_id = lineage.resolve_model_id(str(model), client)
        onnx_path = lineage.download_model_onnx(model_id, workdir / "model")
        if str(model).startswith("models:/") and not lineage.MODEL_ID_RE.match(str(model)[8:]):
            body = str(model)[len("models:/") :]
            registered = body.rsplit("@", 1)[0] if "@" in body else body.rsplit("/", 1)[0]
    location = lineage.dataset_location(model_id)
    data_path = lineage.download_dataset(location, workdir / "data")
    dataset = load_dataset(data_path)
    if dataset.digest != location["digest"]:
        raise DatasetError(
            f"dataset fetched for model {model_id} has digest {dataset.digest[:12]}…, but the "
            f"lineage records {location['digest'][:12]}…"
        )
    chain, _ = lineage.parent_chain(model_id)
    spec = (chain[0].params or {}).get("model_spec") if chain else None
    return Reference(
        Path(onnx_path), dataset, model_id, json.loads(spec) if spec else info.get("spec"), registered, info
    )


def reference_sample(dataset: Dataset, n: int, seed: int, held_out: bool) -> np.ndarray:
    """Held-out splits (val + test) for model-output tests; every split for raw-feature tests."""
    splits = ("val", "test") if held_out else SPLITS
    x = np.concatenate([dataset.split(s)[0] for s in splits])
    if len(x) > n:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]
    return x


# --- statistics ------------------------------------------------------------------------------


def bonferroni(p_values: list[float] | np.ndarray) -> float:
    p = np.asarray(p_values, dtype=float)
    return float(min(1.0, p.min() * len(p))) if len(p) else 1.0


def psi(reference: np.ndarray, new: np.ndarray, bins: int = 10, categorical: bool = False) -> float:
    """Population stability index over reference-quantile bins (or categories)."""
    eps = 1e-4
    if categorical:
        cats = np.union1d(np.unique(reference), np.unique(new))
        r = np.array([(reference == c).mean() for c in cats])
        q = np.array([(new == c).mean() for c in cats])
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            edges = np.array([reference.min() - 0.5, reference.min() + 0.5])
        inner = edges[1:-1]
        r = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(edges) - 1) / len(
            reference
        )
        q = np.bincount(np.searchsorted(inner, new, side="right"), minlength=len(edges) - 1) / len(new)
    r, q = np.clip(r, eps, None), np.clip(q, eps, None)
    return float(np.sum((q - r) * np.log(q / r)))


def chi2_test(reference: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    from scipy.stats import chi2_contingency

    cats = np.union1d(np.unique(reference), np.unique(new))
    table = np.array([[(reference == c).sum() for c in cats], [(new == c).sum() for c in cats]])
    if table.shape[1] < 2:
        return 0.0, 1.0
    stat, p, _, _ = chi2_contingency(table)
    return float(stat), float(p)


def tabular_drift(ref: np.ndarray, new: np.ndarray, names: list[str], config: DriftConfig) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    categorical = set(config.categorical or [])
    unknown = categorical - set(names)
    if unknown:
        raise ConfigError(f"categorical features {sorted(unknown)} are not among the features {names}")
    features = {}
    for j, name in enumerate(names):
        r, q = ref[:, j], new[:, j]
        is_cat = name in categorical or (
            config.categorical is None
            and np.all(r == np.round(r))
            and len(np.unique(r)) <= config.max_categories
        )
        if is_cat:
            stat, p = chi2_test(r, q)
            test = "chi2"
        else:
            res = ks_2samp(r, q)
            stat, p, test = float(res.statistic), float(res.pvalue), "ks"
        features[name] = {
            "test": test,
            "statistic": stat,
            "p_value": p,
            "psi": psi(r, q, config.psi_bins, categorical=is_cat),
        }
    p_adj = bonferroni([f["p_value"] for f in features.values()])
    for f in features.values():
        f["drifted"] = min(1.0, f["p_value"] * len(features)) < config.alpha
    psis = [f["psi"] for f in features.values()]
    return {
        "kind": "tabular", "score": float(np.mean(psis)), "p_value": p_adj, "drifted": p_adj < config.alpha,
        "tests": {"features (KS / chi-squared, Bonferroni)": {"p_value": p_adj, "drifted": p_adj < config.alpha,
                                                               "max_psi": float(np.max(psis))}},
        "features": features,
    }  # fmt: skip


def penultimate_output(proto) -> str:
    """The name of the tensor feeding the classifier layer that produces the model's output."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    initializers = {i.name for i in proto.graph.initializer}
    name = proto.graph.output[0].name
    for _ in range(64):
        node = producers.get(name)
        if node is None:
            break
        if node.op_type in CLASSIFIER_OPS:
            return node.input[0]
        inputs = [i for i in node.input if i and i not in initializers and i in producers]
        if not inputs:
            break
        name = inputs[0]
    raise ModelError("cannot find the classifier layer (Gemm/MatMul/Conv) feeding the model's output")


class EmbeddingModel:
    """ONNX Runtime session over the model with the penultimate layer exposed as a second output."""

    def __init__(self, onnx_path: Path, threads: int = 1) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(onnx_path))
        self.embedding_name = penultimate_output(proto)
        if self.embedding_name not in {o.name for o in proto.graph.output}:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(self.embedding_name))
            proto.graph.output[-1].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = [proto.graph.output[0].name, self.embedding_name]

    def __call__(self, x: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities and flattened embeddings."""
        probs, embs = [], []
        for i in range(0, len(x), batch_size):
            logits, emb = self.session.run(self.outputs, {self.input_name: x[i : i + batch_size]})
            z = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(z)
            probs.append(e / e.sum(axis=1, keepdims=True))
            embs.append(emb.reshape(len(emb), -1))
        return np.concatenate(probs), np.concatenate(embs)


def median_bandwidth(x: np.ndarray, max_samples: int = 1000, seed: int = 0) -> float:
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    d2 = _sq_dists(x, x)
    med = float(np.median(d2[np.triu_indices(len(x), 1)]))
    return med if med > 0 else 1.0


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0, bandwidth: float | None = None
) -> tuple[float, float]:
    """Gaussian-kernel MMD² (biased V-statistic) with a permutation p-value."""
    z = np.concatenate([x, y])
    bw = bandwidth or median_bandwidth(x, seed=seed)
    k = np.exp(-_sq_dists(z, z) / bw)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.ones(n), np.zeros(m)])
    w = np.empty((len(z), permutations + 1))
    w[:, 0] = labels
    for i in range(1, permutations + 1):
        w[:, i] = rng.permutation(labels)
    w = w / n - (1 - w) / m
    stats = np.einsum("ip,ip->p", w, k @ w)
    observed = float(stats[0])
    p = float((1 + np.sum(stats[1:] >= observed - 1e-12)) / (1 + permutations))
    return observed, p


class ImageDriftDetector:
    """Fit once on reference data, then test any number of batches (the benchmark reuses it)."""

    def __init__(
        self,
        onnx_path: Path,
        reference_x: np.ndarray,
        config: DriftConfig,
        class_names: list[str] | None = None,
    ) -> None:
        self.config = config
        self.model = EmbeddingModel(onnx_path)
        self.ref_probs, self.ref_emb = self.model(reference_x)
        self.bandwidth = median_bandwidth(self.ref_emb, seed=config.seed)
        k = self.ref_probs.shape[1]
        self.class_names = (
            class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
        )

    def test(self, x: np.ndarray, seed: int | None = None) -> dict[str, Any]:
        from scipy.stats import ks_2samp

        cfg = self.config
        probs, emb = self.model(x)
        per_class = {}
        for j, name in enumerate(self.class_names):
            res = ks_2samp(self.ref_probs[:, j], probs[:, j])
            per_class[name] = {
                "ks_statistic": float(res.statistic),
                "p_value": float(res.pvalue),
                "mean_prob_reference": float(self.ref_probs[:, j].mean()),
                "mean_prob_new": float(probs[:, j].mean()),
            }
        p_softmax = bonferroni([c["p_value"] for c in per_class.values()])
        for c in per_class.values():
            c["drifted"] = min(1.0, c["p_value"] * len(per_class)) < cfg.alpha / 2
        mmd2, p_mmd = mmd_permutation_test(
            self.ref_emb, emb, cfg.permutations, cfg.seed if seed is None else seed, self.bandwidth
        )
        p = min(1.0, 2 * min(p_softmax, p_mmd))
        return {
            "kind": "image", "score": mmd2, "p_value": p, "drifted": p < cfg.alpha,
            "tests": {
                "softmax KS (Bonferroni over classes)": {"p_value": p_softmax, "drifted": 2 * p_softmax < cfg.alpha},
                "embedding MMD (permutation)": {"p_value": p_mmd, "drifted": 2 * p_mmd < cfg.alpha, "mmd2": mmd2,
                                                "bandwidth": self.bandwidth, "embedding_dim": int(emb.shape[1]),
                                                "permutations": cfg.permutations},
            },
            "classes": per_class,
            "predicted_class_share": {"reference": np.bincount(self.ref_probs.argmax(1), minlength=len(per_class)).tolist(),
                                      "new": np.bincount(probs.argmax(1), minlength=len(per_class)).tolist()},
        }  # fmt: skip


def detect(reference: Reference, batch: Batch, config: DriftConfig) -> dict[str, Any]:
    """Run the tests for the kind of data; `batch` must already be checked against the reference."""
    dataset = reference.dataset
    if len(dataset.input_shape) == 1:
        ref_x = reference_sample(dataset, config.reference_samples, config.seed, held_out=False)
        names = feature_names_of(dataset)
        result = tabular_drift(ref_x, batch.x, names, config)
    else:
        ref_x = reference_sample(dataset, config.reference_samples, config.seed, held_out=True)
        result = ImageDriftDetector(reference.onnx_path, ref_x, config, dataset.class_names).test(batch.x)
    result.update(
        {
            "alpha": config.alpha,
            "batch_size": int(len(batch.x)),
            "reference_size": int(len(ref_x)),
            "model_id": reference.model_id,
            "dataset": {"name": dataset.name, "digest": dataset.digest},
            "batch": batch.source,
            "config": asdict(config),
        }
    )
    return result


# --- report ----------------------------------------------------------------------------------


def report_html(result: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecompress.reports import figure_png, html_page, html_table, png_img_tag

    verdict = "DRIFTED" if result["drifted"] else "no drift"
    summary = html_table(
        ["verdict", "score", "p-value", "alpha", "new samples", "reference samples", "model", "dataset"],
        [
            [
                verdict,
                result["score"],
                result["p_value"],
                result["alpha"],
                result["batch_size"],
                result["reference_size"],
                result["model_id"],
                result["dataset"]["name"],
            ]
        ],
    )
    tests = html_table(
        ["test", "p-value", "drifted"], [[k, v["p_value"], v["drifted"]] for k, v in result["tests"].items()]
    )
    sections = [("Summary", summary), ("Tests", tests)]
    if result["kind"] == "tabular":
        rows = result["features"]
        table = html_table(
            ["feature", "test", "statistic", "p-value", "PSI", "drifted"],
            [[n, f["test"], f["statistic"], f["p_value"], f["psi"], f["drifted"]] for n, f in rows.items()],
        )
        fig, axes = plt.subplots(1, 2, figsize=(10, max(3, 0.25 * len(rows))))
        names = list(rows)
        axes[0].barh(names, [-np.log10(max(f["p_value"], 1e-300)) for f in rows.values()])
        axes[0].axvline(
            -np.log10(result["alpha"] / len(rows)), color="r", ls="--", label="Bonferroni threshold"
        )
        axes[0].set_xlabel("-log10 p-value")
        axes[0].legend()
        axes[1].barh(names, [f["psi"] for f in rows.values()])
        axes[1].axvline(0.2, color="r", ls="--", label="PSI 0.2")
        axes[1].set_xlabel("PSI")
        axes[1].legend()
        sections += [("Per feature", table + png_img_tag(figure_png(fig), "per-feature tests"))]
    else:
        rows = result["classes"]
        table = html_table(
            ["class", "KS statistic", "p-value", "mean p (reference)", "mean p (new)", "drifted"],
            [
                [
                    n,
                    c["ks_statistic"],
                    c["p_value"],
                    c["mean_prob_reference"],
                    c["mean_prob_new"],
                    c["drifted"],
                ]
                for n, c in rows.items()
            ],
        )
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
        names = list(rows)
        idx = np.arange(len(names))
        axes[0].bar(idx, [c["ks_statistic"] for c in rows.values()])
        axes[0].set_xticks(idx, names, rotation=45, ha="right")
        axes[0].set_ylabel("KS statistic (softmax prob.)")
        share = result["predicted_class_share"]
        ref = np.array(share["reference"], float) / max(1, sum(share["reference"]))
        new = np.array(share["new"], float) / max(1, sum(share["new"]))
        axes[1].bar(idx - 0.2, ref, 0.4, label="reference")
        axes[1].bar(idx + 0.2, new, 0.4, label="new batch")
        axes[1].set_xticks(idx, names, rotation=45, ha="right")
        axes[1].set_ylabel("predicted class share")
        axes[1].legend()
        sections += [("Per class (softmax outputs)", table + png_img_tag(figure_png(fig), "per-class tests"))]
    return html_page(f"Drift check: {verdict}", sections)


def write_outputs(result: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """result.json and report.html, written together atomically."""
    from edgecompress.io import atomic_path

    output_dir = Path(output_dir)
    html = report_html(result)
    with atomic_path(output_dir, directory=True) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2, default=float))
        (tmp / "report.html").write_text(html)
    return {"result": output_dir / "result.json", "report": output_dir / "report.html"}


# --- check + retrain -------------------------------------------------------------------------


def merge_for_retrain(reference: Dataset, batch: Batch, seed: int = 0) -> Dataset:
    """Reference data plus the labelled new batch, the batch split 70/15/15 into train/val/test."""
    if batch.y is None:
        raise DatasetError(f"batch {batch.source} has no labels 'y': retraining needs labelled new data")
    x_new = batch.x
    if reference.arrays["x_train"].dtype == np.uint8:
        x_new = np.clip(np.round(x_new * 255.0), 0, 255).astype(np.uint8)
    x_new = x_new.astype(reference.arrays["x_train"].dtype)
    y_new = batch.y.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x_new))
    n_val, n_test = round(0.15 * len(order)), round(0.15 * len(order))
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.concatenate([reference.arrays[f"x_{split}"], x_new[parts[split]]])
        arrays[f"y_{split}"] = np.concatenate([reference.arrays[f"y_{split}"], y_new[parts[split]]])
    extra = {**reference.extra, "derived_from": reference.digest, "added_samples": int(len(x_new))}
    return Dataset(
        reference.name, f"{reference.source} + {batch.source}", arrays, reference.class_names, extra
    )


def check_drift(
    batch_path: Path | str, model: str | Path, output_dir: Path | None, config: DriftConfig, workdir: Path
) -> tuple[dict[str, Any], Reference, Batch]:
    """Validate everything, then test; writes the outputs only when every input was good."""
    config.validate()
    batch = load_batch(batch_path)
    reference = resolve_reference(model, workdir)
    batch = check_batch(batch, reference.dataset)
    result = detect(reference, batch, config)
    if output_dir is not None:
        result["outputs"] = {k: str(v) for k, v in write_outputs(result, output_dir).items()}
    return result, reference, batch


def check_and_report(
    batch_path: Path | str, model: str | Path, output_dir: Path, config: DriftConfig
) -> dict[str, Any]:
    """`edgecompress drift` without --retrain: check and write the result and report."""
    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        result, _, _ = check_drift(batch_path, model, output_dir, config, Path(tmp))
    return {"drift": result, "report": result["outputs"]["report"], "retrain": None}


def retrain_arguments(batch_path: Path | str, model: str | Path, config: DriftConfig) -> dict[str, Any]:
    """Validate every input of a retrain on drift here (nothing is written on bad input) and return
    the drift arguments of the retrain_on_drift pipeline."""
    config.validate()
    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        batch = load_batch(batch_path)
        reference = resolve_reference(model, Path(tmp))
        check_batch(batch, reference.dataset)
        if batch.y is None:  # fail before any work: no retrain can follow
            raise DatasetError(f"batch {batch_path} has no labels 'y': --retrain needs labelled new data")
    model_ref = str(model) if not Path(str(model)).exists() else f"models:/{reference.model_id}"
    source = str(batch_path) if str(batch_path).startswith("s3://") else str(Path(batch_path).resolve())
    return {
        "batch": source,
        "model": model_ref,
        "alpha": config.alpha,
        "permutations": config.permutations,
        "reference_samples": config.reference_samples,
        "seed": config.seed,
    }


def promote_gate_result(gate: dict[str, Any], device_classes: list[str]) -> dict[str, Any]:
    """After a gate: point `<class>-production` at the registered child for each class it earned."""
    from edgecompress import audit

    promoted, refused = [], []
    reg = gate.get("registered")
    if not reg:
        refused.append(
            f"the retrained model was not registered: gate {gate['verdict']} ({'; '.join(gate['reasons'])})"
        )
        return {"gate": gate, "promoted": promoted, "refused": refused}
    for cls in device_classes:
        try:
            out = audit.promote(f"models:/{reg['name']}/{reg['version']}", f"{cls}{audit.PRODUCTION_SUFFIX}")
            promoted.append(out["alias"])
        except audit.PromotionRefused as exc:
            refused.append(str(exc))
    return {"gate": gate, "promoted": promoted, "refused": refused}


def drift_check_step(
    batch: str,
    model: str,
    result_path: Path,
    report_path: Path,
    retrain_dataset_path: Path | None,
    config: DriftConfig,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The drift_check component's work: test, write result + report, and on drift write the
    reference + new data Dataset artifact for the retrain (labels required)."""
    from edgecompress.data import save_dataset
    from edgecompress.io import write_json, write_text

    with tempfile.TemporaryDirectory(prefix="edgecompress-drift-") as tmp:
        result, reference, checked = check_drift(batch, model, None, config, Path(workdir or tmp))
        merged = None
        if result["drifted"] and retrain_dataset_path is not None:
            merged = merge_for_retrain(reference.dataset, checked, config.seed)  # raises without labels
        write_json(Path(result_path), result)
        write_text(Path(report_path), report_html(result))
        if merged is not None:
            save_dataset(merged, Path(retrain_dataset_path))
    spec = reference.model_spec or "cnn"
    return {
        **result,
        "model_spec": spec if isinstance(spec, str) else json.dumps(spec),
        "registered_model_name": reference.registered_name or f"{reference.dataset.name}-retrained",
        "retrain_dataset_digest": merged.digest if merged is not None else "",
    }
