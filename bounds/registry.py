"""Every condition in report order, and the two ways to evaluate them: on measured quantities, and on a
configuration alone (what ``ntkcheck bounds`` prints)."""

from __future__ import annotations

from typing import Mapping

from bounds import gd, lemmas, local, theorem
from bounds.core import Condition, Verdict

__all__ = ["registry", "get", "evaluate_all", "thresholds"]

_ALL = (*gd.CONDITIONS, theorem.WIDTH, *lemmas.CONDITIONS, theorem.ALPHA0, theorem.DELTA4, local.EQ13,
        local.EQ14, local.EQ14_APRIORI, local.COR_C1, theorem.RATE, theorem.RATE_DERIVED, theorem.RATE_NTK,
        theorem.LINEAR, theorem.ALIGNMENT, theorem.VS_GD_BOUND)
assert len({c.key for c in _ALL}) == len(_ALL)
assert {c.key for c in _ALL} == {c.key for c in (*gd.CONDITIONS, *theorem.CONDITIONS, *local.CONDITIONS,
                                                  *lemmas.CONDITIONS)}


def registry() -> tuple[Condition, ...]:
    """All conditions, in report order: GD and steps, width and Lemmas, Thm 4.3's hypotheses, its rates."""
    return _ALL


def evaluate_all(q: Mapping, **constants) -> list[Verdict]:
    """The verdict of every condition; ``constants`` (e.g. C=1) go to the conditions that have them."""
    return [c.evaluate(q, **{k: v for k, v in constants.items() if k in c.constants}) for c in _ALL]


def thresholds(T: int, L: int, e: float, eta: float, *, N: int | None = None, d: int | None = None,
               b: int | None = None, n: int | None = None, step_scale: float = 1.0, C: float | None = None,
               data: Mapping | None = None) -> list[dict]:
    """The conditions that a configuration alone decides (plus ``data``, e.g. :func:`bounds.gd.gd_quantities`),
    each as a dict: key, title, source, status, confidence, formula, relation, threshold, value, holds,
    note, constants. P_max = 2 (the supremum of 2σ) stands for the unknown measured step multipliers.
    """
    config = {"T": T, "L": L, "e": e, "eta": eta, "N": N, "d": d, "b": b, "n": n, "step_scale": step_scale,
              "P_max": 2.0}
    q = {k: v for k, v in {**config, **(data or {})}.items() if v is not None}
    rows = []
    for cond in _ALL:
        if cond.missing(q):
            continue
        v = cond.evaluate(q, **({"C": C} if C is not None and "C" in cond.constants else {}))
        note = v.note + ("; P_max = 2, the supremum of 2σ" if "P_max" in cond.needs else "")
        rows.append({"key": cond.key, "title": cond.title, "source": cond.source, "status": cond.status,
                     "confidence": cond.confidence, "formula": cond.text, "relation": v.relation,
                     "threshold": v.threshold, "value": v.value, "holds": v.holds, "note": note,
                     "constants": {**cond.constants, **({"C": C} if C is not None and cond.constants else {})}})
    return rows


def get(key: str) -> Condition:
    """The condition with ``key`` (e.g. ``"thm4_3.rate"``); KeyError lists the keys."""
    for c in _ALL:
        if c.key == key:
            return c
    raise KeyError(f"no condition {key!r}; the keys are {', '.join(c.key for c in _ALL)}")
