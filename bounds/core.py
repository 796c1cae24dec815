"""`Condition` (one statement of the theory) and `Verdict` (its value on measured quantities).

A condition reads plain numbers from a mapping ``q`` (names in :mod:`bounds.quantities`) and returns a
verdict ``value <relation> threshold`` with ``holds`` True/False, or None when it cannot be decided: a
needed quantity is missing or not finite, or it is a scaling law whose constant was not given.
Nothing here raises for a missing quantity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from bounds.quantities import complete

__all__ = ["Condition", "Verdict", "Outcome", "STATUSES", "RELATIONS", "ROUNDING", "at_most"]

STATUSES = ("stated", "scaling", "derived")
RELATIONS = ("<=", ">=", "<", ">", "in", "==")
ROUNDING = 1e-12  # relative slack of ``at_most``: the GD bounds are attained, so equality must survive rounding


def at_most(value: float, bound: float) -> bool:
    """value ≤ bound up to rounding (relative ROUNDING): a bound met with equality in exact arithmetic holds."""
    return value <= bound + ROUNDING * abs(bound)


@dataclass(frozen=True)
class Verdict:
    """``value <relation> threshold``; ``holds`` None when undecidable, ``note`` says why or what the gap is."""

    key: str
    value: float
    threshold: float
    relation: str
    holds: bool | None
    note: str = ""

    def to_dict(self) -> dict:
        """Stable JSON-able keys; non-finite floats become None."""
        num = lambda x: float(x) if x is not None and math.isfinite(x) else None  # noqa: E731
        return {"key": self.key, "value": num(self.value), "threshold": num(self.threshold),
                "relation": self.relation, "holds": self.holds, "note": self.note}


@dataclass(frozen=True)
class Outcome:
    """What a rule computes: the verdict without its key and relation."""

    value: float
    threshold: float
    holds: bool | None
    note: str = ""


Rule = Callable[[Mapping, Mapping], Outcome]


@dataclass(frozen=True)
class Condition:
    """One statement of the theory.

    ``status``: ``stated`` (in the paper, as far as it could be recovered; see ``confidence``),
    ``scaling`` (an Ω(·) law whose constant is unknown, exposed in ``constants``), ``derived`` (proved in
    bounds/DERIVATIONS.md for exactly this model). ``needs``: the quantities without which it cannot be
    evaluated. ``required``: True when the paper's theorem needs it as a hypothesis (``verify --strict``).
    ``text``: the formula in plain text for a terminal.
    """

    key: str
    title: str
    source: str
    latex: str
    text: str
    status: str
    confidence: str
    needs: tuple[str, ...]
    required: bool
    relation: str
    rule: Rule = field(repr=False, compare=False)
    constants: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status of {self.key} must be one of {STATUSES} (got {self.status!r})")
        if self.relation not in RELATIONS:
            raise ValueError(f"relation of {self.key} must be one of {RELATIONS} (got {self.relation!r})")

    def missing(self, q: Mapping) -> list[str]:
        """Needed quantities that are absent, None or not finite (after :func:`complete`)."""
        q = complete(q)
        return [name for name in self.needs if not _finite(q.get(name))]

    def evaluate(self, q: Mapping, **constants) -> Verdict:
        """The verdict on quantities ``q``; ``constants`` set a scaling law's unknown constants.

        A scaling law evaluated without its constants reports the threshold at the defaults and
        ``holds = None``.
        """
        unknown = set(constants) - set(self.constants)
        if unknown:
            raise TypeError(f"{self.key} has no constant {', '.join(sorted(unknown))} "
                            f"(its constants: {', '.join(self.constants) or 'none'})")
        q = complete(q)
        missing = self.missing(q)
        if missing:
            return Verdict(self.key, math.nan, math.nan, self.relation, None,
                           f"not evaluated: {', '.join(missing)} missing or not finite")
        c = {**self.constants, **constants, "_given": bool(constants)}
        out = self.rule(q, c)
        holds = None if out.holds is None else bool(out.holds)  # a numpy bool is not JSON-able
        return Verdict(self.key, float(out.value), float(out.threshold), self.relation, holds, out.note)


def _finite(x) -> bool:
    if x is None:
        return False
    arr = np.asarray(x, dtype=float)
    return arr.size > 0 and bool(np.isfinite(arr).all())
