"""The ``width`` study (issue 24, question 3): does the NTK regime arrive as the width n grows, at what rate, does the
linearised prediction's error shrink with it, and how must n grow with N·d?

One sweep (``specs/width-<size>.toml``): widths over two decades at a fixed N·d and N·d over a decade at two widths,
under the paper's deterministic initialisation and the standard Gaussian one, over seeds. Every cell trains the real
unroll and its first-order Taylor model (the sweep's ``linearised``) and is probed densely at k = 0 and K. Its step is
set per cell to η = :data:`ETA_FRACTION`/λ_max(K_0) (:func:`scaled_spec`): the same step relative to the kernel at
every width (under the Gaussian initialisation λ_max(K_0) grows ∝ n, under the deterministic one it does not), which
is the comparison NTK theory makes (η·λ_max fixed as n → ∞).

Measured per cell at K: the relative kernel drift ‖K_K − K_0‖_F/‖K_0‖_F, the features' drift ‖G_K − G_0‖_F/‖G_0‖_F
of the wide layer, the linearised-training gap |L_K − L^lin_K|/|L_K| (and its largest value along training), the rank
and smallest non-zero singular value σ_min⁺ of G_{L−1,T}, and the gain. The answer: each quantity's median and IQR
per (initialisation, N·d, n) over seeds, and the fitted exponents of the power laws in n (at fixed N·d) and in N·d
(at fixed n), each with its bootstrap interval over seeds (:mod:`ntkcheck.apps.study.fits`), beside NTK theory's
drift ∝ n^(−1/2) (Jacot et al. 2018; Lee et al. 2019, Thm 2.1: ‖Θ_t − Θ_0‖_F = O(n^(−1/2)) under the NTK
parameterisation at a fixed η·λ_max).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ntkcheck.apps.study.base import (
    Answer,
    Study,
    StudyPlan,
    plan_spec,
    run_specs,
    study_spec,
)
from ntkcheck.apps.study.fits import CONFIDENCE, fit_table

ETA_FRACTION = 0.5  # η·λ_max(K_0) of every cell: a quarter of the stability threshold 2/λ_max
NTK_EXPONENT = -0.5  # NTK theory's exponent of the kernel drift in n
POINT_FIELDS = ("width", "N")  # the fields the spec's points set (an override of either rebuilds the points)
QUANTITIES = {  # column → what it is, in the tables and the paragraph
    "drift_K": "kernel drift ‖K_K − K_0‖_F/‖K_0‖_F",
    "features_drift_K": "features drift ‖G_K − G_0‖_F/‖G_0‖_F",
    "linearised_gap_final": "linearised-training gap |L_K − L^lin_K|/|L_K|",
    "linearised_gap_max": "largest linearised-training gap max_k |L_k − L^lin_k|/|L_k|",
    "sigma_min_nonzero_K": "σ_min⁺(G_{L−1,T}) at K",
    "gain": "gain over GD at K",
}
FITTED = ("drift_K", "features_drift_K", "linearised_gap_final", "linearised_gap_max", "sigma_min_nonzero_K")


# -- the sweep ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def lambda_max_0(cfg) -> float:
    """λ_max(K_0) of the cell ``cfg`` at its W_0 on its data (the dense probe's, float64)."""
    from ntkcheck.build.experiment import build_model, make_problem
    from ntkcheck.instruments.probes import measure

    return measure(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, method="dense").K.lambda_max


def eta(lam: float) -> float:
    """η = :data:`ETA_FRACTION`/λ_max(K_0), to 4 significant digits (the spec records it exactly)."""
    return float(f"{ETA_FRACTION / lam:.4g}")


def scaled_spec(spec):
    """``spec`` with each cell as a point of its own seed and η = :func:`eta` of its λ_max(K_0); a cell whose
    configuration is invalid keeps the spec's η (it fails in the sweep with its reason)."""
    points = []
    for cell in spec.cells():
        lr = {} if cell.config is None else {"lr": eta(lambda_max_0(cell.config))}
        points.append(dict(cell.values) | lr | {"seed": cell.seed})
    return replace(spec, grid=(), points=tuple(points))


def with_overrides(spec, plan: StudyPlan):
    """``spec`` under the plan (:func:`~ntkcheck.apps.study.base.plan_spec`): an override of ``width`` or ``N`` replaces
    the points by the product of the given values with the points' other values."""
    own = {k: v for k, v in plan.grid.items() if k not in POINT_FIELDS}
    spec = plan_spec(spec, replace(plan, grid=own))
    if not set(plan.grid) & set(POINT_FIELDS):
        return spec
    values = {f: tuple(plan.grid.get(f, sorted({p[f] for p in spec.points}))) for f in POINT_FIELDS}
    points = tuple(dict(zip(POINT_FIELDS, combo)) for combo in itertools.product(*values.values()))
    return replace(spec, points=points)


def specs(plan: StudyPlan) -> dict:
    """The study's one sweep, ``width``, under the plan, each cell at its own η (:func:`scaled_spec`)."""
    from ntkcheck.apps.sweep import load_spec

    return {"width": scaled_spec(with_overrides(load_spec(study_spec("width", plan.size)), plan))}


def run(plan: StudyPlan, folder: Path, callback=None) -> dict:
    return run_specs(specs(plan), plan, folder, callback)


# -- the analysis ---------------------------------------------------------------------------------------------------


def cell_table(result) -> pd.DataFrame:
    """One row per cell of the sweep ``result``: its initialisation, N, d, N·d, n, seed, η and η·λ_max(K_0), status,
    and the quantities of :data:`QUANTITIES` at its last iteration K (its probe at K; NaN where it did not reach K),
    with the rank of G_{L−1,T} at 0 and K."""
    cells, probes = result.cells, result.probes
    at_K = probes.merge(cells[["cell", "iters"]], on="cell")
    at_K = at_K[at_K["iteration"] == at_K["iters"]].set_index("cell")
    out = pd.DataFrame({
        "cell": cells["cell"], "init": cells["init"], "N": cells["N"], "d": cells["d"],
        "nd": cells["N"] * cells["d"], "width": cells["width"], "seed": cells["sweep_seed"], "lr": cells["lr"],
        "eta_lambda": cells["lr"] * cells["lambda_max_0"], "status": cells["status"], "gain": cells["gain_final"],
        "linearised_gap_final": cells["linearised_gap_final"], "linearised_gap_max": cells["linearised_gap_max"],
        "rank_0": cells["alpha_rank_0"], "sigma_min_nonzero_0": cells["sigma_min_nonzero_0"]})
    for name, column in (("drift_K", "drift_rel"), ("features_drift_K", "features_drift_rel"),
                         ("rank_K", "alpha_rank"), ("sigma_min_nonzero_K", "sigma_min_nonzero")):
        out[name] = cells["cell"].map(at_K[column]).astype(float)
    return out.reset_index(drop=True)


def summary_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (initialisation, N·d, n): the completed cells' count, and of each quantity the median and the quartiles
    over seeds (``<q>_median``, ``<q>_q25``, ``<q>_q75``); the ranks' range."""
    done = cells[cells["status"] == "completed"]
    groups = done.groupby(["init", "nd", "width"], sort=True)
    out = groups.size().rename("completed").to_frame()
    out["cells"] = cells.groupby(["init", "nd", "width"]).size()
    for q in QUANTITIES:
        out[f"{q}_median"] = groups[q].median()
        out[f"{q}_q25"] = groups[q].quantile(0.25)
        out[f"{q}_q75"] = groups[q].quantile(0.75)
    for r in ("rank_0", "rank_K"):
        out[f"{r}_min"], out[f"{r}_max"] = groups[r].min(), groups[r].max()
    return out.reset_index()


def exponent_table(cells: pd.DataFrame, **options) -> pd.DataFrame:
    """The fitted power laws (:func:`~ntkcheck.apps.study.fits.fit_table`, completed cells) of each quantity of
    :data:`FITTED`: against n per (initialisation, N·d), and against N·d per (initialisation, n), where there are
    at least three distinct values to fit."""
    done = cells[cells["status"] == "completed"]
    parts = [fit_table(done, "width", list(FITTED), by=["init", "nd"], **options),
             fit_table(done, "nd", list(FITTED), by=["init", "width"], **options)]
    columns = list(dict.fromkeys([*parts[0].columns, *parts[1].columns]))
    return pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else \
        pd.DataFrame(columns=columns)


def fixed_nd(summary: pd.DataFrame) -> int:
    """The N·d at which the most widths were run (the width sweep's)."""
    counts = summary.groupby("nd")["width"].nunique()
    return int(counts.idxmax())


def analyse(sweeps: dict, folder: Path, fmt: str = "png") -> Answer:
    """The answer (module docstring): tables ``cells``, ``summary``, ``exponents``; the figure
    ``figures/width.<fmt>`` drawn from ``summary`` and ``exponents``."""
    from ntkcheck.report import plots

    cells = cell_table(sweeps["width"])
    summary, exponents = summary_table(cells), exponent_table(cells)
    path = Path("figures") / f"width.{fmt}"
    plots.save(figure(summary, exponents), Path(folder) / path, fmt)
    return Answer(paragraph(cells, summary, exponents), {"cells": cells, "summary": summary, "exponents": exponents},
                  (str(path),))


# -- the figure and the paragraph -----------------------------------------------------------------------------------


PANELS = ("drift_K", "features_drift_K", "linearised_gap_final")


def figure(summary: pd.DataFrame, exponents: pd.DataFrame):
    """Three panels against n at the fixed N·d (:func:`fixed_nd`): the median over seeds of each quantity of
    :data:`PANELS` (line label ``median, <init>``, bars: the quartiles), its fitted power law (``fit, <init>``), and
    NTK theory's n^(−1/2) through the first median (``n^(−1/2)``); a fourth against N·d: the kernel drift's median
    per (initialisation, n) (``median, <init>, n = <n>``). Every line is drawn from ``summary`` and ``exponents``."""
    from ntkcheck.report import plots

    nd = fixed_nd(summary)
    fig = plots.figure(11.0, 8.0)
    axes = fig.subplots(2, 2).ravel()
    at = summary[summary["nd"] == nd]
    for ax, q in zip(axes, PANELS):
        for i, (init, part) in enumerate(at.groupby("init", sort=True)):
            _medians(ax, part["width"], part, q, f"median, {init}", f"C{i}")
            fit = exponents[(exponents["against"] == "width") & (exponents["init"] == init) & (exponents["nd"] == nd)
                            & (exponents["quantity"] == q)]
            if len(fit) and np.isfinite(fit["exponent"].iloc[0]):
                f = fit.iloc[0]
                n = np.geomspace(part["width"].min(), part["width"].max(), 50)
                ax.plot(n, f["prefactor"] * n ** f["exponent"], color=f"C{i}", lw=0.8, ls="-",
                        label=f"fit, {init}: n^{f['exponent']:.2f} [{f['low']:.2f}, {f['high']:.2f}]")
        first = at.sort_values("width").groupby("init").head(1)
        first = first[np.isfinite(first[f"{q}_median"]) & (first[f"{q}_median"] > 0)]
        if q == "drift_K" and len(first):
            n = np.geomspace(at["width"].min(), at["width"].max(), 50)
            y0, n0 = first[f"{q}_median"].iloc[0], first["width"].iloc[0]
            ax.plot(n, y0 * (n / n0) ** NTK_EXPONENT, color="black", lw=0.8, ls="--", label="n^(−1/2)")
        plots.log_axes(ax, x=True, y=True)
        ax.set_xlabel("width n")
        ax.set_title(f"{QUANTITIES[q]}, N·d = {nd}", fontsize=9)
        _legend(ax)
    ax = axes[3]
    groups = [(key, part) for key, part in summary.groupby(["init", "width"], sort=True) if part["nd"].nunique() >= 2]
    for i, ((init, width), part) in enumerate(groups):
        _medians(ax, part["nd"], part, "drift_K", f"median, {init}, n = {width}", f"C{i}")
    plots.log_axes(ax, x=True, y=True)
    ax.set_xlabel("N·d")
    ax.set_title(f"{QUANTITIES['drift_K']} against N·d", fontsize=9)
    _legend(ax)
    fig.suptitle(f"width study: medians over seeds (bars: quartiles); fit: least squares of log q on log n over "
                 f"every completed cell; η·λ_max(K_0) = {ETA_FRACTION}", fontsize=10)
    return fig


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _medians(ax, x, part: pd.DataFrame, q: str, label: str, color: str) -> None:
    order = np.argsort(np.asarray(x))
    x, med = np.asarray(x)[order], part[f"{q}_median"].to_numpy()[order]
    low, high = part[f"{q}_q25"].to_numpy()[order], part[f"{q}_q75"].to_numpy()[order]
    ax.errorbar(x, med, yerr=np.vstack((med - low, high - med)), color=color, marker="o", ms=3, lw=1.0,
                capsize=2, label=label)


def paragraph(cells: pd.DataFrame, summary: pd.DataFrame, exponents: pd.DataFrame) -> str:
    """The answer in one paragraph: per initialisation at the fixed N·d, each fitted exponent in n with its interval
    beside NTK theory's −1/2 for the drift, the medians at the smallest and largest n, the ranks, and the exponents in
    N·d; the cells that did not complete."""
    nd = fixed_nd(summary)
    seeds = cells["seed"].nunique()
    parts = []
    for init, part in summary[summary["nd"] == nd].groupby("init", sort=True):
        lo, hi = part.sort_values("width").iloc[[0, -1]].itertuples(index=False)
        fits = exponents[(exponents["against"] == "width") & (exponents["init"] == init) & (exponents["nd"] == nd)]
        said = []
        for q in ("drift_K", "features_drift_K", "linearised_gap_final"):
            f = fits[fits["quantity"] == q]
            if not len(f):
                continue
            f = f.iloc[0]
            said.append(f"{QUANTITIES[q]} {_num(getattr(lo, f'{q}_median'))} at n = {lo.width} → "
                        f"{_num(getattr(hi, f'{q}_median'))} at n = {hi.width}, exponent {_fit(f)}")
        drift = fits[fits["quantity"] == "drift_K"]
        verdict = ""
        if len(drift) and np.isfinite(drift["exponent"].iloc[0]):
            d = drift.iloc[0]
            verdict = (f"; NTK theory's −1/2 is {'inside' if d['low'] <= NTK_EXPONENT <= d['high'] else 'outside'} "
                       "the drift's interval")
        ranks = f"rank G_{{L−1,T}} {_range(part, 'rank_0')} at W_0 and {_range(part, 'rank_K')} at K (N·d = {nd} rows)"
        parts.append(f"**{init}**: " + "; ".join(said) + verdict + f"; {ranks}")
    by_nd = exponents[(exponents["against"] == "nd") & (exponents["quantity"] == "drift_K")]
    nd_text = "; ".join(f"{r.init}, n = {int(r.width)}: (N·d)^{_fit(r._asdict())}"
                        for r in by_nd.itertuples(index=False))
    done = cells["status"] == "completed"
    missing = "" if done.all() else (f" {int((~done).sum())} of {len(cells)} cells did not complete "
                                     f"({', '.join(f'{k}: {v}' for k, v in cells.loc[~done, 'status'].value_counts().items())}) "
                                     "and are left out of the fits.")
    return (f"At N·d = {nd}, η·λ_max(K_0) = {ETA_FRACTION}, over {seeds} seeds (medians; exponents with their "
            f"{int(100 * CONFIDENCE)}% bootstrap interval over seeds): " + ". ".join(parts) + ". Against N·d, the kernel "
            f"drift goes as {nd_text or 'no fit (fewer than three N·d per width)'}." + missing)


def _num(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _fit(f) -> str:
    return f"{_num(f['exponent'])} [{_num(f['low'])}, {_num(f['high'])}]"


def _range(part: pd.DataFrame, name: str) -> str:
    lo, hi = part[f"{name}_min"].min(), part[f"{name}_max"].max()
    return "nan" if not (math.isfinite(lo) and math.isfinite(hi)) else (
        f"{int(lo)}" if lo == hi else f"{int(lo)}–{int(hi)}")


STUDY = Study(
    name="width",
    question=("Does the NTK regime arrive as the width grows: does the relative kernel drift ‖K_k − K_0‖/‖K_0‖ shrink, "
              "at what rate, does the linearised prediction error shrink with it, and how must the width grow with "
              "N·d?"),
    axes=("init", "width", "N", "d", "iters", "e", "T"),
    run=run,
    analyse=analyse,
    specs=specs,
)
