"""The drift tests: a `DriftConfig` and the detector for each kind of data.

- Tabular (samples are 1-D feature vectors): `tabular_drift`, per-feature KS (numeric) or
  chi-squared (categorical) tests, Bonferroni-corrected over features, plus PSI per feature.
- Images: `ImageDriftDetector`, black-box shift detection on the deployed ONNX model: KS tests on
  each softmax probability (Bonferroni over classes) and an MMD permutation test on the
  penultimate-layer embeddings, combined with a second Bonferroni factor of 2.

`detect` picks the detector for a checked batch and returns the result dict that the report and
the step write: `kind`, `score`, `p_value`, `drifted`, `tests`, per-feature or per-class detail, and
what was compared (sizes, model id, dataset digest, config).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.drift.reference import Batch, Reference, feature_names_of, reference_sample
from edgecompress.drift.statistics import bonferroni, chi2_test, median_bandwidth, mmd_permutation_test, psi
from edgecompress.errors import ConfigError, ModelError
from edgecompress.params import Codec, csv_names

CLASSIFIER_OPS = ("Gemm", "MatMul", "Conv", "QLinearMatMul", "QLinearConv", "MatMulInteger")


CATEGORICAL = Codec(str, lambda v: list(csv_names(v)) or None, lambda v: ",".join(v or ()))


@dataclass
class DriftConfig:
    alpha: float = field(default=0.05, metadata={"help": "significance level of the combined test"})
    permutations: int = field(default=200, metadata={"help": "MMD permutation count (images)"})
    reference_samples: int = field(default=2000, metadata={"help": "reference samples drawn"})
    seed: int = field(default=0, metadata={"help": "seed of the reference draw and the permutations"})
    categorical: list[str] | None = field(
        default=None,
        metadata={"codec": CATEGORICAL, "help": "tabular: features tested with chi-squared, comma-separated"},
    )
    max_categories: int = field(
        default=10,
        metadata={"help": "tabular: integer features with at most this many values count as categorical"},
    )
    psi_bins: int = field(default=10, metadata={"help": "tabular: bins of the population stability index"})

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.permutations < 20:
            raise ConfigError(f"permutations must be at least 20, got {self.permutations}")
        if self.reference_samples < 10:
            raise ConfigError(f"reference_samples must be at least 10, got {self.reference_samples}")


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
        "kind": "tabular",
        "score": float(np.mean(psis)),
        "p_value": p_adj,
        "drifted": p_adj < config.alpha,
        "tests": {
            "features (KS / chi-squared, Bonferroni)": {
                "p_value": p_adj,
                "drifted": p_adj < config.alpha,
                "max_psi": float(np.max(psis)),
            }
        },
        "features": features,
    }


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
        probs, emb = self.model(x)
        return self.test_outputs(probs, emb, seed)

    def test_outputs(self, probs: np.ndarray, emb: np.ndarray, seed: int | None = None) -> dict[str, Any]:
        """The tests on a batch's model outputs (softmax probabilities, embeddings) already computed:
        a benchmark that tests many batches of one pool runs the model over the pool once."""
        from scipy.stats import ks_2samp

        cfg = self.config
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
            "kind": "image",
            "score": mmd2,
            "p_value": p,
            "drifted": p < cfg.alpha,
            "tests": {
                "softmax KS (Bonferroni over classes)": {
                    "p_value": p_softmax,
                    "drifted": 2 * p_softmax < cfg.alpha,
                },
                "embedding MMD (permutation)": {
                    "p_value": p_mmd,
                    "drifted": 2 * p_mmd < cfg.alpha,
                    "mmd2": mmd2,
                    "bandwidth": self.bandwidth,
                    "embedding_dim": int(emb.shape[1]),
                    "permutations": cfg.permutations,
                },
            },
            "classes": per_class,
            "predicted_class_share": {
                "reference": np.bincount(self.ref_probs.argmax(1), minlength=len(per_class)).tolist(),
                "new": np.bincount(probs.argmax(1), minlength=len(per_class)).tolist(),
            },
        }


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
