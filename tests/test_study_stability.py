"""The stability study: the bisection on step functions whose boundary is known (inside, outside and a non-monotone
predicate), the rounds it runs as sweeps, the outcome of a cell, the predictors against independent computations,
the analysis and its figure on synthetic groups whose answer is known, and the study end to end (resumed, on Ray)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck import ConfigError
from ntkcheck.apps.study import stability as S
from ntkcheck.apps.study.base import StudyPlan
from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.apps.sweep.run import SweepResult

LO, HI = 1e-6, 1e6


def step(eta0: float):
    """The predicate of a known boundary: trains exactly for η ≤ η0."""
    return lambda eta: eta <= eta0


# -- the bisection ------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=math.log(LO) + 1e-9, max_value=math.log(HI) - 1e-9))
def test_the_bisection_brackets_a_known_boundary_within_the_resolution_in_the_stated_rounds(log_eta0):
    eta0 = math.exp(log_eta0)
    b = S.bisect(step(eta0), LO, HI)
    assert b.where == "found"
    assert b.eta_train <= eta0 < b.eta_fail and b.eta_fail / b.eta_train < S.RESOLUTION
    assert len(b.measured) == 2 + S.rounds_needed(LO, HI)  # the ends, then one midpoint per round
    trained = [eta for eta, ok in b.measured if ok]
    failed = [eta for eta, ok in b.measured if not ok]
    assert b.eta_train == max(trained) and b.eta_fail == min(failed)  # the largest η measured to train, and so on
    assert all(ok == (eta <= eta0) for eta, ok in b.measured)


def test_the_midpoints_halve_the_log_interval():
    b = S.bisect(step(3.0), LO, HI)
    logs = [math.log(eta) for eta, _ in b.measured]
    assert logs[2] == pytest.approx(0.5 * (logs[0] + logs[1]), abs=1e-12)  # the first midpoint is √(η_lo·η_hi) = 1
    widths = []
    a, c = math.log(LO), math.log(HI)
    for (eta, ok), log in zip(b.measured[2:], logs[2:]):
        assert log == pytest.approx(0.5 * (a + c), abs=1e-9)
        a, c = (log, c) if ok else (a, log)
        widths.append(c - a)
    assert np.allclose(np.diff(np.log(widths)), math.log(0.5))


@pytest.mark.parametrize("eta0, where, train, fail", [
    (HI, "above", HI, math.nan),        # η_hi itself trains: the boundary lies at or above η_hi
    (1e9, "above", HI, math.nan),
    (1e-7, "below", math.nan, LO),      # η_lo does not train
])
def test_a_boundary_outside_the_bracket_is_reported_as_such_after_the_ends_alone(eta0, where, train, fail):
    b = S.bisect(step(eta0), LO, HI)
    assert b.where == where and len(b.measured) == 2
    np.testing.assert_equal([b.eta_train, b.eta_fail], [train, fail])


def test_a_predicate_that_trains_at_the_top_and_not_at_the_bottom_is_inverted():
    b = S.bisect(lambda eta: eta >= 1.0, LO, HI)
    assert b.where == "inverted" and len(b.measured) == 2 and math.isnan(b.eta_train) and math.isnan(b.eta_fail)


def test_on_a_non_monotone_predicate_the_bisection_ends_on_a_crossing_which_the_midpoints_choose():
    """Trains on [η_lo, 1e-2] ∪ [1e-1, 1e2]. The first midpoint is 1: it trains, so the bisection follows the upper
    crossing (1e2, the largest η that trains). Shifted so that the first midpoint falls in the gap, it follows the
    lower crossing although larger η train: it returns a crossing, not necessarily the largest."""
    def two_intervals(shift):
        return lambda eta: eta * shift <= 1e-2 or 1e-1 <= eta * shift <= 1e2

    upper = S.bisect(two_intervals(1.0), LO, HI)
    assert upper.where == "found" and upper.eta_train <= 1e2 < upper.eta_fail
    shifted = two_intervals(0.03)  # trains on [η_lo, 1/3] ∪ [10/3, 10⁴/3]; the first midpoint 1 does not train
    lower = S.bisect(shifted, LO, HI)
    assert lower.where == "found" and lower.eta_train <= 1 / 3 < lower.eta_fail < 1.0
    assert shifted(1e3) and lower.eta_train < 1e3  # a larger η trains than the one returned


def test_boundary_refuses_measurements_that_are_not_the_bisections():
    with pytest.raises(ValueError, match="ends"):
        S.boundary([(1.0, True), (HI, False)], LO, HI)
    with pytest.raises(ValueError, match="midpoint"):
        S.boundary([(LO, True), (HI, False), (2.0, True)], LO, HI)
    with pytest.raises(ValueError, match="no midpoints"):
        S.boundary([(LO, True), (HI, True), (1.0, True)], LO, HI)


@pytest.mark.parametrize("lo, hi", [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (1.0, math.inf), (True, 2.0)])
def test_a_bad_bracket_is_refused_naming_grid(lo, hi):
    with pytest.raises(ConfigError, match="bracket") as err:
        S.next_etas((), lo, hi)
    assert err.value.field == "grid"


# -- the outcome of a cell ----------------------------------------------------------------------------------------


def _result(curves: dict[str, list[tuple[float, float, float]]], status: dict[str, str]) -> SweepResult:
    """A sweep of cells whose curves are (loss, gain, P_saturated) at k = 0, 10, 20, …, without outcome columns."""
    cells = pd.DataFrame([{"cell": c, "status": status.get(c, "completed"), "gain_final": seq[-1][1]}
                          for c, seq in curves.items()])
    rows = [{"cell": c, "iteration": 10 * k, "loss": loss, "gain": gain, "P_saturated": sat}
            for c, seq in curves.items() for k, (loss, gain, sat) in enumerate(seq)]
    return SweepResult(make_spec("small"), cells, pd.DataFrame(rows), pd.DataFrame())


CURVES = {
    "failed": [(1.0, 0.0, 0.0), (0.9, 0.1, 0.0)],
    "diverged": [(1.0, 0.0, 0.0), (math.inf, math.nan, 0.0)],
    "trained": [(1.0, 0.0, 0.0), (0.8, 0.1, 0.0), (0.5, 0.3, 0.0)],
    "froze-above": [(1.0, 0.0, 0.0), (0.8, 0.2, 0.5), (0.8 * (1 - 0.009), 0.21, 0.5)],  # flat within 1 %, saturated
    "moving-above": [(1.0, 0.0, 0.0), (0.8, 0.2, 0.5), (0.8 * (1 - 0.011), 0.21, 0.5)],  # moved 1.1 %: not frozen
    "flat-unsaturated": [(1.0, 0.0, 0.0), (0.8, 0.2, 0.0), (0.8, 0.2, 0.0)],  # flat, but no P saturated at k₁
    "froze-below": [(1.0, 0.0, 0.0), (3.0, -2.0, 0.5), (3.0, -2.0, 0.5)],
    "unstable": [(1.0, 0.0, 0.0), (3.0, -2.0, 0.1), (2.0, -1.0, 0.1)],
}


def test_a_cell_trains_when_the_sweep_says_trained_and_it_did_not_freeze_at_its_first_update():
    result = _result(CURVES, {"failed": "failed", "diverged": "diverged"})
    out = S.outcomes(result)
    assert dict(out) == {"failed": "failed", "diverged": "diverged", "trained": "trained", "froze-above": "froze",
                         "moving-above": "trained", "flat-unsaturated": "trained", "froze-below": "froze",
                         "unstable": "unstable"}
    assert sorted(S.trains(result)[S.trains(result)].index) == ["flat-unsaturated", "moving-above", "trained"]
    # the sweep's own columns, where cells.parquet has them, give the same
    from ntkcheck.results.outcomes import add_outcomes

    recorded = SweepResult(result.spec, add_outcomes(result.cells, result.curves), result.curves, result.probes)
    assert dict(S.outcomes(recorded)) == dict(out)


def test_froze_at_1_is_the_sweeps_at_its_tolerance_and_moves_with_another():
    from ntkcheck.results import outcomes as sweep_outcomes

    curves = _result(CURVES, {}).curves
    for cid, curve in curves.groupby("cell"):
        assert S.froze_at_1(curve) == sweep_outcomes.froze_at_1(curve.set_index("iteration").drop(columns="cell"))
    result = _result(CURVES, {"failed": "failed", "diverged": "diverged"})
    assert S.outcomes(result, flat_rtol=0.02)["moving-above"] == "froze"  # 1.1 % ≤ 2 %
    assert S.outcomes(result, flat_rtol=0.005)["froze-above"] == "trained"  # 0.9 % > 0.5 %


# -- the rounds, driven by a known predicate ----------------------------------------------------------------------


def _known(e: float, seed: int) -> float:
    """The boundary of the synthetic groups: η0 = 3·e^{−4}·(1 + seed), and outside the bracket for two groups."""
    if e == 1.0:
        return 1e9 if seed == 0 else 1e-20  # above, below
    return 3.0 * e ** -4 * (1 + seed)


def _fake_run_specs(log):
    """run_specs as the study calls it, but each cell trains exactly when η ≤ _known(e, seed) (no training)."""
    def run_specs(specs, plan, folder, callback=None):
        (name, spec), = specs.items()
        log.append((name, spec))
        cells = pd.DataFrame([{"cell": c.id, **{a: c.config.to_dict()[a] for a in ("e", "T", "width", "lr", "iters")},
                               "sweep_seed": c.seed, "status": "completed",
                               "gain_final": 0.1 if c.config.lr <= _known(c.config.e, c.seed) else -0.1}
                              for c in spec.cells()])
        curves = pd.DataFrame([{"cell": c, "iteration": k, "loss": 1.0 - 0.1 * k * g, "gain": k * g,
                                "P_saturated": 0.0} for c, g in zip(cells["cell"], cells["gain_final"]) for k in (0, 1)])
        return {name: SweepResult(spec, cells, curves, pd.DataFrame())}
    return run_specs


def test_the_rounds_are_sweeps_of_points_whose_boundaries_are_the_bisections_of_each_group(monkeypatch, tmp_path):
    log = []
    monkeypatch.setattr(S, "run_specs", _fake_run_specs(log))
    plan = StudyPlan("stability", "small", (0, 1, 2), {"e": (1.0, 5.0, 25.0), "T": (5,), "width": (64,)})
    sweeps = S.run(plan, tmp_path)
    lo, hi = S.bracket(S.study_plan_spec(plan))  # the small spec's
    assert list(sweeps) == [f"round-{r}" for r in range(1 + S.rounds_needed(lo, hi))] == [n for n, _ in log]
    first = log[0][1]
    assert first.probe_method == "dense" and all(s.probe_method == "none" for _, s in log[1:])
    assert len(first.points) == 2 * 9 and all(len(s.points) == 6 for _, s in log[1:])  # e = 1: outside, done
    assert all(not s.grid and all("seed" in p for p in s.points) for _, s in log)
    table = S.boundaries(S.measurements(sweeps), ["e", "T", "width"], lo, hi)
    for row in table.itertuples():
        b = S.bisect(step(_known(row.e, row.seed)), lo, hi)
        assert (row.where, row.runs) == (b.where, len(b.measured))
        np.testing.assert_equal([row.eta_train, row.eta_fail], [b.eta_train, b.eta_fail])
    assert set(table.loc[table.e == 1.0, "where"]) == {"above", "below"}
    assert (table.loc[table["where"] == "found", "outcome_at_fail"] == "unstable").all()  # the gain stops them
    kept = S.freeze_sensitivity(sweeps, table, ["e", "T", "width"])  # no gradient collapses: no threshold matters
    assert (kept["kept"] == kept["found"]).all() and (kept["found"] == 6).all() and (kept["cells_froze"] == 0).all()


def test_a_bracket_override_is_checked_before_any_round(monkeypatch, tmp_path):
    monkeypatch.setattr(S, "run_specs", _fake_run_specs([]))
    for lr in ((1e-3,), (1e-2, 1e-3), (1e-3, 1e-2, 1e-1)):
        with pytest.raises(ConfigError, match="bracket") as err:
            S.run(StudyPlan("stability", "small", (0,), {"lr": lr}), tmp_path)
        assert err.value.field == "grid"
    assert not any(tmp_path.iterdir())


# -- the predictors against independent computations ----------------------------------------------------------------


TINY = {"N": 4, "d": 8, "b": 6, "width": 64, "T": 5, "iters": 2}


@pytest.fixture(scope="module")
def round0():
    spec = make_spec("small", base=TINY, grid={"e": (5.0, 25.0), "lr": (1e-12, 1e4)}, seeds="0-1", probe_at=[0],
                     probe_method="dense", record_every=1)
    return sweep(spec, threads=1)


def test_the_predictors_obey_the_exact_e_scaling_and_the_bounds_config_path(round0):
    from ntkcheck.theory import thresholds

    p = S.predictors(round0.cells, ["e"]).set_index(["e", "seed"])
    assert len(p) == 4
    np.testing.assert_allclose(p["eta_eq14"], p["eta_stable"] / 2, rtol=1e-14)  # 1/λ_max and 2/λ_max
    for name in ("stable", "freeze", "eq14_apriori"):  # λ_max(K_0), max|φ'| and Λ̄₀² ∝ e^{2(L−1)} at W_L = 0
        col = p[f"eta_{name}"]
        np.testing.assert_allclose(col.xs(25.0) / col.xs(5.0), 5.0 ** -4, rtol=1e-9)
    for (e, seed), row in p.iterrows():
        cfg = round0.spec.base.replace(e=e, seed=seed, lr=1e-12)
        apriori = next(r for r in thresholds(cfg) if r["key"] == "eq14.eta_apriori")
        assert row["eta_eq14_apriori"] == pytest.approx(apriori["threshold"], rel=1e-12)
        L = cfg.L
        np.testing.assert_allclose([row["lemma5.1"], row["lemma5.3"], row["lemma5.4"]],
                                   [5 ** (1 / (L - 1)), 5 ** (4 / (L - 1)), 5 ** (5 / (L - 1)) * L ** (1 / (L - 1))],
                                   rtol=1e-12)
        assert row["lemma5.2"] == pytest.approx(5 ** ((3 * 5 + 6) / (5 * L - 5 - 4 * L + 6)), rel=1e-12)


def test_the_freeze_onset_is_where_the_first_steps_largest_phi_reaches_saturation(round0):
    """At η_f the first SGD step's max|φ'| is exactly ln((2 − tol)/tol): just below it no P' saturates, just above
    some do (ntkcheck.freeze run directly, on the cell's model and data)."""
    from ntkcheck import freeze
    from ntkcheck.build.experiment import build_model, make_problem

    p = S.predictors(round0.cells, ["e"])
    for row in p.itertuples():
        cfg = round0.spec.base.replace(e=row.e, seed=row.seed)
        model, problem = build_model(cfg), make_problem(cfg)
        at = freeze(model, problem, cfg.T, lr=row.eta_freeze, tol=cfg.saturation_tol)
        assert at.phi_max == pytest.approx(math.log((2 - cfg.saturation_tol) / cfg.saturation_tol), rel=1e-9)
        assert freeze(model, problem, cfg.T, lr=row.eta_freeze * (1 - 1e-6), tol=cfg.saturation_tol).saturated == 0
        assert freeze(model, problem, cfg.T, lr=row.eta_freeze * 1.01, tol=cfg.saturation_tol).saturated > 0


# -- the analysis on synthetic groups whose answer is known -----------------------------------------------------


def _synthetic_table() -> pd.DataFrame:
    """Groups (T, e, seed) with η_train = 2·e^{−4}·(1 + seed) exactly (η_fail 1.2× that), predictors at known
    multiples of it: 2/λ_max ×1/2 (ratio 2), Eq. 14 ×1/4 (ratio 4), a priori ×1e-4, freeze ×1.1 (ratio 1/1.1, the
    closest); e = 1 above the bracket for seed 0, below it for seed 1."""
    rows = []
    for T in (5, 20):
        for e in (1.0, 5.0, 25.0, 100.0):
            for seed in (0, 1, 2):
                eta = 2.0 * e ** -4 * (1 + seed)
                where = "found" if e > 1 or seed == 2 else "above" if seed == 0 else "below"
                rows.append({"T": T, "width": 64, "e": e, "seed": seed, "where": where,
                             "eta_train": eta if where == "found" else 1e4 if where == "above" else math.nan,
                             "eta_fail": 1.2 * eta if where == "found" else math.nan if where == "above" else 1e-12,
                             "runs": 10, "gain_at_train": 0.1 * seed})
    found = pd.DataFrame(rows)
    pred = found[["T", "width", "e", "seed"]].copy()
    base = 2.0 * pred["e"] ** -4 * (1 + pred["seed"])
    pred = pred.assign(eta_eq14=base / 4, eta_eq14_apriori=base * 1e-4, eta_stable=base / 2, eta_freeze=base * 1.1)
    return S.compare(found, pred, ["T", "width", "e"])


def test_ratios_and_the_closest_predictor_on_synthetic_groups():
    table = _synthetic_table()
    inside = table["where"] == "found"
    for name, ratio in (("eq14", 4.0), ("eq14_apriori", 1e4), ("stable", 2.0), ("freeze", 1 / 1.1)):
        np.testing.assert_allclose(table.loc[inside, f"ratio_{name}"], ratio, rtol=1e-12)
        assert table.loc[~inside, f"ratio_{name}"].isna().all()  # no measured boundary, no ratio
    assert (table.loc[inside, "closest"] == "freeze").all() and table.loc[~inside, "closest"].isna().all()
    totals = S.summary(table, ["T", "width"]).set_index(["T", "predictor"])
    assert totals.loc[(5, "freeze"), "closest_share"] == 1 and totals.loc[(5, "stable"), "closest_share"] == 0
    assert totals.loc[(5, "stable"), "points"] == 10  # 3 e × 3 seeds + the one found at e = 1
    assert totals.loc[(5, "stable"), "predicted_trains_share"] == 1  # ratio 2 ≥ 1
    assert totals.loc[(5, "freeze"), "predicted_trains_share"] == 0  # ratio 1/1.1 < 1
    assert totals.loc[(20, "eq14"), "ratio_median"] == pytest.approx(4.0)


def test_the_slope_against_e_and_the_smallest_useful_e_on_synthetic_groups():
    table = _synthetic_table()
    fitted = S.slopes(table, ["T", "width"])
    np.testing.assert_allclose(fitted["slope"], -4.0, rtol=1e-12)  # η_train ∝ e^{−4} exactly
    assert list(fitted["points"]) == [3, 3, 4] * 2  # seed 2 is found at e = 1 too
    useful = S.useful_e(table, ["T", "width"], L=3).set_index(["T", "seed"])
    assert list(useful.loc[5, "e_min"]) == [1.0, 5.0, 1.0]  # above the bracket trains at η_hi; below: no η does
    assert list(useful.loc[5, "censored"]) == [True, False, True]
    assert useful.loc[(20, 1), "C_5.3"] == pytest.approx(5.0 / 20 ** 2)  # e_min / T^{4/(L−1)}


def test_the_figure_draws_the_table_it_claims():
    table = _synthetic_table()
    drawn = S.by_e(table, ["T", "width"])
    fig = S.figure(table, drawn, ["T", "width"], 1e-12, 1e4, L=3)
    axes = fig.axes[:2]
    for ax, T in zip(axes, (5, 20)):
        part = drawn[drawn["T"] == T]
        seeds = table[table["T"] == T]
        art = {a.get_gid(): a for a in [*ax.lines, *ax.collections] if a.get_gid()}
        np.testing.assert_array_equal(art["measured"].get_xdata(), part["e"])
        np.testing.assert_array_equal(art["measured"].get_ydata(), part["eta_train_median"])
        for name in S.PREDICTORS:
            np.testing.assert_array_equal(art[f"eta_{name}"].get_ydata(), part[f"eta_{name}_median"])
        found = seeds[seeds["where"] == "found"]
        np.testing.assert_array_equal(art["seeds"].get_offsets(), found[["e", "eta_train"]].to_numpy())
        np.testing.assert_array_equal(art["above"].get_offsets(), [[1.0, 1e4]])
        np.testing.assert_array_equal(art["below"].get_offsets(), [[1.0, 1e-12]])
    # the median over seeds of η_train = 2e^{−4}(1 + seed), seeds 0–2: 4e^{−4}
    np.testing.assert_allclose(drawn.loc[drawn.e > 1, "eta_train_median"], 4 * drawn.loc[drawn.e > 1, "e"] ** -4.0)


# -- the study end to end -----------------------------------------------------------------------------------------


GRID = {"e": (5.0, 25.0), "T": (5,), "width": (64,), "iters": (20,), "lr": (1e-6, 1e2)}


def _plan(engine="embedded", **kw):
    return StudyPlan("stability", "small", (0,), GRID, engine, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ntkcheck.apps.study import study

    out = tmp_path_factory.mktemp("stability") / "study"
    return study("stability", out, seeds="0", grid=GRID, threads=1)


def test_the_tiny_study_answers_from_its_rounds(tiny):
    table = tiny.answer.tables["boundaries"]
    assert len(table) == 2 and set(tiny.sweeps) == {f"round-{r}" for r in range(1 + S.rounds_needed(1e-6, 1e2))}
    measured = S.measurements(tiny.sweeps)
    for row in table.itertuples():  # η_train's run trained, η_fail's did not, and the ratio is the resolution's
        runs = measured[(measured.e == row.e) & (measured.seed == row.seed)].set_index("eta")
        if row.where == "found":
            assert runs.loc[row.eta_train, "trains"] and not runs.loc[row.eta_fail, "trains"]
            assert row.eta_fail / row.eta_train < S.RESOLUTION
    assert (tiny.folder / "figures" / "stability.png").is_file()
    assert "largest η that trains" in tiny.answer.paragraph
    listed = (tiny.folder / "report.md").read_text().split("## Sweeps")[1]  # the rounds that ran, known only after
    assert all(f"`{name}`" in listed for name in tiny.sweeps)


def test_a_rerun_loads_every_finished_round_and_an_interrupted_study_reruns_only_its_missing_rounds(tiny, tmp_path,
                                                                                                   monkeypatch):
    import ntkcheck.apps.sweep.run as sweep_run

    folder = tmp_path / "copy"
    shutil.copytree(tiny.folder, folder)
    before = S.measurements(tiny.sweeps)
    monkeypatch.setattr(sweep_run, "run_batch", lambda *a, **k: pytest.fail("a finished round ran again"))
    again = S.run(_plan(), folder)
    pd.testing.assert_frame_equal(S.measurements(again), before)
    last = sorted(again, key=lambda n: int(n.split("-")[1]))[-3:]
    for name in last:
        shutil.rmtree(folder / "sweeps" / name)
    monkeypatch.undo()
    ran = []
    original = sweep_run.run_batch
    monkeypatch.setattr(sweep_run, "run_batch", lambda cells, *a, **k: (ran.extend(cells), original(cells, *a, **k)))
    resumed = S.run(_plan(), folder)
    assert len(ran) == sum(len(again[name].cells) for name in last)
    pd.testing.assert_frame_equal(S.measurements(resumed), before)  # the same rounds, bit for bit


@pytest.mark.slow
def test_the_ray_engine_gives_the_embedded_engines_cells(tiny, tmp_path):
    pytest.importorskip("ray")
    on_ray = S.run(_plan("ray", workers=1), tmp_path / "ray")
    assert list(on_ray) == list(tiny.sweeps)
    for name, result in tiny.sweeps.items():
        a = result.cells.set_index("cell")
        b = on_ray[name].cells.set_index("cell").loc[a.index]
        assert (a["status"] == b["status"]).all()
        numbers = [c for c in a.columns if a[c].dtype.kind == "f" and c != "seconds"]
        np.testing.assert_allclose(b[numbers].to_numpy(float), a[numbers].to_numpy(float), rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(S.measurements(on_ray).drop(columns="gain"),
                                  S.measurements(tiny.sweeps).drop(columns="gain"))


@pytest.mark.parametrize("lr", [(1e-3,), (1e-2, 1e-3), (0.0, 1.0)])
def test_study_refuses_a_bad_bracket_naming_grid_and_leaves_nothing(tmp_path, lr):
    from ntkcheck.apps.study import study

    with pytest.raises(ConfigError, match="bracket") as err:
        study("stability", tmp_path / "s", seeds="0", grid={"lr": lr})
    assert err.value.field == "grid"
    assert not any(tmp_path.iterdir())


def test_both_sizes_declare_a_bracket_and_groups():
    for size in ("small", "paper"):
        spec = S.study_plan_spec(StudyPlan("stability", size, (0, 1, 2, 3, 4)))
        lo, hi = S.bracket(spec)
        assert 0 < lo < hi and S.group_axes(spec) == ["e", "T", "width"] and len(S.groups(spec)) == 100
        assert spec.probe_at == (0,) and spec.probe_method != "none"  # round 0 measures the predictors
