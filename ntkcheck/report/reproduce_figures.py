"""The figures of ``ntkcheck reproduce`` (:mod:`ntkcheck.apps.reproduce`), in the one style of
:mod:`ntkcheck.report.plots`, each drawn from the figure's tidy frame (its CSV) and computing nothing new.

    fig2, fig4b   F(X_T) at the last training iteration against T, one line per η, GD dashed; a panel per model
    fig4a         F(X_T^k) along training per seed, with GD's F(X_T)
    fig5          the gain over GD (last and mean over t) for every (e, η)
    fig8          F(X_t) on held-out instances: ours, GD, NAG, Adam (best of the grid, and the grid's min–max band)

A run that diverged has no F: it is marked × at the top of its panel (fig2, fig4b, fig4a), or ``div`` in its
heatmap cell (fig5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ntkcheck.report import plots
from ntkcheck.report.plots import tick

DIVERGED = "C3"


def write(figure: str, frame: pd.DataFrame, path: str | Path, params: dict | None = None, fmt: str = "png") -> Path:
    """``path``: :func:`draw` of ``figure``, written atomically (:func:`ntkcheck.report.plots.save`)."""
    return plots.save(draw(figure, frame, params or {}), path, fmt)


@plots.styled
def draw(figure: str, frame: pd.DataFrame, params: dict) -> Figure:
    """The figure ``figure`` (fig2, fig4a, fig4b, fig5, fig8) of its ``frame``; ``params``: the grid it ran, named in
    the title."""
    return DRAW[figure](frame, params)


def _diverged(ax, x, text: str) -> None:
    """Runs without a loss (diverged) as × at the top of ``ax``, at their ``x``."""
    if len(x):
        ax.scatter(x, np.full(len(x), 0.97), transform=ax.get_xaxis_transform(), marker="x", s=30, color=DIVERGED,
                   zorder=5, label=text)


def _over_T(frame: pd.DataFrame, params: dict, what: str) -> Figure:
    """F(X_T) at the last iteration against T, one line per η, GD dashed, diverged runs marked; one panel per model."""
    models = list(dict.fromkeys(frame["model"]))
    columns = min(2, len(models))
    rows = -(-len(models) // columns)
    fig = plots.figure(4.0 * columns + 1.8, 3.0 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    lrs = list(dict.fromkeys(frame["lr"]))
    colors = dict(zip(lrs, sns.color_palette("deep", len(lrs))))
    for ax, model in zip(axes, models):
        sub = frame[frame["model"] == model]
        for lr in lrs:
            line = sub[sub["lr"] == lr]
            ax.plot(line["T"], line["F_T"], "o-", ms=4, color=colors[lr], label=f"η = {tick(lr)}")
        gd_curve = sub.drop_duplicates("T")
        ax.plot(gd_curve["T"], gd_curve["F_GD"], "k--", label="GD")
        _diverged(ax, sub.loc[sub["status"] == "diverged", "T"], "diverged (no F(X_T))")
        plots.log_axes(ax, y=True)
        ax.set_xticks(sorted(set(sub["T"])))
        ax.set(xlabel="unrolled steps T", ylabel="F(X_T) at the last iteration", title=model)
        ax.title.set_fontsize(8)
    for ax in axes[len(models):]:
        ax.set_axis_off()
    labels = {}
    for ax in axes[:len(models)]:  # every entry once, from whichever panel drew it
        labels |= {label: handle for handle, label in zip(*ax.get_legend_handles_labels()) if label not in labels}
    fig.legend(labels.values(), labels.keys(), loc="outside right center", fontsize=7)
    fig.suptitle(f"{what}: F(X_T) at the last training iteration against T, per meta learning rate η "
                 f"(GD dashed); {params.get('iters', '?')} training iterations", fontsize=9)
    return fig


def _fig2(frame: pd.DataFrame, params: dict) -> Figure:
    return _over_T(frame, params, "Fig. 2, baselines trained by SGD")


def _fig4b(frame: pd.DataFrame, params: dict) -> Figure:
    return _over_T(frame, params, "Fig. 4b, our model")


def _fig4a(frame: pd.DataFrame, params: dict) -> Figure:
    """F(X_T^k) along training per seed, with GD's level (dashed) in the seed's colour."""
    fig = plots.figure(6.5, 3.6)
    ax = fig.subplots()
    palette = sns.color_palette("deep", frame["seed"].nunique())
    for color, (seed, sub) in zip(palette, frame.groupby("seed")):
        ax.plot(sub["iteration"], sub["F_T"], color=color, label=f"ours, seed {seed}")
        ax.axhline(sub["F_GD"].iloc[0], ls="--", color=color, lw=0.8, label=f"GD, seed {seed}")
    if "diverged" in frame:
        _diverged(ax, frame.loc[frame["diverged"] > 0, "iteration"], "diverged (non-finite loss)")
    plots.log_axes(ax, y=True)
    ax.set(xlabel="training iteration k", ylabel="F(X_T^k)")
    p = params
    ax.set_title(f"Fig. 4a: F(X_T^k) along training against GD; N={p['N']}, {p['b']}×{p['d']}, n={p['width']}, "
                 f"T={p['T']}, e={tick(p['e'])}, η={tick(p['lr'])}", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _fig5(frame: pd.DataFrame, params: dict) -> Figure:
    """The gain over GD at the last iteration (last, and mean over t = 1..T) per (e, η); ``div`` where it diverged."""
    fig = plots.figure(9, 3.4)
    axes = fig.subplots(1, 2)
    diverged = frame.assign(div=frame["status"] == "diverged").pivot(index="e", columns="lr", values="div")
    for ax, (column, what) in zip(axes, (("gain", "gain (F_GD(X_T) − F(X_T))/F_GD(X_T)"),
                                         ("gain_mean", "gain averaged over t = 1..T"))):
        table = frame.pivot(index="e", columns="lr", values=column).sort_index(axis=1, ascending=False)
        div = diverged.reindex_like(table).fillna(False).astype(bool).to_numpy()
        text = np.array([["" if np.isnan(v) else f"{v:.2f}".replace("-", "−") for v in row]
                         for row in table.to_numpy()])
        sns.heatmap(table, annot=text, fmt="", cmap="vlag_r", center=0, ax=ax, cbar=False)
        for i, j in zip(*np.nonzero(div)):  # no gain: seaborn leaves the cell blank
            ax.text(j + 0.5, i + 0.5, "div", ha="center", va="center", color=DIVERGED, fontsize=8)
        ax.set_xticklabels([tick(v) for v in table.columns])
        ax.set_yticklabels([tick(v) for v in table.index], rotation=0)
        ax.set(xlabel="meta learning rate η", ylabel="init scale e")
        ax.set_title(f"{what}, at the last iteration", fontsize=8)
    fig.suptitle(f"Fig. 5: gain over GD per (e, η) at T = {params.get('T', '?')} (div: diverged, no gain)", fontsize=9)
    return fig


def _fig8(frame: pd.DataFrame, params: dict) -> Figure:
    """F(X_t) on held-out instances per method, with the Adam grid's min–max band."""
    fig = plots.figure(6.5, 3.6)
    ax = fig.subplots()
    lines = frame[~frame["method"].str.startswith("Adam grid")]
    sns.lineplot(data=lines, x="t", y="F", hue="method", ax=ax)
    lo = frame[frame["method"] == "Adam grid min"]
    hi = frame[frame["method"] == "Adam grid max"]
    ax.fill_between(lo["t"], lo["F"], hi["F"], alpha=0.2, color="gray", label="Adam grid min–max")
    plots.log_axes(ax, y=True)
    ax.set(xlabel="step t (held-out instances)", ylabel="F(X_t)")
    ax.set_title(f"Fig. 8: F(X_t) on held-out instances, far past the training horizon T = {params.get('T', '?')}",
                 fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


DRAW = {"fig2": _fig2, "fig4a": _fig4a, "fig4b": _fig4b, "fig5": _fig5, "fig8": _fig8}  # figure → drawing function
