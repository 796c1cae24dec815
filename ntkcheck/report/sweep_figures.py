"""The figures of a sweep report: seaborn on matplotlib :class:`~matplotlib.figure.Figure` objects (no pyplot, so
nothing is displayed and a notebook's backend is left alone). Each function returns a Figure titled with the
configuration (:func:`title`); :func:`write_figures` saves them, each written atomically, into ``folder/figures/``.
They draw the numbers they are given and compute none: the theory's bounds of each cell come in as data
(:func:`ntkcheck.theory.sweep_bounds`, computed by the sweep when it finishes and kept in ``theory.parquet``).

    gain_heatmap    the final gain over seeds per grid cell (two axes: heatmap; one: per seed; none: per seed)
    stability_map   the e–η plane: seeds diverged and worse than GD, 2/λ_max(K_0(e)), the theory's bounds
    width_figure    α₀ with its tolerance, the ranks of K_0 and G_{L−1,T}, and the kernel drift against the width n

Outcomes and their statistics are those of :mod:`ntkcheck.report.sweep` (a seed without a gain is −∞, worse
than GD).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ntkcheck.report import e_eta, plots
from ntkcheck.report.plots import styled
from ntkcheck.results import io
from ntkcheck.report.sweep import (
    BASE_SHOWN,
    WORSE,
    grid_cells,
    markdown,
    number,
    outcomes,
    summary_table,
    symbol,
    value,
)
LABELS = {"e": "init scale e", "lr": "meta learning rate η", "width": "width n of layer L−1",
          "T": "unrolled steps T", "L": "layers L", "N": "instances N", "d": "variables d", "b": "rows b",
          "step_scale": "step scale s", "iters": "iterations K"}
WORSE_COLOR, GD_COLOR, POINT_COLOR = "#c0392b", "0.35", "C0"
K0, G, DRIFT = r"$K_0$", r"$G_{L-1,T}$", r"$\|K_k - K_0\|_F\,/\,\|K_0\|_F$"  # in matplotlib's mathtext
ETA_BOUNDS = {key: e_eta.LINES[key][0] for key in e_eta.ETA_BOUNDS}  # the theory's η bounds → their labels


def label(field: str) -> str:
    return LABELS.get(field, field)


def title(cells: pd.DataFrame, what: str) -> str:
    """``what`` over the configuration: N, d, b, n, L, T, e, η (or "varies"), and the number of seeds."""
    fixed, varies = [], []
    for field in BASE_SHOWN:
        values = cells[field].dropna().unique()
        (fixed if len(values) == 1 else varies).append(field)
    seeds = cells["sweep_seed"].nunique()
    config = ", ".join(f"{symbol(f)}={value(cells[f].dropna().iloc[0])}" for f in fixed)
    config += f"; {seeds} seed{'s' * (seeds != 1)}" + (f"; varies {', '.join(map(symbol, varies))}" if varies else "")
    return f"{what}\n{config}"


def axis_values(cells: pd.DataFrame, field: str) -> list:
    """The values of axis ``field`` in the sweep's order."""
    return list(dict.fromkeys(cells[field]))


def is_log(values) -> bool:
    """Whether positive numbers span a decade or more (then they are drawn on a log axis)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce")
    return bool(v.notna().all() and (v > 0).all() and v.max() / v.min() >= 10)


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)


def _g(x: float) -> str:
    """A gain in a heatmap cell: 3 significant digits, −∞ for a seed without a gain."""
    return "−∞" if x == WORSE else f"{x:.3g}".replace("-", "−")


# -- gain ---------------------------------------------------------------------------------------------------------


@styled
def gain_heatmap(cells: pd.DataFrame, x: str | None = None, y: str | None = None) -> Figure:
    """The final gain (F_GD(X_T) − F(X_T))/F_GD(X_T) over seeds (statistics: :func:`report.summary_table`).

    Two axes ``x``, ``y``: a heatmap, colour = median (clipped to [−1, 1], red worse than GD), each cell annotated
    with the median, [25 %, 75 %], the minimum, the seeds worse than GD and those diverged or failed. One axis ``x``:
    every seed's gain against it, with the median and the IQR. No axis: every seed's gain, with the median."""
    if x is None:
        return _gain_per_seed(cells)
    if y is None:
        return _gain_strip(cells, x)
    return _gain_grid(cells, x, y)


def _counts_text(r) -> str:
    """The seeds of a :func:`report.summary_table` row worse than GD, and those diverged or failed."""
    lines = [f"worse {r['worse']}/{r['seeds']}"]
    lines += [f"div {r['diverged']}/{r['seeds']}"] if r["diverged"] else []
    lines += [f"fail {r['failed']}/{r['seeds']}"] if r["failed"] else []
    return "\n".join(lines)


def _cell_text(r) -> str:
    return f"{_g(r['median'])}\n[{_g(r['q25'])}, {_g(r['q75'])}]\nmin {_g(r['min'])}\n{_counts_text(r)}"


def _gain_grid(cells, x, y) -> Figure:
    table = summary_table(cells, [y, x])
    table["text"] = [_cell_text(r) for r in table.to_dict("records")]
    xs, ys = axis_values(cells, x), axis_values(cells, y)[::-1]  # the largest y on top
    grid = lambda column: table.pivot(index=y, columns=x, values=column).reindex(index=ys, columns=xs)  # noqa: E731
    fig = plots.figure(1.35 * len(xs) + 2.6, 0.95 * len(ys) + 1.5)
    ax = fig.subplots()
    sns.heatmap(grid("median").astype(float).clip(-1, 1), vmin=-1, vmax=1, center=0, cmap="vlag_r",
                annot=grid("text").to_numpy(), fmt="", annot_kws={"fontsize": 7}, linewidths=1, linecolor="white",
                cbar_kws={"label": "median final gain (clipped to [−1, 1])"}, ax=ax)
    ax.set_xticklabels([value(v) for v in xs], rotation=0)
    ax.set_yticklabels([value(v) for v in ys], rotation=0)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(title(cells, "final gain over GD: median, [IQR], min, seeds worse than GD (div/fail count as worse)"),
                 fontsize=8)
    return fig


def _positions(cells, x):
    """Where each cell is drawn along axis ``x``: log10 of the value for positive numbers spanning decades, the value
    for other numbers, the place in the sweep's order otherwise. Returns (position per cell, ticks, tick labels,
    the axis label)."""
    values = axis_values(cells, x)
    if _numeric(values) and is_log(values):
        where, note = {v: math.log10(v) for v in values}, " (log scale)"
    elif _numeric(values):
        where, note = {v: float(v) for v in values}, ""
    else:
        where, note = {v: float(i) for i, v in enumerate(values)}, ""
    return cells[x].map(where).astype(float), list(where.values()), [value(v) for v in values], label(x) + note


def _jitter(pos: pd.Series, keys: pd.Series, step: float) -> pd.Series:
    """The seeds of one axis value side by side, within a quarter of the ``step`` between axis values."""
    rank = keys.groupby(pos).rank(method="first") - 1
    count = keys.groupby(pos).transform("size")
    return pos + (rank - (count - 1) / 2) * (0.5 * step / count.clip(lower=2))


def _floor(out: pd.Series) -> float:
    """The height at which seeds without a gain are drawn: well below every finite gain (the symlog axis is linear
    down to −1, logarithmic below)."""
    finite = out[np.isfinite(out)]
    lowest = min(finite.min(), 0.0) if len(finite) else 0.0
    return 3 * lowest if lowest < -1 else -1.6


def _outcome_points(ax, pos, cells, out) -> float:
    """Every seed's outcome: a dot at its gain, a red × at the floor where it has none; the gain axis is symlog
    (linear in [−1, 1]), ticked in plain numbers. Returns the floor."""
    floor = _floor(out)
    finite = np.isfinite(out)
    ax.scatter(pos[finite], out[finite], s=24, color=POINT_COLOR, edgecolors="white", linewidths=0.5, zorder=5,
               label="a seed's final gain")
    if (~finite).any():
        kinds = set(cells.loc[~finite, "status"]) - {"completed"}
        kinds |= {"non-finite loss"} if (cells.loc[~finite, "status"] == "completed").any() else set()
        ax.scatter(pos[~finite], np.full((~finite).sum(), floor), marker="x", s=40, color=WORSE_COLOR, zorder=5,
                   label=f"{' or '.join(sorted(kinds))}: worse than GD, no gain (drawn at the bottom)")
    ax.axhline(0, color=GD_COLOR, ls="--", lw=0.9, label="GD (gain 0)")
    ax.set_yscale("symlog", linthresh=1, linscale=2)
    decades = range(1, int(math.log10(-floor / 1.5)) + 1) if floor < -1.5 else []
    ticks = [-(10.0 ** k) for k in reversed(decades)] + list(np.linspace(-1, 1, 9))
    labels = [f"{t:g}".replace("-", "−") for t in ticks]
    if (~finite).any():
        ticks, labels = [floor, *ticks], ["no gain", *labels]
    ax.set_yticks(ticks, labels)
    ax.minorticks_off()
    ax.set_ylabel("final gain (F_GD − F)/F_GD\n(linear in [−1, 1], log below)")
    return floor


def _gain_strip(cells, x) -> Figure:
    out = outcomes(cells)
    pos, ticks, labels, xlabel = _positions(cells, x)
    step = min(np.diff(sorted(ticks)), default=1.0) or 1.0
    fig = plots.figure(max(6.8, 0.9 * len(ticks) + 3.0), 4.2)
    ax = fig.subplots()
    floor = _outcome_points(ax, _jitter(pos, cells["sweep_seed"], step), cells, out)
    for t, r in zip(ticks, summary_table(cells, [x]).to_dict("records")):
        ax.plot([t - 0.3 * step, t + 0.3 * step], [max(r["median"], floor)] * 2, color="black", lw=1.5, zorder=4)
        ax.plot([t, t], [max(r["q25"], floor), max(r["q75"], floor)], color="black", lw=0.8, zorder=4)
        ax.annotate(_counts_text(r), (t, 1), xycoords=("data", "axes fraction"), xytext=(0, -3),
                    textcoords="offset points", ha="center", va="top", fontsize=7)
    ax.plot([], [], color="black", lw=2, label="median over seeds (bar: 25–75 %)")
    ax.set_xticks(ticks, labels)
    ax.set_xlim(min(ticks) - 0.6 * step, max(ticks) + 0.6 * step)
    ax.set_ylim(top=1.9)  # room for the notes above the gains (≤ 1)
    ax.set_xlabel(xlabel)
    fig.legend(loc="outside lower center", ncol=2, fontsize=7)
    ax.set_title(title(cells, f"final gain over GD against {symbol(x)}, per seed"), fontsize=8)
    return fig


def _gain_per_seed(cells) -> Figure:
    out = outcomes(cells)
    seeds = cells["sweep_seed"].astype(int)
    fig = plots.figure(max(6.8, 0.35 * len(seeds) + 2.5), 4.0)
    ax = fig.subplots()
    pos = pd.Series(np.arange(len(seeds)), index=cells.index, dtype=float)
    _outcome_points(ax, pos, cells, out)
    r = summary_table(cells, []).to_dict("records")[0]
    ax.axhline(max(r["median"], _floor(out)), color="black", lw=1.5, label=f"median {_g(r['median'])}, "
               f"[{_g(r['q25'])}, {_g(r['q75'])}]; worse than GD {r['worse']}/{r['seeds']}")
    if np.isfinite(r["q25"]):
        ax.axhspan(r["q25"], r["q75"], color="black", alpha=0.08, label="25–75 %")
    ax.set_xticks(pos, [str(s) for s in seeds], fontsize=7 if len(seeds) > 20 else None)
    ax.set_xlim(-0.7, len(seeds) - 0.3)
    ax.set_xlabel("seed")
    fig.legend(loc="outside lower center", ncol=2, fontsize=7)
    ax.set_title(title(cells, "final gain over GD per seed"), fontsize=8)
    return fig


# -- the e–η plane ------------------------------------------------------------------------------------------------


def _band(ax, frame: pd.DataFrame, x: str, y: str, color, text: str, **line) -> None:
    """The median of ``y`` over each ``x`` as a line labelled ``text``, with its min–max band."""
    s = frame[[x, y]].dropna().groupby(x)[y].agg(["median", "min", "max"])
    if len(s):
        ax.plot(s.index, s["median"], color=color, label=text, **line)
        ax.fill_between(s.index, s["min"], s["max"], color=color, alpha=0.15, lw=0)


@styled
def stability_map(cells: pd.DataFrame, theory: pd.DataFrame) -> Figure:
    """The e–η plane of a grid with ``e`` and ``lr`` axes, log–log: per (e, η) the share of seeds that diverged
    (left) and that end worse than GD (right, diverged and failed included), with the lines of
    :mod:`ntkcheck.report.e_eta`: the measured stability line η = 2/λ_max(K_0(e)) (median over seeds, min–max band);
    the η bounds of the theory as functions of e (Eq. 14 on the measured λ_max, Eq. 14 a priori; median over seeds,
    min–max band), Cor. C.1's largest e for each η (median over seeds), and the Lemma 5.1–5.4 thresholds on e at
    C = 1. ``theory``: the cells' bounds (:func:`ntkcheck.theory.sweep_bounds`)."""
    table = summary_table(cells, ["e", "lr"])
    fig = plots.figure(10.5, 5.2)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = (("diverged", "share of seeds diverged"), ("worse", "share of seeds worse than GD (div/fail included)"))
    size = 520 * min(1.0, 5 / max(table["e"].nunique(), table["lr"].nunique())) ** 2
    for ax, (count, what) in zip(axes, panels):
        share = table[count] / table["seeds"]
        points = ax.scatter(table["e"], table["lr"], c=share, cmap="Reds", vmin=0, vmax=1, marker="s", s=size,
                            edgecolors="0.3", linewidths=0.6, zorder=3)
        for r, f in zip(table.to_dict("records"), share):
            ax.annotate(f"{r[count]}/{r['seeds']}", (r["e"], r["lr"]), ha="center", va="center",
                        fontsize=7, color="white" if f > 0.6 else "black", zorder=6)
        _stability_lines(ax, cells, theory)
        plots.log_axes(ax, x=True, y=True)
        ax.set_xlabel(label("e"))
        ax.set_title(what, fontsize=8)
    axes[0].set_ylabel(label("lr"))
    _stability_limits(axes[0], table, cells, theory)
    fig.colorbar(points, ax=axes, label="share of seeds", shrink=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7)
    fig.suptitle(title(cells, "stability in the e–η plane: seeds diverged and worse than GD per (e, η), against "
                              "2/λ_max(K_0) and the theory's bounds"), fontsize=9)
    return fig


SEEDS = " (median over seeds, min–max band)"


def _stability_lines(ax, cells, theory) -> None:
    """2/λ_max(K_0(e)) measured, the η bounds of the theory, Cor. C.1's points, and the Lemma thresholds on e (drawn
    where they fall within half a decade of the grid's e, else named as off the axis)."""
    stable = e_eta.median_band(cells.assign(stable_lr=number(cells, "stable_lr_0")), "e", "stable_lr")
    if len(stable[0]):
        e_eta.eta_line(ax, "stable", *stable, note=SEEDS)
    else:
        ax.plot([], [], ls="none", label="2/λ_max(K_0) not measured: no cell was probed at k = 0")
    for key in e_eta.ETA_BOUNDS:
        line = e_eta.median_band(theory[theory["key"] == key], "e", "threshold")
        if len(line[0]):
            e_eta.eta_line(ax, key, *line, note=SEEDS)
    c1 = theory[theory["key"] == "corC1.e_eta"].groupby("lr")["threshold"].median()
    if len(c1):
        e_eta.cor_c1(ax, c1.to_numpy(), c1.index.to_numpy(), " (from λ_max(K_0), else Λ̄₀²; median over seeds)")
    e = cells["e"].astype(float)
    lemmas = theory[theory["key"].str.startswith("lemma5")].groupby("key").first()
    e_eta.lemma_lines(ax, [(r["source"], r["threshold"], 1.0, r["note"]) for _, r in lemmas.iterrows()],
                      e.min() / 3, e.max() * 3)


def _stability_limits(ax, table, cells, theory) -> None:
    """Log limits around the grid, η widened to take in the η lines within two decades of the grid."""
    lo, hi = table["lr"].min(), table["lr"].max()
    etas = pd.concat([number(cells, "stable_lr_0"), theory.loc[theory["key"].isin(ETA_BOUNDS), "threshold"]])
    near = etas[(etas > lo / 100) & (etas < hi * 100)]
    ax.set_xlim(table["e"].min() / 3, table["e"].max() * 3)
    ax.set_ylim(min(lo, *near) / 3, max(hi, *near) * 3)


def stability_caption(cells: pd.DataFrame, theory: pd.DataFrame) -> str:
    """What the e–η figure draws, and which lines could not be drawn."""
    drawn = ["η = 2/λ_max(K_0(e)), measured" if number(cells, "stable_lr_0").notna().any()
             else "no 2/λ_max(K_0): no cell was probed at k = 0"]
    keys = set(theory["key"])
    drawn += [text for key, text in ETA_BOUNDS.items() if key in keys]
    drawn += ["Cor. C.1's largest e for each η"] if "corC1.e_eta" in keys else []
    lemmas = theory[theory["key"].str.startswith("lemma5")].groupby("source")["threshold"].first()
    drawn += [f"{s}: e ≥ {value(t)} at C = 1 (its constant C is unknown)" for s, t in lemmas.items()]
    missing = [text for key, text in ETA_BOUNDS.items() if key not in keys]
    note = (f" Not evaluable here: {'; '.join(missing)} (it needs the measured λ_max(K_0), or the data of the "
            "deterministic init without a problem file)." if missing else "")
    none = "" if keys & set(ETA_BOUNDS) else " No bound of the theory gives η as a function of e here."
    return ("The e–η plane: share of seeds diverged and worse than GD per (e, η); lines: " + "; ".join(drawn) + "."
            + note + none + " Eq. 13 is a condition on α₀, not on η, and is in the k = 0 table.")


# -- the width ------------------------------------------------------------------------------------------------------


@styled
def width_figure(cells: pd.DataFrame, probes: pd.DataFrame) -> Figure:
    """Against the width n (log axis), over seeds (dots; line: median): α₀ = σ_min(G_{L−1,T}) at k = 0 with its
    tolerance (a value at most its tolerance is zero to working precision and is drawn on the tolerance line, as
    ▽); the numerical ranks of K_0 (/ N·b) and G_{L−1,T} (/ min(N·d, n)) with K_0's tolerance; the kernel drift
    ‖K_k − K_0‖_F/‖K_0‖_F at each cell's last probe (median, min–max band)."""
    cells = cells[cells["status"] != "failed"]
    fig = plots.figure(12.5, 4.0)
    axes = fig.subplots(1, 3)
    _alpha_panel(axes[0], cells)
    _rank_panel(axes[1], cells)
    _drift_panel(axes[2], cells, probes)
    widths = axis_values(cells, "width")
    for ax in axes:
        plots.log_axes(ax, x=True)
        ax.set_xticks(widths, [value(w) for w in widths])
        ax.minorticks_off()
        ax.set_xlim(min(widths) / 1.4, max(widths) * 1.4)
        ax.set_xlabel(label("width"))
        ax.legend(fontsize=7)
    fig.suptitle(title(cells, "the wide layer and the kernel at initialisation, and the kernel's drift, against n"),
                 fontsize=9)
    return fig


def _alpha_panel(ax, cells) -> None:
    a = cells.assign(alpha=number(cells, "alpha_0"), tol=number(cells, "alpha_tol_0")).dropna(subset=["tol"])
    zero = a["alpha"] <= a["tol"]
    top = max(a["tol"].max(), a.loc[~zero, "alpha"].max() if (~zero).any() else 0) * 100
    bottom = a["tol"].min() / 1e3
    tol = a.groupby("width")["tol"].median()
    ax.fill_between(tol.index, bottom, tol.to_numpy(), color="0.85", lw=0, label="zero to working precision")
    _band(ax, a, "width", "tol", "0.35", "tolerance max(shape)·eps·σ_max (median, min–max)", lw=1, ls="--")
    if (~zero).any():
        ax.scatter(a.loc[~zero, "width"], a.loc[~zero, "alpha"], color=POINT_COLOR, s=22, zorder=3,
                   label="α₀ of a seed, above its tolerance")
    if zero.any():
        ax.scatter(a.loc[zero, "width"], a.loc[zero, "tol"], marker="v", facecolors="none", edgecolors=WORSE_COLOR,
                   s=40, zorder=3, label=f"α₀ ≤ its tolerance, drawn there ({int(zero.sum())}/{len(a)} seeds)")
    plots.log_axes(ax, y=True)
    ax.set_ylim(bottom, top)
    ax.set_ylabel(r"$\alpha_0 = \sigma_{\min}(G_{L-1,T})$ at k = 0")
    ax.set_title("α₀: Thm 4.3's rate is vacuous where α₀ = 0", fontsize=8)


def _rank_panel(ax, cells) -> None:
    r = cells.assign(K=number(cells, "rank_K_0") / (cells["N"] * cells["b"]),
                     G=number(cells, "alpha_rank_0") / np.minimum(cells["N"] * cells["d"], cells["width"]))
    for column, color, text, marker in (("K", "C0", f"rank {K0} / N·b", "o"),
                                        ("G", "C1", f"rank {G} / min(N·d, n)", "s")):
        ax.scatter(r["width"], r[column], color=color, marker=marker, s=20, alpha=0.7, zorder=3)
        _band(ax, r, "width", column, color, text, lw=1.2)
    tol = number(cells, "rank_K_tol_0").groupby(cells["width"]).median()
    for w, t in tol.dropna().items():
        ax.annotate(f"tol {t:.1e}", (w, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=6.5,
                    color="C0")
    ax.set_ylim(-0.05, 1.08)
    ax.set_ylabel("numerical rank / full rank, at k = 0")
    ax.set_title(f"numerical ranks at k = 0 ({K0}'s tolerance below its points)", fontsize=8)


def _drift_panel(ax, cells, probes) -> None:
    later = probes[probes["iteration"] > 0] if len(probes) else probes
    last = later.sort_values("iteration").groupby("cell").last() if len(later) else pd.DataFrame()
    drift = cells.assign(drift=cells["cell"].map(number(last, "drift_rel")) if len(last) else np.nan)
    drift = drift.dropna(subset=["drift"])
    ax.set_title(f"kernel drift {DRIFT} at the last probe", fontsize=8)
    if drift.empty:
        ax.text(0.5, 0.5, "not measured: no dense probe after k = 0", transform=ax.transAxes, ha="center", fontsize=8)
        return
    ax.scatter(drift["width"], drift["drift"], color=POINT_COLOR, s=20, alpha=0.7, zorder=3, label="a seed")
    _band(ax, drift, "width", "drift", POINT_COLOR, "median over seeds (min–max band)", lw=1.2)
    if is_log(drift["drift"]):
        plots.log_axes(ax, y=True)
    ks = sorted(set(later["iteration"].astype(int)))
    ax.set_ylabel(f"relative drift at k = {ks[-1] if len(ks) == 1 else f'{ks[0]}…{ks[-1]}'}")


# -- writing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    """A figure of the report: its name, its file relative to the sweep folder (None where it could not be drawn:
    ``error`` says why), and its caption."""

    name: str
    file: str | None
    caption: str
    error: str | None = None

    def markdown(self) -> str:
        if self.file is None:
            return f"**{self.name}** could not be drawn: {self.error}"
        link = f"[{self.file}]({self.file})" if self.file.endswith(".pdf") else f"![{self.name}]({self.file})"
        return f"{link}\n\n*{self.name}*: {self.caption}"


GAIN_CAPTION = ("Final gain over GD, (F_GD(X_T) − F(X_T))/F_GD(X_T), per grid cell over its seeds: median, [25 %, "
                "75 %], minimum, and the seeds that end worse than GD; seeds that diverged or failed count as worse "
                "(−∞).")
WIDTH_CAPTION = ("α₀ with its tolerance, the numerical ranks of K_0 and G_{L−1,T}, and the kernel drift at the last "
                 "probe, against the width n.")


def _slices(cells: pd.DataFrame, axes: list, drawn: list):
    """(file-name suffix, rows) for each combination of the axes not in ``drawn`` (one figure each)."""
    rest = [a for a in axes if a not in drawn]
    for key, part in grid_cells(cells, rest):
        yield "".join(f"-{a}={value(v)}" for a, v in zip(rest, key)), part


def _captioned(caption: str, draw, *args):
    return lambda: (draw(*args), caption)


def _stability(cells: pd.DataFrame, theory: pd.DataFrame):
    """The e–η figure of ``cells`` and its caption, with their rows of the sweep's ``theory``."""
    theory = theory[theory["cell"].isin(cells["cell"])]
    return stability_map(cells, theory), stability_caption(cells, theory)


def figure_plan(result, theory: pd.DataFrame) -> list[tuple[str, Callable[[], tuple[Figure, str]]]]:
    """The figures of a sweep as (name, draw), ``draw()`` giving the Figure and its caption: the gain figure always
    (over the first two axes), the e–η plane where ``e`` and ``lr`` are axes (with ``theory``, the cells' bounds:
    :func:`ntkcheck.theory.sweep_bounds`), the width figure where ``width`` is one; one of each per combination of the
    values of the other axes."""
    cells, probes, axes = result.cells, result.probes, list(result.spec.axes)
    plan = [(f"gain{s}", _captioned(GAIN_CAPTION, gain_heatmap, part, *axes[:2]))
            for s, part in _slices(cells, axes, axes[:2])]
    if {"e", "lr"} <= set(axes):
        plan += [(f"stability{s}", functools.partial(_stability, part, theory))
                 for s, part in _slices(cells, axes, ["e", "lr"])]
    if "width" in axes:
        plan += [(f"width{s}", _captioned(WIDTH_CAPTION, width_figure, part, probes))
                 for s, part in _slices(cells, axes, ["width"])]
    return plan


def write_figures(result, theory: pd.DataFrame, folder: Path, fmt: str = "png") -> list[Drawn]:
    """Draw :func:`figure_plan` into ``folder/figures/<name>.<fmt>`` (``fmt``: png, pdf or svg), each file written
    under a temporary name and renamed (:func:`ntkcheck.report.plots.save`). A figure that cannot be drawn is reported
    in its :class:`Drawn`: the sweep's numbers are already written, and its report must not be what loses them."""
    plots.check_format(fmt)
    drawn = []
    for name, draw in figure_plan(result, theory):
        try:
            fig, caption = draw()
        except Exception as err:  # noqa: BLE001 (the docstring says why)
            drawn.append(Drawn(name, None, "", f"{type(err).__name__}: {err}"))
            continue
        path = plots.save(fig, Path(folder) / "figures" / f"{name}.{fmt}", fmt)
        drawn.append(Drawn(name, f"figures/{path.name}", caption))
    return drawn


def write(result, theory: pd.DataFrame, folder: Path, fmt: str | None = "png") -> None:
    """``folder/report.md`` and ``folder/figures/*.<fmt>`` (png, pdf or svg; None: no figures) of the finished sweep
    ``result``, whose cells' bounds are ``theory`` (:func:`ntkcheck.theory.sweep_bounds`)."""
    drawn = write_figures(result, theory, Path(folder), fmt) if fmt else []
    io.write_text(Path(folder) / "report.md", markdown(result, drawn))
