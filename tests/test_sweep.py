"""Sweeps: the spec's cells, the batched engine against single runs, the folder, resuming, the Ray engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcheck import ConfigError, dead_cone, freeze, measure, preset, train
from ntkcheck.apps.sweep import load_spec, load_sweep, make_spec, sweep
from ntkcheck.apps.sweep.batched import plan
from ntkcheck.build.experiment import build_model, initial_weights, make_problem

TINY = dict(N=4, d=10, b=6, width=40, T=5, iters=12)
DIVERGES = 1e150  # e at which the features overflow after the first update (the run diverges at k = 1)


def _single(cfg):
    return train(cfg).metrics


def _rel(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest norm-wise relative difference of ``a`` from ``b``: |a − b| over each column's largest finite |b|, and at
    least 1 for the quantities that are already ratios or shares (a gain of exactly 0 at k = 0 is 4e-16 by another
    rounding); NaN = NaN and ±inf = ±inf count as equal."""
    x, y = a.to_numpy(float), b.to_numpy(float)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    finite = np.where(np.isfinite(y), np.abs(y), 0.0)
    ratio = np.array([c.startswith(("gain", "P_", "active_share", "diverged")) for c in b.columns], dtype=float)
    scale = np.maximum(np.abs(y), np.maximum(finite.max(axis=0, keepdims=True), ratio))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(same, 0.0, np.abs(x - y) / np.maximum(scale, 1e-300))
    return float(np.nan_to_num(err, nan=np.inf).max())


def _assert_cells_equal_single_runs(result, tol=1e-12):
    for _, row in result.cells.iterrows():
        cfg = result.spec.base.replace(**{a: row[a] for a in result.spec.axes}, seed=int(row["seed"]),
                                       init_seed=None if pd.isna(row["init_seed"]) else int(row["init_seed"]))
        single = _single(cfg)
        curve = result.curves[result.curves.cell == row["cell"]].set_index("iteration")[single.columns]
        assert list(curve.index) == list(single.index)
        assert _rel(curve, single) <= tol, row["cell"]
        assert row["status"] == train(cfg).status


@pytest.mark.parametrize("vary", ["both", "init"])  # both: a problem per cell; init: one shared problem
def test_batched_cells_equal_their_single_runs_including_a_diverging_cell(vary):
    spec = make_spec("small", base=TINY, grid={"e": (5.0, DIVERGES), "lr": (1e-3, 30.0)}, seeds="0-1", vary=vary,
                     record_every=1, probe_method="none")
    assert len(plan(spec.cells(), spec.batch_size)) == 1  # all eight cells in one batch
    result = sweep(spec)
    statuses = result.cells.set_index("e")["status"]
    assert set(statuses[DIVERGES]) == {"diverged"} and set(statuses[5.0]) == {"completed"}
    assert (result.cells.loc[result.cells.status == "diverged", "diverged_at"] == 1).all()
    _assert_cells_equal_single_runs(result, tol=1e-10)  # the η = 30 cells collapse: 5e-11 there (issue 21)


def test_batched_adam_mean_loss_and_skip_policy_equal_single_runs():
    base = TINY | dict(loss="mean", on_divergence="skip", iters=6)
    spec = make_spec("small", base=base, grid={"optimizer": ("sgd", "adam"), "lr": (1e-3, 1e-2), "e": (5.0, DIVERGES)},
                     seeds=[3], record_every=1, probe_method="none")
    assert len(plan(spec.cells(), spec.batch_size)) == 2  # one batch per optimizer
    result = sweep(spec)
    sgd = result.cells[(result.cells.optimizer == "sgd") & (result.cells.e == DIVERGES)]
    assert set(sgd.status) == {"diverged"}
    assert (result.cells.iterations == 6).all()  # skip: every iteration recorded, updates skipped
    _assert_cells_equal_single_runs(result)


def test_curves_are_recorded_every_record_every_iterations_and_at_K():
    spec = make_spec("small", base=TINY | dict(iters=10), grid={"lr": (1e-3,)}, record_every=4, probe_method="none")
    curve = sweep(spec).curves
    assert curve.iteration.tolist() == [0, 4, 8, 10]


def test_probes_equal_measure_at_the_cells_weights():
    """The probe at k = K equals :func:`ntkcheck.measure` at the single run's final weights; at k = 0, at W_0."""
    spec = make_spec("small", base=TINY, grid={"e": (5.0,)}, seeds=[1], probe_at=(0, "K"), probe_method="dense")
    result = sweep(spec)
    cfg = result.spec.cells()[0].config
    run = train(cfg)
    problem = make_problem(cfg)
    initial = build_model(cfg)
    for k, model in ((0, initial), (cfg.iters, run.model())):
        ref = measure(model, problem, cfg.T, lr=cfg.lr, method="dense", kernels=True)
        got = result.probes.set_index("iteration").loc[k]
        assert got.lambda_max == pytest.approx(ref.K.lambda_max, rel=1e-10)
        assert got.stable_lr == pytest.approx(2 / ref.K.lambda_max, rel=1e-10)
        assert got.alpha == pytest.approx(ref.alpha.alpha, rel=1e-10, abs=1e-12)
        assert got.rank_K == ref.K.rank.rank
    K0 = measure(initial, problem, cfg.T, lr=cfg.lr, method="dense",
                 kernels=True).kernels[0]
    KK = measure(run.model(), problem, cfg.T, lr=cfg.lr, method="dense", kernels=True).kernels[0]
    drift = np.linalg.norm(KK - K0) / np.linalg.norm(K0)  # the definition, computed here
    assert result.probes.set_index("iteration").loc[cfg.iters, "drift_rel"] == pytest.approx(drift, rel=1e-8)
    assert result.cells.loc[0, "lambda_max_0"] == pytest.approx(result.probes.lambda_max.iloc[0])
    frozen, cone = freeze(initial, problem, cfg.T, lr=cfg.lr), dead_cone(initial, problem, cfg.T)
    row = result.cells.iloc[0]
    assert row.freeze_phi_max_0 == pytest.approx(frozen.phi_max, rel=1e-12)
    assert row.freeze_gain_landing_0 == pytest.approx(frozen.gain_landing, rel=1e-12)
    assert row.dead_share_0 == cone.share


# -- the spec -----------------------------------------------------------------------------------------------------


def test_cells_are_the_product_of_axes_and_seeds_with_stable_ids():
    spec = make_spec("small", grid=["e=1,5", "width=64,128,256"], seeds="0-2")
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 3 and len({c.id for c in cells}) == 18
    assert [c.id for c in cells] == [c.id for c in make_spec("small", grid=["e=1,5", "width=64,128,256"],
                                                             seeds=[0, 1, 2]).cells()]
    assert {(c.config.e, c.config.width, c.config.seed) for c in cells} == \
        {(e, w, s) for e in (1.0, 5.0) for w in (64, 128, 256) for s in range(3)}
    assert isinstance(cells[0].config.width, int) and isinstance(cells[0].config.e, float)


def test_eta_names_the_learning_rate_axis_as_on_the_command_line():
    lr = make_spec("small", grid=["lr=1e-3,1e-4"]).axes
    assert make_spec("small", grid=["eta=1e-3,1e-4"]).axes == lr == make_spec("small", grid={"eta": (1e-3, 1e-4)}).axes
    with pytest.raises(ConfigError):
        make_spec("small", grid=["eta=1e-3", "lr=1e-4"])


@pytest.mark.parametrize("vary, data, weights", [("both", [0, 1], [0, 1]), ("data", [0, 1], [7, 7]),
                                                 ("init", [7, 7], [0, 1])])
def test_vary_decides_what_a_seed_draws(vary, data, weights):
    spec = make_spec("small", base=dict(seed=7, N=3, d=6, b=4, width=8), seeds="0-1", vary=vary)
    cfgs = [c.config for c in spec.cells()]
    assert [c.seed for c in cfgs] == data
    for cfg, w in zip(cfgs, weights):
        expected = initial_weights(preset("small", N=3, d=6, b=4, width=8, seed=w))
        assert all(torch.equal(initial_weights(cfg)[k], expected[k]) for k in expected)


def test_an_impossible_cell_is_recorded_as_failed_and_the_others_run():
    spec = make_spec("small", base=TINY | dict(iters=2), grid={"b": (6, 12)}, probe_method="none")  # b = 12 > d = 10
    cells = sweep(spec).cells.set_index("b")
    assert cells.loc[6, "status"] == "completed"
    assert cells.loc[12, "status"] == "failed" and "b: must satisfy" in cells.loc[12, "error"]


@pytest.mark.parametrize("call, field", [
    (lambda: make_spec("small", grid=["bogus=1"]), "grid"),
    (lambda: make_spec("small", grid=["seed=1,2"]), "grid"),
    (lambda: make_spec("small", grid=["e=1,x"]), "grid"),
    (lambda: make_spec("small", grid=["e"]), "grid"),
    (lambda: make_spec("small", grid=["e=1,1"]), "grid"),
    (lambda: make_spec("small", grid=["e=1", "e=2"]), "grid"),
    (lambda: make_spec("small", seeds="4-2"), "seeds"),
    (lambda: make_spec("small", seeds="a"), "seeds"),
    (lambda: make_spec("small", seeds=[-1]), "seeds"),
    (lambda: make_spec("small", vary="weights"), "vary"),
    (lambda: make_spec("small", probe_at="0,x"), "probe_at"),
    (lambda: make_spec("small", probe_method="svd"), "probe_method"),
    (lambda: make_spec("small", batch_size=0), "batch_size"),
    (lambda: make_spec("small", record_every=-1), "record_every"),
    (lambda: make_spec("huge"), "preset"),
    (lambda: sweep(make_spec("small"), engine="spark"), "engine"),
    (lambda: sweep(make_spec("small"), address="ray://x:1"), "address"),
])
def test_bad_specs_name_their_field(call, field):
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.field == field


def test_a_spec_file_round_trips_through_sweep_toml(tmp_path):
    spec = make_spec("small", base=TINY, grid={"e": (5.0, 25.0), "lr": (1e-3,)}, seeds="0-1", vary="data",
                     probe_at=(0, "K"), record_every=3)
    path = tmp_path / "spec.toml"
    path.write_text(spec.to_toml())
    again = load_spec(path)
    assert again.same_cells(spec) and [c.id for c in again.cells()] == [c.id for c in spec.cells()]
    (tmp_path / "bad.toml").write_text("grid = 3\n")
    with pytest.raises(ConfigError, match="spec"):
        load_spec(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("seed = [0]\n")
    with pytest.raises(ConfigError, match="unknown key 'seed'"):
        load_spec(tmp_path / "typo.toml")


# -- the folder, resuming ---------------------------------------------------------------------------------------


def test_folder_holds_the_results_and_a_rerun_reads_them_back(tmp_path):
    spec = make_spec("small", base=TINY | dict(iters=3), grid={"e": (5.0, 25.0)}, probe_method="none")
    out = tmp_path / "sw"
    result = sweep(spec, out)
    assert result.folder == out and not (tmp_path / "sw.partial").exists()
    for name in ("sweep.toml", "cells.parquet", "curves.parquet", "probes.parquet", "report.md"):
        assert (out / name).is_file(), name
    again = sweep(spec, out)
    pd.testing.assert_frame_equal(again.cells, result.cells)
    other = make_spec("small", base=TINY | dict(iters=3), grid={"e": (5.0, 50.0)}, probe_method="none")
    with pytest.raises(ConfigError, match="another spec") as err:
        sweep(other, out)
    assert err.value.field == "out"
    assert load_sweep(out).cells.shape == result.cells.shape


SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from ntkcheck.apps.sweep import make_spec, sweep
spec = make_spec("small", base=dict(N=4, d=10, b=6, width=40, T=5, iters=int(sys.argv[2])),
                 grid={"e": (5.0, 25.0, 50.0), "lr": (1e-3, 1e-2)}, batch_size=1, probe_method="none")
sweep(spec, sys.argv[1], engine=sys.argv[3], workers=2 if sys.argv[3] == "ray" else None)
"""


@pytest.mark.slow
@pytest.mark.parametrize("rerun_engine", ["embedded", "ray"])
def test_a_killed_sweep_reruns_only_its_missing_cells(tmp_path, rerun_engine):
    if rerun_engine == "ray":
        pytest.importorskip("ray")
    out, cells = tmp_path / "sw", tmp_path / "sw.partial" / "cells"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), "200", "embedded"])
    deadline = time.time() + 240
    while len(list(cells.glob("*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert 2 <= len(first) < 6, "the sweep should have been killed part-way"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out), "200", rerun_engine], check=True)
    result = load_sweep(out)
    assert len(result.cells) == 6 and (result.cells.status == "completed").all()
    kept = {p: (out / "cells" / p).stat().st_mtime_ns for p in first}
    assert kept == first  # the cells finished before the kill were not run again
    fresh = sweep(make_spec("small", base=TINY | dict(iters=200), grid={"e": (5.0, 25.0, 50.0), "lr": (1e-3, 1e-2)},
                            batch_size=1, probe_method="none"))  # the script's sweep, uninterrupted
    assert list(result.cells.cell) == list(fresh.cells.cell)
    numbers = [c for c in fresh.curves.columns if c != "cell"]
    np.testing.assert_array_equal(result.curves[numbers].to_numpy(float), fresh.curves[numbers].to_numpy(float))


@pytest.mark.slow
def test_ray_engine_gives_the_embedded_engines_cells(tmp_path):
    pytest.importorskip("ray")
    spec = make_spec("small", base=TINY, grid={"e": (5.0, DIVERGES), "lr": (1e-3, 30.0)}, seeds="0-1",
                     batch_size=2, probe_at=(0, "K"))
    embedded = sweep(spec, tmp_path / "embedded")
    on_ray = sweep(spec, tmp_path / "ray", engine="ray", workers=2)
    numbers = [c for c in embedded.cells.columns if embedded.cells[c].dtype.kind == "f" and c != "seconds"]
    a, b = embedded.cells.set_index("cell"), on_ray.cells.set_index("cell").loc[embedded.cells.cell]
    assert (a.status == b.status).all()
    assert _rel(b[numbers], a[numbers]) <= 1e-12


def test_the_command_line_logs_one_line_per_cell_where_there_is_no_terminal(tmp_path, capsys):
    from ntkcheck.cli import main

    code = main(["sweep", "--N", "4", "--d", "10", "--b", "6", "--width", "40", "--T", "5", "--iters", "2",
                 "--grid", "e=5,25", "--probe-method", "none", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sum(line.startswith("cell ") for line in err.splitlines()) == 2 and "completed, final gain" in err


@pytest.mark.parametrize("setting", [dict(problem="lasso", update="fista"), dict(problem="logistic", update="prox"),
                                     dict(problem="logistic", penalty="l2", update="nag", init="xavier")],
                         ids=["lasso-fista", "logistic-prox", "logistic-l2-nag-xavier"])
def test_batched_cells_beyond_the_qp_equal_their_single_runs(setting):
    """Cells of another objective family, drawn apart (a problem per cell, stacked field by field), and another
    backbone: every cell's curve equals its single run, its gains measured against the backbone's classical method."""
    spec = make_spec("small", base=TINY | setting, grid={"lr": (1e-3, 1e-2)}, seeds="0-1", record_every=1,
                     probe_method="none")
    assert len(plan(spec.cells(), spec.batch_size)) == 1
    result = sweep(spec)
    assert (result.cells.status == "completed").all()
    _assert_cells_equal_single_runs(result)
