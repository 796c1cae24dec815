"""``ntkcheck sweep`` over the LSTM learner (issue 21): the batched engine stacks the MLP's weights on a cell axis; any
other learner's cells are planned as batches of one and run as their single run in memory
(a batch of one: :func:`ntkcheck.apps.sweep.batched.run_batch`). Checked in float64 against the single-run trainer
(:func:`ntkcheck.train` with no folder): the same code path, so bit for bit; a killed sweep reruns to the same bits;
the plan keeps every LSTM cell alone whatever the order and batch size; the probes are taken at W_k before iteration
k, the weights of the single run's own ``probe`` hook."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck import train
from ntkcheck.apps.sweep import batched, make_spec, sweep
from ntkcheck.apps.sweep import run as sweep_run
from ntkcheck.apps.sweep.batched import BATCHED, plan, run_batch
from ntkcheck.apps.sweep.spec import Cell, cell_id
from ntkcheck.config import TrainConfig
from ntkcheck.report import sweep_figures

from killed import interrupt

TINY = dict(N=2, d=6, b=4, T=3, width=16, iters=4, lstm_hidden=4, lr=1e-2)


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """The figures are not what is tested here, and drawing them is most of a tiny sweep's time."""
    monkeypatch.setattr(sweep_figures, "write", lambda *args: None)


def _curve(result, cid: str) -> pd.DataFrame:
    return result.curves[result.curves.cell == cid].drop(columns="cell").set_index("iteration")


def _rel(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """max over columns of max_k |a − b| / max_k |b|, with a scale of at least 1 for ratios and shares."""
    x, y = a.to_numpy(float), b.to_numpy(float)
    diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
    ratio = np.array([c.startswith(("gain", "P_", "diverged")) for c in b.columns], dtype=float)
    return float(np.max(diff.max(axis=0) / np.maximum(np.abs(y).max(axis=0), np.maximum(ratio, 1e-300))))


def _lstm_spec(**changes):
    """Four LSTM cells (two η × two seeds), batch size 3: the MLP's cells would run as one batch of 3 and one of 1."""
    args = dict(base=TINY | dict(model="lstm"), grid={"lr": (1e-2, 3e-2)}, seeds="0-1", record_every=1,
                probe_method="none", batch_size=3)
    return make_spec("small", **(args | changes))


def test_a_sweep_over_mlp_and_lstm_completes_and_every_lstm_cell_is_its_single_run(tmp_path):
    spec = make_spec("small", base=TINY, grid={"model": ("mlp", "lstm")}, seeds="0-1", record_every=1,
                     probe_method="none")
    advanced = []
    result = sweep(spec, tmp_path / "sw", callback=lambda event, **info: advanced.append(info.get("cell_iterations"))
                   if event == "advance" else None)
    assert (result.cells.status == "completed").all() and result.cells.error.isna().all()
    assert sum(advanced) == 4 * (TINY["iters"] + 1)  # every cell's iterations reported, the LSTM's one by one
    recorded = json.loads((tmp_path / "sw" / "plan.json").read_text())
    lstm = [c for c in spec.cells() if c.config.model == "lstm"]
    assert recorded["batches"] == [[c.id for c in batch] for batch in plan(spec.cells(), spec.batch_size)]
    assert [[c.id] for c in lstm] == [b for b in recorded["batches"] if b[0] in {c.id for c in lstm}]
    for cell in spec.cells():
        single = train(cell.config)  # in memory
        curve = _curve(result, cell.id)
        assert list(curve.index) == list(single.metrics.index) and single.status == "completed"
        assert _rel(curve[single.metrics.columns], single.metrics) <= 1e-12, cell.values
        if cell.config.model == "lstm":  # the same code path: bit for bit
            pd.testing.assert_frame_equal(curve[single.metrics.columns], single.metrics, check_exact=True)
            assert "active_share" not in single.metrics and curve.active_share.isna().all()
    row = result.cells.set_index("model")
    assert row.loc["lstm", "active_share_final"].isna().all() and row.loc["mlp", "active_share_final"].notna().all()


def test_lstm_cells_in_a_batch_of_several_each_give_their_single_run_in_float32_too():
    """A batch of several LSTM cells (a plan recorded before they were planned alone) runs each alone; float32 too."""
    spec = _lstm_spec(base=TINY | dict(model="lstm", dtype="float32", on_divergence="skip"))
    cells = spec.cells()
    runs = []
    run_batch(cells, spec, runs.append)
    assert [r.cell.id for r in runs] == [c.id for c in cells]
    for run in runs:
        single = train(run.cell.config)
        assert run.status == single.status == "completed"
        assert run.curve.index.name == "iteration"
        pd.testing.assert_frame_equal(run.curve[single.metrics.columns], single.metrics, check_exact=True)


def test_a_killed_lstm_sweep_reruns_to_the_bits_of_the_uninterrupted_one(tmp_path, monkeypatch):
    spec = _lstm_spec()
    reference = sweep(spec, tmp_path / "ref")
    assert (reference.cells.status == "completed").all()
    for after in (1, 3):
        out = tmp_path / f"sw{after}"
        written = interrupt(spec, out, after, monkeypatch)
        recorded = json.loads((tmp_path / f"sw{after}.partial" / "plan.json").read_text())
        assert recorded["batches"] == [[c.id] for c in spec.cells()]  # alone, in spec order
        ran = []
        with monkeypatch.context() as patch:
            patch.setattr(sweep_run, "run_batch", lambda batch, *a: (ran.append([c.id for c in batch]),
                                                                     run_batch(batch, *a)))
            result = sweep(spec, out)
        assert ran == [b for b in recorded["batches"] if b[0] not in written]
        pd.testing.assert_frame_equal(result.curves, reference.curves, check_exact=True)
        pd.testing.assert_frame_equal(result.cells.drop(columns="seconds"), reference.cells.drop(columns="seconds"),
                                      check_exact=True)


_CONFIGS = {name: TrainConfig(**TINY, model=name) for name in ("mlp", "lstm")}


@settings(max_examples=40, deadline=None)
@given(models=st.lists(st.sampled_from(("mlp", "lstm")), min_size=1, max_size=12),
       lrs=st.lists(st.sampled_from((1e-2, 2e-2)), min_size=12, max_size=12), batch_size=st.integers(1, 5))
def test_the_plan_keeps_every_lstm_cell_alone_and_every_cell_once(models, lrs, batch_size):
    """A fixed function of the cells and the batch size: each cell exactly once, an LSTM cell always alone, the MLP
    cells batched as the cells without any LSTM cell would be."""
    configs = [_CONFIGS[m].replace(lr=lr, seed=i) for i, (m, lr) in enumerate(zip(models, lrs))]
    cells = [Cell(cell_id(c.to_dict()), {}, 0, c) for c in configs]
    batches = plan(cells, batch_size)
    assert batches == plan(cells, batch_size)
    assert sorted(c.id for b in batches for c in b) == sorted(c.id for c in cells)
    assert all(len(b) == 1 for b in batches if b[0].config.model not in BATCHED)
    assert all(len({c.config.model for c in b}) == 1 and len(b) <= batch_size for b in batches)
    assert [b for b in batches if b[0].config.model in BATCHED] == plan(
        [c for c in cells if c.config.model in BATCHED], batch_size)


def test_an_lstm_cell_is_probed_at_the_weights_of_its_single_run_before_each_iteration(monkeypatch):
    """The probe rows (probing.py's numbers faked here: its columns are another change) are taken at W_k for the
    spec's iterations, on the cell's own problem; W_k from the single run's own ``probe`` hook."""
    spec = _lstm_spec(probe_at=(0, 2, "K"), probe_method="dense")
    cell = spec.cells()[1]
    seen = {}

    def fake_probe(cfg, problem, weights, k, method, K0, G0=None):
        seen[k] = ({n: w.clone() for n, w in weights.items()}, problem, K0)
        return {"iteration": k, "method": method}, torch.full((1,), float(k))

    monkeypatch.setattr(batched, "probe_cell", fake_probe)
    runs = []
    run_batch([cell], spec, runs.append)
    single_W = {}
    single = train(cell.config, probe=lambda k, m: single_W.setdefault(
        k, {n: p.detach().clone() for n, p in m.named_parameters()}))
    assert runs[0].status == "completed" and [r["iteration"] for r in runs[0].probes] == [0, 2, TINY["iters"]]
    pd.testing.assert_frame_equal(runs[0].curve[single.metrics.columns], single.metrics, check_exact=True)
    for k, (W, problem, K0) in seen.items():
        assert W.keys() == single_W[k].keys() and all(torch.equal(W[n], single_W[k][n]) for n in W)
        assert all(not w.requires_grad for w in W.values())
        assert torch.equal(problem.M, batched.make_problem(cell.config).M)
        assert (K0 is None) == (k == 0) and (k == 0 or torch.equal(K0, torch.zeros(1)))  # K_0 kept for the drift


def test_an_lstm_sweep_with_dense_probes_records_lambda_max_and_no_alpha():
    spec = _lstm_spec(probe_at=(0,), probe_method="dense", seeds=[0], grid={})
    cell = spec.cells()[0]
    runs = []
    run_batch([cell], spec, runs.append)
    assert runs[0].status == "completed", runs[0].error
    from ntkcheck.build.experiment import build_model, make_problem
    from ntkcheck.instruments.probes import measure

    r = measure(build_model(cell.config), make_problem(cell.config), cell.config.T, lr=cell.config.lr, method="dense")
    row = runs[0].probes[0]
    assert row["lambda_max"] == pytest.approx(r.K.lambda_max, rel=1e-12) and r.not_applicable["alpha"]
    assert row.get("alpha") is None or np.isnan(row["alpha"])
