"""The meta-problem defined once (ntkcheck.problems.meta): the training losses, the per-step metrics and the GD
reference against formulas written out here (einsums on M, plain loops, float64), on the least squares and on a
problem that offers only the Problem protocol; one iteration of the trainer against autograd and a hand-written
SGD step; and the loops that run it (the trainer, fit, sgd_snapshots) equal to each other bit for bit."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.build.experiment import initial_weights, make_problem
from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.engine import learned
from ntkcheck.engine.learned import fit
from ntkcheck.engine.trainer import iteration, new_state
from ntkcheck.engine.training import train
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import meta, qp, solvers
from ntkcheck.theory import problem_constants

TINY = dict(N=3, d=8, b=6, width=16, T=5, e=5.0, iters=3, lr=0.05, checkpoint_every=100)


@dataclass(frozen=True)
class ProtocolOnly:
    """The least squares seen through the Problem protocol alone: no ``objective_path`` fast path."""

    ls: qp.Problem

    beta = property(lambda self: self.ls.beta)
    N = property(lambda self: self.ls.N)
    d = property(lambda self: self.ls.d)

    def X0(self):
        return self.ls.X0()

    def objective_per_instance(self, X):
        return self.ls.objective_per_instance(X)

    def gradient(self, X):
        return self.ls.gradient(X)


def F_plain(p: qp.Problem, X: torch.Tensor) -> float:
    """Σ_i ½‖M_i x_i − y_i‖² by an einsum."""
    R = torch.einsum("nbd,nd->nb", p.M, X) - p.Y
    return 0.5 * float(R.square().sum())


def random_iterates(p: qp.Problem, T: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [p.X0()] + [torch.randn(p.N, p.d, generator=gen, dtype=torch.float64) for _ in range(T)]


def loss_formula(F: list[float], kind: str) -> float:
    """last F(X_T), mean (1/T)Σ_t F(X_t), weighted Σ_t t·F(X_t)/Σ_t t, from F(X_1..X_T)."""
    T = len(F)
    return {"last": F[-1], "mean": sum(F) / T,
            "weighted": sum(t * f for t, f in enumerate(F, 1)) / (T * (T + 1) / 2)}[kind]


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 4), d=st.integers(2, 7), b=st.integers(1, 7), T=st.integers(1, 6), seed=st.integers(0, 99))
def test_training_losses_against_their_formulas_on_any_problem(N, d, b, T, seed):
    """The least squares (its fast objective_path) and the protocol-only problem (F(X_t) one by one) give the
    formulas of the module docstring to 1e-12, and agree with each other to 1e-12."""
    p = qp.generate(N, d, b, seed)
    traj = SimpleNamespace(X=random_iterates(p, T, seed))
    F = [F_plain(p, X) for X in traj.X[1:]]
    for kind in ("last", "mean", "weighted"):
        fast, plain = meta.training_loss(p, traj, kind), meta.training_loss(ProtocolOnly(p), traj, kind)
        assert float(fast) == pytest.approx(loss_formula(F, kind), rel=1e-12)
        assert float(plain) == pytest.approx(float(fast), rel=1e-12)
    assert torch.equal(meta.training_loss(p, traj, "last"), meta.training_loss(ProtocolOnly(p), traj, "last"))


def test_training_losses_of_a_batch_of_cells_are_the_losses_of_each_cell():
    cells = [qp.generate(3, 6, 4, s) for s in range(2)]
    stacked = qp.Problem(*(torch.stack([getattr(c, f) for c in cells]) for f in ("M", "Y", "beta", "x_star", "H",
                                                                                 "c")))
    X = [torch.stack(pair) for pair in zip(random_iterates(cells[0], 4, 1), random_iterates(cells[1], 4, 2))]
    for kind in ("last", "mean", "weighted"):
        got = meta.training_loss(stacked, SimpleNamespace(X=X), kind)
        for c, cell in enumerate(cells):
            one = meta.training_loss(cell, SimpleNamespace(X=[x[c] for x in X]), kind)
            assert float(got[c]) == pytest.approx(float(one), rel=1e-12)


def test_an_unknown_training_loss_is_refused():
    p = qp.generate(2, 4, 3, 0)
    with pytest.raises(ValueError, match="loss must be one of last, mean, weighted"):
        meta.training_loss(p, SimpleNamespace(X=[p.X0(), p.X0()]), "sum")


# -- the GD reference --------------------------------------------------------------------------------------------------


def test_the_gd_path_is_gd_bit_for_bit_and_with_given_steps_the_plain_loop():
    p = qp.generate(3, 7, 5, 4)
    T, s = 6, 0.9
    for ours, gd in zip(meta.gd_path(p, T, s), qp.gd_trajectory(p, T, s)):
        assert torch.equal(ours, gd)
    assert torch.equal(meta.gd_path(p, T, s, torch.ones(T, p.N, p.d, dtype=torch.float64))[-1],
                       qp.gd_trajectory(p, T, s)[-1])
    P = 2 * torch.rand(T, p.N, p.d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X = torch.zeros(p.N, p.d, dtype=torch.float64)
    for t in range(T):  # X_t = X_{t−1} − (s/β_i) P_t ⊙ M_iᵀ(M_i x_i − y_i), written out
        g = torch.einsum("nbd,nb->nd", p.M, torch.einsum("nbd,nd->nb", p.M, X) - p.Y)
        X = X - s / p.beta[:, None] * P[t] * g
    torch.testing.assert_close(meta.gd_path(p, T, s, P)[-1], X, rtol=1e-12, atol=1e-14)


def test_the_gd_reference_equals_the_curves_it_replaces():
    """F_GD(X_1..X_T) against the GD solver's curve (fit's old reference) and the loop of F(X_t^GD) (problem_constants'
    old curve) to 1e-12; problem_constants' curve is the trainer's reference bit for bit from t = 1."""
    p = qp.generate(4, 9, 5, 3)
    T, s = 7, 0.9999
    F_gd = meta.gd_objective(p, T, s)
    np.testing.assert_allclose(F_gd.numpy(), solvers.gd(p, T, step_scale=s).F[1:].numpy(), rtol=1e-12)
    np.testing.assert_allclose(F_gd.numpy(), [F_plain(p, X) for X in qp.gd_trajectory(p, T, s)[1:]], rtol=1e-12)
    curve = problem_constants(p, T, s)["F_gd"]
    assert curve[0] == float(qp.objective(p, p.X0())) and np.array_equal(curve[1:], F_gd.numpy())
    torch.testing.assert_close(meta.gd_objective(ProtocolOnly(p), T, s), F_gd, rtol=1e-12, atol=0)


# -- the per-step metrics ----------------------------------------------------------------------------------------------


def test_step_metrics_against_their_formulas():
    p = qp.generate(3, 6, 4, 2)
    T, tol = 4, 0.05
    model = build(hidden_widths(12, 3), inits.random(hidden_widths(12, 3), 0))
    with torch.no_grad():
        traj = model.unroll(p, T, record_active=True)
    F_gd = meta.gd_objective(p, T)
    got = meta.step_metrics(p, traj, F_gd, tol)
    F = np.array([F_plain(p, X) for X in traj.X[1:]])
    G = np.array([F_plain(p, X) for X in qp.gd_trajectory(p, T)[1:]])
    P = torch.stack(traj.P).numpy().ravel()
    want = {"F_T": F[-1], "gain": (G[-1] - F[-1]) / G[-1], "gain_mean": np.mean((G - F) / G), "P_min": P.min(),
            "P_mean": P.mean(), "P_max": P.max(), "P_saturated": np.mean((P <= tol) | (P >= 2 - tol)),
            "active_share": float(torch.stack(traj.active).mean())}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    assert 0 < got["P_min"] < got["P_max"] < 2 and got["gain"] != 0  # a random model: P varies, not GD
    plain = meta.gain_metrics(ProtocolOnly(p), traj.X, F_gd)
    assert all(float(plain[k]) == pytest.approx(got[k], rel=1e-12) for k in plain)


# -- one meta-iteration ------------------------------------------------------------------------------------------------


def tiny_model_and_problem():
    widths = hidden_widths(8, 3)
    return build(widths, inits.random(widths, 3)), qp.generate(2, 5, 4, 1)


def _one_cell(model, K: int = 5, lr: float = 0.1):
    """The model as the trainer's one cell (its own parameters, trained in place by SGD at ``lr``)."""
    return new_state(dict(model.named_parameters()), optimizer="sgd", lr=lr, K=K)


@pytest.mark.parametrize("kind", ["last", "mean", "weighted"])
def test_an_iteration_is_one_sgd_step_on_the_training_loss(kind):
    """W_{k+1} = W_k − η ∇L(W_k) with ∇L by torch.autograd.grad; the metrics are measured at W_k with its gradient."""
    model, p = tiny_model_and_problem()
    W = {k: v.detach().clone() for k, v in model.named_parameters()}
    params = list(model.parameters())
    loss = meta.training_loss(p, model.unroll(p, 3), kind)
    grads = dict(zip(W, torch.autograd.grad(loss, params)))
    out = iteration(0, [_one_cell(model)], model, p, meta.gd_objective(p, 3), T=3, loss=kind, record=[True],
                    saturation_tol=1e-2)[0]
    value = float(loss.detach())
    assert out.finite and out.loss == value and out.metrics["loss"] == value and out.metrics["diverged"] == 0.0
    for k, v in model.named_parameters():
        assert out.metrics[f"grad_norm/{k}"] == float(grads[k].norm())  # measured before the step
        torch.testing.assert_close(v.detach(), W[k] - 0.1 * grads[k], rtol=1e-14, atol=1e-15)


class _Injected(torch.nn.Module):
    """A learner of one weight w whose unroll is ``path(w)``: to inject a non-finite loss or gradient."""

    def __init__(self, path):
        super().__init__()
        self.w, self.path = torch.nn.Parameter(torch.ones((), dtype=torch.float64)), path

    def forward(self, problem, T, state=None):
        return SimpleNamespace(X=self.path(self.w), P=[])


def test_an_iteration_without_update_or_with_a_non_finite_value_keeps_the_weights():
    model, p = tiny_model_and_problem()
    W = {k: v.detach().clone() for k, v in model.named_parameters()}
    out = iteration(0, [_one_cell(model, K=0)], model, p, meta.gd_objective(p, 3), T=3, loss="last", record=[False],
                    saturation_tol=1e-2)[0]  # k = K: the last iteration takes no step
    assert out.finite and all(v.grad is not None for v in model.parameters())
    assert all(torch.equal(v.detach(), W[k]) for k, v in model.named_parameters())

    def infinite_loss(w):  # F(X_1) = inf: nothing is backpropagated
        return [p.X0(), p.X0() + w * torch.inf]

    def infinite_gradient(w):  # X_1 = √(0·w) = 0: F is finite, ∂√u/∂u = ∞ at u = 0
        return [p.X0(), p.X0() + torch.sqrt(0 * w)]

    F_gd = meta.gd_objective(p, 1)
    for path in (infinite_loss, infinite_gradient):
        learner = _Injected(path)
        cell = _one_cell(learner)
        out = iteration(0, [cell], learner, p, F_gd, T=1, loss="last", record=[False], saturation_tol=1e-2)[0]
        assert not out.finite and out.metrics["diverged"] == 1.0 and cell.status == "diverged"
        assert float(learner.w) == 1.0
    assert out.loss == float(meta.objective(p, p.X0()))  # the gradient, not the loss, was infinite


# -- the loops that run it ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["last", "mean", "weighted"])
def test_fit_and_sgd_snapshots_are_the_trainer_bit_for_bit(loss):
    """One meta-iteration for all loops: fit (any loss) and sgd_snapshots (loss last) reproduce the trainer's losses,
    F_T, gains and final weights exactly."""
    cfg = TrainConfig(**TINY, init="random", loss=loss)
    record = train(cfg)
    model = build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg))
    ours = fit(model, make_problem(cfg), cfg.T, lr=cfg.lr, iters=cfg.iters, loss=loss).metrics
    for quantity in ("loss", "F_T", "gain", "gain_mean", "diverged"):
        assert np.array_equal(ours[quantity].to_numpy(), record.metrics[quantity].to_numpy()), quantity
    assert all(torch.equal(v, record.weights[k]) for k, v in model.state_dict().items())
    if loss == "last":
        model = build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg))
        L, snaps = learned.sgd_snapshots(model, make_problem(cfg), cfg.T, cfg.lr, cfg.iters, keep=[cfg.iters])
        assert np.array_equal(L, record.metrics["loss"].to_numpy())
        assert all(torch.equal(snaps[cfg.iters][k], v) for k, v in record.weights.items())
