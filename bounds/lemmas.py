"""Lemmas 5.1–5.4: the smallest expansion coefficient e that makes each sufficient condition of
Thm 4.3 hold. Each is an Ω(·) law: e ≥ C·f(T, L) with an unknown constant C (default 1, shown).

    5.1  f = T^{1/(L−1)}
    5.2  f = T^{(3T+6)/(TL−T−4L+6)}        (undefined unless TL − T − 4L + 6 > 0)
    5.3  f = T^{4/(L−1)}
    5.4  f = T^{5/(L−1)} · L^{1/(L−1)}

Source: third-party summary (paper_math.md §4.6). A verdict is decided only when C is given.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.core import Condition, Outcome, exp_of, log_of, range_note
from bounds.quantities import scalar

__all__ = ["lemma_threshold", "lemma5_2_denominator", "LEMMAS", "CONDITIONS"]


def lemma5_2_denominator(T, L):
    """TL − T − 4L + 6 = (L − 1)T − 4L + 6; Lemma 5.2's exponent needs it > 0."""
    return T * L - T - 4 * L + 6


# ln f(T, L) of each law: the laws themselves overflow float64 quickly (T^{(3T+6)/…} near where 5.2 is defined)
def _f51(T, L):
    return log_of(T) / (L - 1)


def _f52(T, L):
    den = lemma5_2_denominator(T, L)
    return (3 * T + 6) / den * log_of(T) if den > 0 else math.nan


def _f53(T, L):
    return 4 * log_of(T) / (L - 1)


def _f54(T, L):
    return (5 * log_of(T) + log_of(L)) / (L - 1)


LAWS = {"5.1": _f51, "5.2": _f52, "5.3": _f53, "5.4": _f54}


def log_lemma_threshold(lemma: str, T, L, C: float = 1.0) -> float:
    """ln(C·f(T, L)) (:func:`lemma_threshold`), finite where C·f itself leaves float64; nan where undefined."""
    with np.errstate(all="ignore"):
        return log_of(C) + LAWS[lemma](np.float64(T), np.float64(L))


def lemma_threshold(lemma: str, T, L, C: float = 1.0) -> float:
    """C·f(T, L) for Lemma ``lemma`` ∈ {"5.1", …, "5.4"}; nan where Lemma 5.2 is undefined; needs L ≥ 2.
    inf where it overflows float64 (ln C·f: :func:`log_lemma_threshold`)."""
    log_f = log_lemma_threshold(lemma, T, L, C)
    return math.nan if math.isnan(log_f) else exp_of(log_f)


def _rule(lemma):
    def rule(q, c) -> Outcome:
        T, L, e, C = scalar(q, "T"), scalar(q, "L"), scalar(q, "e"), c["C"]
        if L < 2:
            return Outcome(e, math.nan, None, "undefined for L < 2")
        log_need = log_lemma_threshold(lemma, T, L, C)
        if math.isnan(log_need):
            return Outcome(e, math.nan, None, f"undefined: TL − T − 4L + 6 = {lemma5_2_denominator(T, L):g} ≤ 0")
        need, log_f = exp_of(log_need), log_need - log_of(C)
        shown = f"e ≥ C·{exp_of(log_f):.4g} with C = {C:g}"
        over = range_note("f(T, L)", log_f) or range_note("C·f(T, L)", log_need)
        shown += f" ({over})" if over else ""
        if not c["_given"]:
            return Outcome(e, need, None, f"{shown} (C unknown: pass it to decide)")
        return Outcome(e, need, log_of(e) >= log_need, shown)
    return rule


_TEX = {"5.1": r"T^{1/(L-1)}", "5.2": r"T^{(3T+6)/(TL-T-4L+6)}", "5.3": r"T^{4/(L-1)}",
        "5.4": r"T^{5/(L-1)} L^{1/(L-1)}"}
_TXT = {"5.1": "T^(1/(L−1))", "5.2": "T^((3T+6)/(TL−T−4L+6))", "5.3": "T^(4/(L−1))", "5.4": "T^(5/(L−1))·L^(1/(L−1))"}

LEMMAS = tuple(
    Condition(key=f"lemma{lem.replace('.', '_')}.e", title=f"Lemma {lem}: minimum expansion coefficient",
              source=f"Lemma {lem}", latex=rf"e = \Omega\big({_TEX[lem]}\big)", text=f"e ≥ C·{_TXT[lem]}",
              status="scaling", confidence="NOTE: third-party summary; C unknown",
              needs=("T", "L", "e"), required=True, relation=">=", rule=_rule(lem), constants={"C": 1.0})
    for lem in LAWS)

CONDITIONS = LEMMAS
