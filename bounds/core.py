"""`Condition` (one statement of the theory) and `Verdict` (its value on measured quantities).

A condition reads plain numbers from a mapping ``q`` (names in :mod:`bounds.quantities`) and returns a
verdict ``value <relation> threshold`` with ``holds`` True/False, or None when it cannot be decided: a
needed quantity is missing or not finite, or it is a scaling law whose constant was not given.
Nothing here raises for a missing quantity, nor for finite inputs whose results leave float64: a value or
threshold that overflows is reported as inf (one that underflows as 0), the verdict stays decided where the
inequality still is (the rules compare logarithms where that is the honest computation: :func:`log_of`,
:func:`decide_logs`), and ``holds`` is None with a note "overflows float64" where it is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from bounds.quantities import complete

__all__ = ["Condition", "Setting", "THEOREM", "ANY", "Verdict", "Outcome", "STATUSES", "RELATIONS", "ROUNDING", "OVERFLOW", "at_most", "log_of",
           "exp_of", "log_product", "decide_logs", "range_note"]

STATUSES = ("stated", "scaling", "derived")
RELATIONS = ("<=", ">=", "<", ">", "in", "==")
ROUNDING = 1e-12  # relative slack of ``at_most``: the GD bounds are attained, so equality must survive rounding
OVERFLOW = "overflows float64"
_LOG_MAX = math.log(np.finfo(np.float64).max)  # 709.78: exp of anything above is inf in float64


def at_most(value: float, bound: float) -> bool:
    """value ≤ bound up to rounding (relative ROUNDING): a bound met with equality in exact arithmetic holds."""
    return value <= bound + ROUNDING * abs(bound)


def log_of(x) -> float:
    """ln x for x ≥ 0 as a float (−inf for 0, nan for a negative or nan x); never raises."""
    with np.errstate(all="ignore"):
        return float(np.log(np.float64(x)))


def exp_of(log_x: float) -> float:
    """exp(log_x) in float64: inf where it overflows, 0 where it underflows; never raises."""
    with np.errstate(all="ignore"):
        return float(np.exp(np.float64(log_x)))


def log_product(*factors: tuple[float, float]) -> float:
    """ln ∏ |v|^p over (v, p) pairs (finite v, p ≠ 0): Σ p·ln|v|, −inf when some v with p > 0 is 0 (the product
    is then exactly 0), +inf when some v with p < 0 is 0, nan when both. The product itself may lie far outside
    float64; its logarithm does not."""
    zero = any(v == 0 and p > 0 for v, p in factors)
    pole = any(v == 0 and p < 0 for v, p in factors)
    if zero or pole:
        return math.nan if zero and pole else (-math.inf if zero else math.inf)
    return float(sum(p * log_of(abs(v)) for v, p in factors))


def decide_logs(log_value: float, relation: str, log_threshold: float) -> bool | None:
    """``value <relation> threshold`` decided on logarithms (positive sides): None where it cannot be
    (a nan, or both sides infinite in the same direction, i.e. beyond what float64 can tell apart)."""
    a, b = log_value, log_threshold
    if math.isnan(a) or math.isnan(b) or (math.isinf(a) and a == b):
        return None
    return {"<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[relation]


def range_note(name: str, log_x: float) -> str:
    """"" where exp(log_x) is a normal float64, else a note that it overflows (or underflows), with its
    decimal exponent when that is known."""
    if math.isnan(log_x) or log_x == -math.inf:
        return ""
    if log_x == math.inf:
        return f"{name} {OVERFLOW}"
    if log_x > _LOG_MAX:
        return f"{name} = 10^{log_x / math.log(10):.6g} {OVERFLOW}"
    if exp_of(log_x) == 0.0:
        return f"{name} = 10^{log_x / math.log(10):.6g} underflows float64 (shown as 0)"
    return ""


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
class Setting:
    """The settings a condition is a statement about: objective families (``qp``: least squares ½‖Mx − y‖², ``lasso``,
    ``logistic``) and backbones (``gd``, ``nag``, ``prox``, ``fista``); None: any. ``why``: what the statement rests
    on, quoted when a run lies outside."""

    problems: tuple[str, ...] | None
    updates: tuple[str, ...] | None
    why: str

    def outside(self, problem: str, update: str) -> str | None:
        """Why (problem, update) lies outside this setting; None when it is inside."""
        if (self.problems is None or problem in self.problems) and (self.updates is None or update in self.updates):
            return None
        return f"{self.why}; this run is problem {problem} with update {update}"


THEOREM = Setting(("qp",), ("gd",), "derived for least squares with the gd backbone X_t = X_{t−1} − (s/β_i)P_t ⊙ "
                                    "∇F(X_{t−1}), as Thm 4.3 is")
ANY = Setting(None, None, "a statement about the model alone")


@dataclass(frozen=True)
class Condition:
    """One statement of the theory.

    ``status``: ``stated`` (in the paper, as far as it could be recovered; see ``confidence``),
    ``scaling`` (an Ω(·) law whose constant is unknown, exposed in ``constants``), ``derived`` (proved in
    bounds/DERIVATIONS.md for exactly this model). ``needs``: the quantities without which it cannot be
    evaluated. ``required``: True when the paper's theorem needs it as a hypothesis (``verify --strict``).
    ``text``: the formula in plain text for a terminal. ``setting``: the objectives and backbones it is a statement
    about (:class:`Setting`; the theorem's by default), which ``verify`` reads to say "does not apply" elsewhere.
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
    setting: Setting = THEOREM

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
        with np.errstate(all="ignore"):  # a result beyond float64 is inf or 0 here; the rules say so in their notes
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
    try:
        arr = np.asarray(x, dtype=float)
    except (OverflowError, TypeError, ValueError):  # e.g. a Python int beyond float64
        return False
    return arr.size > 0 and bool(np.isfinite(arr).all())
