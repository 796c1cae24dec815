"""Studies (ntkcheck.apps.study): the shared statistics against closed forms, the init / objectives / momentum
analyses on synthetic cells whose answer is known, each figure against the table it draws, the spec files, and the
framework end to end (plan checks, the folder, a rerun, a resume, Ray)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ntkcheck.apps import study as studies
from ntkcheck.apps.study import init as init_study
from ntkcheck.apps.study import objectives as backbone
from ntkcheck.apps.study.base import StudyPlan, plan_spec, study_spec
from ntkcheck.apps.study.stats import (
    binomial_interval,
    contraction,
    median_iqr,
    outcome_rates,
)
from ntkcheck.apps.sweep import load_spec, make_spec
from ntkcheck.cli import main
from ntkcheck.config import ConfigError

# -- statistics ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 20), (20, 20), (1, 5), (7, 20), (13, 30)])
def test_clopper_pearson_is_the_beta_quantile_interval(k, n):
    """lo = B⁻¹(α/2; k, n−k+1), hi = B⁻¹(1−α/2; k+1, n−k) (0 and 1 at the ends); at k = 0, hi = 1 − (α/2)^{1/n}."""
    lo, hi = binomial_interval(k, n, 0.95)
    assert lo == pytest.approx(0.0 if k == 0 else sps.beta.ppf(0.025, k, n - k + 1), abs=1e-9)
    assert hi == pytest.approx(1.0 if k == n else sps.beta.ppf(0.975, k + 1, n - k), abs=1e-9)
    if k == 0:
        assert hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)


def test_the_interval_of_one_collapse_in_five_is_wide():
    """The README's old "one seed in five": 1/5 has a 95 % interval of 0.5 %–72 % (issue 22)."""
    lo, hi = binomial_interval(1, 5)
    assert lo == pytest.approx(0.00505, abs=1e-5) and hi == pytest.approx(0.7164, abs=1e-4)
    assert all(math.isnan(x) for x in binomial_interval(0, 0))


def test_outcome_rates_count_each_outcome_per_group():
    cells = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 2,
                          "outcome": ["trained", "froze", "trained", "diverged", "unstable", "unstable"]})
    rates = outcome_rates(cells, ["g"]).set_index("g")
    assert rates.loc["a", "n"] == 4 and rates.loc["a", "trained"] == 0.5 and rates.loc["a", "froze_k"] == 1
    assert rates.loc["b", "unstable"] == 1.0 and rates.loc["b", "unstable_hi"] == 1.0
    assert rates.loc["a", "trained_lo"] == pytest.approx(binomial_interval(2, 4)[0])


def test_median_iqr_ignores_non_finite_values():
    assert median_iqr([1, 2, 3, 4, 5, np.nan, np.inf]) == (3.0, 2.0, 4.0)
    assert all(math.isnan(x) for x in median_iqr([np.nan]))


def test_the_contraction_of_an_exact_geometric_decay_is_its_ratio_with_r2_one():
    k = np.arange(0, 201, 5)
    fit = contraction(pd.DataFrame({"iteration": k, "loss": 3.0 * 0.97 ** k}))
    assert fit["rho"] == pytest.approx(0.97, rel=1e-12) and fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert fit["rho_lo"] <= 0.97 <= fit["rho_hi"]


def test_a_loss_that_stalls_is_not_fitted_as_a_clean_contraction():
    k = np.arange(0, 201, 5)
    plateau = contraction(pd.DataFrame({"iteration": k, "loss": 1.0 + np.exp(-0.2 * k)}))
    assert plateau["r2"] < 0.9
    assert math.isnan(contraction(pd.DataFrame({"iteration": [0, 1], "loss": [1.0, 0.5]}))["rho"])


# -- the init analysis --------------------------------------------------------------------------------------------


def synthetic_init(seeds: int = 4):
    """Two inits × two T × one η; cell c has ‖∇W_l‖ = (3c, 4c) at k = 0 (so ‖∇W‖ = 5c) and the outcomes below."""
    rows, curves = [], []
    plan = {("deterministic", 5): ["trained"] * seeds, ("deterministic", 50): ["trained"] * (seeds - 1) + ["froze"],
            ("gaussian", 5): ["trained"] * seeds, ("gaussian", 50): ["diverged"] * (seeds - 1) + ["unstable"]}
    c = 0
    for (init, T), outs in plan.items():
        for seed, outcome in enumerate(outs):
            c += 1
            cid = f"c{c}"
            gain = {"trained": 0.5, "froze": -2.0, "unstable": -3.0, "diverged": np.nan}[outcome]
            rows.append({"cell": cid, "init": init, "T": T, "lr": 1e-3, "sweep_seed": seed,
                         "status": "diverged" if outcome == "diverged" else "completed", "outcome": outcome,
                         "min_gain": min(gain, 0.0), "share_below_gd": float(outcome != "trained"),
                         "froze_at_1": outcome == "froze", "moving_at_K": False, "gain_final": gain + 0.01 * seed,
                         "alpha_0": 0.1 * c, "alpha_rank_0": 8.0, "dead_share_0": 0.25 if init == "deterministic"
                         else np.nan})
            start = 0.0 if init == "deterministic" else -0.1 * (outcome != "trained")  # random W_L: not GD at W_0
            curves.append({"cell": cid, "iteration": 0, "gain": start, "grad_norm/W1": 3.0 * c,
                           "grad_norm/W2": 4.0 * c})
            curves.append({"cell": cid, "iteration": 5, "gain": gain, "grad_norm/W1": 1.0, "grad_norm/W2": 1.0})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_grad_norm_at_k0_is_the_norm_over_the_layers():
    cells, curves = synthetic_init()
    norms = init_study.grad_norm_0(curves)
    np.testing.assert_allclose(norms.loc[cells.cell], 5.0 * np.arange(1, len(cells) + 1))


def test_the_init_table_has_the_known_rates_and_medians():
    cells, curves = synthetic_init(seeds=4)
    per_cell = init_study.init_cells(cells, curves)
    table = init_study.init_table(per_cell).set_index(["init", "T"])
    assert table.loc[("deterministic", 5), "trained"] == 1.0 and table.loc[("deterministic", 50), "froze_k"] == 1
    assert table.loc[("gaussian", 50), "diverged"] == 0.75 and table.loc[("gaussian", 50), "unstable_k"] == 1
    lo, hi = binomial_interval(3, 4)
    assert table.loc[("gaussian", 50), ["diverged_lo", "diverged_hi"]].tolist() == pytest.approx([lo, hi])
    # cells 1–4 are (deterministic, 5): ‖∇W‖ = 5, 10, 15, 20 → median 12.5, IQR 8.75–16.25
    assert table.loc[("deterministic", 5), ["grad_norm_0", "grad_norm_0_q25", "grad_norm_0_q75"]].tolist() == \
        pytest.approx([12.5, 8.75, 16.25])
    assert table.loc[("deterministic", 5), "gain_final"] == pytest.approx(0.515)
    assert table.loc[("gaussian", 50), "start_below_gd"] == 1.0 and table.loc[("gaussian", 5), "start_below_gd"] == 0
    assert table.loc[("deterministic", 5), "dead_share_0"] == 0.25 and np.isnan(table.loc[("gaussian", 5),
                                                                                         "dead_share_0"])


def test_recorded_cells_without_outcome_columns_get_them_from_their_curves():
    cells, curves = synthetic_init()
    curves = curves.assign(loss=1.0, gain=0.2, P_saturated=0.0)  # every completed cell ends above GD
    bare = cells.drop(columns=["outcome", "min_gain", "share_below_gd", "froze_at_1", "moving_at_K"])
    per_cell = init_study.init_cells(bare, curves)
    assert (per_cell.loc[per_cell.status == "completed", "outcome"] == "trained").all()


def test_the_init_figure_draws_the_table(tmp_path):
    cells, curves = synthetic_init()
    table = init_study.init_table(init_study.init_cells(cells, curves))
    fig = init_study._figure(table)
    top, bottom = fig.axes[0], fig.axes[1]  # one η: the two panels of its column
    for line in top.get_lines():
        rows = table[table.init == line.get_label()].sort_values("T")
        np.testing.assert_array_equal(line.get_xdata(), rows["T"])
        np.testing.assert_array_equal(line.get_ydata(), rows["trained"])
    for line in bottom.get_lines():
        rows = table[table.init == line.get_label()].sort_values("T")
        np.testing.assert_array_equal(line.get_ydata(), rows["grad_norm_0"])
    assert {line.get_label() for line in top.get_lines()} == set(table.init)
    path = init_study.draw(table, tmp_path / "figures" / "init.png")
    assert path.is_file() and path.stat().st_size > 0


def test_the_init_paragraph_quotes_the_counts():
    cells, curves = synthetic_init()
    per_cell = init_study.init_cells(cells, curves)
    text = init_study.paragraph(init_study.init_table(per_cell), per_cell)
    assert "**gaussian** trained 4/8" in text and "diverged 3" in text and "at T = 50 0/4" in text
    assert "of the 4 that did not, 4 started below GD at W_0" in text


# -- the objectives / momentum analysis ---------------------------------------------------------------------------


def synthetic_backbone(seeds: int = 5):
    """qp/gd contracts exactly by ρ = 0.98, lasso/prox by 0.95 above F* = 0.5 (both geometric: linear), logistic/prox stalls on a
    plateau (not linear); drift at K and linearised gaps known per setting."""
    rho = {("qp", "gd"): 0.98, ("lasso", "prox"): 0.95, ("logistic", "prox"): None}
    drift = {("qp", "gd"): 0.01, ("lasso", "prox"): 0.04, ("logistic", "prox"): 0.1}
    k = np.arange(0, 101, 5)
    cells, curves, probes, stars = [], [], [], {}
    for (problem, update), r in rho.items():
        for seed in range(seeds):
            cid = f"{problem}-{update}-{seed}"
            F_star = 0.0 if problem == "qp" else 0.5  # the gap F_T − F* is what contracts
            loss = F_star + (2.0 * r ** k if r else 1.0 + np.exp(-0.3 * k))
            cells.append({"cell": cid, "problem": problem, "update": update, "lr": 1e-3, "sweep_seed": seed,
                          "status": "completed", "outcome": "trained", "min_gain": 0.0, "share_below_gd": 0.0,
                          "froze_at_1": False, "moving_at_K": False, "gain_final": 0.3, "iterations": 100,
                          "linearised_gap_final": drift[(problem, update)] / 10 * (seed + 1),
                          "linearised_gap_max": drift[(problem, update)]})
            curves += [{"cell": cid, "iteration": int(i), "F_T": float(v)} for i, v in zip(k, loss)]
            stars[cid] = F_star
            probes += [{"cell": cid, "iteration": 0, "drift_rel": 0.0},
                       {"cell": cid, "iteration": 100, "drift_rel": drift[(problem, update)] * (1 + 0.1 * seed)}]
    return pd.DataFrame(cells), pd.DataFrame(curves), pd.DataFrame(probes), pd.Series(stars)


def test_backbone_cells_fit_the_known_contractions_and_read_the_drift_at_k():
    per_cell = backbone.backbone_cells(*synthetic_backbone()).set_index("cell")
    assert per_cell.loc["qp-gd-0", "rho"] == pytest.approx(0.98, rel=1e-12)
    assert per_cell.loc["lasso-prox-3", "rho"] == pytest.approx(0.95, rel=1e-12)
    assert per_cell.loc["qp-gd-2", "linear"] and not per_cell.loc["logistic-prox-0", "linear"]
    assert per_cell.loc["lasso-prox-2", "drift_rel_K"] == pytest.approx(0.04 * 1.2)
    assert per_cell.loc["qp-gd-0", "setting"] == "qp/gd"


def test_without_f_star_a_floor_is_not_a_contraction():
    """The same LASSO curves fitted as if F* were 0 (their floor 0.5 left in): not linear."""
    cells, curves, probes, stars = synthetic_backbone()
    per_cell = backbone.backbone_cells(cells, curves, probes, stars * 0).set_index("cell")
    assert not per_cell.loc["lasso-prox-0", "linear"] and per_cell.loc["qp-gd-0", "linear"]


def test_f_star_of_a_cells_row_is_its_configurations():
    from ntkcheck.build.experiment import make_problem
    from ntkcheck.config import TrainConfig
    from ntkcheck.problems.solvers import optimum_value

    lasso = TrainConfig(N=2, d=6, b=4, width=8, T=3, problem="lasso", update="prox", seed=3)
    qp = TrainConfig(N=2, d=6, b=4, width=8, T=3)
    cells = pd.DataFrame([{"cell": "a", **lasso.to_dict()}, {"cell": "b", **qp.to_dict()}])  # lam: NaN on the qp row
    F = backbone.optimum_values(cells)
    assert F["a"] == optimum_value(make_problem(lasso)) > 0 and F["b"] == 0.0


def test_backbone_table_shares_and_medians():
    table = backbone.backbone_table(backbone.backbone_cells(*synthetic_backbone(seeds=5))).set_index("setting")
    assert table.loc["qp/gd", "linear"] == 1.0 and table.loc["logistic/prox", "linear"] == 0.0
    assert table.loc["qp/gd", "linear_lo"] == pytest.approx(binomial_interval(5, 5)[0])
    assert table.loc["lasso/prox", "drift_rel_K"] == pytest.approx(0.04 * 1.2)  # median of 1.0 … 1.4 × 0.04
    assert table.loc["qp/gd", "linearised_gap_final"] == pytest.approx(0.001 * 3)


def test_a_sweep_without_the_taylor_model_leaves_the_linearised_columns_nan():
    cells, curves, probes, stars = synthetic_backbone(seeds=2)
    per_cell = backbone.backbone_cells(cells.drop(columns=list(backbone.LINEARISED)), curves, probes, stars)
    assert per_cell["linearised_gap_final"].isna().all()
    assert "not measured" in backbone.paragraph(backbone.backbone_table(per_cell), "qp/gd")


def test_the_backbone_figure_draws_the_table(tmp_path):
    table = backbone.backbone_table(backbone.backbone_cells(*synthetic_backbone()))
    fig = backbone._figure(table, "t")
    for ax, (name, _) in zip(fig.axes, backbone.PANELS):
        (line,) = ax.get_lines()
        np.testing.assert_allclose(line.get_ydata(), table[name])
        segments = ax.collections[0].get_segments()
        np.testing.assert_allclose([s[:, 1] for s in segments], table[[f"{name}_q25", f"{name}_q75"]].to_numpy())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(table.setting)
    assert backbone.draw(table, tmp_path / "m.png", "t").is_file()


def test_the_paragraph_compares_the_drift_to_the_reference():
    table = backbone.backbone_table(backbone.backbone_cells(*synthetic_backbone()))
    text = backbone.paragraph(table, "qp/gd")
    assert "4× to 10×" in text and "**logistic/prox** at η = 0.001: 0% of 5 seeds converge linearly" in text


# -- the spec files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["init", "objectives", "momentum"])
@pytest.mark.parametrize("size", ["small", "paper"])
def test_every_cell_of_the_spec_files_is_a_valid_configuration(name, size):
    spec = load_spec(study_spec(name, size))
    assert all(c.config is not None for c in spec.cells()), [c.error for c in spec.cells() if c.config is None][:1]
    assert len(spec.seeds) >= (20 if name == "init" or size == "paper" else 10)  # rates need ≥ 20 seeds


def test_the_init_spec_covers_the_issues_grid():
    spec = load_spec(study_spec("init", "small"))
    grid = dict(spec.grid)
    assert set(grid["init"]) == {"deterministic", "deterministic-abs", "gaussian", "xavier", "he"}
    assert grid["T"] == (5, 10, 20, 50, 100) and len(grid["lr"]) >= 2


@pytest.mark.parametrize(("name", "pairs"), [
    ("objectives", {("qp", "gd"), ("lasso", "prox"), ("lasso", "gd"), ("logistic", "prox"), ("logistic", "gd")}),
    ("momentum", {("qp", "gd"), ("qp", "nag"), ("lasso", "prox"), ("lasso", "fista"), ("logistic", "prox"),
                  ("logistic", "fista")})])
def test_the_backbone_specs_pair_the_settings_at_matched_sizes(name, pairs):
    spec = load_spec(study_spec(name, "small"))
    assert {(p["problem"], p["update"]) for p in spec.points} == pairs
    assert spec.linearised and "K" in spec.probe_at and spec.probe_method == "dense"
    sizes = {(c.config.N, c.config.d, c.config.b, c.config.width, c.config.T, c.config.iters) for c in spec.cells()}
    assert len(sizes) == 1


def test_the_spec_files_are_package_data():
    import configparser
    from pathlib import Path

    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "specs/*.toml" in setup["options.package_data"]["ntkcheck.apps.study"]


# -- the framework ------------------------------------------------------------------------------------------------


def test_plan_spec_overrides_an_axis_and_adds_one():
    spec = make_spec("small", grid={"e": [1.0, 5.0]}, seeds="0-1")
    out = plan_spec(spec, StudyPlan("x", "small", (3, 4), {"e": (7.0,), "T": (5,)}))
    assert out.grid == (("e", (7.0,)), ("T", (5,))) and out.seeds == (3, 4)


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"name": "bogus"}, "study", "init, stability, width, objectives, momentum"),
    ({"name": "init", "grid": ["L=3,4"]}, "grid", "its axes are init, T, lr"),
    ({"name": "init", "grid": {"L": (3,)}}, "grid", "not an axis of the init study"),
    ({"name": "init", "size": "big"}, "size", "small, paper"),
    ({"name": "init", "seeds": "3-1"}, "seeds", "empty"),
    ({"name": "init", "engine": "spark"}, "engine", "embedded, ray"),
    ({"name": "init", "workers": 2}, "workers", "needs engine ray"),
    ({"name": "init", "address": "x:1"}, "address", "needs engine ray"),
])
def test_make_plan_refuses(kwargs, field, words):
    with pytest.raises(ConfigError) as err:
        studies.make_plan(**kwargs)
    assert err.value.field == field and words in err.value.message


def test_the_default_seeds_are_the_spec_files():
    assert studies.make_plan("init").seeds == tuple(range(20))


TINY = {"seeds": "0-1", "grid": ["T=3", "lr=1e-3"]}


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """The init study at T = 3, one η, two seeds: 10 cells."""
    out = tmp_path_factory.mktemp("studies") / "init"
    return studies.study("init", out, threads=1, **TINY)


def test_a_study_writes_its_folder(tiny_init):
    folder = tiny_init.folder
    assert not folder.with_name(folder.name + ".partial").exists()
    for name in ("study.toml", "answer.json", "report.md", "init.parquet", "init_cells.parquet", "figures/init.png",
                 "sweeps/init/cells.parquet"):
        assert (folder / name).is_file(), name
    report = (folder / "report.md").read_text()
    assert init_study.QUESTION in report and "ntkcheck study init --size small --seeds 0,1 --grid T=3" in report
    assert tiny_init.answer.paragraph in report
    assert len(tiny_init.sweeps["init"].cells) == 10 and set(tiny_init.sweeps["init"].cells["T"]) == {3}


def test_the_tables_are_the_analysis_of_the_sweep(tiny_init):
    sweep = tiny_init.sweeps["init"]
    again = init_study.init_table(init_study.init_cells(sweep.cells, sweep.curves))
    pd.testing.assert_frame_equal(tiny_init.answer.tables["init"], again)


def test_a_finished_study_is_read_back_and_another_plan_refused(tiny_init):
    again = studies.study("init", tiny_init.folder, **TINY)
    pd.testing.assert_frame_equal(again.answer.tables["init"], tiny_init.answer.tables["init"])
    for kwargs, field in ((dict(TINY, seeds="0-2"), "seeds"), (dict(TINY, grid=["T=4", "lr=1e-3"]), "grid"),
                          (dict(TINY, size="paper"), "size")):
        with pytest.raises(ConfigError) as err:
            studies.study("init", tiny_init.folder, **kwargs)
        assert err.value.field == field and "give a new --out" in err.value.message


def test_an_interrupted_study_resumes_from_its_finished_cells(tiny_init, tmp_path):
    """A study killed after its sweep but before its answer: the partial folder holds the finished sweep; the same
    call (or resume=True) only analyses it, and the answer is the uninterrupted one."""
    out = tmp_path / "init"
    partial = out.with_name("init.partial")
    shutil.copytree(tiny_init.folder, partial)
    for name in ("answer.json", "report.md", "init.parquet", "init_cells.parquet"):
        (partial / name).unlink()
    resumed = studies.study("init", out, resume=True, **TINY)
    pd.testing.assert_frame_equal(resumed.answer.tables["init"], tiny_init.answer.tables["init"])
    assert not partial.exists()


def test_resume_with_only_the_folder_takes_the_stored_plan(tiny_init, tmp_path, capsys):
    """`ntkcheck study --resume --out DIR`, as the refusals of other commands advise: name, size, seeds and grid are the
    interrupted study's own (the defaults would be another plan, refused)."""
    out = tmp_path / "init"
    partial = out.with_name("init.partial")
    shutil.copytree(tiny_init.folder, partial)
    (partial / "answer.json").unlink()
    assert main(["study", "--resume", "--out", str(out), "--threads", "1"]) == 0
    again = studies.load_study(out)
    assert again.plan == tiny_init.plan
    pd.testing.assert_frame_equal(again.answer.tables["init"], tiny_init.answer.tables["init"])


def test_a_refused_override_leaves_nothing_behind(tmp_path):
    with pytest.raises(ConfigError):
        studies.study("init", tmp_path / "x", seeds="0-1", grid=["T=0"])
    assert not any(tmp_path.iterdir())


def test_load_study_refuses_a_folder_that_is_not_one(tmp_path):
    with pytest.raises(ConfigError, match="not a finished study folder"):
        studies.load_study(tmp_path)


@pytest.mark.slow
def test_ray_gives_the_embedded_engines_cells(tiny_init, tmp_path):
    pytest.importorskip("ray")
    on_ray = studies.study("init", tmp_path / "ray", engine="ray", workers=2, **TINY)
    a = tiny_init.sweeps["init"].cells.set_index("cell")
    b = on_ray.sweeps["init"].cells.set_index("cell").loc[a.index]
    numbers = [c for c in a.columns if a[c].dtype.kind == "f" and c != "seconds"]
    assert (a.status == b.status).all() and (a.outcome == b.outcome).all()
    np.testing.assert_allclose(b[numbers].to_numpy(float), a[numbers].to_numpy(float), rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(on_ray.answer.tables["init"], tiny_init.answer.tables["init"])


def test_a_study_shows_each_sweep_with_its_own_progress():
    """Two sweeps in turn: the second start opens a fresh display (its cells and work counted from 0), so a study's
    progress never exceeds 100 %."""
    import io

    from rich.console import Console

    from ntkcheck.report.progress import SweepsProgress

    with SweepsProgress("study x", Console(file=io.StringIO(), force_terminal=False)) as progress:
        progress("start", cells=4, cell_iterations=40, done=0)
        progress("advance", cell_iterations=40)
        first = progress.display
        progress("start", cells=2, cell_iterations=10, done=0)
        progress("advance", cell_iterations=5)
        assert progress.display is not first and progress.display.cells == [0, 2]
        assert progress.display.completed == 5 and progress.display.total == 10
