"""The freeze predictor and the dead cone (ntkcheck.instruments.diagnostics), against independent computations in float64.

Freeze: the predicted first step equals the real first SGD step of ``ntkcheck.train`` (W_L, φ' on the GD inputs,
and the metrics the trainer records at k = 1), and φ' = η·e^{2(L−1)}·φ̂ holds to rounding across e and η.
Dead cone: the dead pairs equal a direct count on relu(relu(Z W_1) W_2) built from the raw weights, and the angular
layer's active-column count; the live-pair optimisation never does worse than GD, is exactly GD when every pair is
dead, and differentiates what it optimises (finite differences).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ntkcheck
from ntkcheck.build.experiment import setup
from ntkcheck.config import ConfigError, TrainConfig, hidden_widths
from ntkcheck.instruments import diagnostics
from ntkcheck.models import angular
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems

TINY = dict(N=3, d=6, b=4, width=24, T=4, device="cpu", iters=1)


def gd_inputs(problem, T: int) -> list[torch.Tensor]:
    """z_t = (∇F(X_{t−1}), X_{t−1}) per coordinate along GD, rows (N·d, 2), built without the model."""
    path = problems.gd_trajectory(problem, T)[:-1]
    return [torch.stack((problems.gradient(problem, X), X), dim=-1).reshape(-1, 2) for X in path]


def wide_features(Z: torch.Tensor, weights: dict, L: int) -> list[torch.Tensor]:
    """G_0 = Z, G_ℓ = relu(G_{ℓ−1} W_ℓ) for ℓ = 1..L−1, from the raw weights."""
    G = [Z]
    for ell in range(1, L):
        G.append(torch.relu(G[-1] @ weights[f"W{ell}"]))
    return G


# -- freeze: the real first step -------------------------------------------------------------------------------


@pytest.mark.parametrize("L, loss", [(3, "last"), (3, "mean"), (3, "weighted"), (4, "last")])
def test_freeze_is_the_first_sgd_step_of_train(L, loss):
    cfg = TrainConfig(**TINY, L=L, e=3.0, lr=2e-2, loss=loss)
    run = ntkcheck.train(cfg)
    exp = setup(cfg)
    fz = diagnostics.freeze(exp.model, exp.problem, cfg.T, lr=cfg.lr, loss=loss, tol=cfg.saturation_tol)
    W1 = {k: v.double() for k, v in run.weights.items()}
    # only W_L moves, to −η∇_{W_L}F
    for ell in range(1, L):
        assert torch.equal(W1[f"W{ell}"], run.W0[f"W{ell}"])
    W_L = W1[f"W{L}"][:, 0].numpy()
    assert np.linalg.norm(fz.W_L - W_L) <= 1e-12 * np.linalg.norm(W_L)
    # φ' of the trained model on GD's inputs, from the raw weights
    phi = torch.stack([(wide_features(Z, W1, L)[-1] @ W1[f"W{L}"])[:, 0] for Z in gd_inputs(exp.problem, cfg.T)])
    phi = phi.reshape(fz.phi.shape).numpy()
    assert np.abs(fz.phi - phi).max() <= 1e-12 * np.abs(phi).max()
    assert fz.phi_max > 0
    # what the trainer recorded at k = 0 (W_0) and k = 1 (the landing point)
    m = run.metrics
    grad_norm = lambda k: math.sqrt(sum(m.loc[k, f"grad_norm/W{ell}"] ** 2 for ell in range(1, L + 1)))  # noqa: E731
    assert fz.F_gd == pytest.approx(m.loc[0, "F_T"], rel=1e-13)
    assert fz.grad_norm == pytest.approx(grad_norm(0), rel=1e-12)
    assert fz.F_landing == pytest.approx(m.loc[1, "F_T"], rel=1e-12)
    assert fz.gain_landing == pytest.approx(m.loc[1, "gain"], rel=1e-10, abs=1e-13)
    assert fz.saturated_landing == m.loc[1, "P_saturated"]
    assert fz.grad_norm_landing == pytest.approx(grad_norm(1), rel=1e-10)


def test_freeze_in_true_mode_is_the_detached_step():
    """At W_L = 0 every path through the network inputs carries W_L: the true and detached first steps agree."""
    cfg = TrainConfig(**TINY, L=3, e=3.0, lr=2e-2)
    exp = setup(cfg)
    detached = diagnostics.freeze(exp.model, exp.problem, cfg.T, lr=cfg.lr)
    true_model = setup(cfg.replace(detach=False)).model
    true = diagnostics.freeze(true_model, exp.problem, cfg.T, lr=cfg.lr)
    np.testing.assert_allclose(true.W_L, detached.W_L, rtol=1e-13, atol=1e-13 * np.abs(detached.W_L).max())
    assert true.F_landing == pytest.approx(detached.F_landing, rel=1e-12)


# -- freeze: φ' = η e^{2(L−1)} φ̂ --------------------------------------------------------------------------------


def _freeze_at(L: int, e: float, lr: float, seed: int = 0, **sizes):
    sizes = {"N": 3, "d": 5, "b": 4, "width": 16, "T": 4} | sizes
    problem = problems.generate(sizes["N"], sizes["d"], sizes["b"], seed)
    widths = hidden_widths(sizes["width"], L)
    model = build(widths, inits.deterministic(widths, e, seed))
    return diagnostics.freeze(model, problem, sizes["T"], lr=lr)


@pytest.mark.parametrize("L", [3, 4])
def test_phi_scales_as_lr_times_e_to_the_2L_minus_2(L):
    """The same seed draws the same Q_ℓ for every e (init.deterministic scales one draw), P ≡ 1 makes the
    trajectory e's alone, and ReLU is positively homogeneous: φ'(e, η) = η e^{2(L−1)} φ̂ to rounding."""
    ref = _freeze_at(L, 1.0, 1.0)
    for e in (0.5, 3.0, 25.0, 100.0):
        for lr in (1e-7, 1e-3, 0.7):
            fz = _freeze_at(L, e, lr)
            scale = lr * e ** (2 * (L - 1))
            assert fz.scale == pytest.approx(scale, rel=1e-13)
            assert np.abs(fz.phi / scale - ref.phi).max() <= 1e-12 * np.abs(ref.phi).max()
            np.testing.assert_allclose(fz.W_L / (lr * e ** (L - 1)), ref.W_L, rtol=0,
                                       atol=1e-12 * np.abs(ref.W_L).max())
            assert fz.c == pytest.approx(ref.c, rel=1e-12)
            assert fz.F_gd == ref.F_gd  # GD's whatever e
            np.testing.assert_allclose(fz.layer_norms, e, rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(e1=st.floats(0.5, 200.0), e2=st.floats(0.5, 200.0), lr1=st.floats(1e-8, 1.0), lr2=st.floats(1e-8, 1.0),
       seed=st.integers(0, 10_000), L=st.sampled_from([3, 4]))
def test_c_depends_on_the_seed_only(e1, e2, lr1, lr2, seed, L):
    a, b = _freeze_at(L, e1, lr1, seed), _freeze_at(L, e2, lr2, seed)
    assert a.c == pytest.approx(b.c, rel=1e-12)
    assert a.onset == pytest.approx(b.onset, rel=1e-12)
    # a larger η e^{2(L−1)} scales every |φ'| up: no pair leaves saturation
    lo, hi = sorted((a, b), key=lambda f: f.scale)
    assert lo.saturated <= hi.saturated
    # P' saturates where |φ'| ≥ ln((2 − tol)/tol), and not below it (away from the rounding of that edge)
    edge = math.log((2 - a.tol) / a.tol)
    away = np.abs(np.abs(a.phi) - edge) > 1e-9 * edge
    sat = np.abs(a.phi) >= edge
    count = round(a.saturated * a.phi.size)  # the share is a count over the pairs (0.5166… · 60 = 31.000000000000004)
    assert count >= (sat & away).sum()
    assert count <= (sat | ~away).sum()
    if a.scale < a.onset * (1 - 1e-9):
        assert a.saturated == 0.0


def test_freeze_refuses_what_it_does_not_predict():
    cfg = TrainConfig(**TINY, L=3, e=3.0)
    exp = setup(cfg)
    with pytest.raises(ConfigError) as err:
        diagnostics.freeze(build(hidden_widths(24, 3), inits.random(hidden_widths(24, 3), 0)), exp.problem, 4, lr=1e-3)
    assert err.value.field == "model" and "W_L = 0" in err.value.message
    biased = setup(cfg.replace(bias=True)).model
    with pytest.raises(ConfigError, match="bias"):
        diagnostics.freeze(biased, exp.problem, 4, lr=1e-3)
    for kwargs, field in (({"lr": 0.0}, "lr"), ({"lr": math.nan}, "lr"), ({"lr": 1e-3, "loss": "max"}, "loss"),
                          ({"lr": 1e-3, "tol": 1.5}, "tol")):
        with pytest.raises(ConfigError) as err:
            diagnostics.freeze(exp.model, exp.problem, 4, **kwargs)
        assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        diagnostics.freeze(exp.model, exp.problem, 0, lr=1e-3)
    assert err.value.field == "T"


# -- the dead cone ------------------------------------------------------------------------------------------------


def direct_dead(model, problem, T):
    """(dead, input zero) masks (T, N·d) along the model's own trajectory, from the raw weights."""
    weights = {k: v.detach().double() for k, v in model.named_parameters()}
    X = problem.X0()
    dead, zero = [], []
    with torch.no_grad():
        for _ in range(T):
            grad = problems.gradient(problem, X)
            G = wide_features(torch.stack((grad, X), dim=-1).reshape(-1, 2), weights, model.L)
            dead.append((G[-1] == 0).all(dim=1))
            zero.append((G[-2] == 0).all(dim=1))
            P = 2 * torch.sigmoid(G[-1] @ weights[f"W{model.L}"])[:, 0].reshape(X.shape)
            X = X - (1 / problem.beta)[:, None] * P * grad
    return torch.stack(dead), torch.stack(zero)


def angular_dead(model, problem, T):
    """Dead pairs by the angular layer's count of active columns (no dense G_{L−1})."""
    theta, _ = angular.column_order(model.layer(model.L - 1)[0].detach())
    dead = []
    with torch.no_grad():
        for X in model.unroll(problem, T - 1).X:
            Z = model.inputs(problem, X)
            h = model.features(Z, upto=model.L - 2)[-1] if model.L > 2 else Z
            _, active = angular.arc_sums(h, theta, torch.zeros(2 * theta.shape[-1] + 1, 2, dtype=torch.float64))
            dead.append(active == 0)
    return torch.stack(dead)


@pytest.mark.parametrize("L", [3, 4])
def test_dead_share_is_a_direct_count_at_the_initialisation(L):
    p = problems.generate(4, 6, 5, seed=1)
    widths = hidden_widths(32, L)
    model = build(widths, inits.deterministic(widths, 7.0, seed=0))
    assert (model.W1[0] < 0).all()  # this draw's first row is sign-coherent: z_1 = (g, 0) with g > 0 gives h = 0
    dc = diagnostics.dead_cone(model, p, 5)
    dead, zero = direct_dead(model, p, 5)
    assert dead[0].any() and zero[0].any()
    assert np.array_equal(dc.mask.reshape(5, -1), dead.numpy())
    assert np.array_equal(dc.mask.reshape(5, -1), angular_dead(model, p, 5).numpy())
    assert dc.share == dead.double().mean().item()
    np.testing.assert_array_equal(dc.per_step, dead.double().mean(dim=1).numpy())
    assert dc.input_zero == zero.double().mean().item()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), init_seed=st.integers(0, 10_000), L=st.sampled_from([2, 3, 4]),
       random=st.booleans())
def test_dead_share_along_the_models_own_trajectory(seed, init_seed, L, random):
    """At weights with W_L ≠ 0 (random init) the trajectory is the model's own, not GD's."""
    p = problems.generate(3, 5, 4, seed=seed)
    widths = hidden_widths(12, L)
    weights = inits.random(widths, init_seed) if random else inits.deterministic(widths, 2.0, init_seed)
    model = build(widths, weights)
    dc = diagnostics.dead_cone(model, p, 3)
    dead, zero = direct_dead(model, p, 3)
    assert np.array_equal(dc.mask.reshape(3, -1), dead.numpy())
    assert np.array_equal(dc.mask.reshape(3, -1), angular_dead(model, p, 3).numpy())
    assert dc.input_zero == zero.double().mean().item()


# -- the best gain on the live pairs ---------------------------------------------------------------------------


def _initial(seed=1, **sizes):
    sizes = {"N": 3, "d": 6, "b": 4, "width": 16} | sizes
    p = problems.generate(sizes["N"], sizes["d"], sizes["b"], seed=seed)
    widths = hidden_widths(sizes["width"], 3)
    return build(widths, inits.deterministic(widths, 5.0, seed)), p


def test_final_iterate_with_unit_steps_is_gd_bit_for_bit():
    _, p = _initial()
    assert torch.equal(diagnostics.final_iterate(p, torch.ones(5, p.N, p.d)), problems.gd_trajectory(p, 5)[-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_gain_never_does_worse_than_gd(seed):
    model, p = _initial(seed)
    T = 5
    dc = diagnostics.dead_cone(model, p, T)
    assert 0 < dc.share < 1
    live = diagnostics.best_gain_live(model, p, T, dc.mask, max_iter=40)
    free = diagnostics.best_gain_free(model, p, T, max_iter=40)
    F_gd = float(problems.objective(p, problems.gd_trajectory(p, T)[-1]))
    for best in (live, free):
        assert best.F_gd == F_gd
        assert 0 <= best.F <= F_gd
        assert best.gain >= 0
        assert best.iterations <= 40 and best.evaluations >= 1
        assert best.F == pytest.approx(float(problems.objective(p, diagnostics.final_iterate(p, torch.from_numpy(best.P)))),
                                       rel=1e-12, abs=1e-15)
        assert ((0 <= best.P) & (best.P <= 2)).all()  # 2σ(u) rounds to 0 or 2 for |u| ≳ 37
    assert (live.P[dc.mask] == 1).all()
    assert live.live == (~dc.mask).sum() and free.live == dc.mask.size


def test_best_gain_with_every_pair_dead_is_exactly_zero():
    model, p = _initial()
    best = diagnostics.best_gain_live(model, p, 4, np.ones((4, p.N, p.d), dtype=bool))
    assert best.gain == 0.0 and best.F == best.F_gd
    assert best.live == 0 and best.converged and (best.P == 1).all()


def test_the_optimised_objective_has_its_autograd_gradient():
    _, p = _initial()
    rng = np.random.default_rng(0)
    live = torch.from_numpy(rng.random((4, p.N, p.d)) < 0.7)
    F = diagnostics.live_objective(p, live)
    u = torch.from_numpy(rng.normal(0.0, 1.5, int(live.sum()))).requires_grad_()
    (grad,) = torch.autograd.grad(F(u), u)
    h = 1e-6
    for k in rng.choice(u.numel(), 12, replace=False):
        step = torch.zeros_like(u)
        step[k] = h
        with torch.no_grad():
            fd = (F(u + step) - F(u - step)) / (2 * h)
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9 * float(grad.abs().max()))


def test_best_gain_refuses_a_wrong_mask_and_budget():
    model, p = _initial()
    for mask in (np.zeros((4, p.N, p.d)), np.zeros((3, p.N, p.d), dtype=bool)):
        with pytest.raises(ConfigError) as err:
            diagnostics.best_gain_live(model, p, 4, mask)
        assert err.value.field == "dead_mask"
    for kwargs, field in (({"max_iter": 0}, "max_iter"), ({"gtol": 0.0}, "gtol"), ({"ftol": -1.0}, "ftol")):
        with pytest.raises(ConfigError) as err:
            diagnostics.best_gain_free(model, p, 4, **kwargs)
        assert err.value.field == field


def test_the_first_step_leaves_dead_pairs_at_gd():
    """φ' = G_{L−1}·W_L' vanishes exactly on the dead pairs of the initial trajectory: they never saturate."""
    cfg = TrainConfig(**TINY, L=3, e=20.0, lr=1.0, seed=0)
    exp = setup(cfg)
    fz = diagnostics.freeze(exp.model, exp.problem, cfg.T, lr=cfg.lr)
    dc = diagnostics.dead_cone(exp.model, exp.problem, cfg.T)
    assert dc.mask.any()
    assert (fz.phi[dc.mask] == 0).all() and (fz.phi[~dc.mask] != 0).all()
    assert fz.saturated <= 1 - dc.share
