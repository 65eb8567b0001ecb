"""Champion / challenger: a retrained model takes `<class>-production` only where it is not worse than
the model that alias points at now.

The challenger (the retrain's gated child) and the champion (the production model) are compared on
the same fresh decision data (the gate's decision images of the retrain's dataset, which holds part
of the drifted batch)
and, per device class, in interleaved latency rounds on that class, with the gate's statistics
(`edgecompress.gate`). The rule, stated in every result:

- accuracy: the gate's accuracy rule (`accuracy_breaks_rule`), with the champion in the parent's
  place: the challenger may not lose more than `max_accuracy_drop` against the champion;
- speed: the challenger is not slower: the interval of the speed-up (champion p50 / challenger
  p50) is not wholly below 1 − `promotion_max_slowdown` (0.97× by default). The margin is a
  non-inferiority margin, as `max_accuracy_drop` is for accuracy: two builds of the same
  architecture differ by a fraction of a percent that interleaved rounds resolve (0.995× [0.991,
  0.999] on a 9 µs model) and nobody feels; without it, "not slower" refuses them at random. A
  class whose timings are not meaningful (QEMU) is decided on accuracy only, and the result says so.

Where a class has no production model yet, today's rule holds: the gate's verdict on the child
against its own parent decides (`audit.promote`). A refused class keeps its champion, and the result
says why with the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgecompress import audit, lineage
from edgecompress.edge import Measurement
from edgecompress.errors import TrackingError
from edgecompress.gate import GateConfig, accuracy_breaks_rule, accuracy_drop_interval, decision_correctness
from edgecompress.runtime.devices import timing_note

TAG = lineage.TAG
BENCH_FIELDS = ("farm_url", "bench_min_runs", "bench_min_duration_s", "bench_warmup_runs")


def production_alias(device_class: str) -> str:
    return f"{lineage.alias_name(device_class)}{audit.PRODUCTION_SUFFIX}"


def rule_text(config: GateConfig) -> str:
    """The champion/challenger rule, as every promotion result states it."""
    rule = config.rule
    accuracy = (
        f"the challenger's paired accuracy drop against the champion on {config.decision_split}"
        if rule.accuracy_rule == "point"
        else f"the upper {rule.confidence:.0%} bound of the challenger's paired accuracy drop against "
        f"the champion on {config.decision_split}"
    )
    return (
        f"challenger vs the model <class>-production points at now: {accuracy} ≤ "
        f"{rule.max_accuracy_drop * 100:g} points, and not slower: the {rule.confidence:.0%} interval "
        f"of the interleaved speed-up (champion p50 / challenger p50) not wholly below "
        f"{1 - config.promotion_max_slowdown:g}× (classes timed under QEMU: accuracy only); no production "
        "model yet: the gate's verdict against its own parent"
    )


def slower_than_champion(speed: dict[str, Any], device_class: str, config: GateConfig) -> str | None:
    """Why the challenger counts as slower on this class, or None: its speed-up's interval lies wholly
    below 1 − `promotion_max_slowdown`."""
    floor = 1 - config.promotion_max_slowdown
    if speed["ci_high"] >= floor:
        return None
    return (
        f"slower than the champion on {device_class}: speed-up {speed['speedup']:.3f}× "
        f"(champion p50 / challenger p50), {config.rule.confidence:.0%} CI [{speed['ci_low']:.3f}, "
        f"{speed['ci_high']:.3f}] wholly below {floor:g}× ({speed['champion_p50_ms']:.4g} ms vs "
        f"{speed['challenger_p50_ms']:.4g} ms, {speed['rounds']} interleaved rounds)"
    )


def current_champion(registered_name: str, device_class: str, client=None) -> dict[str, Any] | None:
    """The registered version `<class>-production` points at now, or None where there is none."""
    from mlflow.exceptions import MlflowException

    client = client or lineage.connect()
    alias = production_alias(device_class)
    try:
        version = client.get_model_version_by_alias(registered_name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise TrackingError(f"cannot read alias {alias} of {registered_name!r}: {exc}") from exc
    return {
        "name": registered_name,
        "version": int(version.version),
        "alias": alias,
        "model_id": lineage._model_id_from_version(version),
    }


def decision_correct(onnx_path: Path, dataset, config: GateConfig) -> np.ndarray:
    """Which decision images (the gate's: past validation's selection part) a model gets right."""
    correct, _ = decision_correctness({"model": Path(onnx_path)}, dataset, config, where="promotion")
    return correct["model"]


def compare(
    champion_onnx: Path,
    challenger_onnx: Path,
    dataset,
    device_class: str,
    config: GateConfig,
    correct: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Challenger vs champion on one device class: the paired accuracy drop with its interval and,
    where timing means something, the interleaved speed-up with its interval; `promote` and, when
    refused, `reasons` with the numbers. `correct` (champion/challenger correctness on the decision
    split) may be passed in, to evaluate once for several classes."""
    if correct is None:
        correct = {
            "champion": decision_correct(champion_onnx, dataset, config),
            "challenger": decision_correct(challenger_onnx, dataset, config),
        }
    accuracy = accuracy_drop_interval(correct["champion"], correct["challenger"], config.rule.confidence)
    accuracy["champion_accuracy"] = float(np.mean(correct["champion"]))
    accuracy["challenger_accuracy"] = float(np.mean(correct["challenger"]))
    reasons = []
    why = accuracy_breaks_rule(accuracy, config)
    if why:
        reasons.append(f"worse than the champion: {why.message}")
    note = timing_note(device_class)
    speed: dict[str, Any] | None = None
    if note is None:
        meter = Measurement(device_class, **{k: getattr(config.measurement, k) for k in BENCH_FIELDS})
        measured = meter.compare(
            Path(champion_onnx), Path(challenger_onnx), config.latency_rounds, config.rule.confidence
        )
        rounds = measured["latency_rounds"]
        speed = {k: measured[k] for k in ("speedup", "ci_low", "ci_high", "rounds", "method")}
        speed.update(
            champion_p50_ms=measured["parent_p50_ms"],
            challenger_p50_ms=measured["child_p50_ms"],
            champion_rounds_ms=list(rounds["parent_ms"]),
            challenger_rounds_ms=list(rounds["child_ms"]),
            emulated=bool(rounds["emulated"]),
        )
        why_slower = slower_than_champion(speed, device_class, config)
        if why_slower:
            reasons.append(why_slower)
    return {
        "device_class": device_class,
        "accuracy": accuracy,
        "speed": speed,
        "timing": note or "measured",
        "decided_on": "accuracy only (timing not meaningful)" if note else "accuracy and speed",
        "promote": not reasons,
        "reasons": reasons,
    }
