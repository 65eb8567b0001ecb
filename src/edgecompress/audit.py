"""Lineage audits over MLflow: walk a model back to its training data, query the registry, promote.

Everything is read from MLflow itself (the tags, params and metrics `lineage.py` writes), so an
auditor needs only the tracking server: dataset (name, digest, source) → trained model → each
compression step (technique, parameters, metrics) → benchmarks per device class (emulated or not,
p50/p90) → registry versions and aliases.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecompress import lineage
from edgecompress.errors import ConfigError, TrackingError

TAG = lineage.TAG
BENCH_RE = re.compile(
    r"^bench\.(?P<cls>.+)\.(?P<stat>p50_ms|p90_ms|p99_ms|mean_ms|load_ms|peak_rss_bytes|throughput_per_s)$"
)
PRODUCTION_SUFFIX = "-production"
CODE_TAGS = ("git_commit", "git_commit_source", "image_digest")
RETRAIN_TAGS = tuple(
    f"{TAG}{k}"
    for k in ("drift_run_id", "drift_batch_digest", "replaces_model_id", "champion.", "promotion.")
)


@dataclass
class Step:
    """One model in a lineage chain."""

    model_id: str
    name: str
    technique: str
    parent_model_id: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    benchmarks: dict[str, dict[str, Any]]
    gate: str | None
    gate_reason: str | None
    source_run_id: str | None
    pipeline_run_id: str | None
    package_version: str | None
    image: str | None
    registry: list[dict[str, Any]] = field(default_factory=list)
    # the code: git commit (and where it came from), image digest
    code: dict[str, str] = field(default_factory=dict)
    # a retrained model: the drift run, the batch digest, the model it replaces; per class, the
    # promotion's outcome against the champion
    retrain: dict[str, str] = field(default_factory=dict)


@dataclass
class Lineage:
    query: str
    model_id: str
    dataset: dict[str, Any] | None
    steps: list[Step]
    broken_at: str | None  # id of a parent that no longer exists

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metrics(model) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in model.metrics or []:
        out[m.key] = float(m.value)  # the latest value wins (metrics come oldest first)
    return out


def benchmarks_of(model) -> dict[str, dict[str, Any]]:
    """Per device class: the latency figures and whether the device was emulated."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _metrics(model).items():
        m = BENCH_RE.match(key)
        if m:
            out.setdefault(m["cls"], {})[m["stat"]] = value
    tags = model.tags or {}
    for cls, row in out.items():
        row["emulated"] = tags.get(f"{TAG}bench.{cls}.emulated", "unknown") == "true"
        row["provider"] = tags.get(f"{TAG}bench.{cls}.provider", "")
        row["host"] = tags.get(f"{TAG}bench.{cls}.host", "")
        row["timing"] = tags.get(f"{TAG}bench.{cls}.timing", "")  # set when timings are not meaningful
    return dict(sorted(out.items()))


def _step(model) -> Step:
    tags = model.tags or {}
    metrics = {k: v for k, v in _metrics(model).items() if not BENCH_RE.match(k)}
    return Step(
        model_id=model.model_id,
        name=model.name,
        technique=tags.get(f"{TAG}technique", "unknown"),
        parent_model_id=tags.get(f"{TAG}parent_model_id") or None,
        params=dict(model.params or {}),
        metrics=dict(sorted(metrics.items())),
        benchmarks=benchmarks_of(model),
        gate=tags.get(f"{TAG}gate"),
        gate_reason=tags.get(f"{TAG}gate_reason"),
        source_run_id=model.source_run_id,
        pipeline_run_id=tags.get(f"{TAG}pipeline_run_id"),
        package_version=tags.get(f"{TAG}package_version"),
        image=tags.get(f"{TAG}image"),
        code={k: tags[f"{TAG}{k}"] for k in CODE_TAGS if tags.get(f"{TAG}{k}")},
        retrain={k[len(TAG) :]: v for k, v in sorted(tags.items()) if k.startswith(RETRAIN_TAGS)},
    )


def registry_index(client) -> dict[str, list[dict[str, Any]]]:
    """model id → its registered versions with their aliases."""
    index: dict[str, list[dict[str, Any]]] = {}
    models = lineage.with_retries(
        "cannot list registered models", lambda: list(client.search_registered_models())
    )
    for rm in models:
        aliases: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        versions = lineage.with_retries(
            f"cannot list versions of {rm.name}",
            lambda rm=rm: list(client.search_model_versions(f"name='{rm.name}'")),
        )
        for v in versions:
            try:
                model_id = lineage._model_id_from_version(v)
            except TrackingError:
                continue
            index.setdefault(model_id, []).append(
                {
                    "name": v.name,
                    "version": int(v.version),
                    "aliases": sorted(aliases.get(str(v.version), [])),
                }
            )
    return index


def lineage_of(ref: str, client=None) -> Lineage:
    """Walk from a model (registry reference or id) back to the training data."""
    client = client or lineage.connect()
    model_id = lineage.resolve_model_id(ref, client)
    chain, missing = lineage.parent_chain(model_id)
    index = registry_index(client)
    steps = [_step(m) for m in chain]
    for s in steps:
        s.registry = sorted(index.get(s.model_id, []), key=lambda r: (r["name"], r["version"]))
    tags = chain[0].tags or {}
    dataset = None
    if tags.get(f"{TAG}dataset_digest"):
        dataset = {
            "name": tags.get(f"{TAG}dataset_name"),
            "digest": tags.get(f"{TAG}dataset_digest"),
            "source": tags.get(f"{TAG}dataset_source"),
            "stored_at": tags.get(f"{TAG}dataset_uri"),
        }
    return Lineage(ref, model_id, dataset, steps, missing)


# --- rendering --------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_text(lin: Lineage) -> str:
    lines = [f"lineage of {lin.query} (model {lin.model_id})"]
    if lin.dataset:
        d = lin.dataset
        lines.append(f"dataset  {d['name']}  sha256 {d['digest']}  source {d['source']}")
        if d.get("stored_at"):
            lines.append(f"         stored at {d['stored_at']}")
    else:
        lines.append("dataset  (none recorded)")
    if lin.broken_at:
        lines.append(f"BROKEN CHAIN: parent {lin.broken_at} no longer exists")
    for i, s in enumerate(lin.steps):
        arrow = "└─" if i == 0 else "  " * i + "└─"
        pad = "  " * (i + 1) + "   "
        lines.append(f"{arrow} {s.technique}: {s.name}  [{s.model_id}]")
        lines.append(
            f"{pad}run {s.source_run_id}  pipeline run {s.pipeline_run_id}  package {s.package_version}"
            + (f"  image {s.image}" if s.image else "")
        )
        if s.code:
            lines.append(
                f"{pad}code: git {s.code.get('git_commit', 'unknown')} ({s.code.get('git_commit_source', '?')})"
                + (f"  image digest {s.code['image_digest']}" if s.code.get("image_digest") else "")
            )
        if s.retrain:
            lines.append(f"{pad}retrain: " + ", ".join(f"{k}={v}" for k, v in s.retrain.items()))
        if s.params:
            lines.append(f"{pad}params: " + ", ".join(f"{k}={v}" for k, v in sorted(s.params.items())))
        if s.metrics:
            lines.append(f"{pad}metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in s.metrics.items()))
        for cls, b in s.benchmarks.items():
            kind = "emulated" if b["emulated"] else "real device"
            kind += f"; timing {b['timing']}" if b.get("timing") else ""
            lines.append(
                f"{pad}bench {cls} ({kind}): p50 {_fmt(b.get('p50_ms'))} ms, p90 {_fmt(b.get('p90_ms'))} ms"
            )
        if s.gate:
            lines.append(f"{pad}gate: {s.gate} ({s.gate_reason})")
        for r in s.registry:
            lines.append(
                f"{pad}registry: {r['name']} v{r['version']}"
                + (f"  aliases {', '.join(r['aliases'])}" if r["aliases"] else "")
            )
    return "\n".join(lines) + "\n"


def render_mermaid(lin: Lineage) -> str:
    def node_id(text: str) -> str:
        return re.sub(r"\W", "_", text)

    def q(text: str) -> str:
        return text.replace('"', "'")

    lines = ["flowchart TD"]
    prev = None
    if lin.dataset:
        prev = "dataset"
        lines.append(
            f'  dataset[("{q(lin.dataset["name"] or "")}<br/>sha256 {lin.dataset["digest"][:12]}…")]'
        )
    if lin.broken_at:
        lines.append(f'  missing{{{{"missing parent {lin.broken_at}"}}}}')
        prev = "missing"
    for s in lin.steps:
        nid = node_id(s.model_id)
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in s.metrics.items() if "accuracy" in k)
        lines.append(
            f'  {nid}["{q(s.technique)}: {q(s.name)}<br/>{s.model_id}'
            + (f"<br/>{q(metrics)}" if metrics else "")
            + '"]'
        )
        if prev:
            lines.append(f"  {prev} --> {nid}")
        for cls, b in s.benchmarks.items():
            bid = node_id(f"{s.model_id}_{cls}")
            kind = ("emulated" if b["emulated"] else "real") + (
                "; timing not meaningful" if b.get("timing") else ""
            )
            lines.append(
                f'  {bid}(["{q(cls)} ({kind})<br/>p50 {_fmt(b.get("p50_ms"))} ms, p90 {_fmt(b.get("p90_ms"))} ms"])'
            )
            lines.append(f"  {nid} -.-> {bid}")
        for r in s.registry:
            rid = node_id(f"{r['name']}_v{r['version']}")
            aliases = (" @" + ", @".join(r["aliases"])) if r["aliases"] else ""
            lines.append(f'  {rid}[/"{q(r["name"])} v{r["version"]}{q(aliases)}"/]')
            lines.append(f"  {nid} --> {rid}")
        prev = nid
    return "\n".join(lines) + "\n"


def render(lin: Lineage, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(lin.as_dict(), indent=2, default=str) + "\n"
    if fmt == "mermaid":
        return render_mermaid(lin)
    if fmt == "text":
        return render_text(lin)
    raise ConfigError(f"unknown format {fmt!r}: use text, json or mermaid")


# --- audit queries ----------------------------------------------------------------------------


def _all_models(client) -> list[Any]:
    experiments = lineage.with_retries("cannot list experiments", lambda: list(client.search_experiments()))
    ids = [e.experiment_id for e in experiments]
    out, token = [], None
    while ids:
        page = lineage.with_retries(
            "cannot list logged models",
            lambda token=token: client.search_logged_models(ids, max_results=1000, page_token=token),
        )
        out += list(page)
        token = page.token
        if not token:
            break
    return out


def models_from_dataset(digest: str, client=None) -> list[dict[str, Any]]:
    """Every model trained or compressed from a dataset (digest or a unique prefix of it)."""
    if len(digest) < 8:
        raise ConfigError(f"dataset digest {digest!r} is too short: give at least 8 hex characters")
    client = client or lineage.connect()
    rows = []
    for m in _all_models(client):
        tags = m.tags or {}
        if tags.get(f"{TAG}dataset_digest", "").startswith(digest.lower()):
            rows.append(
                {
                    "model_id": m.model_id,
                    "name": m.name,
                    "technique": tags.get(f"{TAG}technique"),
                    "parent_model_id": tags.get(f"{TAG}parent_model_id") or None,
                    "dataset_name": tags.get(f"{TAG}dataset_name"),
                    "dataset_digest": tags.get(f"{TAG}dataset_digest"),
                    "created": m.creation_timestamp,
                }
            )
    return sorted(rows, key=lambda r: r["created"])


def unbenchmarked_versions(device_class: str, client=None) -> list[dict[str, Any]]:
    """Registered versions whose model has no benchmark on a device class. A class that is neither a
    device profile nor benchmarked on any registered model is a ConfigError naming the known classes
    (a typo would otherwise list every version as unbenchmarked, and exit 0)."""
    from edgecompress.runtime.devices import profiles

    client = client or lineage.connect()
    rows = []
    known = set(profiles())
    for model_id, versions in registry_index(client).items():
        try:
            model = lineage.get_model(model_id)
        except TrackingError:
            rows += [
                {**v, "model_id": model_id, "reason": "the logged model no longer exists"} for v in versions
            ]
            continue
        benchmarked = benchmarks_of(model)
        known |= set(benchmarked)
        if device_class not in benchmarked:
            rows += [
                {**v, "model_id": model_id, "reason": f"no benchmark on {device_class}"} for v in versions
            ]
    if device_class not in known:
        raise ConfigError(
            f"unknown device class {device_class!r}: neither a device profile nor benchmarked on any "
            f"registered model; known classes: {', '.join(sorted(known))}"
        )
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def broken_chains(client=None) -> list[dict[str, Any]]:
    """Models whose parent no longer exists."""
    client = client or lineage.connect()
    models = _all_models(client)
    present = {m.model_id for m in models}
    rows = []
    for m in models:
        parent = (m.tags or {}).get(f"{TAG}parent_model_id")
        if parent and parent not in present:
            try:
                lineage.get_model(parent)
                continue
            except TrackingError:
                rows.append(
                    {
                        "model_id": m.model_id,
                        "name": m.name,
                        "technique": (m.tags or {}).get(f"{TAG}technique"),
                        "missing_parent": parent,
                    }
                )
    return rows


# --- promotion --------------------------------------------------------------------------------


def device_class_of_alias(alias: str) -> str:
    if not alias.endswith(PRODUCTION_SUFFIX) or len(alias) == len(PRODUCTION_SUFFIX):
        raise ConfigError(
            f"alias {alias!r}: expected <device-class>{PRODUCTION_SUFFIX}, e.g. rpi4-emulated{PRODUCTION_SUFFIX}"
        )
    return alias[: -len(PRODUCTION_SUFFIX)]


class PromotionRefused(ConfigError):
    """The model does not qualify for the alias; the message says why."""


def promote(ref: str, alias: str, registered_name: str | None = None, client=None) -> dict[str, Any]:
    """Point `<device-class>-production` at a model, if it passed its accuracy gate and was
    benchmarked on that device class; otherwise raise PromotionRefused saying why."""
    device_class = device_class_of_alias(alias)
    client = client or lineage.connect()
    model_id = lineage.resolve_model_id(ref, client)
    model = lineage.get_model(model_id)
    tags = model.tags or {}
    gate = tags.get(f"{TAG}gate")
    reasons = []
    if gate is None:
        reasons.append("it never went through an accuracy gate")
    elif gate != "accepted":
        reasons.append(f"it failed its accuracy gate ({tags.get(f'{TAG}gate_reason', 'no reason recorded')})")
    accepted_on = [c for c in tags.get(f"{TAG}gate_accepted_classes", "").split(",") if c]
    if gate == "accepted" and accepted_on and device_class not in accepted_on:
        reasons.append(f"its gate accepted it only on {', '.join(accepted_on)}, not on {device_class!r}")
    benches = benchmarks_of(model)
    if device_class not in benches:
        have = ", ".join(benches) or "none"
        reasons.append(f"it has no benchmark on device class {device_class!r} (benchmarked on: {have})")
    if reasons:
        raise PromotionRefused(f"refusing to promote {ref} ({model_id}) to @{alias}: " + "; ".join(reasons))
    versions = registry_index(client).get(model_id, [])
    if ref.startswith("models:/") and "@" not in ref and not lineage.MODEL_ID_RE.match(ref[8:]):
        name, number = ref[len("models:/") :].rsplit("/", 1)
        target = {"name": name, "version": int(number)}
    elif ref.startswith("models:/") and "@" in ref:
        target = {"name": ref[len("models:/") :].rsplit("@", 1)[0]}
        target["version"] = next(v["version"] for v in versions if v["name"] == target["name"])
    elif registered_name or versions:
        name = registered_name or versions[0]["name"]
        found = [v for v in versions if v["name"] == name]
        version = found[-1]["version"] if found else lineage.register(model_id, name, [])
        target = {"name": name, "version": version}
    else:
        raise ConfigError(f"model {model_id} is not registered: pass --name to register it under a name")
    lineage.with_retries(
        f"cannot set alias {alias} on {target['name']} v{target['version']}",
        lambda: client.set_registered_model_alias(target["name"], alias, str(target["version"])),
    )
    return {
        "model_id": model_id,
        "alias": alias,
        "device_class": device_class,
        **target,
        "benchmark": benches[device_class],
    }
