"""The LASSO family (ntkcheck.problems.lasso) and its classical solvers, in float64, against independent computations:
the prox against the scalar closed form and a numerical argmin, objective and gradient against numpy and finite
differences, β against numpy's SVD, the reference optimum against the subgradient optimality condition and scipy's
L-BFGS-B on the split x = p − q; hypothesis properties of the soft-threshold and of the classical methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from ntkcheck.problems import lasso, qp, solvers
from ntkcheck.problems.base import Problem

N, d, b = 3, 12, 8


def small(seed=0, **kw):
    return lasso.generate(N, d, b, seed, **kw)


# -- data ----------------------------------------------------------------------------------------------------


def test_the_draw_is_the_qps_matrix_with_a_planted_sparse_solution():
    p, ls = small(4, sparsity=0.25), qp.generate(N, d, b, 4)
    assert isinstance(p, Problem) and p.M.dtype == torch.float64
    assert torch.equal(p.M, ls.M) and torch.equal(p.beta, ls.beta)
    nnz = (p.x_star != 0).sum(-1)
    assert nnz.tolist() == [math.ceil(0.25 * d)] * N
    assert len({tuple(np.flatnonzero(x)) for x in p.x_star.numpy()}) > 1  # supports drawn per instance
    np.testing.assert_allclose(p.Y.numpy(), np.einsum("nbd,nd->nb", p.M.numpy(), p.x_star.numpy()), rtol=0, atol=1e-14)
    lam_max = np.abs(np.einsum("nbd,nb->nd", p.M.numpy(), p.Y.numpy())).max(-1)
    np.testing.assert_allclose(p.lam.numpy(), 0.1 * lam_max, rtol=1e-15)
    absolute = small(4, lam=0.3, relative=False, sparsity=0.25)
    assert torch.equal(absolute.lam, torch.full((N,), 0.3, dtype=torch.float64))
    again, other, test = small(4, sparsity=0.25), small(5, sparsity=0.25), lasso.generate(N, d, b, 4, "test")
    assert torch.equal(again.Y, p.Y) and torch.equal(again.x_star, p.x_star)
    assert not torch.equal(other.Y, p.Y) and not torch.equal(test.M, p.M)
    noisy = small(4, sparsity=0.25, noise=0.1)
    assert torch.equal(noisy.x_star, p.x_star) and 0 < float((noisy.Y - p.Y).abs().max()) < 1.0


def test_lam_max_is_where_zero_becomes_optimal():
    """At λ ≥ λ_max = ‖Mᵀy‖∞ the optimum is x = 0 (its gap is 0 there); just below it is not."""
    at = small(1, lam=1.0)
    assert bool((at.duality_gap(at.X0()) <= 1e-14).all())
    below = small(1, lam=0.9)
    assert bool((solvers.reference_optimum(below).X.abs().sum(-1) > 0).all())


def test_bad_options_name_themselves():
    with pytest.raises(ValueError, match="sparsity must be a number in"):
        small(sparsity=0.0)
    with pytest.raises(ValueError, match="lam must be a finite number"):
        small(lam=-1.0)
    with pytest.raises(ValueError, match="noise must be"):
        small(noise=float("nan"))
    with pytest.raises(ValueError, match="split must be one of"):
        lasso.generate(N, d, b, 0, "validation")


def test_to_select_and_the_objective_path():
    p = small(2)
    f32 = p.to(dtype=torch.float32)
    assert f32.M.dtype == f32.lam.dtype == f32.beta.dtype == torch.float32
    cells = [small(s) for s in range(3)]
    stacked = lasso.Problem(qp.Problem(*(torch.stack([getattr(c.ls, f) for c in cells]) for f in
                                         ("M", "Y", "beta", "x_star", "H", "c"))), torch.stack([c.lam for c in cells]))
    picked = stacked.select([2, 0])
    X = torch.randn(2, N, d, dtype=torch.float64)
    assert torch.allclose(picked.objective_per_instance(X),
                          torch.stack([cells[2].objective_per_instance(X[0]), cells[0].objective_per_instance(X[1])]),
                          rtol=1e-14, atol=0)
    Xs = [torch.randn(N, d, dtype=torch.float64) for _ in range(4)]
    want = torch.stack([p.objective_per_instance(x).sum() for x in Xs])
    assert torch.allclose(p.objective_path(Xs), want, rtol=1e-14, atol=0)
    shared = [torch.randn(2, N, d, dtype=torch.float64) for _ in range(3)]  # cells sharing one problem
    want = torch.stack([p.objective_per_instance(x).sum(-1) for x in shared], dim=-1)
    assert torch.allclose(p.objective_path(shared), want, rtol=1e-14, atol=0)


# -- the prox ------------------------------------------------------------------------------------------------


def scalar_prox(v: float, tau: float) -> float:
    """argmin_x τ|x| + ½(x − v)², by cases."""
    return v - tau if v > tau else v + tau if v < -tau else 0.0


@settings(max_examples=60, deadline=None)
@given(v=st.floats(-10, 10), a=st.floats(1e-3, 5), lam=st.floats(0, 3))
def test_the_prox_is_the_closed_form_and_the_argmin(v, a, lam):
    p = lasso.from_least_squares(qp.generate(1, 1, 1, 0), lam, relative=False)
    got = float(p.prox(torch.tensor([[v]], dtype=torch.float64), torch.tensor([[a]], dtype=torch.float64)))
    assert got == pytest.approx(scalar_prox(v, lam * a), abs=1e-15)
    numeric = optimize.minimize_scalar(lambda x: lam * abs(x) + (x - v) ** 2 / (2 * a), bounds=(-11, 11),
                                       method="bounded", options={"xatol": 1e-12}).x
    assert got == pytest.approx(numeric, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 10))
def test_the_soft_threshold_is_firmly_non_expansive(seed, scale):
    """‖S(u) − S(v)‖² ≤ ⟨S(u) − S(v), u − v⟩ ≤ ‖u − v‖², coordinate-wise (the prox of a convex function)."""
    g = torch.Generator().manual_seed(seed)
    U, V = (scale * torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(2))
    tau = torch.rand(5, 7, generator=g, dtype=torch.float64) * scale
    dS, dx = lasso.soft_threshold(U, tau) - lasso.soft_threshold(V, tau), U - V
    assert bool((dS.square() <= dS * dx + 1e-12).all()) and bool((dS.abs() <= dx.abs() + 1e-12).all())


def test_the_soft_thresholds_autograd_derivative_at_the_kink_is_zero():
    """The documented convention: ∂S/∂v = 1 outside [−τ, τ], 0 inside and at the kink |v| = τ (relu'(0) = 0)."""
    V = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    lasso.soft_threshold(V, torch.ones_like(V)).sum().backward()
    assert V.grad.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


# -- objective, gradient, β --------------------------------------------------------------------------------


def test_objective_gradient_and_beta_against_numpy_and_finite_differences():
    p = small(3)
    M, y, lam = p.M.numpy(), p.Y.numpy(), p.lam.numpy()
    X = torch.randn(N, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = X.numpy()
    F = 0.5 * ((np.einsum("nbd,nd->nb", M, x) - y) ** 2).sum(-1) + lam * np.abs(x).sum(-1)
    np.testing.assert_allclose(p.objective_per_instance(X).numpy(), F, rtol=1e-14)
    np.testing.assert_allclose(p.beta.numpy(), np.linalg.svd(M, compute_uv=False)[:, 0] ** 2, rtol=1e-13)
    # ∇f by central differences of the smooth part f = F − λ‖x‖₁ (exact for a quadratic, up to rounding)
    f = lambda Z: p.objective_per_instance(Z) - p.l1(Z)
    h, fd = 1e-4, torch.empty_like(X)
    for j in range(d):
        E = torch.zeros_like(X)
        E[:, j] = h
        fd[:, j] = (f(X + E) - f(X - E)) / (2 * h)
    assert torch.allclose(p.gradient(X), fd, rtol=1e-9, atol=1e-9)
    # F's directional derivative away from the kinks: ⟨∇f + λ sign x, v⟩
    Vdir = torch.randn_like(X)
    h = 1e-6 * float(X.abs().min()) / float(Vdir.abs().max())
    dF = (p.objective_per_instance(X + h * Vdir) - p.objective_per_instance(X - h * Vdir)) / (2 * h)
    want = ((p.gradient(X) + p.lam[:, None] * X.sign()) * Vdir).sum(-1)
    assert torch.allclose(dF, want, rtol=1e-6, atol=1e-8)


# -- the reference optimum ---------------------------------------------------------------------------------


def lbfgs_optimum(p) -> np.ndarray:
    """F_i* by scipy's L-BFGS-B on the smooth split x = u − v, u, v ≥ 0 (a second algorithm)."""
    out = []
    for M, y, lam in zip(p.M.numpy(), p.Y.numpy(), p.lam.numpy()):
        def fun(w, M=M, y=y, lam=lam):
            u, v = np.split(w, 2)
            r = M @ (u - v) - y
            g = M.T @ r
            return 0.5 * r @ r + lam * w.sum(), np.concatenate([g + lam, -g + lam])
        res = optimize.minimize(fun, np.zeros(2 * M.shape[1]), jac=True, method="L-BFGS-B",
                                bounds=[(0, None)] * (2 * M.shape[1]), options={"ftol": 1e-15, "gtol": 1e-13,
                                                                                 "maxiter": 20000})
        out.append(res.fun)
    return np.array(out)


@pytest.mark.parametrize("shape,lam", [((N, d, b), 0.1), ((2, 40, 20), 0.02), ((2, 10, 20), 0.05)])
def test_the_reference_optimum_satisfies_the_subgradient_condition(shape, lam):
    """0 ∈ ∇f(x*) + λ∂‖x*‖₁: ∇f_j = −λ sign x_j on the support, |∇f_j| ≤ λ off it; F* agrees with L-BFGS-B."""
    p = lasso.generate(*shape, 7, lam=lam)
    opt = solvers.reference_optimum(p)
    assert bool((opt.gap <= 1e-10 * opt.F.clamp_min(1)).all())
    g, X, lam_i = p.gradient(opt.X), opt.X, p.lam[:, None]
    on = X != 0
    assert bool(on.any(-1).all())
    assert float(((g + lam_i * X.sign()).abs() * on).max()) < 1e-6 * float(lam_i.max())
    assert bool((g.abs() <= lam_i * (1 + 1e-6))[~on].all())
    np.testing.assert_allclose(opt.F.numpy(), lbfgs_optimum(p), rtol=1e-9)
    assert torch.allclose(opt.F, p.objective_per_instance(opt.X), rtol=0, atol=0)


def test_the_reference_optimum_refuses_what_it_cannot_certify():
    with pytest.raises(RuntimeError, match="raise max_iter"):
        solvers.reference_optimum(small(), max_iter=3)
    with pytest.raises(ValueError, match="tol must be > 0"):
        solvers.reference_optimum(small(), tol=0.0)
    with pytest.raises(TypeError, match="duality_gap"):
        solvers.reference_optimum(qp.generate(N, d, b, 0))


def test_the_duality_gap_bounds_the_suboptimality():
    p = small(9)
    F_star = solvers.reference_optimum(p).F
    for scale in (0.0, 0.3, 3.0):
        X = scale * torch.randn(N, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        assert bool((p.duality_gap(X) >= p.objective_per_instance(X) - F_star - 1e-12).all())


# -- the classical methods -------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 0.9), s=st.floats(0.05, 1.0),
       method=st.sampled_from(["prox", "fista", "gd", "nag"]))
def test_the_reference_optimum_is_below_every_iterate(seed, lam, s, method):
    p = small(seed, lam=lam)
    opt = solvers.reference_optimum(p)
    F = solvers.classical(method)(p, 60, step_scale=s).f
    assert bool((F >= opt.F - opt.gap - 1e-12).all())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 0.9), s=st.floats(0.05, 1.0))
def test_proximal_gradient_decreases_F_for_steps_up_to_one_over_beta(seed, lam, s):
    f = solvers.prox_gradient(small(seed, lam=lam), 80, step_scale=s).f
    assert bool((f[1:] <= f[:-1] + 1e-13 * f[:-1].abs().clamp_min(1)).all())


def test_fista_converges_at_its_rate():
    """F_i(x_T) − F_i* ≤ 2β_i‖x*_i‖²/(T + 1)² (x_0 = 0), with x* the reference minimiser."""
    p = small(11, lam=0.05)
    opt, T = solvers.reference_optimum(p), 50
    F_T = solvers.fista(p, T).f[-1]
    assert bool((F_T - opt.F <= 2 * p.beta * opt.X.square().sum(-1) / (T + 1) ** 2 + 1e-12).all())
