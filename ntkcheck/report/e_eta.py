"""The lines of the e–η plane, drawn alike in a run's figure (:mod:`ntkcheck.report.run`, one point) and in a sweep's
(:mod:`ntkcheck.report.sweep_figures`, a grid): the same keys, labels and styles.

    stable             η = 2/λ_max(K_0(e)), measured: the linearised dynamics are stable below it
    eq14.eta           Eq. 14: η ≤ 1/λ_max(K_0)
    eq14.eta_apriori   Eq. 14 a priori: η ≤ 1/Λ̄₀²(e), Λ̄₀² ≥ λ_max(K_0) from the data alone
    corC1.e_eta        Cor. C.1: the largest e that η admits (points)
    lemma5_*.e         Lemmas 5.1–5.4: e ≥ C·(threshold), vertical lines (C unknown: drawn at the constant given)
"""

from __future__ import annotations

import math

from ntkcheck.report.plots import tick

LINES = {  # key → (legend label, line style)
    "stable": ("η = 2/λ_max(K_0(e)), measured", {"color": "black", "lw": 1.5}),
    "eq14.eta": ("Eq. 14: η ≤ 1/λ_max(K_0) (Lipschitz constant ≈ λ_max)", {"color": "C0", "ls": "--", "lw": 1.2}),
    "eq14.eta_apriori": ("Eq. 14 a priori: η ≤ 1/Λ̄₀²(e), Λ̄₀² ≥ λ_max(K_0) from the data",
                         {"color": "C1", "ls": "-.", "lw": 1.2}),
}
ETA_BOUNDS = ("eq14.eta", "eq14.eta_apriori")  # the theory's η bounds as functions of e
COR_C1 = "Cor. C.1: largest e for each η, ∝ η^(−1/(2(L−1)))"
LEMMA_COLORS = ("C4", "C5", "C8", "C9")
POINT_COLOR = "C3"


def eta_line(ax, key: str, e, eta, low=None, high=None, note: str = "") -> None:
    """The line ``key`` of :data:`LINES` through (e, η), its label followed by ``note``; with ``low`` and ``high``
    its band (e.g. min–max over seeds)."""
    text, style = LINES[key]
    ax.plot(e, eta, label=text + note, zorder=4, **style)
    if low is not None:
        ax.fill_between(e, low, high, color=style["color"], alpha=0.15, lw=0)


def cor_c1(ax, e, eta, note: str = "") -> None:
    """Cor. C.1's largest e (``e``) at each η (``eta``) as points."""
    ax.scatter(e, eta, marker="X", s=45, color="C2", zorder=5, label=COR_C1 + note)


def lemma_lines(ax, lemmas, e_min: float, e_max: float) -> None:
    """Each lemma (source, threshold on e, its constant C, note) as a vertical line where its threshold lies in
    [``e_min``, ``e_max``], else as a legend entry that says it is off the axis, or why it has no threshold."""
    for (source, threshold, C, note), color in zip(lemmas, LEMMA_COLORS):
        if threshold is None or not math.isfinite(threshold):
            ax.plot([], [], ls="none", label=f"{source}: {note}")
            continue
        where = f"{source}: e ≥ {tick(threshold)} at C = {C:g} (C unknown)"
        if e_min <= threshold <= e_max:
            ax.axvline(threshold, color=color, ls=":", lw=1.5, zorder=4, label=where)
        else:
            ax.plot([], [], ls="none", label=f"{where}, off the axis")


def median_band(frame, x: str, y: str):
    """(x values, median, min, max) of ``y`` over each ``x`` of ``frame``, NaN rows left out."""
    s = frame[[x, y]].dropna().groupby(x)[y].agg(["median", "min", "max"])
    return s.index.to_numpy(dtype=float), *(s[c].to_numpy(dtype=float) for c in ("median", "min", "max"))
