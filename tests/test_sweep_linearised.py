"""A sweep with ``linearised = true``: each cell's Taylor-model curve is engine.linearised.train_linearised run alone
(float64) on every (problem, update), optimiser and loss and on the LSTM; on the QP with SGD and the loss "last" it is
the eigen-projection prediction ½Σ_i(1 − ηλ_i)^{2k}(u_iᵀr_0)²; the cells' gap columns are the curves' gaps; the
setting round-trips through sweep.toml and is written only when true."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcheck import ConfigError
from ntkcheck.apps.sweep import load_spec, load_sweep, make_spec, sweep
from ntkcheck.build.experiment import build_model, make_problem
from ntkcheck.engine.linearised import train_linearised
from ntkcheck.instruments import dynamics, ntk

TINY = {"N": 2, "d": 4, "b": 3, "width": 16, "T": 3, "e": 5.0, "lr": 0.05, "iters": 12}


def _alone(cfg) -> np.ndarray:
    """L^lin_0..L^lin_K of the cell's configuration, run alone from its W_0 on its problem."""
    return train_linearised(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, iters=cfg.iters, loss=cfg.loss,
                            optimizer=cfg.optimizer).loss


def _curves(result) -> dict[str, pd.DataFrame]:
    return {cid: c.set_index("iteration") for cid, c in result.curves.groupby("cell")}


SETTINGS = [{"problem": "qp", "update": "gd", "optimizer": "sgd", "loss": "last"},
            {"problem": "qp", "update": "nag", "optimizer": "adam", "loss": "mean", "lr": 1e-3},
            {"problem": "lasso", "update": "prox", "optimizer": "sgd", "loss": "mean"},
            {"problem": "logistic", "update": "fista", "optimizer": "sgd", "loss": "weighted"},
            {"problem": "logistic", "update": "prox", "penalty": "l1", "optimizer": "adam", "loss": "last", "lr": 1e-3},
            {"model": "lstm", "lstm_hidden": 4, "optimizer": "adam", "loss": "last", "lr": 1e-2}]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_a_cells_linearised_curve_is_train_linearised_run_alone(setting):
    spec = make_spec("small", base=TINY | setting, seeds="0-1", record_every=5,
                     probe_method="none", linearised=True)
    result = sweep(spec)
    assert set(result.cells.status) == {"completed"}, result.cells.error.tolist()
    curves = _curves(result)
    for cell in spec.cells():
        curve = curves[cell.id]
        assert curve.index.tolist() == [0, 5, 10, 12]
        want = _alone(cell.config)
        np.testing.assert_allclose(curve["loss_linearised"], want[curve.index], rtol=1e-12, atol=0)
        assert curve["loss_linearised"].iloc[0] == pytest.approx(curve["loss"].iloc[0], rel=1e-13)  # exact at W_0
        row = result.cells.set_index("cell").loc[cell.id]
        assert row["linearised_loss_final"] == want[-1]
        gap = np.abs(curve["loss"] - curve["loss_linearised"]) / np.abs(curve["loss"])
        assert row["linearised_gap_final"] == pytest.approx(gap.iloc[-1], rel=1e-12)
        assert row["linearised_gap_max"] == pytest.approx(gap.max(), rel=1e-12)
        assert row["linearised_gap_max"] > 0


def test_on_the_qp_with_sgd_and_the_last_loss_it_is_the_eigen_projection_prediction():
    """Deterministic init (W_L = 0, K̃ = K), SGD, loss "last": L^lin_k = ½Σ_i(1 − ηλ_i)^{2k}(u_iᵀr_0)² (the method of
    tests/test_linearised.py), for each cell of the sweep."""
    base = TINY | {"width": 32, "iters": 40}
    spec = make_spec("small", base=base, grid={"e": (2.0, 5.0)}, seeds=[3], record_every=10, probe_method="none",
                     linearised=True)
    result = sweep(spec)
    curves = _curves(result)
    for cell in spec.cells():
        cfg = cell.config
        model, p = build_model(cfg), make_problem(cfg)
        K = ntk.empirical_ntk(model, p, cfg.T).K
        r0 = ntk.residual_fn(model, p, cfg.T)(ntk.parameters(model))
        pred = dynamics.predict(K, r0, cfg.lr, cfg.iters).loss_eig
        curve = curves[cell.id]
        np.testing.assert_allclose(curve["loss_linearised"], pred[curve.index], rtol=1e-10, atol=0)
        assert curve["loss_linearised"].iloc[-1] < 0.9 * curve["loss_linearised"].iloc[0]  # it trained
        assert float(torch.linalg.eigvalsh(K)[-1]) * cfg.lr < 2  # a stable η: the prediction is a finite curve


def test_a_diverging_cell_has_no_final_gap_and_the_setting_round_trips(tmp_path):
    diverges = TINY | {"e": 1e150, "lr": 30.0, "iters": 6}  # the features overflow after the first update
    spec = make_spec("small", base=diverges, seeds=[0], record_every=1, probe_method="none",
                     linearised=True)
    result = sweep(spec, tmp_path / "s")
    row = result.cells.iloc[0]
    assert row["status"] == "diverged"
    assert math.isnan(row["linearised_gap_final"])
    assert (tmp_path / "s" / "sweep.toml").read_text().count("linearised = true") == 1
    assert load_spec(tmp_path / "s" / "sweep.toml").linearised is True
    again = load_sweep(tmp_path / "s")
    pd.testing.assert_frame_equal(again.cells, result.cells)
    assert "loss_linearised" in again.curves


def test_linearised_is_written_only_when_true_and_checked():
    spec = make_spec("small", base=TINY, probe_method="none")
    assert "linearised" not in spec.to_dict() and "linearised" not in spec.to_toml()
    plain = sweep(spec)
    assert "loss_linearised" not in plain.curves and not any("linearised" in c for c in plain.cells)
    with pytest.raises(ConfigError) as err:
        make_spec("small", base=TINY, linearised="yes")
    assert err.value.field == "linearised"
    assert not make_spec("small", base=TINY, linearised=True).same_cells(spec)
