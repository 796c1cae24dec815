"""Kernel drift, linearised predictions and the measured rate (ntkcheck.instruments.dynamics), in float64.

The central test holds the linearised prediction r_{k+1} = (I − ηK̃) r_k against the real trainer
(ntkcheck.engine.training.train). Why its tolerance is what it is: one SGD step moves W by ΔW = −ηJ̃ᵀr, and

    r(W + ΔW) = r + JΔW + ½ΔWᵀ∇²r ΔW + O(‖ΔW‖³) = (I − ηK̃) r + O(η²),

so after k steps the loss differs from the prediction by O(η²) (second order: the curvature of r and the
drift K_k − K_0 = O(kη) of the kernel), while the loss decrease itself is O(η). Hence (i) the error
relative to the decrease is O(ηλ_max·k): at ηλ_max = 0.01 and k ≤ 3 it is ≈ 1.5%, and we allow 5%;
(ii) halving η divides the error by 4 (not 2), which is the sharp statement we test, with a ±10% band for
the O(η³) remainder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.build.experiment import initial_weights, make_problem
from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.engine.training import train
from ntkcheck.engine import learned
from ntkcheck.instruments import dynamics, linalg, ntk
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems


def psd(n, r, seed, spread=(0.5, 2.0)):
    """K = A Aᵀ of rank r with the non-zero singular values of A in ``spread``; also A."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((r, r))) if r else (np.zeros((0, 0)), None)
    A = U[:, :r] @ np.diag(rng.uniform(*spread, r)) @ V.T if r else np.zeros((n, 0))
    return A @ A.T, A


# -- closed forms on synthetic kernels ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**31 - 1), c=st.floats(0.01, 1.9))
def test_eigen_curve_equals_the_recursion_for_a_symmetric_kernel(n, data, seed, c):
    """½Σ(1 − ηλ_i)^{2k}(u_iᵀr_0)² = ½‖(I − ηK)^k r_0‖² for symmetric K (eigh vs repeated products)."""
    r = data.draw(st.integers(1, n), label="rank")
    K, _ = psd(n, r, seed)
    r0 = np.random.default_rng(seed + 1).standard_normal(n)
    lr = c / np.linalg.eigvalsh(K)[-1]
    eig = dynamics.eig_loss_curve(K, r0, lr, 25)
    rec = dynamics.loss_of(dynamics.residual_recursion(K, r0, lr, 25))
    np.testing.assert_allclose(eig, rec, rtol=0, atol=1e-10 * eig[0])
    assert eig[0] == pytest.approx(0.5 * r0 @ r0, rel=1e-13)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_the_plateau_is_the_part_of_r0_outside_the_range_of_K(n, data, seed):
    """½‖P_null r_0‖² = ½ min_x ‖r_0 − A x‖² (range K = range A, by least squares), and the recursion with a
    stable η converges to it."""
    r = data.draw(st.integers(0, n - 1), label="rank")
    K, A = psd(n, r, seed)
    r0 = np.random.default_rng(seed + 1).standard_normal(n)
    plateau = dynamics.null_space_plateau(K, r0)
    resid = r0 - A @ np.linalg.lstsq(A, r0, rcond=None)[0] if r else r0
    assert plateau.value == pytest.approx(0.5 * resid @ resid, rel=1e-10, abs=1e-14)
    assert plateau.null_dim == n - r
    if r:
        lr = 1.0 / np.linalg.eigvalsh(K)[-1]  # every non-zero λ in [1/16, 1]·λ_max: fast decay
        late = dynamics.loss_of(dynamics.residual_recursion(K, r0, lr, 600))[-1]
        assert late == pytest.approx(plateau.value, rel=1e-8, abs=1e-14)


def test_stability_threshold_and_rate():
    K, _ = psd(8, 8, seed=3)
    lam = np.linalg.eigvalsh(K)
    r0 = np.random.default_rng(0).standard_normal(8)
    threshold = dynamics.stability_threshold(lam[-1])
    assert threshold == pytest.approx(2 / lam[-1])
    stable = dynamics.predict(K, r0, 0.99 * threshold, 400)
    unstable = dynamics.predict(K, r0, 1.01 * threshold, 400)
    assert stable.stable and not unstable.stable
    assert stable.loss_recursion[-1] < stable.loss_recursion[0]
    assert unstable.loss_recursion[-1] > 10 * unstable.loss_recursion[0]  # |1 − ηλ_max| > 1 blows up
    # for η ≤ 1/λ_max every factor 1 − ηλ_i lies in [0, 1 − ηλ_min]: ‖r‖ contracts at least that fast
    lr = 1.0 / lam[-1]
    R = dynamics.residual_recursion(K, r0, lr, 30)
    rate = dynamics.linear_rate(lam[0], lr)
    norms = np.linalg.norm(R, axis=1)
    assert np.all(norms[1:] <= rate * norms[:-1] * (1 + 1e-12))
    assert dynamics.predict(K, r0, lr, 1).rate == pytest.approx(rate)


def test_kernel_drift_definitions():
    K, _ = psd(6, 4, seed=1)
    d = linalg.kernel_drift(K, K)
    assert d.rel_change == 0.0 and d.distance == pytest.approx(0.0, abs=1e-15)
    d = linalg.kernel_drift(K, 3.0 * K)  # a positive rescaling is no change of direction
    assert d.rel_change == pytest.approx(2.0) and d.distance == pytest.approx(0.0, abs=1e-15)
    E1, E2 = np.diag([1.0, 0, 0]), np.diag([0, 2.0, 0])  # PSD kernels with orthogonal ranges
    assert linalg.kernel_drift(E1, E2).distance == pytest.approx(1.0)
    K2, _ = psd(6, 3, seed=2)
    d = linalg.kernel_drift(K, K2)
    assert 0 < d.distance < 1
    assert d.rel_change == pytest.approx(np.linalg.norm(K2 - K) / np.linalg.norm(K))
    gone = linalg.kernel_drift(K, np.zeros_like(K))  # a kernel that collapsed: all of K_0 is lost, no direction
    assert gone.rel_change == 1.0 and np.isnan(gone.distance)
    with pytest.raises(ValueError, match="same shape"):
        linalg.kernel_drift(K, K2[:3, :3])


def test_theil_sen_recovers_a_geometric_rate_despite_outliers():
    rng = np.random.default_rng(0)
    k = np.arange(60)
    loss = 3.0 * 0.9**k * np.exp(0.01 * rng.standard_normal(60))
    loss[[5, 20, 41]] *= [50.0, 1e-3, 80.0]  # spikes, as when an iteration is skipped or a step overshoots
    fit = dynamics.fit_contraction(loss)
    assert fit.low <= 0.9 <= fit.high and fit.high - fit.low < 0.005
    assert fit.rate == pytest.approx(0.9, abs=1e-3)
    lsq = np.exp(np.polyfit(k, np.log(loss), 1)[0])
    assert abs(lsq - 0.9) > 5 * abs(fit.rate - 0.9)  # what a least-squares fit would have said
    window = dynamics.fit_contraction(loss, start=30, stop=60)
    assert (window.start, window.stop) == (30, 60) and window.low <= 0.9 <= window.high
    with pytest.raises(ValueError, match="window"):
        dynamics.fit_contraction(loss, start=10, stop=5)
    with pytest.raises(ValueError, match="at least 3"):
        dynamics.fit_contraction([1.0, 0.5])


# -- against real training --------------------------------------------------------------------------------------

TINY = dict(N=3, d=8, b=6, width=16, T=5, e=5.0)


def measured_losses(cfg, tmp_path, name):
    result = train(cfg, tmp_path / name)
    return result.metrics["loss"].to_numpy()


def test_linearised_prediction_matches_the_trainer_to_second_order_in_eta(tmp_path):
    """Deterministic init (K̃ = K): the recursion from K_0 predicts the trainer's loss for the first
    iterations; the error is second order in η (module docstring)."""
    cfg = TrainConfig(**TINY, iters=3, lr=1.0)
    problem = make_problem(cfg)
    model = build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg))
    K = ntk.empirical_ntk(model, problem, cfg.T, kernel="training").K.numpy()
    with torch.no_grad():
        r0 = ntk.residual_fn(model, problem, cfg.T)(ntk.parameters(model)).numpy()
    lam_max = np.linalg.eigvalsh(0.5 * (K + K.T))[-1]
    errors, decreases = [], []
    for c in (0.01, 0.005):
        lr = c / lam_max
        L = measured_losses(cfg.replace(lr=float(lr)), tmp_path, f"c{c}")
        pred = dynamics.predict(K, r0, lr, cfg.iters, Kt=K)
        assert L[0] == pytest.approx(pred.loss_recursion[0], rel=1e-12)
        np.testing.assert_allclose(pred.loss_eig, pred.loss_recursion, rtol=1e-12)  # K̃ = K symmetric here
        decrease = L[0] - L[1:]
        err = np.abs(L[1:] - pred.loss_recursion[1:])
        assert (decrease > 0).all()
        assert (err <= 0.05 * decrease).all(), (err, decrease)
        errors.append(err[0])
        decreases.append(decrease[0])
    assert 1.9 <= decreases[0] / decreases[1] <= 2.1  # first order
    assert 3.6 <= errors[0] / errors[1] <= 4.4  # the error is second order


def random_setup(scale=10.0):
    """Random weights with a large last layer, so that J̃ differs from J by several per cent."""
    p = problems.generate(3, 6, 5, seed=1)
    widths = hidden_widths(8, 3)
    params = inits.random(widths, seed=3)
    params["W3"] = scale * params["W3"]
    return p, build(widths, params)


def test_the_training_kernel_not_the_true_one_predicts_detached_training():
    """Detached BPTT moves W along −J̃ᵀr, so r changes by −ηK̃r: predicting with K̃ leaves an O(η²) error,
    predicting with K (the true NTK) an O(η) one, since K − K̃ = J(J − J̃)ᵀ ≠ 0 here."""
    p, model = random_setup()
    K = ntk.empirical_ntk(model, p, 4).K.numpy()
    Kt = ntk.empirical_ntk(model, p, 4, kernel="training").K.numpy()
    assert np.linalg.norm(K - Kt) > 0.03 * np.linalg.norm(K)
    with torch.no_grad():
        r0 = ntk.residual_fn(model, p, 4)(ntk.parameters(model)).numpy()
    lam_max = np.linalg.eigvalsh(K)[-1]
    err_t, err_k = [], []
    for c in (0.01, 0.005):
        lr = c / lam_max
        L, _ = learned.sgd_snapshots(model, p, 4, lr, 1, keep=[])
        err_t.append(abs(L[1] - dynamics.loss_of(dynamics.residual_recursion(Kt, r0, lr, 1))[1]))
        err_k.append(abs(L[1] - dynamics.loss_of(dynamics.residual_recursion(K, r0, lr, 1))[1]))
    assert 3.6 <= err_t[0] / err_t[1] <= 4.4
    assert 1.8 <= err_k[0] / err_k[1] <= 2.2
    assert err_k[1] > 10 * err_t[1]


def test_sgd_snapshots_reproduce_the_trainer(tmp_path):
    cfg = TrainConfig(**TINY, iters=3, lr=0.05, init="random")
    L_train = measured_losses(cfg, tmp_path, "run")
    model = build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg))
    L, snaps = learned.sgd_snapshots(model, make_problem(cfg), cfg.T, cfg.lr, cfg.iters, keep=[0, 3])
    np.testing.assert_allclose(L, L_train, rtol=1e-12)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["params"]
    assert sorted(snaps) == [0, 3]
    for name, value in saved.items():
        torch.testing.assert_close(snaps[3][name], value, rtol=1e-12, atol=1e-15)
    assert float(next(model.parameters()).sum()) == float(initial_weights(cfg)["W1"].sum())  # untouched


def test_drift_table_along_training():
    p, model = random_setup(scale=3.0)
    L, snaps = learned.sgd_snapshots(model, p, 4, 0.5, 4, keep=[0, 2, 4])
    table = dynamics.drift_table(model, p, 4, snaps).set_index("k")
    assert list(table.index) == [0, 2, 4]
    assert table.loc[0, "rel_change"] == 0.0 and table.loc[0, "distance"] == pytest.approx(0.0, abs=1e-15)
    assert 0 < table.loc[2, "rel_change"] < table.loc[4, "rel_change"]
    np.testing.assert_allclose(table["loss"], L[[0, 2, 4]], rtol=1e-12)
    for k in (0, 4):  # λ_max of K_k, recomputed from a model that holds the snapshot's weights
        m = build(hidden_widths(8, 3), snaps[k])
        K = ntk.empirical_ntk(m, p, 4).K.numpy()
        lam = np.linalg.eigvalsh(K)
        assert table.loc[k, "lambda_max"] == pytest.approx(lam[-1], rel=1e-12)
        assert table.loc[k, "rel_change"] == pytest.approx(
            np.linalg.norm(K - ntk.empirical_ntk(build(hidden_widths(8, 3), snaps[0]), p, 4).K.numpy())
            / np.linalg.norm(ntk.empirical_ntk(build(hidden_widths(8, 3), snaps[0]), p, 4).K.numpy()), rel=1e-10, abs=1e-15)
    assert (table["alpha_tol"] > 0).all()
