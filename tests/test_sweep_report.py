"""The sweep report: its statistics against numpy, its theory lines against bounds/, and the files it writes for
sweeps of 0, 1, 2 and 3 axes (hand-built frames), and for tiny real sweeps."""

import math

import numpy as np
import pandas as pd
import pytest

import bounds
from ntkcheck.apps.sweep import SweepResult, make_spec, sweep
from ntkcheck.report import sweep as report
from ntkcheck.report import sweep_figures as figures
from ntkcheck.config import ConfigError
from ntkcheck.theory import sweep_bounds

BASE = dict(N=2, d=4, b=3, width=8, T=3, iters=4)
EPS = np.finfo(np.float64).eps


# -- hand-built sweeps ------------------------------------------------------------------------------------------


def hand_built(grid: dict, seeds="0-2", failed_error=None) -> SweepResult:
    """A finished sweep without training: every cell's row as cells.parquet holds it, with a k = 0 probe that
    scales as the deterministic init does (λ_max ∝ e⁴), a cell diverged where η > 2/λ_max(K_0) (but seed 0), and, with
    ``failed_error``, the cells of the last seed on the grid's first point failed with that error (+ the cell id)."""
    spec = make_spec("small", base=BASE, grid=grid, seeds=seeds, probe_at=(0, "K"))
    first = spec.cells()[0].values
    rows, probes = [], []
    for c in spec.cells():
        cfg = c.config
        lam = (1 + 0.3 * c.seed) * cfg.e ** 4
        diverged = cfg.lr > 2 / lam and c.seed > 0
        failed = failed_error is not None and c.values == first and c.seed == spec.seeds[-1]
        gain = math.nan if diverged or failed else 0.6 - 0.5 * c.seed - 0.01 * cfg.width
        alpha_tol = 1e-14 * cfg.e ** 2
        rows.append({"cell": c.id, **cfg.to_dict(), "sweep_seed": c.seed,
                     "status": "failed" if failed else "diverged" if diverged else "completed",
                     "error": f"{failed_error} ({c.id})" if failed else None,
                     "iterations": 2 if diverged else cfg.iters, "diverged_at": 2 if diverged else None,
                     "seconds": 0.1, "F_T_initial": 1.0, "F_T_final": 1 - gain,
                     "gain_final": gain, "lambda_max_0": lam, "lambda_min_0": 0.0, "stable_lr_0": 2 / lam,
                     "rank_K_0": 3 + c.seed, "rank_K_tol_0": 6 * EPS * lam, "alpha_0": 0.0 if c.seed else 5 * alpha_tol,
                     "alpha_rank_0": 2, "alpha_tol_0": alpha_tol, "plateau_0": 0.1})
        probes += [{"cell": c.id, "iteration": k, "method": "dense", "error": None, "lambda_max": lam,
                    "stable_lr": 2 / lam, "drift_rel": math.nan if k == 0 else 0.1 * (c.seed + 1) * cfg.width / 8}
                   for k in (0, cfg.iters)]
    return SweepResult(spec, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(probes))


def test_summary_table_is_numpy_with_no_gain_below_every_gain():
    """Median, IQR and min are numpy's linear percentiles over the outcomes, where a seed without a gain (diverged,
    failed, a non-finite loss) stands below every finite gain; the share worse than GD counts them too."""
    patterns = [["completed"] * 5, ["completed"] * 4 + ["diverged"], ["completed", "diverged", "completed", "failed",
                "diverged"], ["failed"] * 5, ["completed", "completed", "diverged", "completed", "completed"],
                ["diverged"] * 4 + ["completed"]]
    rng = np.random.default_rng(7)
    rows = []
    for i, pattern in enumerate(patterns):
        for seed, status in enumerate(pattern):
            gain = rng.normal(0.2, 0.5) if status == "completed" else math.nan
            rows.append({"e": (1.0, 10.0)[i // 3], "lr": (1e-3, 1e-1, 10.0)[i % 3], "sweep_seed": seed,
                         "status": status, "gain_final": gain})
    rows[-1]["gain_final"] = math.nan  # completed with a non-finite loss: no gain either
    rows[-3]["gain_final"] = 0.4  # diverged after a finite gain: worse than GD all the same
    cells = pd.DataFrame(rows)
    table = report.summary_table(cells, ["e", "lr"])
    assert len(table) == len(patterns)
    big = 1e300  # stands for −∞ in numpy's percentile (−∞ itself gives nan there)
    for r in table.to_dict("records"):
        part = cells[(cells["e"] == r["e"]) & (cells["lr"] == r["lr"])]
        ok = (part["status"] == "completed") & np.isfinite(part["gain_final"])
        out = np.where(ok, part["gain_final"], -big)
        for key, q in (("median", 50), ("q25", 25), ("q75", 75)):
            want = np.percentile(out, q)
            assert (r[key] == -math.inf) if want < -1e200 else r[key] == pytest.approx(want, rel=1e-12, abs=1e-15), key
        assert r["min"] == (-math.inf if (~ok).any() else out.min())
        assert r["worse"] == int(((out < 0)).sum()) and r["share_worse"] == pytest.approx(np.mean(out < 0))
        assert (r["seeds"], r["completed"], r["diverged"], r["failed"]) == (
            len(part), *(int((part["status"] == s).sum()) for s in ("completed", "diverged", "failed")))
    finite = cells[cells["e"].eq(1.0) & cells["lr"].eq(1e-3)]["gain_final"]
    assert table.loc[0, "median"] == np.median(finite) and table.loc[0, "min"] == finite.min()


def test_summary_table_without_axes_is_one_row_of_every_seed():
    result = hand_built({}, seeds="0-4")
    table = report.summary_table(result.cells, [])
    assert len(table) == 1 and table.loc[0, "seeds"] == 5
    assert table.loc[0, "median"] == pytest.approx(np.median(result.cells["gain_final"]))


def test_probe_table_counts_alpha_zero_within_its_tolerance_and_stable_eta():
    cells = hand_built({"e": (1.0, 10.0), "lr": (1e-4, 1.0)}).cells
    table = report.probe_table(cells, ["e", "lr"])
    for r in table.to_dict("records"):
        part = cells[(cells["e"] == r["e"]) & (cells["lr"] == r["lr"])]
        assert r["alpha_zero"] == int((part["alpha_0"] <= part["alpha_tol_0"]).sum()) == 2
        assert r["stable"] == int((part["lr"] < part["stable_lr_0"]).sum())
        assert r["lambda_max"] == pytest.approx(part["lambda_max_0"].median())


def test_the_heatmap_shows_every_diverged_and_failed_cell():
    result = hand_built({"e": (1.0, 10.0), "lr": (1e-4, 1.0)}, failed_error="out of memory")
    table = report.summary_table(result.cells, ["e", "lr"])
    texts = [t.get_text() for t in figures.gain_heatmap(result.cells, "e", "lr").axes[0].texts]
    for r in table.to_dict("records"):
        if r["diverged"]:
            assert any(f"div {r['diverged']}/{r['seeds']}" in t for t in texts)
        if r["failed"]:
            assert any(f"fail {r['failed']}/{r['seeds']}" in t for t in texts)
    assert table["diverged"].sum() > 0 and table["failed"].sum() == 1


GRIDS = {
    "seeds only": ({}, ["gain"]),
    "one axis": ({"lr": (1e-4, 1e-2, 1.0)}, ["gain"]),
    "e x lr": ({"e": (1.0, 10.0, 100.0), "lr": (1e-6, 1e-3, 1.0)}, ["gain", "stability"]),
    "width": ({"width": (8, 32, 128)}, ["gain", "width"]),
    "three axes": ({"e": (1.0, 10.0), "lr": (1e-4, 1.0), "T": (3, 4)},
                   ["gain-T=3", "gain-T=4", "stability-T=3", "stability-T=4"]),
}


@pytest.mark.parametrize("name", GRIDS)
def test_write_gives_report_and_figures(tmp_path, name):
    grid, expected = GRIDS[name]
    result = hand_built(grid, failed_error="out of memory: the cell needs 12 GB")
    figures.write(result, sweep_bounds(result.cells), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(f"{f}.png" for f in expected)
    assert all((tmp_path / "figures" / f"{f}.png").stat().st_size > 10_000 for f in expected)
    assert "could not be drawn" not in text
    assert all(f"](figures/{f}.png)" in text for f in expected)
    failed = result.cells[result.cells["status"] == "failed"]
    assert len(failed) >= 1 and all(e in text for e in failed["error"])
    for axis in result.spec.axes:
        assert report.heading(axis) in text


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_figures_in_other_formats(tmp_path, fmt):
    result = hand_built({"width": (8, 16)})
    figures.write_figures(result, sweep_bounds(result.cells), tmp_path, fmt)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [f"gain.{fmt}", f"width.{fmt}"]


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="png, pdf, svg"):
        figures.write_figures(hand_built({}), sweep_bounds(hand_built({}).cells), tmp_path, "jpg")


def test_stability_caption_says_what_is_missing_without_probes():
    cells = hand_built({"e": (1.0, 10.0), "lr": (1e-4, 1.0)}).cells.assign(lambda_max_0=None, stable_lr_0=None)
    caption = figures.stability_caption(cells, sweep_bounds(cells))
    assert "no cell was probed at k = 0" in caption and "Not evaluable here: Eq. 14: η ≤ 1/λ_max(K_0)" in caption
    assert "at C = 1 (its constant C is unknown)" in caption


# -- tiny real sweeps -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e_lr_sweep(tmp_path_factory):
    spec = make_spec("small", base=BASE, grid={"e": (1.0, 5.0), "lr": (1e-3, 1e-1)}, seeds="0-1", probe_at=(0, "K"))
    return sweep(spec, tmp_path_factory.mktemp("sweeps") / "e-lr")


def test_a_finished_sweep_folder_has_its_report(e_lr_sweep):
    folder = e_lr_sweep.folder
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["gain.png", "stability.png"]
    assert not list(folder.glob("**/.*.tmp"))
    text = (folder / "report.md").read_text()
    assert "| completed | 8 |" in text and "![stability](figures/stability.png)" in text
    stored = pd.read_parquet(folder / "theory.parquet")  # the figures' theory, redrawn without recomputing
    pd.testing.assert_frame_equal(stored, sweep_bounds(e_lr_sweep.cells))
    assert set(stored["cell"]) == set(e_lr_sweep.cells["cell"])


def test_theory_lines_are_the_bounds_of_the_measured_kernel(e_lr_sweep):
    """Eq. 14 is 1/λ_max(K_0) of each cell, its a-priori form lies below it (Λ̄₀² ≥ λ_max(K_0)), and the Lemma
    thresholds are bounds.lemma_threshold at C = 1."""
    cells = e_lr_sweep.cells
    theory = sweep_bounds(cells).set_index(["cell", "key"])["threshold"]
    for c in cells.to_dict("records"):
        assert theory[c["cell"], "eq14.eta"] == pytest.approx(1 / c["lambda_max_0"], rel=1e-12)
        assert theory[c["cell"], "eq14.eta_apriori"] <= theory[c["cell"], "eq14.eta"]
        for lemma in ("5.1", "5.3", "5.4"):
            assert theory[c["cell"], f"lemma{lemma.replace('.', '_')}.e"] == pytest.approx(
                bounds.lemma_threshold(lemma, c["T"], c["L"]))


def test_a_real_sweep_with_failed_cells_names_their_errors(tmp_path):
    spec = make_spec("small", base=BASE, grid={"b": (3, 9)}, seeds="0-1", probe_at=(0,))
    result = sweep(spec)
    figures.write(result, sweep_bounds(result.cells), tmp_path)
    text = (tmp_path / "report.md").read_text()
    failed = result.cells[result.cells["status"] == "failed"]
    assert len(failed) == 2 and all(f"| {r['cell']} | 9 | {r['sweep_seed']} | {r['error']} |" in text
                                    for r in failed.to_dict("records"))
    assert (tmp_path / "figures" / "gain.png").is_file()


# -- each figure draws the cells it claims ------------------------------------------------------------------------


def test_the_heatmap_cell_texts_are_the_medians_of_their_cells():
    """Each annotated cell of the heatmap, found by its place on the axes, starts with the median outcome of the seeds
    at that (e, η), computed here with numpy (a seed without a gain is −∞)."""
    result = hand_built({"e": (1.0, 10.0), "lr": (1e-4, 1e-2, 1.0)}, seeds="0-3", failed_error="out of memory")
    cells = result.cells
    ax = figures.gain_heatmap(cells, "e", "lr").axes[0]
    xs = [float(t.get_text()) for t in ax.get_xticklabels()]
    ys = [float(t.get_text()) for t in ax.get_yticklabels()]
    assert xs == [1.0, 10.0] and ys == [1.0, 0.01, 0.0001]  # the largest η on top
    texts = {(xs[int(t.get_position()[0])], ys[int(t.get_position()[1])]): t.get_text() for t in ax.texts}
    assert len(texts) == 6
    ok = (cells["status"] == "completed") & np.isfinite(cells["gain_final"])
    out = cells.assign(out=np.where(ok, cells["gain_final"], -np.inf))
    for (e, lr), part in out.groupby(["e", "lr"]):
        median = float(np.median(part["out"]))
        first = texts[e, lr].splitlines()[0]
        assert (first == "−∞") if median == -np.inf else float(first.replace("−", "-")) == pytest.approx(median,
                                                                                                          rel=5e-3)
    assert any(t.splitlines()[0] == "−∞" for t in texts.values())  # diverged seeds reach the median somewhere


def independent_bounds(cells: pd.DataFrame) -> pd.DataFrame:
    """bounds.thresholds of every cell that did not fail, with the data of its instances drawn here from the QP family
    (problems.qp.generate with the cell's seed) and its measured λ_max(K_0)."""
    from ntkcheck.problems import qp

    rows = []
    for c in cells[cells["status"] != "failed"].to_dict("records"):
        p = qp.generate(c["N"], c["d"], c["b"], c["seed"])
        data = bounds.gd_quantities(p.M.numpy(), p.Y.numpy(), c["T"], c["step_scale"])
        data["lambda_max"] = c["lambda_max_0"]
        rows += [{"cell": c["cell"], "e": c["e"], "lr": c["lr"], "key": r["key"], "threshold": r["threshold"]}
                 for r in bounds.thresholds(c["T"], c["L"], c["e"], c["lr"], N=c["N"], d=c["d"], b=c["b"],
                                            n=c["width"], step_scale=c["step_scale"], data=data)]
    return pd.DataFrame(rows)


def test_the_stability_lines_are_the_bounds_of_the_cells():
    """The measured line is the median over seeds of 2/λ_max(K_0) at each e; the Eq. 14 lines the medians of the
    thresholds bounds.thresholds gives each cell; Cor. C.1's points the median e_max at each η; the Lemma lines
    bounds.lemma_threshold at C = 1; and sweep_bounds has the same thresholds cell by cell."""
    result = hand_built({"e": (1.0, 3.0, 10.0), "lr": (1e-6, 1e-3, 1.0)}, failed_error="out of memory")
    cells = result.cells
    theory = sweep_bounds(cells)
    want = independent_bounds(cells)
    got = theory.set_index(["cell", "key"])["threshold"]
    assert len(got) == len(want) and cells["status"].eq("failed").sum() == 1
    for r in want.to_dict("records"):
        assert got[r["cell"], r["key"]] == pytest.approx(r["threshold"], rel=1e-12, nan_ok=True)
    ax = figures.stability_map(cells, theory).axes[0]
    lines = {x.get_label(): x for x in ax.lines}

    def drawn(key):
        return next(x for label, x in lines.items() if label.startswith(figures.e_eta.LINES[key][0])).get_data()

    stable = cells.groupby("e")["stable_lr_0"].median()
    np.testing.assert_allclose(drawn("stable"), [stable.index, stable.to_numpy()], rtol=1e-12)
    for key in ("eq14.eta", "eq14.eta_apriori"):
        median = want[want["key"] == key].groupby("e")["threshold"].median()
        np.testing.assert_allclose(drawn(key), [median.index, median.to_numpy()], rtol=1e-12)
    c1 = want[want["key"] == "corC1.e_eta"].groupby("lr")["threshold"].median()
    points = next(c for c in ax.collections if c.get_label().startswith(figures.e_eta.COR_C1))
    np.testing.assert_allclose(points.get_offsets(), np.column_stack([c1.to_numpy(), c1.index]), rtol=1e-12)
    T, L = int(cells["T"].iloc[0]), int(cells["L"].iloc[0])
    lemmas = {label.split(":")[0].split()[-1]: x.get_xdata()[0] for label, x in lines.items()
              if label.startswith("Lemma") and len(x.get_xdata())}
    assert set(lemmas) == {"5.1", "5.3", "5.4"}  # 5.2 is undefined at T = 3, L = 3
    for lemma, x in lemmas.items():
        assert x == pytest.approx(bounds.lemma_threshold(lemma, T, L), rel=1e-12)


def test_sweep_bounds_draws_each_training_set_once_and_skips_failed_and_lstm_cells(monkeypatch):
    import ntkcheck.theory as theory

    draws, real = [], theory.make_problem
    monkeypatch.setattr(theory, "make_problem", lambda cfg: draws.append(cfg.seed) or real(cfg))
    cells = hand_built({"e": (1.0, 10.0), "lr": (1e-4, 1.0)}, failed_error="out of memory").cells
    cells.loc[cells.index[-1], "model"] = "lstm"
    bounds_ = theory.sweep_bounds(cells)
    assert sorted(draws) == sorted(cells["seed"].unique())
    skipped = set(cells.loc[cells["status"].eq("failed") | cells["model"].eq("lstm"), "cell"])
    assert len(skipped) == 2 and set(bounds_["cell"]) == set(cells["cell"]) - skipped
