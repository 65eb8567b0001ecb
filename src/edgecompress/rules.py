"""What every accuracy decision shares: the rule (`AccuracyRule`: the gate, the target-ISA check,
autotune and promotion all decide with it) and the reasons a decision gives (`Reason`: a stable code
that programs test, plus a message for people).

The drop is paired (parent and child on the same images); `edgecompress.gate.accuracy_drop_interval`
measures it with its interval. Rule `upper` (the default): the interval's upper bound is within
`max_accuracy_drop`. Rule `point` (opt-in; reports say it ignores the uncertainty): the drop itself is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgecompress.errors import ConfigError

ACCURACY_RULES = ("upper", "point")


@dataclass(frozen=True)
class Reason:
    """Why a decision went the way it did: `code` for programs (stable), `message` for people."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reason:
        return cls(str(data["code"]), str(data["message"]))


def reasons_json(reasons: Iterable[Reason]) -> dict[str, list[str]]:
    """Reasons in a result's JSON: `reasons` (the messages, as reports and readers have always read them)
    and `reason_codes` beside them, in the same order."""
    reasons = list(reasons)
    return {"reasons": [r.message for r in reasons], "reason_codes": [r.code for r in reasons]}


def reasons_from_json(data: Mapping[str, Any]) -> list[Reason]:
    messages = list(data.get("reasons", []))
    codes = list(data.get("reason_codes", ["unknown"] * len(messages)))
    if len(codes) != len(messages):
        raise ValueError(f"{len(messages)} reasons but {len(codes)} reason codes")
    return [Reason(c, m) for c, m in zip(codes, messages, strict=True)]


def has_code(reasons: Iterable[Reason], *codes: str) -> bool:
    return any(r.code in codes for r in reasons)


@dataclass
class AccuracyRule:
    """How much accuracy a compressed model may lose against its parent, and how that is judged."""

    max_accuracy_drop: float = field(
        default=0.01, metadata={"help": "largest accuracy drop accepted, a fraction (0.01 = 1 point)"}
    )
    accuracy_rule: str = field(
        default="upper",
        metadata={
            "help": "upper: the 95 % upper bound of the paired drop is within max_accuracy_drop; point: "
            "the drop itself is (ignores the uncertainty; reports call it out)",
            "choices": ACCURACY_RULES,
        },
    )
    confidence: float = field(default=0.95, metadata={"help": "level of the intervals"})

    def validate(self, name: str = "max_accuracy_drop") -> None:
        """The range of each setting (`name`: what the largest drop is called where it was given)."""
        if not 0 < self.max_accuracy_drop < 1:
            raise ConfigError(
                f"impossible accuracy criterion: {name} must be in (0, 1), a fraction (0.01 = 1 point; an "
                f"interval never shows a drop of exactly 0), got {self.max_accuracy_drop}"
            )
        if self.accuracy_rule not in ACCURACY_RULES:
            raise ConfigError(f"accuracy_rule must be one of {ACCURACY_RULES}, got {self.accuracy_rule!r}")
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0.5, 1), got {self.confidence}")

    def bound(self, drop: Mapping[str, float]) -> float:
        """What the rule compares with the allowed drop: the drop, or its interval's upper bound."""
        return drop["drop"] if self.accuracy_rule == "point" else drop["ci_high"]

    def breaks(self, drop: Mapping[str, float], where: str, allowed: float | None = None) -> Reason | None:
        """Why a paired drop (`gate.accuracy_drop_interval`) on `where` breaks the rule, or None.
        `allowed` replaces `max_accuracy_drop` (autotune's relative criterion)."""
        allowed = self.max_accuracy_drop if allowed is None else allowed
        bound = self.bound(drop)
        if bound <= allowed + 1e-12:
            return None
        what = "drop" if self.accuracy_rule == "point" else f"upper {self.confidence:.0%} bound of the drop"
        message = f"accuracy {what} {bound * 100:.2f} points > allowed {allowed * 100:.2f}"
        if "ci_low" in drop:
            message += (
                f" (drop {drop['drop'] * 100:.2f}, {self.confidence:.0%} CI "
                f"[{drop['ci_low'] * 100:.2f}, {drop['ci_high'] * 100:.2f}] on {where})"
            )
        elif where:
            message += f" on {where}"
        return Reason("accuracy_drop_too_large", message)

    def describe(self, where: str, versus: str = "") -> str:
        """The rule in words, e.g. 'upper 95% bound of the paired drop on val ≤ 1 points'."""
        against = f" {versus}" if versus else ""
        if self.accuracy_rule == "point":
            return (
                f"paired accuracy drop{against} on {where} ≤ {self.max_accuracy_drop * 100:g} points "
                "(rule 'point': the point estimate decides, its uncertainty is ignored)"
            )
        return (
            f"upper {self.confidence:.0%} bound of the paired drop{against} on {where} "
            f"≤ {self.max_accuracy_drop * 100:g} points"
        )
