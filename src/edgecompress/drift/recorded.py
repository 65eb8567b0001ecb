"""What a production model was made with, read back from its MLflow lineage: the compression chain
(one step per model after the trained root) and each step's recorded settings, so a retrain on drift
rebuilds the model the way it was built unless told otherwise.

Each model in the chain is a LoggedModel whose `edgecompress.technique` tag names the step
(`prune-structured` → prune, `static-int8` → quantize, …) and whose params hold its settings
(`train.*`, `prune.*`, `quantize.*` (`quant.*` before), `distill.*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompress import lineage
from edgecompress.errors import ConfigError
from edgecompress.quantize.config import TECHNIQUES as QUANT_TECHNIQUES

# technique tag -> the chain step that makes such a model
STEP_OF_TECHNIQUE = {
    "prune-structured": "prune",
    "prune-unstructured": "prune",
    "distill": "distill",
    "nas": "nas",
    **{technique: "quantize" for technique in QUANT_TECHNIQUES.values()},
}
# the prefixes of a step's settings among its model's params: `<step>.` (edgecompress.step.step_params),
# then the names models logged before the steps shared one runner used
PARAM_PREFIX = {
    "train": ("train.",),
    "prune": ("prune.",),
    "quantize": ("quantize.", "quant."),
    "distill": ("distill.",),
}
# recorded names that differ from the step's setting of the same meaning
RENAMED = {
    ("prune", "finetune_after"): "finetune_epochs_after",
    ("prune", "finetune_between"): "finetune_epochs_between",
    ("prune", "finetune_epochs"): "finetune_epochs_after",
}


def recorded_chain(model: str) -> dict[str, Any]:
    """The chain and settings recorded for `model` (a registry reference or model id):
    `{"model_id", "chain": [step, …], "techniques": [technique, …], "settings": {step: {name: value}}}`
    where `settings["train"]` are the root's training settings. Values are MLflow's strings. A trained
    model with no compression step has an empty chain."""
    client = lineage.connect()
    if Path(model).exists():  # a local Model artifact directory: its MLflow model id
        from edgecompress.export import load_model_package

        model_id = load_model_package(Path(model)).info.get("mlflow_model_id")
        if not model_id:
            raise ConfigError(f"model {model} was never logged to MLflow: its chain is unknown, pass --chain")
    else:
        model_id = lineage.resolve_model_id(model, client)
    models, missing = lineage.parent_chain(model_id)
    if missing:
        raise ConfigError(
            f"model {model}: its lineage breaks at the missing parent {missing}, so the chain it was "
            "built with is unknown: pass --chain"
        )
    techniques = [(m.tags or {}).get(f"{lineage.TAG}technique", "unknown") for m in models]
    if not models or techniques[0] != "train":
        raise ConfigError(
            f"model {model}: its lineage does not start at a trained model ({' → '.join(techniques)}): pass --chain"
        )
    chain, settings = [], {"train": _settings("train", models[0].params)}
    for m, technique in zip(models[1:], techniques[1:], strict=True):
        step = STEP_OF_TECHNIQUE.get(technique)
        if step is None:
            raise ConfigError(
                f"model {model}: step {technique!r} of its lineage ({' → '.join(techniques)}) is no chain "
                f"step this retrain knows ({', '.join(sorted(set(STEP_OF_TECHNIQUE.values())))}): pass --chain"
            )
        chain.append(step)
        settings[step] = _settings(step, m.params)
    return {"model_id": model_id, "chain": chain, "techniques": techniques, "settings": settings}


def _settings(step: str, params: dict[str, str] | None) -> dict[str, str]:
    out = {}
    for prefix in reversed(PARAM_PREFIX.get(step, ())):  # the current names win
        for key, value in (params or {}).items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                out[RENAMED.get((step, name), name)] = value
    return out
