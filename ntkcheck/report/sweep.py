"""A finished sweep's report.md: the configuration, the outcome of every grid cell over its seeds, the failed
cells, the k = 0 probe numbers, and the figures (:mod:`ntkcheck.report.sweep_figures`).

A seed's *outcome* is its final gain (F_GD(X_T) − F(X_T))/F_GD(X_T) (> 0: better than GD). A seed that diverged,
failed, or ended with a non-finite loss has no gain; it counts as worse than GD, with outcome −∞, so that it ranks
below every finite gain in the median, the quantiles and the minimum (:func:`summary_table`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ntkcheck.report.run import fmt as fmt_number
from ntkcheck.report.run import md_table
from ntkcheck.results import schema

WORSE = -math.inf  # the outcome of a seed without a finite gain (diverged, failed, non-finite loss)
SYMBOLS = {"lr": "η", "width": "n", "step_scale": "s"}  # paper symbols of the fields whose names differ
BASE_SHOWN = ("N", "d", "b", "width", "L", "T", "e", "lr")  # the configuration a figure's title names


def symbol(field: str) -> str:
    """The paper's symbol of a config field (η for ``lr``, n for ``width``), else the field's name."""
    return SYMBOLS.get(field, field)


def heading(field: str) -> str:
    """A column heading for a field: its symbol, with the field's name where they differ ("η (lr)")."""
    return field if symbol(field) == field else f"{symbol(field)} ({field})"


def number(cells: pd.DataFrame, column: str) -> pd.Series:
    """``cells[column]`` as floats: None (probes off, a failed cell) becomes NaN; a missing column is all NaN."""
    if column not in cells:
        return pd.Series(np.nan, index=cells.index)
    return pd.to_numeric(cells[column], errors="coerce").astype(float)


def outcomes(cells: pd.DataFrame) -> pd.Series:
    """Each cell's outcome: ``gain_final`` where it completed with a finite gain, else −∞ (module docstring)."""
    gain = number(cells, "gain_final")
    return gain.where((cells["status"] == "completed") & np.isfinite(gain), WORSE)


def quantile(values, q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default), with −∞ allowed: between
    −∞ and a finite value the interpolation is −∞ unless it lands exactly on the finite one. NaN for no values."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        return math.nan
    h = (v.size - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    if h == lo or v[lo] == v[hi]:
        return float(v[lo])
    return WORSE if v[lo] == WORSE else float(v[lo] + (v[hi] - v[lo]) * (h - lo))


def grid_cells(cells: pd.DataFrame, axes) -> list[tuple[tuple, pd.DataFrame]]:
    """The grid cells in the sweep's order: (axis values, their seeds' rows); one group of every row without axes."""
    axes = list(axes)
    if not axes:
        return [((), cells)]
    return [(key if isinstance(key, tuple) else (key,), part) for key, part in cells.groupby(axes, sort=False)]


def summary_table(cells: pd.DataFrame, axes) -> pd.DataFrame:
    """One row per grid cell (the ``axes`` values) with its seeds' statistics: ``seeds``, how many ``completed``,
    ``diverged`` and ``failed``, ``worse`` (outcome < 0: a negative gain, or no gain at all) and ``share_worse`` =
    worse/seeds, and the ``median``, ``q25``, ``q75`` (:func:`quantile`) and ``min`` of the outcomes (−∞ where a
    diverged or failed seed is the one at that rank)."""
    rows = []
    for key, part in grid_cells(cells, axes):
        out = outcomes(part).to_numpy()
        status = part["status"]
        worse = int((out < 0).sum())
        rows.append({**dict(zip(axes, key)), "seeds": len(part), "completed": int((status == "completed").sum()),
                     "diverged": int((status == "diverged").sum()), "failed": int((status == "failed").sum()),
                     "worse": worse, "share_worse": worse / len(part), "median": quantile(out, 0.5),
                     "q25": quantile(out, 0.25), "q75": quantile(out, 0.75), "min": float(out.min())})
    return pd.DataFrame(rows, columns=[*axes, "seeds", "completed", "diverged", "failed", "worse", "share_worse",
                                       "median", "q25", "q75", "min"])


def probe_table(cells: pd.DataFrame, axes) -> pd.DataFrame:
    """One row per grid cell with the medians over its seeds of the k = 0 probe numbers: every ``initial`` column of
    :mod:`ntkcheck.results.schema` under its sweep name (``lambda_max`` = λ_max(K_0), ``stable_lr`` = 2/λ_max(K_0),
    ``alpha`` = α₀ = σ_min(G_{L−1,T}), ``alpha_tol``, ``alpha_rank``, ``rank_K``, ``rank_K_tol``, …), the cell's
    ``lr`` η, and the counts: ``stable`` (seeds with η < 2/λ_max(K_0)), ``alpha_zero`` (seeds with α₀ ≤ its
    tolerance), ``alpha_full`` = min(N·d, n) and ``n_outputs`` = N·b (the ranks' sizes). ``probed``: seeds with a
    k = 0 probe."""
    rows = []
    for key, part in grid_cells(cells, axes):
        lr, probed = number(part, "lr"), number(part, "lambda_max_0").notna()
        medians = {c.sweep: number(part, c.initial_name).median() for c in schema.initial_columns()}
        rows.append({**dict(zip(axes, key)), "seeds": len(part), "probed": int(probed.sum()), "lr": lr.median(),
                     **medians, "stable": int((lr < number(part, "stable_lr_0")).sum()),
                     "alpha_zero": int((number(part, "alpha_0") <= number(part, "alpha_tol_0")).sum()),
                     "alpha_full": np.minimum(part["N"] * part["d"], part["width"]).median(),
                     "n_outputs": (part["N"] * part["b"]).median()})
    return pd.DataFrame(rows)


# -- report.md ---------------------------------------------------------------------------------------------------


def value(x) -> str:
    """A table entry: an axis value or number as :func:`ntkcheck.report.run.fmt` writes it (−∞ for a worse-than-GD
    outcome without a gain), text as it is."""
    if isinstance(x, (str, bool, np.bool_)) or x is None:
        return "—" if x is None else str(x)
    return "—" if x != x else fmt_number(x)  # NaN: not measured


def share(k: int, n: int) -> str:
    return f"{k}/{n}"


def configuration(result) -> str:
    """The base configuration, the axes, the seeds and what they vary, the records and probes."""
    spec = result.spec
    base = ", ".join(f"{k}={v}" for k, v in spec.base.to_dict().items() if v is not None)
    axes = "; ".join(f"{heading(f)} ∈ {{{', '.join(value(v) for v in vals)}}}" for f, vals in spec.grid)
    probes = ("off" if spec.probe_method == "none" else
              f"at k = {', '.join(map(str, spec.probe_at))} ({spec.probe_method})")
    curves = f"every {spec.record_every} iterations" if spec.record_every else "at about 200 points"
    return "\n".join([f"- base ({spec.preset} preset with overrides): {base}",
                      f"- axes: {axes or 'none (the base configuration over seeds)'}",
                      f"- seeds: {', '.join(map(str, spec.seeds))} (vary = {spec.vary}: {VARY_MEANING[spec.vary]})",
                      f"- curves {curves}; probes {probes}"])


VARY_MEANING = {"both": "a seed draws the data and the initial weights", "data": "a seed draws the data, the "
                "weights are the base's", "init": "a seed draws the initial weights, the data are the base's"}


def status_counts(cells: pd.DataFrame) -> str:
    counts = cells["status"].value_counts()
    return md_table(["status", "cells"], [[s, str(int(counts.get(s, 0)))] for s in ("completed", "diverged", "failed")])


def gain_rows(table: pd.DataFrame, axes) -> list[list[str]]:
    return [[*(value(r[a]) for a in axes), str(r["seeds"]), f"{value(r['median'])} [{value(r['q25'])}, "
             f"{value(r['q75'])}]", value(r["min"]), f"{share(r['worse'], r['seeds'])} ({r['share_worse']:.0%})",
             share(r["diverged"], r["seeds"]), share(r["failed"], r["seeds"])] for r in table.to_dict("records")]


def probe_header(axes) -> list[str]:
    """The columns of the k = 0 table: the axes, η, then the labels of the schema's ``sweep`` table."""
    return [*map(heading, axes), "η", *(c.label for c in schema.table("sweep"))]


def probe_rows(table: pd.DataFrame, axes) -> list[list[str]]:
    """:func:`probe_table`'s rows under :func:`probe_header`: each schema column's median as :data:`PROBE_CELLS`
    writes it where it carries a count, a tolerance or a size, else by :func:`value`."""
    columns = schema.table("sweep")
    rows = []
    for r in table.to_dict("records"):
        head = [*(value(r[a]) for a in axes), value(r["lr"])]
        if r["probed"] == 0:
            rows.append([*head, "not probed", *[""] * (len(columns) - 1)])
            continue
        rows.append([*head, *(PROBE_CELLS[c.key](r) if c.key in PROBE_CELLS else value(r[c.sweep]) for c in columns)])
    return rows


PROBE_CELLS = {  # schema key → its cell in the k = 0 table, from a row of probe_table (others: value)
    "ntk/K/threshold": lambda r: f"{value(r['stable_lr'])} (η below in {share(r['stable'], r['probed'])})",
    "alpha/alpha": lambda r: f"{value(r['alpha'])} (≤ tol in {share(r['alpha_zero'], r['probed'])})",
    "alpha/rank": lambda r: f"{value(r['alpha_rank'])}/{value(r['alpha_full'])}, tol {value(r['alpha_tol'])}",
    "ntk/K/rank": lambda r: f"{value(r['rank_K'])}/{value(r['n_outputs'])}, tol {value(r['rank_K_tol'])}",
}


def failures(cells: pd.DataFrame, axes) -> str:
    """The failed cells with their errors, and the diverged ones with the iteration where they diverged."""
    def rows(status: str, extra) -> list[list[str]]:
        return [[r["cell"], *(value(r[a]) for a in axes), str(r["sweep_seed"]), *extra(r)]
                for r in cells[cells["status"] == status].to_dict("records")]

    heads = ["cell", *map(heading, axes), "seed"]
    failed = rows("failed", lambda r: [str(r["error"])])
    diverged = rows("diverged", lambda r: [value(r["diverged_at"]), value(r["error"])])
    parts = [md_table([*heads, "error"], failed)] if failed else []
    parts += ["Diverged (a non-finite loss or gradient; counted as worse than GD):\n\n"
              + md_table([*heads, "diverged at k", "error"], diverged)] if diverged else []
    return "\n\n".join(parts) or "None: every cell completed."


def markdown(result, drawn: list) -> str:
    """report.md's text; ``drawn``: the figures (:func:`ntkcheck.report.sweep_figures.write_figures`)."""
    cells, axes = result.cells, list(result.spec.axes)
    heads = [heading(a) for a in axes]
    gains = summary_table(cells, axes)
    figures = "\n\n".join(d.markdown() for d in drawn) or "No figures."
    return "\n\n".join([
        "# ntkcheck sweep",
        f"{len(cells)} cells: {len(gains)} grid cell{'s' * (len(gains) != 1)} × {len(result.spec.seeds)} seeds.",
        "## Configuration", configuration(result),
        "## Outcome", status_counts(cells),
        "Final gain (F_GD(X_T) − F(X_T))/F_GD(X_T) per grid cell over its seeds (> 0: better than GD): median "
        "[25 %, 75 %], minimum, and the seeds that end worse than GD. A seed that diverged or failed has no gain: "
        "it counts as worse than GD and ranks below every finite gain (−∞ in the statistics).",
        md_table([*heads, "seeds", "median [IQR]", "min", "worse than GD", "diverged", "failed"],
                 gain_rows(gains, axes)),
        "## Failed and diverged cells", failures(cells, axes),
        "## The kernel and the features at k = 0",
        "The probes at k = 0 (K = K_0, α = α₀), medians over each grid cell's seeds. η is stable for the linearised "
        "dynamics below 2/λ_max(K_0) (the seeds where it is are counted). α₀ = σ_min(G_{L−1,T}) is zero to working "
        "precision where it is at most its tolerance (max(shape)·eps·σ_max); ranks are numerical ranks out of the "
        "matrix's size (min(N·d, n) for G, N·b for K_0) at the tolerance shown.",
        md_table(probe_header(axes), probe_rows(probe_table(cells, axes), axes)),
        "## Figures", figures,
    ]) + "\n"
