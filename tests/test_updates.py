"""Update rules and the Problem protocol: the learned unroll under gd, nag, prox and fista against plain loops written
here, the untrained learner (W_L = 0, so P ≡ 1) against the classical methods, and a problem family defined in this
file (an ℓ1-regularised least squares) plugged in through the protocol alone; every rule on every family of
ntkcheck.problems (qp, lasso, logistic with l1 and l2) against a loop with ∇f and the prox written out, the untrained
learner against solvers.classical(update), and the NTK of a prox unroll against a dense Jacobian."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ntkcheck.instruments import ntk
from ntkcheck.models import init as inits
from ntkcheck.models import updates
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import lasso, logistic, qp, solvers
from ntkcheck.problems.base import Problem

N, d, b, T = 3, 6, 4, 6
WIDTHS = (2, 16)


@dataclass(frozen=True)
class L1LeastSquares:
    """F_i(x) = ½‖M_i x − y_i‖² + λ‖x‖₁: a family written against the protocol only (prox: soft-thresholding)."""

    ls: qp.Problem
    lam: float

    @property
    def beta(self):
        return self.ls.beta

    @property
    def N(self):
        return self.ls.N

    @property
    def d(self):
        return self.ls.d

    def X0(self):
        return self.ls.X0()

    def objective_per_instance(self, X):
        return self.ls.objective_per_instance(X) + self.lam * X.abs().sum(-1)

    def gradient(self, X):
        return self.ls.gradient(X)

    def prox(self, V, step):
        return V.sign() * torch.relu(V.abs() - self.lam * step)

    def residual(self, X):
        return self.ls.residual(X)

    def select(self, index):
        return L1LeastSquares(self.ls.select(index), self.lam)

    def to(self, device=None, dtype=None):
        return L1LeastSquares(self.ls.to(device, dtype), self.lam)


def least_squares(seed=0):
    return qp.generate(N, d, b, seed)


def model(update, *, trained=True, seed=0):
    """A Math-L2O network; ``trained``: every layer random (P varies), else the deterministic init (W_L = 0)."""
    W = inits.random(WIDTHS, seed) if trained else inits.deterministic(WIDTHS, 2.0, seed)
    return build(WIDTHS, W, update=update)


def plain_loop(net, problem, T, *, momentum, proximal, lam=0.0):
    """The module docstring of ntkcheck.models.updates, written out: ∇f by an einsum on M, the step sizes from the
    network's own step_size at Y_{t−1}, soft-thresholding by its formula."""
    M, Y_data = problem.ls.M if proximal else problem.M, problem.ls.Y if proximal else problem.Y
    beta = problem.beta
    X = Y = torch.zeros(N, d, dtype=torch.float64)
    for t in range(1, T + 1):
        g = torch.einsum("nbd,nb->nd", M, torch.einsum("nbd,nd->nb", M, Y) - Y_data)
        P = net.step_size(torch.stack([g, Y], dim=-1).reshape(-1, 2)).reshape(N, d)
        a = P / beta[:, None]
        V = Y - a * g
        X_new = V.sign() * torch.clamp(V.abs() - lam * a, min=0.0) if proximal else V
        Y = X_new + (t - 1) / (t + 2) * (X_new - X) if momentum else X_new
        X = X_new
    return X


def test_the_least_squares_problem_and_the_l1_family_satisfy_the_protocol():
    p = least_squares()
    assert isinstance(p, Problem) and isinstance(L1LeastSquares(p, 0.1), Problem)
    V = torch.randn(N, d, dtype=torch.float64)
    assert torch.equal(p.prox(V, torch.rand(N, d)), V)  # no nonsmooth part
    assert torch.equal(p.gradient(V), qp.gradient(p, V))
    assert torch.equal(p.objective_per_instance(V), qp.objective_per_instance(p, V))


def test_select_keeps_the_cells_of_a_stacked_problem():
    cells = [least_squares(s) for s in range(3)]
    stacked = qp.Problem(*(torch.stack([getattr(c, f) for c in cells]) for f in ("M", "Y", "beta", "x_star", "H",
                                                                                 "c")))
    picked = stacked.select([2, 0])
    for i, c in zip((2, 0), (picked.select(0), picked.select(1))):
        assert torch.equal(c.M, cells[i].M) and torch.equal(c.beta, cells[i].beta) and torch.equal(c.H, cells[i].H)


@pytest.mark.parametrize("name", list(updates.RULES))
def test_the_learned_unroll_equals_the_plain_loop(name):
    rule = updates.RULES[name]
    lam = 0.05
    p = L1LeastSquares(least_squares(), lam) if rule.proximal else least_squares()
    net = model(name)
    got = net.unroll(p, T).X[-1]
    want = plain_loop(net, p, T, momentum=rule.momentum, proximal=rule.proximal, lam=lam)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    assert rule.proximal or rule.momentum or torch.equal(got, net.unroll(p, T).X[-1])


@pytest.mark.parametrize("name,classical", [("gd", solvers.gd), ("nag", solvers.nag)])
def test_the_untrained_learner_is_its_classical_method(name, classical):
    """W_L = 0 gives φ ≡ 0, P ≡ 1: gd is GD with step 1/β_i, nag is Nesterov's method (ntkcheck.problems.solvers)."""
    p = least_squares()
    traj = model(name, trained=False).unroll(p, T)
    curve = classical(p, T, keep=True)
    for X_t, X_ref in zip(traj.X, curve.X, strict=True):
        assert torch.allclose(X_t, X_ref, rtol=1e-12, atol=1e-15)


def test_the_untrained_proximal_learners_are_ista_and_fista():
    p = L1LeastSquares(least_squares(), 0.05)
    for name in ("prox", "fista"):
        net = model(name, trained=False)
        assert torch.allclose(net.unroll(p, T).X[-1], plain_loop(net, p, T, momentum=name == "fista", proximal=True,
                                                                  lam=0.05), rtol=1e-12, atol=1e-15)
    X = model("prox", trained=False).unroll(p, 200).X  # ISTA with step 1/β decreases F monotonically
    F = torch.stack([p.objective_per_instance(x).sum() for x in X])
    assert bool((F[1:] <= F[:-1] + 1e-12).all())


def test_on_a_smooth_problem_prox_is_gd_and_fista_is_nag():
    p = least_squares()
    assert torch.equal(model("prox").unroll(p, T).X[-1], model("gd").unroll(p, T).X[-1])
    assert torch.equal(model("fista").unroll(p, T).X[-1], model("nag").unroll(p, T).X[-1])


@pytest.mark.parametrize("name", ["nag", "prox", "fista"])
def test_the_ntk_of_a_momentum_or_prox_unroll_equals_a_dense_jacrev(name):
    """auto takes the func Jacobian (the structured one is derived for gd only); on the ℓ1 family the soft-threshold's
    kink gets autograd's derivative of relu at 0 (zero), which a draw almost surely never meets. K = J Jᵀ, J by a
    direct jacrev of vec(M X_T − Y) through functional_call."""
    p = L1LeastSquares(least_squares(), 0.05) if updates.RULES[name].proximal else least_squares()
    net = model(name, trained=True).with_detach(False)  # the true Jacobian J (mode="true", the default)
    K = ntk.empirical_ntk(net, p, 3).K
    with pytest.raises(ValueError, match="gd"):
        ntk.jacobian(net, least_squares(), 3, method="structured")
    params = {k: v.detach() for k, v in net.named_parameters()}

    def r(w):
        return p.residual(torch.func.functional_call(net, w, (p, 3)).X[-1]).reshape(-1)

    J = torch.cat([v.reshape(N * b, -1) for v in torch.func.jacrev(r)(params).values()], dim=1)
    assert torch.allclose(K, J @ J.T, rtol=1e-12, atol=1e-12 * float(K.abs().max()))
    assert float(K.abs().max()) > 0


def test_an_unknown_rule_names_update():
    with pytest.raises(ValueError, match="update must be one of gd, nag, prox, fista"):
        updates.rule("adam")


# -- the families of ntkcheck.problems: lasso and logistic -----------------------------------------------------

FAMILIES = {
    "qp": lambda seed=0: least_squares(seed),
    "lasso": lambda seed=0: lasso.generate(N, d, b, seed, lam=0.1),
    "logistic-l1": lambda seed=0: logistic.generate(N, d, 2 * d, seed, lam=0.3),
    "logistic-l2": lambda seed=0: logistic.generate(N, d, 2 * d, seed, lam=0.05, penalty="l2"),
}


def formula_gradient(p, X):
    """∇f written out with einsums on the data (not the problem's own method)."""
    if isinstance(p, logistic.Problem):
        z = torch.einsum("nbd,nd->nb", p.M, X)
        g = torch.einsum("nbd,nb->nd", p.M, -p.Y / (1 + torch.exp(p.Y * z)))
        return g + p.lam[:, None] * X if p.penalty == "l2" else g
    return torch.einsum("nbd,nb->nd", p.M, torch.einsum("nbd,nd->nb", p.M, X) - p.Y)


def formula_prox(p, V, a):
    """sign(v)·max(|v| − λa, 0) for an ℓ1 term, v itself otherwise."""
    if isinstance(p, qp.Problem) or getattr(p, "penalty", "l1") == "l2":
        return V
    return V.sign() * torch.clamp(V.abs() - p.lam[:, None] * a, min=0.0)


def family_loop(net, p, T, *, momentum, proximal):
    """The updates' module docstring with ∇f and the prox written out (formula_gradient, formula_prox)."""
    X = Y = torch.zeros(N, d, dtype=torch.float64)
    for t in range(1, T + 1):
        g = formula_gradient(p, Y)
        P = net.step_size(torch.stack([g, Y], dim=-1).reshape(-1, 2)).reshape(N, d)
        a = P / p.beta[:, None]
        X_new = formula_prox(p, Y - a * g, a) if proximal else Y - a * g
        Y = X_new + (t - 1) / (t + 2) * (X_new - X) if momentum else X_new
        X = X_new
    return X


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", list(updates.RULES))
def test_every_rule_on_every_family_equals_its_plain_loop(family, name):
    rule = updates.RULES[name]
    p, net = FAMILIES[family](), model(name)
    got = net.unroll(p, T).X[-1]
    want = family_loop(net, p, T, momentum=rule.momentum, proximal=rule.proximal)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", list(updates.RULES))
def test_the_untrained_learner_is_its_classical_method_on_every_family(family, name):
    """W_L = 0: P ≡ 1, and the unroll is solvers.classical(update) (GD, NAG, proximal gradient, FISTA) to 1e-12."""
    p = FAMILIES[family](1)
    traj = model(name, trained=False).unroll(p, 25)
    curve = solvers.classical(name)(p, 25, keep=True)
    assert all(bool((P == 1).all()) for P in traj.P)
    for X_t, X_ref in zip(traj.X, curve.X, strict=True):
        assert torch.allclose(X_t, X_ref, rtol=1e-12, atol=1e-15)
    if updates.RULES[name].proximal and family in ("lasso", "logistic-l1"):
        assert bool((traj.X[-1] == 0).any())  # the prox acted: soft-thresholding made exact zeros


@pytest.mark.parametrize("family", ["lasso", "logistic-l1"])
@pytest.mark.parametrize("name", ["prox", "fista"])
def test_the_ntk_of_a_prox_unroll_equals_a_dense_jacobian_product(family, name):
    """K = J Jᵀ of the residual (lasso: M X_T − Y; logistic: the logits M X_T) by ntk.empirical_ntk (the func path)
    against a dense jacrev of vec(residual(X_T)) through functional_call. The soft-threshold's kink |v| = λa gets
    autograd's derivative of relu at 0, which is 0 (and sign's derivative is 0): ∂S/∂v = 1 where |v| > λa, 0 where
    |v| ≤ λa, kink included. A draw almost surely never lands on the kink; the zeros the prox makes are inside
    [−λa, λa], where 0 is the derivative."""
    p = FAMILIES[family]()
    net = model(name, trained=True).with_detach(False)
    K = ntk.empirical_ntk(net, p, 4).K
    params = {k: v.detach() for k, v in net.named_parameters()}

    def r(w):
        return p.residual(torch.func.functional_call(net, w, (p, 4)).X[-1]).reshape(-1)

    rows = p.residual(p.X0()).numel()
    J = torch.cat([v.reshape(rows, -1) for v in torch.func.jacrev(r)(params).values()], dim=1)
    assert torch.allclose(K, J @ J.T, rtol=1e-12, atol=1e-12 * float(K.abs().max()))
    assert float(K.abs().max()) > 0
    assert bool((net.unroll(p, 4).X[-1] == 0).any())  # thresholded coordinates are part of the map


@pytest.mark.parametrize("family", ["lasso", "logistic-l1", "logistic-l2"])
@pytest.mark.parametrize("name", list(updates.RULES))
def test_every_rule_on_every_family_runs_on_the_meta_device(family, name):
    """On torch's meta device (shapes, no values) a tensor made on the CPU by mistake fails: the unroll, the objective,
    its gradient, the prox, the duality gap and the func NTK all follow the problem's device."""
    meta = torch.device("meta")
    p = FAMILIES[family]().to(device=meta)
    net = model(name).to(meta)
    X = net.unroll(p, 3).X[-1]
    assert X.device.type == "meta" and tuple(X.shape) == (N, d)
    for out in (p.objective_per_instance(X), p.gradient(X), p.prox(X, X), p.duality_gap(X), p.residual(X)):
        assert out.device.type == "meta"
    J = ntk.jacobian(net, p, 2, method="func")
    assert all(v.device.type == "meta" for v in J.values())
