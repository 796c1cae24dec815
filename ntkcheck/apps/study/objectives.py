"""The objectives and momentum studies: does the NTK picture survive non-quadratic objectives (LASSO, logistic) and a
momentum backbone (NAG, FISTA)?

Each is one sweep whose ``points`` are (problem, update) pairs at matched sizes (specs/objectives-<size>.toml:
qp/gd beside lasso and logistic under prox and gd; specs/momentum-<size>.toml: qp gd/nag, lasso prox/fista,
logistic prox/fista), over seeds, every cell probed (dense) at k = 0 and K and trained beside its first-order
Taylor model (``linearised = true``). Per cell (:func:`backbone_cells`, a pure function of the sweep's frames):

- the linear convergence of training: the contraction ρ of the optimality gap F(X_T)_k − F* of the learned method's
  output (the curve's ``F_T``; F* = Σ_i F_i*, 0 on the QP, :func:`optimum_values` on LASSO/logistic, whose F* > 0
  would otherwise be fitted as a floor), fitted on the cell's whole recorded curve
  (:func:`ntkcheck.apps.study.stats.contraction`: Theil–Sen on log(F_T − F*), ≈ C ρ^k) with its 95 % interval and the
  fit quality R² (1 for an exact geometric decay); ``linear`` = ρ_hi < 1 and R² ≥ :data:`R2_LINEAR`;
- the kernel drift ‖K_K − K_0‖_F/‖K_0‖_F (probes.parquet, ``drift_rel`` at k = K);
- the linearised-training gap |L_K − L^lin_K|/|L_K| and its largest value over the recorded k (cells.parquet);
- the outcome (:mod:`ntkcheck.results.outcomes`) and the final gain over the backbone's classical method.

Per (problem, update, η) (:func:`backbone_table`): medians and IQRs of these over the seeds, and the share of cells
that converge linearly with its Clopper–Pearson interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ntkcheck.apps.study.base import Answer, grid_study
from ntkcheck.apps.study.stats import binomial_interval, contraction, median_iqr
from ntkcheck.config import TrainConfig
from ntkcheck.report import plots
from ntkcheck.results.outcomes import COLUMNS, add_outcomes

R2_LINEAR = 0.9  # log L_k on k explains ≥ 90 % of its variance: the decay is geometric
GROUP = ["problem", "update", "lr"]
MEASURES = ("rho", "r2", "drift_rel_K", "linearised_gap_final", "linearised_gap_max", "gain_final")
LINEARISED = ("linearised_gap_final", "linearised_gap_max")
PANELS = (("rho", "contraction ρ of F_T − F* per iteration"), ("drift_rel_K", "‖K_K − K_0‖/‖K_0‖"),
          ("linearised_gap_final", "|L_K − L^lin_K|/|L_K|"))


def setting(cells: pd.DataFrame) -> pd.Series:
    """"problem/update" of each cell (the figure's x axis)."""
    return cells["problem"].astype(str) + "/" + cells["update"].astype(str)


def drift_at_K(cells: pd.DataFrame, probes: pd.DataFrame) -> pd.Series:
    """‖K_K − K_0‖_F/‖K_0‖_F per cell: probes' ``drift_rel`` at the cell's last iteration (NaN where not probed)."""
    if not len(probes) or "drift_rel" not in probes:
        return pd.Series(np.nan, index=cells["cell"], name="drift_rel_K")
    last = cells.set_index("cell")["iterations"]
    at_K = probes[probes["iteration"].to_numpy() == last.reindex(probes["cell"]).to_numpy()]
    return at_K.set_index("cell")["drift_rel"].astype(float).reindex(cells["cell"]).rename("drift_rel_K")


def config_of(row: pd.Series) -> TrainConfig:
    """The TrainConfig of a cells.parquet row (a float column's NaN is an unset field)."""
    fields = {k: row[k] for k in TrainConfig.__dataclass_fields__ if k in row.index}
    return TrainConfig.from_dict({k: None if isinstance(v, float) and np.isnan(v) else v for k, v in fields.items()})


def optimum_values(cells: pd.DataFrame) -> pd.Series:
    """F* = Σ_i F_i* of each cell's training problem (cell → F*), drawn again from its configuration
    (:func:`ntkcheck.build.experiment.make_problem`, seeded) and solved by
    :func:`ntkcheck.problems.solvers.optimum_value` (0 on the QP; certified to 1e-10 relative on LASSO/logistic)."""
    from ntkcheck.build.experiment import make_problem
    from ntkcheck.problems.solvers import optimum_value

    return pd.Series([optimum_value(make_problem(config_of(row))) for _, row in cells.iterrows()],
                     index=cells["cell"].to_numpy(), name="F_star", dtype=float)


def backbone_cells(cells: pd.DataFrame, curves: pd.DataFrame, probes: pd.DataFrame,
                   F_star: pd.Series | None = None) -> pd.DataFrame:
    """One row per cell: its (problem, update, η), seed, outcome, final gain, F*, the fitted contraction of F_T − F*
    (ρ, its interval, R², ``linear``), the kernel drift at K and the linearised gaps (NaN columns where the sweep did
    not train the Taylor model). ``F_star``: cell → F* (default :func:`optimum_values`)."""
    if not set(COLUMNS) <= set(cells.columns):
        cells = add_outcomes(cells, curves)
    F_star = optimum_values(cells) if F_star is None else F_star
    fits = {cid: contraction(curve, column="F_T", floor=float(F_star[cid]))
            for cid, curve in curves.groupby("cell", sort=False)} if len(curves) else {}
    nan = {"rho": np.nan, "rho_lo": np.nan, "rho_hi": np.nan, "r2": np.nan}
    out = cells[["cell", *GROUP, "sweep_seed", "status", "outcome", "gain_final"]].copy()
    out["F_star"] = F_star.reindex(cells["cell"]).to_numpy()
    out = out.join(pd.DataFrame([fits.get(cid, nan) for cid in cells["cell"]], index=out.index))
    out["linear"] = (out["rho_hi"] < 1) & (out["r2"] >= R2_LINEAR)
    out["drift_rel_K"] = drift_at_K(cells, probes).to_numpy()
    for name in LINEARISED:
        out[name] = cells[name].to_numpy(float) if name in cells else np.nan
    out.insert(1, "setting", setting(out).to_numpy())
    return out


def backbone_table(per_cell: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, update, η): n, the share of cells that converge linearly (with its 95 % Clopper–Pearson
    interval), the share that trained, and the median, 25th and 75th percentiles of each of :data:`MEASURES`."""
    rows = []
    for key, group in per_cell.groupby(GROUP, sort=False):
        k, n = int(group["linear"].sum()), len(group)
        lo, hi = binomial_interval(k, n)
        row = dict(zip(GROUP, key)) | {"setting": group["setting"].iloc[0], "n": n, "linear": k / n,
                                        "linear_lo": lo, "linear_hi": hi,
                                        "trained": float((group["outcome"] == "trained").mean())}
        for name in MEASURES:
            row[name], row[f"{name}_q25"], row[f"{name}_q75"] = median_iqr(group[name])
        rows.append(row)
    return pd.DataFrame(rows)


def draw(table: pd.DataFrame, path: Path, title: str, fmt: str = "png") -> Path:
    """Three panels over the settings (x: problem/update): the median contraction ρ, the kernel drift at K and the
    linearised-training gap, each with its IQR as a vertical bar, one colour per η; every number from ``table``."""
    return plots.save(_figure(table, title), path, fmt)


@plots.styled
def _figure(table: pd.DataFrame, title: str):
    settings = list(dict.fromkeys(table["setting"]))
    etas = sorted(table["lr"].unique())
    colours = dict(zip(etas, sns.color_palette("colorblind", len(etas))))
    fig = plots.figure(4.2 * len(PANELS), 3.6)
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    width = 0.6 / max(len(etas), 1)
    for ax, (name, label) in zip(axes, PANELS):
        for i, eta in enumerate(etas):
            rows = table[table["lr"] == eta].set_index("setting").reindex(settings)
            x = np.arange(len(settings)) + (i - (len(etas) - 1) / 2) * width
            ax.vlines(x, rows[f"{name}_q25"], rows[f"{name}_q75"], color=colours[eta], alpha=0.6)
            ax.plot(x, rows[name], marker="o", linestyle="", color=colours[eta], label=f"η = {plots.tick(eta)}")
        ax.set_xticks(np.arange(len(settings)), settings, rotation=30, ha="right")
        ax.set_title(label)
        if name != "rho":
            plots.log_axes(ax, y=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(etas), frameon=False)
    fig.suptitle(title)
    return fig


def paragraph(table: pd.DataFrame, reference: str) -> str:
    """The answer in words: per setting and η, the share that converges linearly, ρ, the drift and the linearised
    gap (medians with IQRs), set against the ``reference`` setting (qp/gd)."""
    parts = []
    for _, r in table.iterrows():
        gap = ("the linearised gap was not measured" if np.isnan(r["linearised_gap_final"]) else
               f"linearised gap {r['linearised_gap_final']:.2g} (IQR {r['linearised_gap_final_q25']:.2g}–"
               f"{r['linearised_gap_final_q75']:.2g})")
        parts.append(f"**{r['setting']}** at η = {r['lr']:g}: {r['linear']:.0%} of {r['n']} seeds converge linearly "
                     f"(95 % CI {r['linear_lo']:.0%}–{r['linear_hi']:.0%}), ρ = {r['rho']:.4f} (IQR "
                     f"{r['rho_q25']:.4f}–{r['rho_q75']:.4f}, median R² {r['r2']:.2f}), kernel drift "
                     f"{r['drift_rel_K']:.2g} (IQR {r['drift_rel_K_q25']:.2g}–{r['drift_rel_K_q75']:.2g}), {gap}, "
                     f"final gain {r['gain_final']:.3f}")
    ref = table[table["setting"] == reference]
    versus = ""
    if len(ref):
        others = table[table["setting"] != reference]
        ratio = (others["drift_rel_K"].to_numpy() / np.interp(others["lr"], ref["lr"], ref["drift_rel_K"]))
        versus = (f" Against {reference} at the same η, the other settings' median kernel drift is "
                  f"{np.nanmin(ratio):.2g}× to {np.nanmax(ratio):.2g}× as large.")
    return "; ".join(parts) + "." + versus + (f" A cell converges linearly when the 95 % interval of its fitted "
                                              f"contraction lies below 1 and R² ≥ {R2_LINEAR}.")


def analyse_as(name: str, title: str):
    """The analysis of a backbone study whose sweep is ``sweeps[name]``."""
    def analyse(sweeps: dict, folder: Path, fmt: str = "png") -> Answer:
        result = sweeps[name]
        per_cell = backbone_cells(result.cells, result.curves, result.probes)
        table = backbone_table(per_cell)
        figure = draw(table, Path(folder) / "figures" / f"{name}.{fmt}", title, fmt)
        return Answer(paragraph(table, "qp/gd"), {name: table, f"{name}_cells": per_cell},
                      (str(figure.relative_to(folder)),))
    return analyse


AXES = ("lr", "T", "width", "e", "iters", "N", "d")
OBJECTIVES = grid_study(
    "objectives", "Does the NTK picture (linear convergence of training, a small kernel drift, a small linearised-"
    "training gap) survive non-quadratic objectives, LASSO and logistic regression, beside the QP at matched sizes?",
    AXES, {"objectives": "objectives-{size}.toml"},
    analyse_as("objectives", "Objectives beside qp/gd: contraction, kernel drift, linearised gap (median, IQR)"))
MOMENTUM = grid_study(
    "momentum", "Does the NTK picture survive a momentum backbone: NAG beside GD on the QP, FISTA beside the proximal "
    "gradient on LASSO and logistic regression, at matched sizes?",
    AXES, {"momentum": "momentum-{size}.toml"},
    analyse_as("momentum", "Momentum backbones beside their plain ones: contraction, kernel drift, linearised gap"))
