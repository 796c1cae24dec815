"""Math-L2O (ntkcheck.models.math_l2o) against an independent numpy implementation, closed-form properties and
finite differences, in float64.

The numpy reference below is written from these equations alone (docs/ARCHITECTURE.md §1), not from the model:

    z_t = (∇F(X_{t−1}), X_{t−1}) per coordinate, rows ordered (instance i, coordinate j) → row i·d + j
    G_0 = Z_t, G_ℓ = ReLU(G_{ℓ−1} W_ℓ + b_ℓ) (ℓ < L),  φ = G_{L−1} W_L + b_L,  P_t = 2σ(φ)
    X_t = X_{t−1} − (s/β_i) P_t ⊙ ∇F(X_{t−1}),  β_i = λ_max(M_iᵀM_i)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ntkcheck.config import hidden_widths
from ntkcheck.engine.training import training_loss
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems

# -- the independent numpy reference ---------------------------------------------------------------------


def np_params(params: dict) -> dict:
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in params.items()}


def np_forward(W: dict, Z: np.ndarray, L: int):
    """Features G_1..G_{L−1}, pre-activations of layers 1..L−1, and φ, for rows Z (R, 2)."""
    G, feats, pres = Z, [], []
    for ell in range(1, L):
        pre = G @ W[f"W{ell}"] + W.get(f"b{ell}", 0.0)
        G = np.maximum(pre, 0.0)
        pres.append(pre)
        feats.append(G)
    phi = (G @ W[f"W{L}"])[:, 0] + W.get(f"b{L}", np.zeros(1))[0]
    return feats, pres, phi


def np_step_size(W, Z, L):
    return 2.0 / (1.0 + np.exp(-np_forward(W, Z, L)[2]))


def np_beta(M):
    return np.array([np.linalg.eigvalsh(Mi.T @ Mi)[-1] for Mi in M])


def np_grad(M, Y, X):
    return np.einsum("nbd,nb->nd", M, np.einsum("nbd,nd->nb", M, X) - Y)


def np_F(M, Y, X):
    return 0.5 * np.sum((np.einsum("nbd,nd->nb", M, X) - Y) ** 2)


def np_unroll(W, M, Y, T, L, s=1.0, frozen=None):
    """Iterates X_0..X_T, inputs Z_1..Z_T and all pre-activations; ``frozen`` replaces Z_t."""
    N, _, d = M.shape
    beta = np_beta(M)
    X = np.zeros((N, d))
    Xs, Zs, pres = [X], [], []
    for t in range(1, T + 1):
        g = np_grad(M, Y, X)
        Z = np.stack((g, X), axis=-1).reshape(N * d, 2) if frozen is None else frozen[t - 1]
        _, pre, phi = np_forward(W, Z, L)
        P = (2.0 / (1.0 + np.exp(-phi))).reshape(N, d)
        X = X - (s / beta)[:, None] * P * g
        Xs.append(X)
        Zs.append(Z)
        pres.extend(pre)
    return Xs, Zs, pres


def np_gd(M, Y, T, s):
    """Plain GD from 0 with step s/β_i, written out (not problems.gd_trajectory)."""
    beta = np_beta(M)
    X = np.zeros((M.shape[0], M.shape[2]))
    out = [X]
    for _ in range(T):
        X = X - (s / beta)[:, None] * np_grad(M, Y, X)
        out.append(X)
    return out


def arrays(p):
    return p.M.numpy(), p.Y.numpy()


# -- GD at initialisation -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 3),
    d=st.integers(1, 6),
    data=st.data(),
    width=st.integers(1, 8),
    L=st.integers(2, 4),
    T=st.integers(0, 6),
    e=st.floats(0.1, 100.0),
    bias=st.booleans(),
    absolute=st.booleans(),
    detach=st.booleans(),
    s=st.floats(0.1, 1.9),
    seed=st.integers(0, 2**31 - 1),
)
def test_untrained_model_is_gd(N, d, data, width, L, T, e, bias, absolute, detach, s, seed):
    b = data.draw(st.integers(1, d), label="b")
    p = problems.generate(N, d, b, seed)
    widths = hidden_widths(width, L)
    model = build(widths, inits.deterministic(widths, e, seed, bias=bias, absolute=absolute),
                  bias=bias, detach=detach, step_scale=s)
    with torch.no_grad():
        traj = model.unroll(p, T)
    assert len(traj.X) == T + 1 and len(traj.P) == T
    for P in traj.P:
        assert torch.equal(P, torch.ones(N, d, dtype=torch.float64))  # 2σ(0) = 1 exactly
    M, Y = arrays(p)
    for t, (X, X_ref) in enumerate(zip(traj.X, np_gd(M, Y, T, s))):
        scale = max(1.0, float(np.abs(X_ref).max()))
        np.testing.assert_allclose(X.numpy(), X_ref, rtol=0, atol=1e-12 * scale, err_msg=f"t={t}")


def test_untrained_model_matches_problems_gd_trajectory_at_small_scale():
    # the two GD implementations of the package agree, at the configuration of the paper's Fig. 5
    p = problems.generate(32, 32, 25, seed=0)
    widths = hidden_widths(1024, 3)
    model = build(widths, inits.deterministic(widths, 50.0, 0))
    with torch.no_grad():
        X = model.unroll(p, 20).X
    for a, b in zip(X, problems.gd_trajectory(p, 20)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# -- the network on given rows ------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_step_size_and_features_against_numpy(L, bias):
    widths = hidden_widths(17, L)
    params = inits.random(widths, seed=L, bias=bias)
    params[f"W{L}"] = 3.0 * params[f"W{L}"]  # spread P over (0, 2)
    model = build(widths, params, bias=bias)
    Z = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3.0
    feats_ref, _, phi_ref = np_forward(np_params(params), Z.numpy(), L)
    with torch.no_grad():
        P = model.step_size(Z)
        feats = model.features(Z)
    assert P.shape == (200,)
    np.testing.assert_allclose(P.numpy(), 2.0 / (1.0 + np.exp(-phi_ref)), rtol=1e-13, atol=0)
    assert len(feats) == L - 1
    for G, G_ref in zip(feats, feats_ref):
        np.testing.assert_allclose(G.numpy(), G_ref, rtol=1e-13, atol=1e-15)
    assert ((P > 0) & (P < 2)).all()
    assert P.max() - P.min() > 0.1  # a non-trivial test: the step sizes genuinely vary


def test_unroll_with_random_init_against_numpy():
    p = problems.generate(3, 5, 4, seed=1)
    widths = hidden_widths(6, 3)
    params = inits.random(widths, seed=3, bias=True)
    model = build(widths, params, bias=True, step_scale=0.7)
    with torch.no_grad():
        traj = model.unroll(p, 5, record_active=True)
    M, Y = arrays(p)
    Xs, Zs, _ = np_unroll(np_params(params), M, Y, 5, 3, s=0.7)
    for X, X_ref in zip(traj.X, Xs):
        np.testing.assert_allclose(X.numpy(), X_ref, rtol=1e-12, atol=1e-13)
    for t, (P, Z) in enumerate(zip(traj.P, Zs), start=1):
        np.testing.assert_allclose(P.numpy().ravel(), np_step_size(np_params(params), Z, 3), rtol=1e-12)
        G_last = np_forward(np_params(params), Z, 3)[0][-1]
        np.testing.assert_allclose(float(traj.active[t - 1]), np.mean(G_last > 0), rtol=0, atol=1e-15)
    # not GD: the random last layer moves P away from 1
    assert any(float((P - 1).abs().max()) > 1e-3 for P in traj.P)


# -- features at step t ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
def test_features_at_against_numpy(L):
    p = problems.generate(2, 6, 4, seed=2)
    widths = hidden_widths(7, L)
    params = inits.random(widths, seed=5)
    model = build(widths, params)
    M, Y = arrays(p)
    W = np_params(params)
    _, Zs, _ = np_unroll(W, M, Y, 4, L)
    for t in range(1, 5):
        feats = model.features_at(p, t)
        ref = np_forward(W, Zs[t - 1], L)[0]  # features of the inputs at X_{t−1}
        assert len(feats) == L - 1
        for G, G_ref in zip(feats, ref):
            assert G.shape == (2 * 6, G_ref.shape[1])
            np.testing.assert_allclose(G.numpy(), G_ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="t must be"):
        model.features_at(p, 0)


def test_features_at_rows_are_instance_major():
    # row i·d + j of G holds coordinate j of instance i: check with a network that reads the input out
    p = problems.generate(3, 4, 2, seed=0)
    model = build((2,), {"W1": torch.eye(2, dtype=torch.float64), "W2": torch.zeros(2, 1, dtype=torch.float64)})
    G = model.features_at(p, 1)[-1].numpy()  # ReLU(z) with z = (∇F(0), 0) = (−Mᵀy, 0)
    g = -np.einsum("nbd,nb->nd", *arrays(p))
    np.testing.assert_allclose(G[:, 0], np.maximum(g, 0).reshape(-1), rtol=1e-14)
    np.testing.assert_array_equal(G[:, 1], 0.0)


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_rank_of_wide_features_at_step_one(L, seed):
    """At t = 1, X_0 = 0: every input row is z_j = (g_j, 0) = g_j·e₁ with g = ∇F(0) = −Mᵀy.

    A bias-free ReLU network is positively homogeneous, G(c·z) = c·G(z) for c ≥ 0, so
        G_{L−1,1}[j] = g_j⁺·G(e₁) + g_j⁻·G(−e₁)        (g⁺ = max(g, 0), g⁻ = max(−g, 0)).
    The rank is ≤ 2 — not ≤ 1: ∇F(0) has coordinates of both signs, and G(e₁), G(−e₁) are in general
    independent. It is ≤ 1 when one of G(±e₁) vanishes, which the 'absolute' init forces: W_1 ≥ 0 makes
    ReLU(−e₁ᵀW_1) = 0, hence G(−e₁) = 0 at every later layer.
    """
    p = problems.generate(4, 24, 20, seed=seed)
    widths = hidden_widths(64, L)
    g = problems.gradient(p, p.X0()).numpy().reshape(-1)
    assert (g > 0).any() and (g < 0).any()
    for absolute in (False, True):
        model = build(widths, inits.deterministic(widths, 10.0, seed, absolute=absolute))
        G = model.features_at(p, 1)[-1].numpy()
        e1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        with torch.no_grad():
            Gp, Gm = model.features(e1)[-1].numpy()
        recon = np.maximum(g, 0)[:, None] * Gp[None] + np.maximum(-g, 0)[:, None] * Gm[None]
        np.testing.assert_allclose(G, recon, rtol=1e-12, atol=1e-12 * np.abs(G).max())
        sv = np.linalg.svd(G, compute_uv=False)
        tol = sv[0] * 1e-10
        rank = int((sv > tol).sum())
        assert rank <= (1 if absolute else 2)
        # the rank is exactly the number of independent non-zero vectors among G(e₁), G(−e₁)
        assert rank == np.linalg.matrix_rank(np.stack([Gp, Gm]), tol=1e-10 * max(np.abs(Gp).max(), np.abs(Gm).max()))


def test_rank_two_is_attained():
    # '≤ 2' is tight: some seed of the deterministic init gives rank exactly 2 at step 1
    p = problems.generate(2, 16, 12, seed=0)
    widths = hidden_widths(32, 3)
    ranks = []
    for seed in range(10):
        G = build(widths, inits.deterministic(widths, 5.0, seed)).features_at(p, 1)[-1].numpy()
        sv = np.linalg.svd(G, compute_uv=False)
        ranks.append(int((sv > sv[0] * 1e-10).sum()))
    assert max(ranks) == 2 and all(r in (1, 2) for r in ranks), ranks


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("c", [4.0, 0.37, 13.0])
def test_positive_homogeneity_in_the_inner_weights(L, c):
    """Bias-free ReLU: scaling W_1..W_{L−1} by c > 0 scales G_{L−1} and φ by c^{L−1} (W_L fixed, random)."""
    widths = hidden_widths(9, L)
    params = inits.deterministic(widths, 2.0, seed=L)
    params[f"W{L}"] = torch.randn(9, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    scaled = {k: (v if k == f"W{L}" else c * v) for k, v in params.items()}
    m, mc = build(widths, params), build(widths, scaled)
    Z = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        G, Gc = m.features(Z)[-1], mc.features(Z)[-1]
        P, Pc = m.step_size(Z), mc.step_size(Z)
    assert G.abs().max() > 0
    if c == 4.0:  # a power of two commutes with every rounding: exact
        assert torch.equal(Gc, c ** (L - 1) * G)
    torch.testing.assert_close(Gc, c ** (L - 1) * G, rtol=1e-13, atol=0)
    # P = 2σ(φ) with φ = G_{L−1}W_L, so P_c = 2σ(c^{L−1}·logit(P/2)) (φ is moderate at the unscaled weights)
    phi = torch.logit(P / 2)
    assert phi.abs().max() < 20
    torch.testing.assert_close(Pc, 2 * torch.sigmoid(c ** (L - 1) * phi), rtol=1e-9, atol=1e-12)
    # at t = 1 the inputs do not depend on W (X_0 = 0), so the same holds for features_at
    p = problems.generate(2, 5, 4, seed=0)
    torch.testing.assert_close(mc.features_at(p, 1)[-1], c ** (L - 1) * m.features_at(p, 1)[-1], rtol=1e-13, atol=0)


# -- gradients: BPTT against finite differences -----------------------------------------------------------

N_, D_, B_, WIDTH_, T_, L_ = 2, 4, 3, 6, 3, 3
KINK_MARGIN = 1e-4


def flat_names(params):
    return list(params)  # the model's registration order: W1, (b1), W2, …


def flatten(params):
    return np.concatenate([params[k].ravel() for k in flat_names(params)])


def unflatten(vec, like):
    out, k = {}, 0
    for name in flat_names(like):
        n = like[name].size
        out[name] = vec[k : k + n].reshape(like[name].shape)
        k += n
    return out


def kink_free_setup(bias):
    """A problem and random weights for which no pre-activation along the trajectory is within
    KINK_MARGIN of 0 (so that ±h perturbations never cross a ReLU kink). W_L is enlarged so that P
    varies and every layer has a sizeable gradient."""
    for seed in range(100):
        p = problems.generate(N_, D_, B_, seed)
        widths = hidden_widths(WIDTH_, L_)
        params = inits.random(widths, seed, bias=bias)
        params[f"W{L_}"] = 3.0 * params[f"W{L_}"]
        W = np_params(params)
        M, Y = arrays(p)
        _, _, pres = np_unroll(W, M, Y, T_, L_)
        if min(np.abs(pre).min() for pre in pres) > KINK_MARGIN:
            return p, widths, params
    raise AssertionError("no kink-free seed found")


def bptt_grad(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return np.concatenate([p.grad.numpy().ravel() for _, p in model.named_parameters()]), float(loss.detach())


def central_fd(f, w0, h=1e-6):
    g = np.zeros_like(w0)
    for k in range(w0.size):
        e = np.zeros_like(w0)
        e[k] = h
        g[k] = (f(w0 + e) - f(w0 - e)) / (2 * h)
    return g


def assert_grad_close(g, g_ref, rtol=1e-6):
    err = np.linalg.norm(g - g_ref)
    assert err <= rtol * np.linalg.norm(g_ref), (err, np.linalg.norm(g_ref))
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=rtol * np.abs(g_ref).max())


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kind", ["last", "mean", "weighted"])
def test_true_bptt_gradient_matches_finite_differences(bias, kind):
    p, widths, params = kink_free_setup(bias)
    model = build(widths, params, bias=bias, detach=False)
    g, loss = bptt_grad(model, lambda: training_loss(p, model.unroll(p, T_), kind))
    M, Y = arrays(p)
    W0 = np_params(params)

    def np_loss(vec):
        F_t = [np_F(M, Y, X) for X in np_unroll(unflatten(vec, W0), M, Y, T_, L_)[0][1:]]
        if kind == "last":
            return F_t[-1]
        if kind == "mean":
            return np.mean(F_t)
        return np.dot(np.arange(1, T_ + 1), F_t) / np.arange(1, T_ + 1).sum()

    np.testing.assert_allclose(loss, np_loss(flatten(W0)), rtol=1e-12)
    g_fd = central_fd(np_loss, flatten(W0))
    assert_grad_close(g, g_fd)
    # every layer takes part: no block of the gradient is zero
    k = 0
    for name in flat_names(W0):
        n = W0[name].size
        assert np.linalg.norm(g[k : k + n]) > 1e-6 * np.linalg.norm(g), name
        k += n


@pytest.mark.parametrize("bias", [False, True])
def test_detached_bptt_is_gradient_of_frozen_input_surrogate(bias):
    """detach=True: BPTT differentiates W' ↦ F(X_T) with z_1..z_T frozen at their values along the
    trajectory at W. That is a different map from W' ↦ F(X_T(W')); at a random W the two gradients differ."""
    p, widths, params = kink_free_setup(bias)
    M, Y = arrays(p)
    W0 = np_params(params)
    Xs, Zs, _ = np_unroll(W0, M, Y, T_, L_)

    model = build(widths, params, bias=bias, detach=True)
    g_det, loss = bptt_grad(model, lambda: problems.objective(p, model.unroll(p, T_).X[-1]))
    np.testing.assert_allclose(loss, np_F(M, Y, Xs[-1]), rtol=1e-12)

    def surrogate(vec):
        return np_F(M, Y, np_unroll(unflatten(vec, W0), M, Y, T_, L_, frozen=Zs)[0][-1])

    def true_loss(vec):
        return np_F(M, Y, np_unroll(unflatten(vec, W0), M, Y, T_, L_)[0][-1])

    w0 = flatten(W0)
    g_sur = central_fd(surrogate, w0)
    g_true = central_fd(true_loss, w0)
    assert_grad_close(g_det, g_sur)
    # the modes are genuinely different here
    assert np.linalg.norm(g_det - g_true) > 1e-3 * np.linalg.norm(g_true)

    # model.unroll(inputs=…) runs that surrogate: same forward at W, same gradient as detached BPTT
    frozen = [torch.from_numpy(Z) for Z in Zs]
    for detach in (True, False):  # with given inputs the detach flag is irrelevant
        m = build(widths, params, bias=bias, detach=detach)
        traj = m.unroll(p, T_, inputs=frozen)
        for X, X_ref in zip(traj.X, Xs):
            np.testing.assert_allclose(X.detach().numpy(), X_ref, rtol=1e-12, atol=1e-14)
        g_inp, _ = bptt_grad(m, lambda: problems.objective(p, m.unroll(p, T_, inputs=frozen).X[-1]))
        np.testing.assert_allclose(g_inp, g_det, rtol=1e-10, atol=1e-12 * np.abs(g_det).max())


def test_true_and_detached_gradients_agree_at_deterministic_init():
    """With W_L = 0, P ≡ 1 does not depend on z, so the paths through z carry a factor W_L = 0: the two
    gradients coincide, the inner layers get exactly zero gradient, and only W_L moves (docs/ARCHITECTURE.md §2)."""
    p = problems.generate(3, 6, 5, seed=0)
    widths = hidden_widths(8, 3)
    params = inits.deterministic(widths, 5.0, 0)
    grads = []
    for detach in (True, False):
        model = build(widths, params, detach=detach)
        g, _ = bptt_grad(model, lambda: problems.objective(p, model.unroll(p, 4).X[-1]))
        grads.append(g)
        n_inner = 2 * 2 + 2 * 8
        assert np.all(g[:n_inner] == 0.0)
        assert np.linalg.norm(g[n_inner:]) > 0
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=0)


class _Loss(nn.Module):
    """F(X_T) as the forward of a module, so that torch.func.functional_call can swap the weights."""

    def __init__(self, model, problem, T, inputs=None):
        super().__init__()
        self.model, self.problem, self.T, self.inputs = model, problem, T, inputs

    def forward(self):
        return problems.objective(self.problem, self.model.unroll(self.problem, self.T, inputs=self.inputs).X[-1])


@pytest.mark.parametrize("frozen", [False, True])
def test_gradcheck(frozen):
    p, widths, params = kink_free_setup(bias=True)
    model = build(widths, params, bias=True, detach=frozen)
    inputs = None
    if frozen:
        with torch.no_grad():
            X = model.unroll(p, T_).X
        inputs = [torch.stack((problems.gradient(p, Xt), Xt), -1).reshape(-1, 2) for Xt in X[:-1]]
    wrapper = _Loss(model, p, T_, inputs)
    shapes = {f"model.{k}": v.shape for k, v in params.items()}

    def f(flat):
        named, k = {}, 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            named[name] = flat[k : k + n].reshape(shape)
            k += n
        return torch.func.functional_call(wrapper, named, ())

    flat = torch.cat([v.reshape(-1) for v in params.values()]).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (flat,), eps=1e-6, atol=1e-6, rtol=1e-5)


# -- training losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 5])
def test_training_losses_against_formulas(T):
    p = problems.generate(3, 5, 4, seed=3)
    widths = hidden_widths(6, 3)
    params = inits.random(widths, seed=0)
    model = build(widths, params)
    with torch.no_grad():
        traj = model.unroll(p, T)
    M, Y = arrays(p)
    F_t = np.array([np_F(M, Y, X.numpy()) for X in traj.X[1:]])  # F(X_1..X_T), X_0 excluded
    t = np.arange(1, T + 1)
    expected = {
        "last": F_t[-1],
        "mean": F_t.sum() / T,
        "weighted": 2.0 / (T * (T + 1)) * np.sum(t * F_t),  # Σ t = T(T+1)/2
    }
    for kind, value in expected.items():
        got = training_loss(p, traj, kind)
        assert got.ndim == 0 and got.dtype == torch.float64
        np.testing.assert_allclose(float(got), value, rtol=1e-13)
    if T == 1:
        assert len({round(float(training_loss(p, traj, k)), 12) for k in expected}) == 1
    else:
        assert not np.isclose(expected["mean"], expected["weighted"])  # the weights genuinely differ
