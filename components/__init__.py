"""KFP components, one folder each: component.py (thin wrapper over edgecompress), README.md,
metadata.yaml and the compiled component.yaml that others load with
`kfp.components.load_component_from_file`."""

from __future__ import annotations

import importlib
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


# What every Model artifact's metadata carries, so it can be audited without opening it.
MODEL_METADATA = ("technique", "params", "onnx_bytes", "onnx_sha256", "dataset_sha256")


def stamp_model(artifact, result, **extra) -> None:
    """Stamp a KFP Model artifact's metadata from a step's `StepResult` (its model.json and, for a
    prune, the child's ONNX stats), plus `extra`."""
    info = result.info
    artifact.metadata.update({k: info[k] for k in MODEL_METADATA if info.get(k) is not None})
    artifact.metadata["mlflow_model_id"] = info.get("mlflow_model_id") or ""
    artifact.metadata["parent_model_id"] = info.get("parent_model_id") or ""
    stats = (result.extra.get("stats") or {}).get("child") or {}
    artifact.metadata.update({k: stats[k] for k in ("macs", "gzip_bytes", "sparsity") if k in stats})
    artifact.metadata.update(extra)


KFP_TYPES = {"String": str, "Integer": int, "Float": float, "Boolean": bool, "List": list}


def surface_mismatches(component, surfaces) -> list[str]:
    """How a component's parameters differ from its config dataclasses' flat fields (empty: none).
    KFP needs literal signatures, so this check is what keeps them one definition."""
    from edgecompress.params import surface

    expected: dict[str, tuple[type, object]] = {}
    problems = []
    for config in surfaces:
        for p in surface(config):
            if p.name in expected:
                problems.append(f"{p.name}: defined by two of its configs")
            expected[p.name] = (p.type, p.default)
    actual = {
        name: (KFP_TYPES[spec.type], spec.default)
        for name, spec in component.component_spec.inputs.items()
        # required inputs, and optional ones defaulting to None, are data (a batch URI, collected
        # results), not settings
        if spec.type in KFP_TYPES and spec.optional and spec.default is not None
    }
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append(f"{name}: in the config, missing from the component")
        elif name not in expected:
            problems.append(f"{name}: a component parameter no config defines")
        elif actual[name] != expected[name]:
            problems.append(f"{name}: component {actual[name]} != config {expected[name]}")
    return problems


def component_names() -> list[str]:
    return sorted(p.parent.name for p in FOLDER.glob("*/component.py"))


def load(name: str):
    """The KFP component object defined in components/<name>/component.py (named like its folder)."""
    module = importlib.import_module(f"edgecompress.components.{name}.component")
    return getattr(module, name)


def compile_component(name: str, output: Path) -> None:
    from kfp import compiler

    compiler.Compiler().compile(load(name), str(output))


def compile_all(folder: Path = FOLDER) -> list[Path]:
    """Write components/<name>/component.yaml for every component (EDGECOMPRESS_IMAGE unset)."""
    written = []
    for name in component_names():
        out = folder / name / "component.yaml"
        compile_component(name, out)
        written.append(out)
    return written


def render_readme(name: str) -> str:
    """README.md for a component, generated from its interface so that it never drifts from it."""
    import yaml

    spec = yaml.safe_load((FOLDER / name / "component.yaml").read_text())
    module = importlib.import_module(f"edgecompress.components.{name}.component")
    comp = spec["components"][f"comp-{name.replace('_', '-')}"]
    lines = [
        f"# `{name}`",
        "",
        (module.__doc__ or "").strip(),
        "",
        (load(name).description or "").strip(),
        "",
    ]
    inputs = comp.get("inputDefinitions", {})
    rows = []
    for art, d in inputs.get("artifacts", {}).items():
        rows.append(f"| `{art}` | artifact `{d['artifactType']['schemaTitle']}` | — |")
    for par, d in inputs.get("parameters", {}).items():
        default = d.get("defaultValue", "(required)")
        rows.append(f"| `{par}` | {d['parameterType'].lower()} | `{default}` |")
    lines += ["## Inputs", "", "| name | type | default |", "|---|---|---|", *rows, ""]
    outs = comp.get("outputDefinitions", {})
    rows = [
        f"| `{a}` | artifact `{d['artifactType']['schemaTitle']}` |"
        for a, d in outs.get("artifacts", {}).items()
    ]
    rows += [f"| `{p}` | {d['parameterType'].lower()} |" for p, d in outs.get("parameters", {}).items()]
    lines += ["## Outputs", "", "| name | type |", "|---|---|", *rows, ""]
    lines += [
        "## Use", "",
        "```python",
        "from kfp import components",
        "",
        f'{name} = components.load_component_from_file("components/{name}/component.yaml")',
        "```", "",
        f"or, in this repository, `from edgecompress.components.{name}.component import {name}`.",
        "The component runs in the components image (`docker/Dockerfile`; name from `EDGECOMPRESS_IMAGE`",
        "or `EDGECOMPRESS_REGISTRY`) and records lineage in the MLflow server named by `MLFLOW_TRACKING_URI`",
        "(`track=False` to skip). `pipeline_run_id`, `pipeline_name` and `experiment` tie its MLflow run",
        "to the pipeline run's parent run.", "",
        "This file is generated from `component.py` by `edgecompress compile --components`.", "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_docs(folder: Path = FOLDER) -> None:
    for name in component_names():
        (folder / name / "README.md").write_text(render_readme(name))
