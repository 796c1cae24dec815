"""Lemmas 5.1–5.4 are Ω(·) laws with an unknown constant: test their shape (exponents, monotonicity,
limits, where they are defined), and that a verdict is only given once the constant is."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounds import lemma_threshold, registry
from bounds.lemmas import LEMMAS, lemma5_2_denominator

SHAPE = settings(max_examples=60, deadline=None)
Ls = st.integers(2, 8)


def slope(lemma, T, L, h=1e-6):
    """d log f / d log T, by a central difference."""
    f = lambda t: math.log(lemma_threshold(lemma, t, L))  # noqa: E731
    return (f(T * math.exp(h)) - f(T * math.exp(-h))) / (2 * h)


@SHAPE
@given(st.floats(2.0, 1e4), Ls)
def test_exponents_in_T(T, L):
    assert slope("5.1", T, L) == pytest.approx(1 / (L - 1), rel=1e-6)
    assert slope("5.3", T, L) == pytest.approx(4 / (L - 1), rel=1e-6)
    assert slope("5.4", T, L) == pytest.approx(5 / (L - 1), rel=1e-6)
    assert lemma_threshold("5.4", T, L) / T ** (5 / (L - 1)) == pytest.approx(L ** (1 / (L - 1)))


@SHAPE
@given(st.integers(1, 10 ** 4), Ls)
def test_5_1_5_3_5_4_increase_with_T(T, L):
    for lemma in ("5.1", "5.3", "5.4"):
        assert lemma_threshold(lemma, T + 1, L) > lemma_threshold(lemma, T, L)


@SHAPE
@given(st.integers(2, 10 ** 4), st.integers(2, 7))
def test_all_relax_as_L_grows(T, L):
    for lemma in ("5.1", "5.3", "5.4"):
        assert lemma_threshold(lemma, T, L + 1) < lemma_threshold(lemma, T, L)
    if T > 4 and lemma5_2_denominator(T, L) > 0:  # the denominator (L−1)T − 4L + 6 grows with L iff T > 4
        assert lemma_threshold("5.2", T, L + 1) < lemma_threshold("5.2", T, L)


@SHAPE
@given(st.integers(1, 200), Ls)
def test_5_2_is_defined_exactly_when_its_denominator_is_positive(T, L):
    value = lemma_threshold("5.2", T, L)
    assert math.isnan(value) == (T * L - T - 4 * L + 6 <= 0)


@pytest.mark.parametrize("L", range(2, 8))
def test_5_2_exponent_tends_to_3_over_L_minus_1_and_is_monotone_only_past_its_minimum(L):
    """Lemma 5.2 is not monotone in T: huge just past where it is defined, a minimum, then growth like
    T^{3/(L−1)}. The growth part is what 'polynomial in T' means; the dip is a property of the formula."""
    T = np.arange(1, 20001)
    f = np.array([lemma_threshold("5.2", t, L) for t in T])
    ok = ~np.isnan(f)
    logs = np.log(f[ok])
    t_min = T[ok][np.argmin(logs)]
    assert np.all(np.diff(logs[T[ok] >= t_min]) > 0)
    assert np.all(np.diff(logs[T[ok] <= t_min]) < 0)
    assert slope("5.2", 1e9, L) == pytest.approx(3 / (L - 1), rel=1e-3)


def test_values_match_the_table_of_paper_math():
    """paper_math.md §4.6, L = 3: T = 10 → 3.2 / 373 / 100 / 548; T = 100 → 10 / 1.4e3 / 1e4 / 1.7e5."""
    for T, expected in ((10, (3.2, 373, 100, 548)), (100, (10, 1.4e3, 1e4, 1.7e5))):
        got = [lemma_threshold(lem, T, 3) for lem in ("5.1", "5.2", "5.3", "5.4")]
        np.testing.assert_allclose(got, expected, rtol=0.03)


@given(st.integers(5, 500), Ls, st.floats(1.0, 1e6), st.floats(0.01, 100.0))
@settings(max_examples=30, deadline=None)
def test_verdict_needs_the_constant_and_then_compares_e_with_C_f(T, L, e, C):
    q = {"T": T, "L": L, "e": e}
    for cond in LEMMAS:
        unknown = cond.evaluate(q)
        assert unknown.holds is None and "C unknown" in unknown.note and "C = 1" in unknown.note
        f = lemma_threshold(cond.source.split()[-1], T, L)
        if math.isnan(f):
            continue
        decided = cond.evaluate(q, C=C)
        assert decided.threshold == pytest.approx(C * f)
        assert decided.holds == (e >= C * f)


def test_scaling_laws_expose_their_constant():
    scaling = [c for c in registry() if c.status == "scaling"]
    assert {c.key for c in scaling} == {"lemma5_1.e", "lemma5_2.e", "lemma5_3.e", "lemma5_4.e"}
    assert all(c.constants == {"C": 1.0} for c in scaling)
    with pytest.raises(TypeError):
        scaling[0].evaluate({"T": 10, "L": 3, "e": 1.0}, K=2.0)
