"""The init study: is the paper's deterministic initialisation necessary, or do the standard random ones train as well?

One sweep (specs/init-<size>.toml): init ∈ {deterministic, deterministic-abs, gaussian, xavier, he} × T × η over
≥ 20 seeds. Per (init, T, η) the analysis (:func:`init_table`, a pure function of the sweep's frames) gives the rates
of each outcome (:mod:`ntkcheck.results.outcomes`: diverged, froze, unstable, trained) with Clopper–Pearson
intervals, the gradient norm at the first iteration ‖∇W‖ = (Σ_l ‖∇W_l‖²)^½ at k = 0 (the curve's grad_norm/W_l), the
final gain (median and IQR), α = σ_min(G_{L−1,T}) and the rank of the features at W_0, the dead-cone share at W_0
(defined at the deterministic initialisations only: NaN at the random ones), and the share of runs that start below
GD (gain at k = 0 < −GAIN_TOL: a random W_L makes the untrained learner differ from GD, and a run that does not
climb above GD within K iterations ends ``unstable`` by the outcome rule, without moving far).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ntkcheck.apps.study.base import Answer, grid_study
from ntkcheck.apps.study.stats import binomial_interval, median_iqr, outcome_rates
from ntkcheck.report import plots
from ntkcheck.results.outcomes import COLUMNS, GAIN_TOL, add_outcomes

QUESTION = ("Is the deterministic initialisation necessary, or do standard random ones (Gaussian, Xavier, He) train "
            "as well, and do they explode at the first iteration for long horizons (the paper's Fig. 2)?")
GROUP = ["init", "T", "lr"]
FAILURES = ("diverged", "froze", "unstable")


def grad_norm_0(curves: pd.DataFrame) -> pd.Series:
    """‖∇W‖ at k = 0 per cell: (Σ_l (grad_norm/W_l)²)^½ over the layers' columns of the curve's first row."""
    first = curves.loc[curves["iteration"] == 0].set_index("cell")
    layers = [c for c in first.columns if c.startswith("grad_norm/")]
    return np.sqrt((first[layers].astype(float) ** 2).sum(axis=1, min_count=1)).rename("grad_norm_0")


def gain_0(curves: pd.DataFrame) -> pd.Series:
    """The gain at k = 0 per cell: 0 at the deterministic initialisations (W_L = 0: the untrained learner is GD),
    anything at a random one (the untrained learner's own steps)."""
    return curves.loc[curves["iteration"] == 0].set_index("cell")["gain"].astype(float).rename("gain_0")


def init_cells(cells: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its axes, seed, outcome and summaries (computed from the curves where the sweep predates
    them), ‖∇W‖ and the gain at k = 0, final gain, α, rank and dead share at W_0."""
    if not set(COLUMNS) <= set(cells.columns):
        cells = add_outcomes(cells, curves)
    out = cells.set_index("cell")[[*GROUP, "sweep_seed", "status", *COLUMNS, "gain_final", "alpha_0",
                                   "alpha_rank_0", *(["dead_share_0"] if "dead_share_0" in cells else [])]]
    out = out.join(grad_norm_0(curves)).join(gain_0(curves)).reset_index()
    if "dead_share_0" not in out:
        out["dead_share_0"] = np.nan
    return out


def init_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (init, T, η): the outcome rates with their intervals (:func:`outcome_rates`), and the medians (with the
    25th/75th percentiles for ‖∇W_0‖ and the final gain) of :func:`init_cells`' numbers over the seeds."""
    rates = outcome_rates(cells, GROUP).set_index(GROUP)
    numbers = []
    for key, group in cells.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key))
        for name in ("grad_norm_0", "gain_final"):
            row[name], row[f"{name}_q25"], row[f"{name}_q75"] = median_iqr(group[name])
        for name in ("gain_0", "alpha_0", "alpha_rank_0", "dead_share_0", "min_gain", "share_below_gd"):
            row[name] = median_iqr(group[name])[0]
        row["start_below_gd"] = float(np.mean(group["gain_0"] < -GAIN_TOL))
        numbers.append(row)
    return rates.join(pd.DataFrame(numbers).set_index(GROUP)).reset_index()


def analyse(sweeps: dict, folder: Path, fmt: str = "png") -> Answer:
    """The init study's answer from its sweep ``sweeps["init"]``: the tables, the figure, the paragraph."""
    result = sweeps["init"]
    cells = init_cells(result.cells, result.curves)
    table = init_table(cells)
    figure = draw(table, Path(folder) / "figures" / f"init.{fmt}", fmt)
    return Answer(paragraph(table, cells), {"init": table, "init_cells": cells},
                  (str(figure.relative_to(folder)),))


def draw(table: pd.DataFrame, path: Path, fmt: str = "png") -> Path:
    """figures/init: per η (columns), the share of runs that trained against T with its 95 % interval (top) and the
    median ‖∇W‖ at k = 0 against T (bottom, log–log), one line per initialisation; every number from ``table``."""
    return plots.save(_figure(table), path, fmt)


@plots.styled
def _figure(table: pd.DataFrame):
    etas = sorted(table["lr"].unique())
    inits = list(dict.fromkeys(table["init"]))
    colours = dict(zip(inits, sns.color_palette("colorblind", len(inits))))
    fig = plots.figure(3.2 * len(etas), 5.4)
    axes = fig.subplots(2, len(etas), squeeze=False, sharex=True)
    for j, eta in enumerate(etas):
        top, bottom = axes[0, j], axes[1, j]
        for init in inits:
            rows = table[(table["lr"] == eta) & (table["init"] == init)].sort_values("T")
            top.plot(rows["T"], rows["trained"], marker="o", color=colours[init], label=init)
            top.fill_between(rows["T"], rows["trained_lo"], rows["trained_hi"], color=colours[init], alpha=0.15)
            bottom.plot(rows["T"], rows["grad_norm_0"], marker="o", color=colours[init], label=init)
        top.set_title(f"η = {plots.tick(eta)}")
        top.set_ylim(-0.05, 1.05)
        plots.log_axes(top, x=True)
        plots.log_axes(bottom, x=True, y=True)
        bottom.set_xlabel("horizon T")
    axes[0, 0].set_ylabel("share of runs that trained")
    axes[1, 0].set_ylabel("median ‖∇W‖ at k = 0")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(inits), frameon=False)
    fig.suptitle("Initialisations over the horizon T: share trained (95 % Clopper–Pearson band) and ‖∇W_0‖")
    return fig


def paragraph(table: pd.DataFrame, cells: pd.DataFrame) -> str:
    """The answer in words, every number from ``table`` (per group) and ``cells`` (per run)."""
    n_seeds = int(table["n"].min())
    Ts = ", ".join(map(str, sorted(table["T"].unique())))
    etas = ", ".join(f"{x:g}" for x in sorted(table["lr"].unique()))
    parts = [f"Over {len(cells)} runs ({n_seeds} seeds per (init, T, η); T ∈ {{{Ts}}}, η ∈ {{{etas}}}):"]
    for init, group in cells.groupby("init", sort=False):
        k, n = int((group["outcome"] == "trained").sum()), len(group)
        lo, hi = binomial_interval(k, n)
        counts = ", ".join(f"{o} {int((group['outcome'] == o).sum())}" for o in FAILURES)
        T_max = group["T"].max()
        long = group[group["T"] == T_max]
        k_long = int((long["outcome"] == "trained").sum())
        lo_l, hi_l = binomial_interval(k_long, len(long))
        g5 = group.loc[group["T"] == group["T"].min(), "grad_norm_0"].median()
        gT = long["grad_norm_0"].median()
        failed = group[group["outcome"] != "trained"]
        below = int((failed["gain_0"] < -GAIN_TOL).sum())
        parts.append(f"**{init}** trained {k}/{n} ({k / n:.0%}, 95 % CI {lo:.0%}–{hi:.0%}; {counts}; of the "
                     f"{len(failed)} that did not, {below} started below GD at W_0), at T = {T_max} "
                     f"{k_long}/{len(long)} ({lo_l:.0%}–{hi_l:.0%}), median ‖∇W‖ at k = 0 {g5:.3g} at T = "
                     f"{group['T'].min()} and {gT:.3g} at T = {T_max};")
    by_eta = ", ".join(f"η = {eta:g}: {(g['outcome'] == 'trained').mean():.0%} trained"
                       for eta, g in cells[~cells["init"].str.startswith("deterministic")].groupby("lr"))
    parts.append(f"the random initialisations by η ({by_eta});")
    best = table.sort_values("gain_final", ascending=False).iloc[0]
    parts.append(f"the best median final gain is {best['gain_final']:.3f} (IQR {best['gain_final_q25']:.3f}–"
                 f"{best['gain_final_q75']:.3f}) by {best['init']} at T = {best['T']}, η = {best['lr']:g}.")
    return " ".join(parts)


STUDY = grid_study("init", QUESTION, ("init", "T", "lr", "e", "width", "iters"), {"init": "init-{size}.toml"},
                   analyse)
