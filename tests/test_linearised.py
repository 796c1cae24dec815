"""Linearised training (ntkcheck.engine.linearised), in float64: against training the explicitly linearised function
(a dense torch.func Jacobian of the flattened weights) on every problem family, loss and optimiser; on the QP against
the eigen-projection prediction of ntkcheck.instruments.dynamics; the gap to the real run is O(η²) after one step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from ntkcheck.engine import linearised
from ntkcheck.instruments import dynamics, ntk
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import lasso, logistic, qp
from ntkcheck.problems.meta import meta_optimizer, training_loss

N, d, b, T = 2, 5, 4, 3
WIDTHS = (2, 8)


def problem(name, seed=0):
    if name == "qp":
        return qp.generate(N, d, b, seed)
    if name == "lasso":
        return lasso.generate(N, d, b, seed, lam=0.2)
    return logistic.generate(N, d, 6, seed, lam=0.1)


def learner(update="gd", *, detach=True, init="random", widths=WIDTHS):
    W = inits.random(widths, 1) if init == "random" else inits.deterministic(widths, 2.0, 1)
    return build(widths, W, update=update, detach=detach)


def dense_linearised_curve(model, p, *, lr, iters, loss, optimizer, mode):
    """The explicitly linearised function of the flattened weights w: X^lin(w) = X(w_0) + J(w − w_0), J a dense
    jacrev (T·N·d × P); in ``mode="detached"`` its value is J Δ and its gradient J̃ᵀ (J̃ the detached unroll's
    Jacobian): X_0 + J̃Δ + ((J − J̃)Δ).detach()."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [v.shape for _, v in model.named_parameters()]
    sizes = [v.numel() for _, v in model.named_parameters()]
    w0 = torch.cat([v.detach().reshape(-1) for _, v in model.named_parameters()])

    def path(m):
        def f(w):
            W = {k: piece.reshape(s) for k, piece, s in zip(names, w.split(sizes), shapes, strict=True)}
            return torch.stack(functional_call(m, W, (p, T)).X[1:]).reshape(-1)
        return f

    J = jacrev(path(model.with_detach(False)))(w0)
    Jm = J if mode == "true" else jacrev(path(model.with_detach(True)))(w0)
    X_w0 = path(model)(w0).detach()
    w = w0.clone().requires_grad_(True)
    opt = meta_optimizer(optimizer, [w], lr)
    out = []
    for k in range(iters + 1):
        opt.zero_grad()
        delta = w - w0
        X = X_w0 + Jm @ delta + ((J - Jm) @ delta).detach()
        Xs = [p.X0(), *X.reshape(T, N, -1).unbind(0)]
        L = training_loss(p, linearised.Path(Xs, []), loss)
        out.append(float(L.detach()))
        if k < iters:
            L.backward()
            opt.step()
    return np.array(out)


CASES = [(prob, opt, mode, loss) for prob in ("qp", "lasso", "logistic") for opt in ("sgd", "adam")
         for mode in ("true", "detached") for loss in ("last", "mean", "weighted")
         if (opt, mode) == ("sgd", "detached") or loss == "last"]


@pytest.mark.parametrize("name,optimizer,mode,loss", CASES)
def test_linearised_training_equals_training_the_dense_linearisation(name, optimizer, mode, loss):
    p = problem(name)
    update = "prox" if name == "lasso" else "fista" if name == "logistic" else "gd"
    model = learner(update)
    lr = 1e-3 if optimizer == "adam" else 0.05
    got = linearised.train_linearised(model, p, T, lr=lr, iters=8, loss=loss, optimizer=optimizer, mode=mode)
    want = dense_linearised_curve(model, p, lr=lr, iters=8, loss=loss, optimizer=optimizer, mode=mode)
    assert got.diverged_at is None
    np.testing.assert_allclose(got.loss, want, rtol=1e-12, atol=0)
    assert abs(got.loss[-1] - got.loss[0]) > 1e-6 * got.loss[0]  # the run moved
    real = linearised.train_real(model, p, T, lr=lr, iters=0, loss=loss, optimizer=optimizer)
    assert got.loss[0] == pytest.approx(real.loss[0], rel=1e-14)  # the Taylor model is exact at W_0


def test_on_the_qp_it_is_the_eigen_projection_prediction():
    """Deterministic init (W_L = 0, K̃ = K), SGD, loss "last": L_k = ½Σ_i(1 − ηλ_i)^{2k}(u_iᵀr_0)²."""
    p, model = qp.generate(N, d, b, 3), learner(init="deterministic", widths=(2, 32))
    K = ntk.empirical_ntk(model, p, T).K
    lam_max = float(torch.linalg.eigvalsh(K)[-1])
    r0 = ntk.residual_fn(model, p, T)(ntk.parameters(model))
    lr, iters = 1.0 / lam_max, 40
    pred = dynamics.predict(K, r0, lr, iters)
    got = linearised.train_linearised(model, p, T, lr=lr, iters=iters)
    np.testing.assert_allclose(got.loss, pred.loss_eig, rtol=1e-10, atol=0)
    assert got.loss[-1] < 0.5 * got.loss[0]


def test_on_the_qp_detached_training_is_the_training_kernels_recursion():
    """Random init (K̃ ≠ K): the detached linearisation follows r_{k+1} = (I − ηK̃)r_k, the true one (I − ηK)r_k."""
    p, model = qp.generate(N, d, b, 4), learner(widths=(2, 32))
    K = ntk.empirical_ntk(model, p, T).K
    Kt = ntk.empirical_ntk(model, p, T, kernel="training").K
    assert float((K - Kt).abs().max()) > 1e-3 * float(K.abs().max())
    r0 = ntk.residual_fn(model, p, T)(ntk.parameters(model))
    lr = 0.5 / float(torch.linalg.eigvalsh(K)[-1])
    for mode, kernel in (("detached", Kt), ("true", K)):
        got = linearised.train_linearised(model, p, T, lr=lr, iters=25, mode=mode)
        np.testing.assert_allclose(got.loss, dynamics.predict(K, r0, lr, 25, Kt=kernel).loss_recursion, rtol=1e-10)


@pytest.mark.parametrize("name", ["qp", "logistic"])
def test_the_gap_to_the_real_run_is_second_order_in_eta(name):
    """|L_1 − L_1^lin| = O(η²): halving η quarters it (the objective and unroll are smooth here)."""
    p, model = problem(name, 2), learner("nag" if name == "qp" else "gd", detach=False)
    gaps = []
    for lr in (1e-3, 5e-4):
        lin = linearised.train_linearised(model, p, T, lr=lr, iters=1)
        real = linearised.train_real(model, p, T, lr=lr, iters=1)
        gap = linearised.curve_gap(lin, real)
        assert gap.absolute[0] == 0.0
        gaps.append(gap.absolute[1])
    assert 3.5 < gaps[0] / gaps[1] < 4.5


def test_curve_gap():
    gap = linearised.curve_gap(np.array([1.0, 0.5, 0.3, np.nan]), np.array([1.0, 0.4, 0.2, 0.1]))
    np.testing.assert_allclose(gap.absolute, [0.0, 0.1, 0.1])
    np.testing.assert_allclose(gap.relative, [0.0, 0.25, 0.5])
    assert (gap.max_relative, gap.argmax_relative, gap.final_relative) == (pytest.approx(0.5), 2, pytest.approx(0.5))
    with pytest.raises(ValueError, match="no finite iteration"):
        linearised.curve_gap([np.nan], [1.0])
    with pytest.raises(ValueError, match="mode must be one of"):
        linearised.Linearisation(learner(), problem("qp"), T, mode="both")


@pytest.mark.parametrize("name", ["qp", "lasso", "logistic"])
def test_the_linearisation_runs_on_the_meta_device(name):
    """X^lin and its gradient allocate on the problem's device (a CPU tensor mixed in fails on meta)."""
    meta = torch.device("meta")
    p, model = problem(name).to(device=meta), learner("fista").to(meta)
    lin = linearised.Linearisation(model, p, T)
    W = {k: v.clone().requires_grad_(True) for k, v in lin.W0.items()}
    L = training_loss(p, lin.unroll(W), "mean")
    L.backward()
    assert L.device.type == "meta" and all(w.grad.device.type == "meta" for w in W.values())
