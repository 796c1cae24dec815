"""The ``stability`` study: the largest meta learning rate η that trains, found by bisection, against the theory's
predictors of it (Eq. 14, its a-priori form, 2/λ_max(K_0), the one-step freeze), and the smallest useful e against
the Lemma 5.1–5.4 thresholds.

**Groups and bracket.** The spec (``specs/stability-<size>.toml``, a sweep spec) has the axes of the groups (e, T,
width and any other) and ``lr = [η_lo, η_hi]``, the bracket. A *group* is one combination of the other axes and one
seed; each group gets its own bisection.

**Trains** (:func:`trains`): the cell's outcome (:func:`outcomes`) is ``trained``: the sweep's own outcome
(:mod:`ntkcheck.results.outcomes`: not failed, not diverged, final gain over GD > 0 after its K iterations) and no
freeze: not ``froze_at_1`` (the step sizes saturate at the first recorded update k₁ = s, the curves' spacing, and the
loss stays within ``FLAT_RTOL`` = 1 % of its value from there to K; docs/diagnostics.md §1). A freeze above GD is
``trained`` to the sweep and ``froze`` here.

**Bisection in rounds** (:func:`next_etas`, :func:`boundary`; :func:`bisect` runs it on any predicate). Round 0
trains both ends of every group. A group whose η_hi trains lies *above* the bracket, one whose η_lo does not train
*below* it (and one where η_hi trains and η_lo does not is *inverted*): their boundary is not in the bracket and no
number is made up for it. Every later round trains, for each open group, the geometric midpoint √(η_train·η_fail)
of its bracket, η_train the largest η measured to train and η_fail the smallest measured not to; a group is done
when η_fail/η_train < :data:`RESOLUTION`. Each round is one ordinary sweep (its cells listed as ``points``, each with
its group's seed) in ``<folder>/sweeps/round-<r>/``; a round's points are a function of the rounds before it, so
a rerun recomputes the same rounds and every finished round only loads. With a predicate that is not monotone in η
the bisection still ends on a measured crossing (η_train trains, η_fail does not, within the resolution), but not
necessarily the largest η that trains: the midpoints decide which crossing.

**Predictors** (:func:`predictors`, from round 0's probes at k = 0; none depends on η):

    eq14           Eq. 14: η ≤ 1/𝓛 ≈ 1/λ_max(K_0)                           (bounds key eq14.eta)
    eq14_apriori   Eq. 14 a priori: η ≤ 1/Λ̄₀², Λ̄₀² ≥ λ_max(K_0) from the data (bounds key eq14.eta_apriori)
    stable         2/λ_max(K_0): the linearised dynamics r_{k+1} = (I − ηK_0) r_k are stable below it
    freeze         the one-step freeze onset: max|φ'| = η·e^{2(L−1)}·c reaches ln((2 − tol)/tol), where the first
                   step's P' = 2σ(φ') first saturates (tol = saturation_tol): η_f = η·ln((2 − tol)/tol)/max|φ'|

and on e the Lemma thresholds e ≥ C·f(T, L) at C = 1 (their constant is unknown). Eq. 14 and the Lemmas are
sufficient conditions: a boundary above them makes them loose, not wrong. Per group the ratio measured/predicted
is η_train/η_pred; the closest predictor has the smallest |log ratio|.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
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
from ntkcheck.config import ConfigError
from ntkcheck.results import outcomes as cell_outcomes

ETA = "lr"  # the field the bisection moves
RESOLUTION = 1.25  # a group is done when η_fail/η_train < RESOLUTION (ntkcheck's choice, not the paper's)
QUESTION = ("How tight are the paper's bounds on η and e: where is the real stability boundary in η, against Eq. 14, "
            "the Lemma 5.x thresholds, 2/λ_max(K_0) and the one-step freeze predictor?")
AXES = ("e", "T", "width", "lr", "iters")
PREDICTORS = {"eq14": "Eq. 14: 1/λ_max(K_0)", "eq14_apriori": "Eq. 14 a priori: 1/Λ̄₀²",
              "stable": "2/λ_max(K_0)", "freeze": "freeze onset"}
BOUND_KEYS = {"eq14": "eq14.eta", "eq14_apriori": "eq14.eta_apriori"}  # bounds' keys of the η predictors
LEMMAS = ("5.1", "5.2", "5.3", "5.4")
STYLES = {"stable": {"color": "black", "lw": 1.2}, "eq14": {"color": "C0", "ls": "--", "lw": 1.2},
          "eq14_apriori": {"color": "C1", "ls": "-.", "lw": 1.2}, "freeze": {"color": "C3", "ls": ":", "lw": 1.5}}


# -- the bisection ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Boundary:
    """Where one group's bisection stands. ``where``: ``found`` (η_fail/η_train < resolution), ``open`` (not yet),
    ``above`` (η_hi trains: the boundary lies above the bracket), ``below`` (η_lo does not train), ``inverted``
    (η_hi trains and η_lo does not); ``eta_train``: the largest η measured to train (NaN where none did below a failing
    one), ``eta_fail``: the smallest η measured not to (NaN where none did); ``measured``: (η, trains) in order."""

    where: str
    eta_train: float
    eta_fail: float
    measured: tuple[tuple[float, bool], ...]


def check_bracket(lo, hi, resolution: float = RESOLUTION) -> None:
    """A bracket 0 < η_lo < η_hi < ∞ and a resolution > 1, or a ConfigError naming ``grid`` (lr is a grid axis)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
               for v in (lo, hi)) or not lo < hi:
        raise ConfigError("grid", f"lr is the bisection's bracket: two numbers 0 < η_lo < η_hi (got {lo!r}, {hi!r})")
    if not (isinstance(resolution, (int, float)) and 1 < resolution < math.inf):
        raise ConfigError("resolution", f"must be a number > 1 (got {resolution!r})")


def midpoint(a: float, b: float) -> float:
    """The geometric mean √(a·b), the middle of [a, b] on a log scale (√a·√b: no overflow)."""
    return math.sqrt(a) * math.sqrt(b)


def boundary(measured, lo: float, hi: float, resolution: float = RESOLUTION) -> Boundary:
    """Where a group stands after ``measured`` ((η, trains) pairs: the ends η_lo and η_hi first, then the midpoints
    :func:`next_etas` asked for, in order). A pair that is not the bisection's next midpoint is a ValueError."""
    check_bracket(lo, hi, resolution)
    measured = tuple((float(eta), bool(ok)) for eta, ok in measured)
    ends = dict(measured[:2])
    if len(measured) < 2:
        return Boundary("open", math.nan, math.nan, measured)
    if set(ends) != {lo, hi}:
        raise ValueError(f"the first two measurements must be the bracket's ends {lo!r} and {hi!r}")
    if ends[hi] or not ends[lo]:
        where = "inverted" if ends[hi] and not ends[lo] else "above" if ends[hi] else "below"
        if len(measured) > 2:
            raise ValueError(f"a group {where} the bracket has no midpoints to measure")
        return Boundary(where, hi if where == "above" else math.nan, lo if where == "below" else math.nan, measured)
    a, b = lo, hi
    for eta, ok in measured[2:]:
        if b / a < resolution or eta != midpoint(a, b):
            raise ValueError(f"η = {eta!r} is not the bisection's next midpoint of [{a!r}, {b!r}]")
        a, b = (eta, b) if ok else (a, eta)
    return Boundary("found" if b / a < resolution else "open", a, b, measured)


def next_etas(measured, lo: float, hi: float, resolution: float = RESOLUTION) -> tuple[float, ...]:
    """The η a group trains next: both ends first, then the midpoint of its open bracket; () when it is done."""
    if not measured:
        check_bracket(lo, hi, resolution)
        return (lo, hi)
    b = boundary(measured, lo, hi, resolution)
    return (midpoint(b.eta_train, b.eta_fail),) if b.where == "open" else ()


def bisect(trains: Callable[[float], bool], lo: float, hi: float, resolution: float = RESOLUTION) -> Boundary:
    """The bisection of one group on the predicate ``trains(η)``, round by round as the study runs it."""
    measured: tuple = ()
    while etas := next_etas(measured, lo, hi, resolution):
        measured += tuple((eta, bool(trains(eta))) for eta in etas)
    return boundary(measured, lo, hi, resolution)


def rounds_needed(lo: float, hi: float, resolution: float = RESOLUTION) -> int:
    """Midpoint rounds a group inside the bracket takes: the least r with ln(η_hi/η_lo)/2^r < ln(resolution)."""
    r = 0
    while math.log(hi / lo) / 2 ** r >= math.log(resolution):
        r += 1
    return r


# -- what trains ----------------------------------------------------------------------------------------------------


def outcomes(result, flat_rtol: float | None = None) -> pd.Series:
    """Each cell's outcome for this study (index: cell id): the sweep's (:func:`ntkcheck.results.outcomes.cell_outcome`,
    computed from the curves where cells.parquet lacks it), a ``trained`` cell that froze at its first recorded update
    (``froze_at_1``) counted as ``froze``. ``flat_rtol``: decide that freeze of the trained cells with another tolerance
    on the flat loss than the sweep's ``FLAT_RTOL`` (:func:`froze_at_1`; the other outcomes stay the sweep's)."""
    cells = result.cells
    if not {"outcome", "froze_at_1"} <= set(cells.columns):
        cells = cell_outcomes.add_outcomes(cells, result.curves)
    froze = cells["froze_at_1"].astype(bool)
    if flat_rtol is not None:
        curves = dict(tuple(result.curves.groupby("cell", sort=False))) if len(result.curves) else {}
        froze = pd.Series([cid in curves and froze_at_1(curves[cid], flat_rtol) for cid in cells["cell"]],
                          index=cells.index)
    out = cells["outcome"].mask(cells["outcome"].eq("trained") & froze, "froze")
    return pd.Series(out.to_numpy(), index=cells["cell"].to_numpy(), name="outcome")


def froze_at_1(curve: pd.DataFrame, flat_rtol: float = cell_outcomes.FLAT_RTOL) -> bool:
    """:func:`ntkcheck.results.outcomes.froze_at_1` with the tolerance ``flat_rtol`` in place of ``FLAT_RTOL``:
    P_saturated(k₁) > 0 and max_{k ≥ k₁} L_k − min_{k ≥ k₁} L_k ≤ flat_rtol·|L_{k₁}| over the recorded iterations."""
    curve = curve.set_index("iteration").sort_index() if "iteration" in curve.columns else curve.sort_index()
    if len(curve) < 2:
        return False
    loss = curve["loss"].to_numpy(float)[1:]
    if not np.isfinite(loss).all() or not float(curve["P_saturated"].iloc[1]) > 0:
        return False
    return bool(loss.max() - loss.min() <= flat_rtol * abs(loss[0]))


def trains(result) -> pd.Series:
    """Whether each cell trains (index: cell id): its outcome is ``trained`` (:func:`outcomes`)."""
    return outcomes(result) == "trained"


# -- running: the rounds ----------------------------------------------------------------------------------------


def bracket(spec) -> tuple[float, float]:
    """The spec's bracket (η_lo, η_hi): its ``lr`` axis, two values (ConfigError on ``grid`` otherwise)."""
    values = dict(spec.grid).get(ETA)
    if values is None or len(values) != 2:
        raise ConfigError("grid", f"lr is the bisection's bracket: exactly two values η_lo,η_hi (got "
                                  f"{'none' if values is None else ','.join(map(str, values))})")
    lo, hi = values
    check_bracket(lo, hi)
    return float(lo), float(hi)


def study_plan_spec(plan: StudyPlan):
    """The study's spec under the plan (its seeds, its axis overrides), its bracket checked."""
    from ntkcheck.apps.sweep import load_spec

    spec = plan_spec(load_spec(study_spec("stability", plan.size)), plan)
    bracket(spec)
    return spec


def group_axes(spec) -> list[str]:
    """The axes that make the groups: every grid axis but η."""
    return [name for name, _ in spec.grid if name != ETA]


def groups(spec) -> list[tuple]:
    """Every group: the product of the axes but η (first slowest), then the seed, as a tuple of values."""
    axes = [values for name, values in spec.grid if name != ETA]
    return [(*combo, seed) for combo in itertools.product(*axes) for seed in spec.seeds]


def round_spec(spec, axes: list[str], todo: list[tuple[tuple, float]], r: int):
    """Round ``r``'s sweep: the spec's settings, its cells the points (group, η) of ``todo``, each with its group's
    seed; probes at k = 0 in round 0 only (λ_max(K_0) and the freeze predictor do not depend on η)."""
    points = tuple(dict(zip(axes, group[:-1])) | {ETA: eta, "seed": int(group[-1])} for group, eta in todo)
    return replace(spec, grid=(), points=points, probe_method=spec.probe_method if r == 0 else "none")


def run(plan: StudyPlan, folder: Path, callback=None) -> dict:
    """Every round of the bisection (module docstring) into ``folder/sweeps/round-<r>/``, with the plan's engine;
    returns the round sweeps by name. Finished rounds are read back, so a rerun continues where it stopped."""
    spec = study_plan_spec(plan)
    lo, hi = bracket(spec)
    axes = group_axes(spec)
    measured = {g: () for g in groups(spec)}
    sweeps = {}
    for r in itertools.count():
        todo = [(g, eta) for g, m in measured.items() for eta in next_etas(m, lo, hi)]
        if not todo:
            return sweeps
        name = f"round-{r}"
        rspec = round_spec(spec, axes, todo, r)
        result = run_specs({name: rspec}, plan, folder, callback)[name]
        ok = trains(result)
        for (g, eta), cell in zip(todo, rspec.cells()):
            measured[g] += ((eta, bool(ok[cell.id])),)
        sweeps[name] = result


# -- the analysis -------------------------------------------------------------------------------------------------


def _rounds(sweeps: dict) -> list[tuple[int, object]]:
    return sorted((int(name.rsplit("-", 1)[1]), result) for name, result in sweeps.items())


def measurements(sweeps: dict) -> pd.DataFrame:
    """One row per cell of every round: the group's axes and seed, ``round``, η, ``outcome``, ``trains``, its final
    gain; in round order."""
    parts = []
    for r, result in _rounds(sweeps):
        out = outcomes(result)
        cells = result.cells
        parts.append(pd.DataFrame({**{a: cells[a] for a in result.spec.axes if a != ETA},
                                   "seed": cells["sweep_seed"].astype(int), "round": r, "eta": cells[ETA].astype(float),
                                   "outcome": cells["cell"].map(out), "trains": cells["cell"].map(out).eq("trained"),
                                   "gain": pd.to_numeric(cells["gain_final"], errors="coerce"), "cell": cells["cell"]}))
    return pd.concat(parts, ignore_index=True)


def boundaries(measured: pd.DataFrame, axes: list[str], lo: float, hi: float,
               resolution: float = RESOLUTION) -> pd.DataFrame:
    """One row per group (``axes``, seed): :func:`boundary` of its measurements (``where``, ``eta_train``,
    ``eta_fail``), how many runs it took, the final gain of the run at η_train and the outcome of the run at η_fail
    (what stopped training there)."""
    rows = []
    for key, part in measured.sort_values("round", kind="stable").groupby([*axes, "seed"], sort=False):
        b = boundary(list(zip(part["eta"], part["trains"])), lo, hi, resolution)
        at = part.loc[part["eta"] == b.eta_train, "gain"]
        fail = part.loc[part["eta"] == b.eta_fail, "outcome"]
        rows.append({**dict(zip([*axes, "seed"], key)), "where": b.where, "eta_train": b.eta_train,
                     "eta_fail": b.eta_fail, "runs": len(part), "gain_at_train": float(at.iloc[0]) if len(at)
                     else math.nan, "outcome_at_fail": fail.iloc[0] if len(fail) else None})
    return pd.DataFrame(rows)


def freeze_sensitivity(sweeps: dict, table: pd.DataFrame, axes: list[str],
                       tolerances=(1e-1, cell_outcomes.FLAT_RTOL, 1e-3)) -> pd.DataFrame:
    """Whether each found crossing depends on how flat a frozen loss must be: the recorded cells reclassified
    (:func:`outcomes` with ``froze_at_1`` at each of ``tolerances``), per tolerance the found groups whose run at
    η_train still trains and whose run at η_fail still does not (``kept``), out of ``found``."""
    measured = measurements(sweeps)
    found = table[table["where"] == "found"]
    rows = []
    for tol in tolerances:
        decided = pd.concat([outcomes(result, tol) for _, result in _rounds(sweeps)])
        ok = measured.assign(trains=measured["cell"].map(decided).eq("trained")).set_index([*axes, "seed", "eta"])
        ok = ok["trains"]
        kept = sum(bool(ok[(*g, r.seed, r.eta_train)]) and not bool(ok[(*g, r.seed, r.eta_fail)])
                   for g, r in zip(found[axes].itertuples(index=False), found.itertuples()))
        rows.append({"flat_rtol": tol, "found": len(found), "kept": kept,
                     "cells_trained": int(decided.eq("trained").sum()), "cells_froze": int(decided.eq("froze").sum())})
    return pd.DataFrame(rows)


def freeze_onset(cells: pd.DataFrame) -> pd.Series:
    """η_f = η·ln((2 − tol)/tol)/max|φ'| of each cell (``freeze_phi_max_0`` = max|φ'| of its first step at its η,
    proportional to η; tol its ``saturation_tol``): the η at which the first step's largest |φ'| reaches the
    saturation level ln((2 − tol)/tol). NaN where the freeze predictor was not measured."""
    tol = cells["saturation_tol"].astype(float)
    phi = pd.to_numeric(cells.get("freeze_phi_max_0", pd.Series(np.nan, index=cells.index)), errors="coerce")
    return cells[ETA].astype(float) * np.log((2 - tol) / tol) / phi.where(phi > 0)


def predictors(cells: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The predictors of every group (module docstring) from round 0's cells (probed at k = 0): one row per group
    (``axes``, seed) with ``eta_<name>`` for each of :data:`PREDICTORS` (NaN where it was not measured or does not
    apply) and ``lemma<x>`` the Lemma thresholds on e at C = 1 (NaN where undefined)."""
    import bounds
    from ntkcheck.theory import sweep_bounds

    cells = cells.drop_duplicates([*axes, "sweep_seed"])  # both ends of a group share W_0, data and K_0
    theory = sweep_bounds(cells)
    out = pd.DataFrame({**{a: cells[a].to_numpy() for a in axes}, "seed": cells["sweep_seed"].astype(int).to_numpy()})
    for name, key in BOUND_KEYS.items():
        found = theory[theory["key"] == key].set_index("cell")["threshold"]
        out[f"eta_{name}"] = cells["cell"].map(found).astype(float).to_numpy()
    out["eta_stable"] = pd.to_numeric(cells["stable_lr_0"], errors="coerce").to_numpy(float)
    out["eta_freeze"] = freeze_onset(cells).to_numpy(float)
    for lemma in LEMMAS:
        out[f"lemma{lemma}"] = [bounds.lemma_threshold(lemma, int(T), int(L)) for T, L in zip(cells["T"], cells["L"])]
    return out


def compare(found: pd.DataFrame, predicted: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The groups beside their predictors: ``ratio_<name>`` = η_train/η_<name> where the boundary was found (NaN
    elsewhere), and ``closest``: the predictor with the smallest |ln ratio| (None where none has a ratio)."""
    table = found.merge(predicted, on=[*axes, "seed"], how="left", validate="one_to_one")
    inside = table["where"].eq("found")
    for name in PREDICTORS:
        table[f"ratio_{name}"] = (table["eta_train"] / table[f"eta_{name}"]).where(inside)
    logs = np.abs(np.log(table[[f"ratio_{name}" for name in PREDICTORS]].to_numpy(float)))
    best = np.where(np.isfinite(logs).any(axis=1), np.nanargmin(np.where(np.isfinite(logs), logs, np.inf), axis=1), -1)
    names = list(PREDICTORS)
    table["closest"] = [names[i] if i >= 0 else None for i in best]
    return table


def summary(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per ``by`` (e.g. T, width) and predictor: the found boundaries' count, the ratio measured/predicted (median,
    min, max over e and seeds), the share of them closest to it, and the share whose predicted η trained (ratio ≥ 1:
    the measured boundary is at or above the prediction)."""
    rows = []
    for key, part in table.groupby(by, sort=False) if by else [((), table)]:
        key = key if isinstance(key, tuple) else (key,)
        for name in PREDICTORS:
            r = part[f"ratio_{name}"].dropna()
            rows.append({**dict(zip(by, key)), "predictor": name, "points": len(r),
                         "ratio_median": r.median() if len(r) else math.nan,
                         "ratio_min": r.min() if len(r) else math.nan, "ratio_max": r.max() if len(r) else math.nan,
                         "closest_share": float((part["closest"] == name).sum() / len(r)) if len(r) else math.nan,
                         "predicted_trains_share": float((r >= 1).mean()) if len(r) else math.nan})
    return pd.DataFrame(rows)


def by_e(table: pd.DataFrame, panels: list[str]) -> pd.DataFrame:
    """What the figure draws, per panel (``panels``) and e: the seeds, how many found / above / below, the measured
    η_train (median, min, max over the seeds where it was found), each predictor's median, the median final gain at
    η_train."""
    rows = []
    for key, part in table.groupby([*panels, "e"], sort=True):
        found = part[part["where"] == "found"]
        rows.append({**dict(zip([*panels, "e"], key)), "seeds": len(part), "found": len(found),
                     "above": int((part["where"] == "above").sum()), "below": int((part["where"] == "below").sum()),
                     "eta_train_median": found["eta_train"].median(), "eta_train_min": found["eta_train"].min(),
                     "eta_train_max": found["eta_train"].max(), "gain_median": found["gain_at_train"].median(),
                     **{f"eta_{n}_median": part[f"eta_{n}"].median() for n in PREDICTORS}})
    return pd.DataFrame(rows)


def useful_e(table: pd.DataFrame, panels: list[str], L: int) -> pd.DataFrame:
    """Per panel and seed: the smallest e at which some η of the bracket trains (the group is ``found`` or
    ``above``), ``censored`` where that is the grid's smallest e (the true one may be smaller), and each Lemma's
    threshold at C = 1 with ``C_<x>`` = e_min/threshold: the Lemma's constant C at which e_min would sit exactly on
    its threshold (the Lemmas are sufficient conditions: training below the threshold does not contradict them)."""
    import bounds

    smallest = table["e"].min()
    rows = []
    for key, part in table.groupby([*panels, "seed"], sort=True):
        g = dict(zip([*panels, "seed"], key))
        ok = part.loc[part["where"].isin(["found", "above"]), "e"]
        e_min = ok.min() if len(ok) else math.nan
        row = {**g, "e_min": e_min, "censored": bool(len(ok) and e_min == smallest)}
        for lemma in LEMMAS:
            f = bounds.lemma_threshold(lemma, int(g.get("T", part["T"].iloc[0])), L)
            row |= {f"lemma{lemma}": f, f"C_{lemma}": e_min / f if math.isfinite(f) else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def slopes(table: pd.DataFrame, panels: list[str]) -> pd.DataFrame:
    """Per panel and seed: the least-squares slope of ln η_train against ln e over the e where the boundary was found
    (at least two), beside Cor. C.1's η_max ∝ e^{−2(L−1)}."""
    rows = []
    for key, part in table[table["where"] == "found"].groupby([*panels, "seed"], sort=True):
        if part["e"].nunique() >= 2:
            slope = np.polyfit(np.log(part["e"].astype(float)), np.log(part["eta_train"]), 1)[0]
            rows.append({**dict(zip([*panels, "seed"], key)), "points": len(part), "slope": float(slope)})
    return pd.DataFrame(rows, columns=[*panels, "seed", "points", "slope"])


# -- the figure -----------------------------------------------------------------------------------------------------


def figure(table: pd.DataFrame, drawn: pd.DataFrame, panels: list[str], lo: float, hi: float, L: int):
    """One panel per combination of ``panels`` (e.g. T, width): against e (log), the measured η_train of each seed
    (dots), its median over seeds with the min–max band (``drawn``, :func:`by_e`), each predictor's median, ▲ at η_hi
    for the seeds above the bracket and ▼ at η_lo for those below, and the Lemma thresholds on e at C = 1. Each
    artist carries a gid (``measured``, ``seeds``, ``eta_<name>``, ``above``, ``below``) naming what it draws."""
    import bounds
    from ntkcheck.report import e_eta, plots

    keys = list(drawn.groupby(panels, sort=True).groups) if panels else [()]
    fig = plots.figure(4.2 * len(keys), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(keys), sharey=True))
    for ax, key in zip(axes, keys):
        key = key if isinstance(key, tuple) else (key,)
        part, seeds = _panel(drawn, panels, key), _panel(table, panels, key)
        found = seeds[seeds["where"] == "found"]
        ax.scatter(found["e"], found["eta_train"], s=12, color="C2", alpha=0.6, zorder=5, gid="seeds",
                   label="largest η that trains, each seed")
        ax.plot(part["e"], part["eta_train_median"], color="C2", lw=2, marker="o", zorder=6, gid="measured",
                label="largest η that trains (median over seeds, min–max band)")
        ax.fill_between(part["e"], part["eta_train_min"], part["eta_train_max"], color="C2", alpha=0.2, lw=0)
        for name, text in PREDICTORS.items():
            ax.plot(part["e"], part[f"eta_{name}_median"], gid=f"eta_{name}", label=f"{text} (median)",
                    **STYLES[name])
        for where, eta, marker in (("above", hi, "^"), ("below", lo, "v")):
            out = seeds[seeds["where"] == where]
            ax.scatter(out["e"], np.full(len(out), eta), marker=marker, s=40, color="0.3", zorder=7, gid=where,
                       label=f"boundary {where} the bracket (at η_{'hi' if where == 'above' else 'lo'})")
        T = int(seeds["T"].iloc[0])
        e_eta.lemma_lines(ax, [(f"Lemma {x}", bounds.lemma_threshold(x, T, L), 1.0, "undefined") for x in LEMMAS],
                          float(part["e"].min()) / 2, float(part["e"].max()) * 2)
        plots.log_axes(ax, x=True, y=True)
        ax.set_xlabel("init scale e")
        ax.set_title(", ".join(f"{k} = {v:g}" for k, v in zip(panels, key)), fontsize=8)
        lemmas = [(h, t) for h, t in zip(*ax.get_legend_handles_labels()) if t.startswith("Lemma")]
        ax.legend(*zip(*lemmas), fontsize=5.5, loc="lower left", title="on e", title_fontsize=6)
    axes[0].set_ylabel("meta learning rate η")
    shared = [(h, t) for h, t in zip(*axes[0].get_legend_handles_labels()) if not t.startswith("Lemma")]
    fig.legend(*zip(*shared), loc="outside lower center", ncol=2, fontsize=7)
    fig.suptitle("Largest η that trains (no divergence, no freeze, gain > 0), by bisection, against the predictors",
                 fontsize=9)
    return fig


def _panel(frame: pd.DataFrame, panels: list[str], key: tuple) -> pd.DataFrame:
    """The rows of ``frame`` whose ``panels`` columns hold ``key``."""
    return frame[(frame[panels] == pd.Series(dict(zip(panels, key)))).all(axis=1)] if panels else frame


# -- the answer -----------------------------------------------------------------------------------------------------


def _num(x: float) -> str:
    from ntkcheck.report.plots import tick

    return tick(float(x))


def paragraph(table: pd.DataFrame, sensitivity: pd.DataFrame, useful: pd.DataFrame, fitted: pd.DataFrame,
              panels: list[str], lo: float, hi: float, runs: int, rounds: int, K: list, L: int) -> str:
    """The answer in one paragraph, every number from the tables (``panels``: the group axes but e)."""
    counts = table["where"].value_counts()
    parts = [(f"Per group (e, T, width, seed; {len(table)} groups) the largest η that trains within "
              f"K = {', '.join(map(str, K))} iterations (no divergence; no freeze: not saturated step sizes at the first "
              f"recorded update with the loss flat within {cell_outcomes.FLAT_RTOL:g} of its value from there on; final "
              f"gain over GD > 0) was bisected on a log scale in [{_num(lo)}, {_num(hi)}] to η_fail/η_train < "
              f"{RESOLUTION:g} (the ends, then {rounds} rounds of midpoints; {runs} training runs). Found: "
              f"{counts.get('found', 0)}; above the bracket: {counts.get('above', 0)}; below it: "
              f"{counts.get('below', 0)}; inverted: {counts.get('inverted', 0)}.")]
    fails = table.loc[table["where"] == "found", "outcome_at_fail"].value_counts()
    if len(fails):
        parts.append("What stopped training at η_fail: " + ", ".join(f"{k} in {v}" for k, v in fails.items()) + ".")
    loose, strict = sensitivity.iloc[0], sensitivity.iloc[-1]
    parts.append(f"The found crossings hold with a frozen loss flat within {loose['flat_rtol']:g} in "
                 f"{int(loose['kept'])}/{int(loose['found'])} and within {strict['flat_rtol']:g} in "
                 f"{int(strict['kept'])}/{int(strict['found'])}: where the boundary sits depends on that tolerance "
                 "(ntkcheck's choice, not the paper's) for the others.")
    overall = summary(table, [])
    said = []
    for _, r in overall.iterrows():
        if r["points"]:
            said.append(f"{PREDICTORS[r['predictor']]} ×{_num(r['ratio_median'])} [{_num(r['ratio_min'])}, "
                        f"{_num(r['ratio_max'])}], closest in {r['closest_share']:.0%}")
        else:
            said.append(f"{PREDICTORS[r['predictor']]}: not measured")
    parts.append("Measured/predicted η, median [min, max] over e and seeds: " + "; ".join(said) + ".")
    if panels and table["ratio_stable"].notna().any():
        per = table.groupby(panels)["ratio_stable"].median().dropna()
        parts.append("η_train/(2/λ_max(K_0)), median per " + ", ".join(panels) + ": " + "; ".join(
            f"{', '.join(map(str, k if isinstance(k, tuple) else (k,)))}: ×{_num(v)}" for k, v in per.items()) + ".")
    found = table[table["where"] == "found"]
    spread = found.groupby([*panels, "e"])["eta_train"].agg(lambda x: math.log10(x.max() / x.min()))
    if len(spread):
        parts.append(f"Over seeds, η_train spans {spread.median():.1f} decades in the median (T, width, e) "
                     f"[{spread.min():.1f}, {spread.max():.1f}].")
    best = overall.dropna(subset=["ratio_median"])
    if len(best):
        closest = best.loc[(best["ratio_median"].map(lambda x: abs(math.log(x)))).idxmin()]
        parts.append(f"Closest in the median: {PREDICTORS[closest['predictor']]}.")
        eq14 = overall.set_index("predictor").loc["eq14"]
        if eq14["points"]:
            parts.append(f"Eq. 14's sufficient η ≤ 1/λ_max(K_0) trained in {eq14['predicted_trains_share']:.0%} of "
                         "the found groups (measured boundary at or above it).")
    if len(fitted):
        parts.append(f"The slope of ln η_train against ln e: median {fitted['slope'].median():.2f} "
                     f"[{fitted['slope'].min():.2f}, {fitted['slope'].max():.2f}] over seeds, against Cor. C.1's "
                     f"−2(L−1) = {-2 * (L - 1)}.")
    if len(useful):
        e_min = useful["e_min"]
        cens = int(useful["censored"].sum())
        parts.append(f"Smallest useful e (some η of the bracket trains): {_num(e_min.min())}–{_num(e_min.max())} "
                     f"over {len(useful)} (T, width, seed), the grid's smallest e in {cens} (censored); the Lemma "
                     "thresholds at C = 1 are " + ", ".join(
                         f"{x}: {_num(useful[f'lemma{x}'].min())}–{_num(useful[f'lemma{x}'].max())}" for x in LEMMAS)
                     + " (sufficient conditions with an unknown C: training below them does not contradict them).")
    return " ".join(parts)


def analyse(sweeps: dict, folder: Path, fmt: str = "png") -> Answer:
    """The answer from the round sweeps: tables ``boundaries`` (one row per group: where, η_train, η_fail, the
    predictors, the ratios, the closest), ``predictors`` (per T/width and predictor), ``by_e`` (the figure's),
    ``useful_e``, ``slopes``, ``freeze_sensitivity``; the figure ``figures/stability.<fmt>``."""
    from ntkcheck.report import plots

    rounds = _rounds(sweeps)
    first = rounds[0][1]
    axes = [a for a in first.spec.axes if a != ETA]
    lo, hi = float(first.cells[ETA].min()), float(first.cells[ETA].max())
    measured = measurements(sweeps)
    predicted = predictors(first.cells, axes)
    table = compare(boundaries(measured, axes, lo, hi), predicted.drop(columns=[f"lemma{x}" for x in LEMMAS]), axes)
    L = int(first.cells["L"].iloc[0])
    panels = [a for a in axes if a != "e"]
    drawn = by_e(table, panels)
    totals = summary(table, panels)
    useful, fitted = useful_e(table, panels, L), slopes(table, panels)
    folder = Path(folder)
    name = f"figures/stability.{fmt}"
    plots.save(figure(table, drawn, panels, lo, hi, L), folder / name, fmt)
    K = sorted(set(first.cells["iters"].astype(int)))
    sensitivity = freeze_sensitivity(sweeps, table, axes)
    text = paragraph(table, sensitivity, useful, fitted, panels, lo, hi, len(measured), len(rounds) - 1, K, L)
    return Answer(text, {"boundaries": table, "predictors": totals, "by_e": drawn, "useful_e": useful,
                         "slopes": fitted, "freeze_sensitivity": sensitivity}, (name,))


STUDY = Study("stability", QUESTION, AXES, run, analyse)
