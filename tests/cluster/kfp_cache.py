"""KFP's step cache, as the KFP v2 backend computes it, applied to a compiled pipeline (IR YAML).

The backend's driver (kubeflow/pipelines backend/src/v2/driver, `getFingerPrint`) builds a
`cachekey.CacheKey` for a cached container task (backend/src/v2/cacheutils/cache.go,
`GenerateCacheKey`) from
- `inputArtifactNames`: each input artifact's MLMD artifact *name* (a new name for every artifact a
  task produces; a cache hit hands the earlier execution's artifacts on, with their names),
- `inputParameterValues`: each input parameter's resolved value (runtime placeholders such as
  `{{$.pipeline_job_uuid}}` resolved: a new value every run),
- `outputArtifactsSpec`: each output artifact's type and metadata (URI wiped),
- `outputParametersSpec`: each output parameter's type name,
- `containerSpec`: the image and the unresolved command + args (and PVC names, env: none here),
and `GenerateFingerPrint` = sha256 of protojson(CacheKey) re-marshalled by Go's encoding/json (map
keys sorted, compact, <>& escaped). A task hits when an earlier execution of the same pipeline has
that fingerprint. `simulate_runs` replays consecutive runs through that logic, like MLMD would.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

RUNTIME_PLACEHOLDERS = (
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_job_resource_name}}",
)


def go_json(value: Any) -> str:
    """Go's encoding/json of a decoded JSON value: sorted keys, compact, float64 numbers, HTML-escaped."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        f = float(value)
        if f.is_integer() and abs(f) < 1e21:
            return str(int(f))
        exp = math.floor(math.log10(abs(f)))
        text = repr(f) if -6 <= exp < 21 else f"{f:e}".replace("e-0", "e-").replace("e+0", "e+")
        return text
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def fingerprint(cache_key: dict) -> str:
    return hashlib.sha256(go_json(cache_key).encode()).hexdigest()


def _resolve_constant(value: Any, run_id: str) -> Any:
    if isinstance(value, str):
        for placeholder in RUNTIME_PLACEHOLDERS:
            value = value.replace(placeholder, run_id)
    return value


class Run:
    """One run of a compiled pipeline through the driver's cache logic, with `store` (fingerprint ->
    the output artifact names of the execution that wrote it) shared between runs, as MLMD is."""

    def __init__(self, spec: dict, arguments: dict, run_id: str, store: dict[str, dict[str, str]]) -> None:
        self.spec, self.run_id, self.store = spec, run_id, store
        self.executors = spec["deploymentSpec"]["executors"]
        self.keys: dict[str, str] = {}  # task path -> fingerprint (cached tasks)
        self.hits: dict[str, bool] = {}  # task path -> cache hit
        root_inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        params = {k: v.get("defaultValue") for k, v in root_inputs.items()}
        params.update(arguments)
        self._dag(spec["root"], "", params, {})

    def _dag(self, component: dict, prefix: str, params: dict, artifacts: dict) -> dict[str, dict[str, str]]:
        tasks = component["dag"]["tasks"]
        outputs: dict[str, dict[str, str]] = {}  # task -> output artifact key -> artifact name
        values: dict[str, dict[str, Any]] = {}  # task -> output parameter -> value
        done: set[str] = set()
        while len(done) < len(tasks):
            ready = [
                n for n, t in tasks.items() if n not in done and set(t.get("dependentTasks", [])) <= done
            ]
            assert ready, f"cycle in {prefix or 'root'}"
            for name in sorted(ready):
                task, path = tasks[name], f"{prefix}{name}"
                comp = self.spec["components"][task["componentRef"]["name"]]
                in_params, in_artifacts = self._inputs(task, comp, params, artifacts, outputs, values)
                if "dag" in comp:
                    outputs[name] = self._dag(comp, f"{path}/", in_params, in_artifacts)
                    dag_out = comp["dag"].get("outputs", {}).get("artifacts", {})
                    outputs[name] = {
                        key: outputs[name][sel["artifactSelectors"][0]["producerSubtask"]][
                            sel["artifactSelectors"][0]["outputArtifactKey"]
                        ]
                        for key, sel in dag_out.items()
                    }
                else:
                    outputs[name], values[name] = self._container(task, comp, path, in_params, in_artifacts)
                done.add(name)
        return outputs

    def _inputs(self, task, comp, params, artifacts, outputs, values) -> tuple[dict, dict]:
        defs = comp.get("inputDefinitions", {})
        spec_params = task.get("inputs", {}).get("parameters", {})
        in_params = {}
        for name, definition in defs.get("parameters", {}).items():
            source = spec_params.get(name)
            if source is None:
                if "defaultValue" in definition:
                    in_params[name] = definition["defaultValue"]
                continue
            if "componentInputParameter" in source:
                in_params[name] = params.get(source["componentInputParameter"])
            elif "runtimeValue" in source:
                in_params[name] = _resolve_constant(source["runtimeValue"]["constant"], self.run_id)
            elif "taskOutputParameter" in source:
                out = source["taskOutputParameter"]
                in_params[name] = values.get(out["producerTask"], {}).get(out["outputParameterKey"])
            elif "taskFinalStatus" in source:
                in_params[name] = {"state": "SUCCEEDED"}
        in_artifacts = {}
        for name, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" in source:
                out = source["taskOutputArtifact"]
                in_artifacts[name] = outputs[out["producerTask"]][out["outputArtifactKey"]]
            elif "componentInputArtifact" in source:
                in_artifacts[name] = artifacts[source["componentInputArtifact"]]
        return in_params, in_artifacts

    def _container(self, task, comp, path, in_params, in_artifacts) -> tuple[dict[str, str], dict[str, Any]]:
        container = self.executors[comp["executorLabel"]]["container"]
        out_defs = comp.get("outputDefinitions", {})
        new_outputs = {key: f"{self.run_id}/{path}/{key}" for key in out_defs.get("artifacts", {})}
        out_values = {key: f"{path}.{key}" for key in out_defs.get("parameters", {})}
        if not task.get("cachingOptions", {}).get("enableCache", False):
            self.hits[path] = False
            return new_outputs, out_values
        key = cache_key(container, out_defs, in_params, in_artifacts)
        fp = fingerprint(key)
        self.keys[path] = fp
        self.hits[path] = fp in self.store
        if fp in self.store:
            return dict(self.store[fp]), out_values
        self.store[fp] = new_outputs
        return new_outputs, out_values


def cache_key(container: dict, out_defs: dict, in_params: dict, in_artifacts: dict) -> dict:
    """The CacheKey message (protojson field names; empty fields omitted, as protojson does)."""
    key: dict[str, Any] = {}
    if in_artifacts:
        key["inputArtifactNames"] = {k: {"artifactNames": [v]} for k, v in in_artifacts.items()}
    if in_params:
        key["inputParameterValues"] = in_params
    artifacts = out_defs.get("artifacts", {})
    if artifacts:
        key["outputArtifactsSpec"] = {
            k: {"type": {k2: v2 for k2, v2 in v["artifactType"].items() if v2}} for k, v in artifacts.items()
        }
    parameters = out_defs.get("parameters", {})
    if parameters:
        key["outputParametersSpec"] = {k: v["parameterType"] for k, v in parameters.items()}
    key["containerSpec"] = {
        "image": container["image"],
        "cmdArgs": list(container.get("command", [])) + list(container.get("args", [])),
    }
    return key


def simulate_runs(spec: dict, arguments: dict, run_ids: Sequence[str]) -> list[Run]:
    store: dict[str, dict[str, str]] = {}
    return [Run(spec, arguments, run_id, store) for run_id in run_ids]
