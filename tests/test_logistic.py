"""The logistic family (ntkcheck.problems.logistic), in float64, against independent computations: softplus against
its defining formula where that is exact, objective and gradient against numpy and finite differences, β against the
Hessian at 0 (torch.func.hessian), the reference optimum against the optimality conditions and scipy's L-BFGS-B;
hypothesis properties of the classical methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special

from ntkcheck.problems import logistic, solvers
from ntkcheck.problems.base import Problem

N, d, b = 3, 6, 20


def small(seed=0, **kw):
    return logistic.generate(N, d, b, seed, **kw)


def test_the_draw():
    p = small(2, sparsity=0.5)
    assert isinstance(p, Problem) and p.M.dtype == torch.float64
    np.testing.assert_allclose(np.linalg.norm(p.M.numpy(), axis=-1), 1.0, rtol=1e-15)  # unit-norm samples
    assert set(p.Y.unique().tolist()) == {-1.0, 1.0}
    assert (p.x_star != 0).sum(-1).tolist() == [math.ceil(0.5 * d)] * N
    lam_max = 0.5 * np.abs(np.einsum("nbd,nb->nd", p.M.numpy(), p.Y.numpy())).max(-1)
    np.testing.assert_allclose(p.lam.numpy(), 0.1 * lam_max, rtol=1e-15)
    assert torch.equal(small(2, sparsity=0.5).Y, p.Y) and not torch.equal(small(3, sparsity=0.5).Y, p.Y)
    assert not torch.equal(logistic.generate(N, d, b, 2, "test", sparsity=0.5).M, p.M)
    with pytest.raises(ValueError, match="penalty must be one of l1, l2"):
        small(penalty="l3")
    with pytest.raises(ValueError, match="lam must be > 0 for penalty='l2'"):
        small(penalty="l2", lam=0.0)
    with pytest.raises(ValueError, match="labels"):
        logistic.from_tensors(p.M, p.Y.clamp_min(0), 0.1)


def test_the_labels_follow_the_logistic_model():
    """P(y = +1) = σ(mᵀx*): over many samples the label mean matches E[2σ(mᵀx*) − 1] within 4 standard errors."""
    p = logistic.generate(1, 5, 20000, 0, sparsity=1.0)
    q = special.expit(np.einsum("bd,d->b", p.M[0].numpy(), p.x_star[0].numpy()))
    y = p.Y[0].numpy()
    assert abs(y.mean() - (2 * q - 1).mean()) < 4 * np.sqrt((4 * q * (1 - q)).sum()) / y.size
    agree = (y == np.where(q > 0.5, 1, -1)).mean()
    assert agree > 0.5  # the labels carry the planted signal


def test_softplus_is_exact_does_not_overflow_and_has_the_derivative_sigma():
    w = torch.tensor([-800.0, -40.0, -1.0, 0.0, 1e-20, 1.0, 40.0, 800.0], dtype=torch.float64, requires_grad=True)
    got = logistic.softplus(w)
    got.sum().backward()  # autograd's derivative is σ(w), at the kink-free w = 0 too
    np.testing.assert_allclose(w.grad.numpy(), special.expit(w.detach().numpy()), rtol=1e-15, atol=0)
    got = got.detach()
    w = w.detach()
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), np.logaddexp(0.0, w.numpy()), rtol=1e-15, atol=0)
    assert float(logistic.softplus(torch.tensor(30.0, dtype=torch.float64)) - 30.0) == pytest.approx(math.exp(-30),
                                                                                                        rel=1e-6)


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_objective_gradient_and_beta(penalty):
    p = small(4, penalty=penalty)
    M, y, lam = p.M.numpy(), p.Y.numpy(), p.lam.numpy()
    X = torch.randn(N, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = X.numpy()
    pen = lam * (np.abs(x).sum(-1) if penalty == "l1" else 0.5 * (x * x).sum(-1))
    F = np.logaddexp(0.0, -y * np.einsum("nbd,nd->nb", M, x)).sum(-1) + pen
    np.testing.assert_allclose(p.objective_per_instance(X).numpy(), F, rtol=1e-14)
    # ∇f by central differences of f (F less the l1 term, which is not in f)
    l1 = p.lam * X.abs().sum(-1) if penalty == "l1" else 0
    f = lambda Z: p.objective_per_instance(Z) - (p.lam * Z.abs().sum(-1) if penalty == "l1" else 0)
    assert torch.allclose(f(X), p.objective_per_instance(X) - l1)
    h, fd = 1e-5, torch.empty_like(X)
    for j in range(d):
        E = torch.zeros_like(X)
        E[:, j] = h
        fd[:, j] = (f(X + E) - f(X - E)) / (2 * h)
    assert torch.allclose(p.gradient(X), fd, rtol=1e-8, atol=1e-9)
    # β_i = ‖M_i‖²/4 (+ λ_i) is the Hessian's largest eigenvalue at x = 0, where σ' = ¼ is largest
    for i in range(N):
        H = torch.func.hessian(lambda z, i=i: f(torch.cat([X[:i], z[None], X[i + 1:]]))[i])(torch.zeros(d).double())
        assert float(torch.linalg.eigvalsh(H)[-1]) == pytest.approx(float(p.beta[i]), rel=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 30))
def test_the_gradient_is_beta_lipschitz(seed, scale):
    p = small(seed % 7)
    g = torch.Generator().manual_seed(seed)
    X, Z = (scale * torch.randn(N, d, generator=g, dtype=torch.float64) for _ in range(2))
    lhs = (p.gradient(X) - p.gradient(Z)).norm(dim=-1)
    assert bool((lhs <= p.beta * (X - Z).norm(dim=-1) * (1 + 1e-12)).all())


def lbfgs_optimum(p) -> np.ndarray:
    """F_i* by scipy's L-BFGS-B: on the split x = u − v, u, v ≥ 0 for l1, directly for l2 (a second algorithm)."""
    out = []
    for M, y, lam in zip(p.M.numpy(), p.Y.numpy(), p.lam.numpy()):
        def parts(x, M=M, y=y):
            z = y * (M @ x)
            return np.logaddexp(0.0, -z).sum(), M.T @ (-y * special.expit(-z))

        def fun(w, lam=lam):
            if p.penalty == "l2":
                f, g = parts(w)
                return f + 0.5 * lam * w @ w, g + lam * w
            u, v = np.split(w, 2)
            f, g = parts(u - v)
            return f + lam * w.sum(), np.concatenate([g + lam, -g + lam])
        n = M.shape[1] * (2 if p.penalty == "l1" else 1)
        bounds = [(0, None)] * n if p.penalty == "l1" else None
        res = optimize.minimize(fun, np.zeros(n), jac=True, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000})
        out.append(res.fun)
    return np.array(out)


@pytest.mark.parametrize("penalty,lam", [("l1", 0.1), ("l1", 0.02), ("l2", 0.05)])
def test_the_reference_optimum(penalty, lam):
    """l1: ∇f_j = −λ sign x_j on the support, |∇f_j| ≤ λ off it; l2: ∇F = 0. F* agrees with L-BFGS-B."""
    p = small(5, lam=lam, penalty=penalty)
    opt = solvers.reference_optimum(p)
    assert bool((opt.gap <= 1e-10 * opt.F.clamp_min(1)).all())
    g, X, lam_i = p.gradient(opt.X), opt.X, p.lam[:, None]
    if penalty == "l2":
        assert float(g.abs().max()) < 1e-5
    else:
        on = X != 0
        assert bool(on.any(-1).all())
        assert float(((g + lam_i * X.sign()).abs() * on).max()) < 1e-5 * float(lam_i.max())
        assert bool((g.abs() <= lam_i * (1 + 1e-6))[~on].all())
    np.testing.assert_allclose(opt.F.numpy(), lbfgs_optimum(p), rtol=1e-9)


def test_the_duality_gap_bounds_the_suboptimality():
    for penalty in ("l1", "l2"):
        p = small(8, penalty=penalty)
        F_star = solvers.reference_optimum(p).F
        for scale in (0.0, 0.5, 5.0):
            X = scale * torch.randn(N, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
            assert bool((p.duality_gap(X) >= p.objective_per_instance(X) - F_star - 1e-12).all())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 0.9), s=st.floats(0.05, 1.0), penalty=st.sampled_from(["l1",
                                                                                                                   "l2"]),
       method=st.sampled_from(["prox", "fista", "gd", "nag"]))
def test_the_reference_optimum_is_below_every_iterate(seed, lam, s, penalty, method):
    p = small(seed, lam=lam, penalty=penalty)
    opt = solvers.reference_optimum(p)
    F = solvers.classical(method)(p, 60, step_scale=s).f
    assert bool((F >= opt.F - opt.gap - 1e-12).all())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 0.9), s=st.floats(0.05, 1.0),
       penalty=st.sampled_from(["l1", "l2"]))
def test_proximal_gradient_decreases_F_for_steps_up_to_one_over_beta(seed, lam, s, penalty):
    f = solvers.prox_gradient(small(seed, lam=lam, penalty=penalty), 80, step_scale=s).f
    assert bool((f[1:] <= f[:-1] + 1e-13 * f[:-1].abs().clamp_min(1)).all())


def test_to_and_select():
    p = small(1)
    f32 = p.to(dtype=torch.float32)
    assert {t.dtype for t in (f32.M, f32.Y, f32.lam, f32.beta, f32.x_star)} == {torch.float32}
    cells = [small(s) for s in range(3)]
    stacked = logistic.Problem(*(torch.stack([getattr(c, f) for c in cells]) for f in ("M", "Y", "lam", "beta")))
    X = torch.randn(2, N, d, dtype=torch.float64)
    picked = stacked.select([2, 0])
    want = torch.stack([cells[2].objective_per_instance(X[0]), cells[0].objective_per_instance(X[1])])
    assert torch.allclose(picked.objective_per_instance(X), want, rtol=1e-14, atol=0)
    assert torch.allclose(picked.gradient(X), torch.stack([cells[2].gradient(X[0]), cells[0].gradient(X[1])]),
                          rtol=1e-14, atol=0)
