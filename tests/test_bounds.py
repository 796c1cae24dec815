"""Properties of the theory in :mod:`bounds`: every `stated` or `derived` inequality is checked on small
random problems, with the measured side computed here in plain numpy (never through the bound's code).

A failing example shrinks to a small problem; the assertion message prints both sides.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import bounds
from bounds import gd, local, theorem

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=15, deadline=None)
COVERED = set()  # keys of the conditions that a property test below checks


def covers(*keys):
    COVERED.update(keys)
    return lambda f: f


# -- tiny problems and the model, in plain numpy ------------------------------------------------------

def make_qp(N, d, b, seed, top=0.0):
    """M_i Gaussian with unit-norm columns, y_i = M_i x_i*; ``top`` ∈ [0, 1] tilts x* towards the top
    right singular vector (the worst case of GD's bound)."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((N, b, d))
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    x = rng.standard_normal((N, d))
    for i in range(N):
        v = np.linalg.svd(M[i])[2][0]
        x[i] = (1 - top) * x[i] + top * np.linalg.norm(x[i]) * v
    return M, np.einsum("nbd,nd->nb", M, x)


def f_i(M, Y, X):
    return 0.5 * ((np.einsum("nbd,nd->nb", M, X) - Y) ** 2).sum(1)


def grad(M, Y, X):
    return np.einsum("nbd,nb->nd", M, np.einsum("nbd,nd->nb", M, X) - Y)


def beta_of(M):
    return np.array([np.linalg.norm(Mi, 2) ** 2 for Mi in M])


def run_gd(M, Y, T, s):
    X, beta = np.zeros((M.shape[0], M.shape[2])), beta_of(M)
    for _ in range(T):
        X = X - (s / beta)[:, None] * grad(M, Y, X)
    return X


def dist_min_norm(M, Y):
    return np.array([np.sum((np.linalg.pinv(Mi) @ yi) ** 2) for Mi, yi in zip(M, Y)])


def inner_layers(L, n, e, seed):
    """W_1..W_{L−1} = e·Q (orthonormal rows or columns), shapes (2,2)…(2,n), as (in, out)."""
    rng = np.random.default_rng(seed)
    shapes = [(2, 2)] * (L - 2) + [(2, n)]
    Ws = []
    for fan_in, out in shapes:
        Q, R = np.linalg.qr(rng.standard_normal((max(fan_in, out), min(fan_in, out))))
        Q = Q * np.sign(np.diag(R))
        Ws.append(e * (Q if fan_in >= out else Q.T))
    return Ws


def features(Ws, Z):
    G = Z
    for W in Ws:
        G = np.maximum(G @ W, 0.0)
    return G


def unroll(M, Y, T, s, Ws, WL):
    """Math-L2O in numpy: returns X_T and the features G_{L−1,t}, t = 1..T (rows: instance, coordinate)."""
    X, beta, Gs = np.zeros((M.shape[0], M.shape[2])), beta_of(M), []
    for _ in range(T):
        g = grad(M, Y, X)
        G = features(Ws, np.stack((g, X), axis=-1).reshape(-1, 2))
        P = 2.0 / (1.0 + np.exp(-(G @ WL))).reshape(X.shape)
        X = X - (s / beta)[:, None] * P * g
        Gs.append(G)
    return X, Gs


def residual_of_WL(M, Y, T, s, Ws):
    return lambda WL: (np.einsum("nbd,nd->nb", M, unroll(M, Y, T, s, Ws, WL)[0]) - Y).ravel()


def fd_jacobian(fun, w, h=1e-5):
    cols = []
    for k in range(w.size):
        dw = np.zeros_like(w)
        dw.flat[k] = h
        cols.append((fun(w + dw) - fun(w - dw)) / (2 * h))
    return np.stack(cols, axis=1)


problems = st.builds(lambda N, d, frac, seed, top: (N, d, max(1, round(frac * d)), seed, top),
                     st.integers(1, 3), st.integers(2, 7), st.floats(0.2, 1.0), st.integers(0, 2 ** 16),
                     st.sampled_from([0.0, 0.5, 0.9, 1.0]))


def data_q(M, Y, T, s):
    """The data quantities, computed here independently of bounds.gd_quantities."""
    beta_i, dist_i = beta_of(M), dist_min_norm(M, Y)
    return {"T": T, "step_scale": s, "beta_i": beta_i, "beta": beta_i.max(), "dist_sq_i": dist_i,
            "dist_sq": dist_i.sum(), "F_gd_T": f_i(M, Y, run_gd(M, Y, T, s)).sum()}


# -- GD ------------------------------------------------------------------------------------------------

@covers("gd.rate")
@FAST
@given(problems, st.integers(1, 60), st.sampled_from([1.0, 0.9999, 0.75, 0.5]))
def test_gd_rate_stated_holds_for_steps_in_half_one(p, T, s):
    M, Y = make_qp(*p)
    q = data_q(M, Y, T, s)
    v = gd.GD_RATE.evaluate(q)
    assert v.holds, v
    per_instance = (q["beta_i"] * q["dist_sq_i"]).sum() / (2 * T)
    assert q["F_gd_T"] <= per_instance * (1 + 1e-12)
    assert per_instance <= q["beta"] * q["dist_sq"] / (2 * T) * (1 + 1e-12)  # the paper's global-β form is looser


@covers("gd.rate_s")
@FAST
@given(problems, st.integers(1, 60), st.floats(0.01, 1.99))
def test_gd_rate_for_any_step_in_0_2(p, T, s):
    M, Y = make_qp(*p)
    v = gd.GD_RATE_S.evaluate(data_q(M, Y, T, s))
    assert v.holds, v


@FAST
@given(st.integers(1, 80), st.floats(0.01, 1.99), st.floats(0.5, 5.0))
def test_gd_rate_factor_is_attained(T, s, beta):
    """m(s, T) is a maximum, not just a bound: a diagonal instance with eigenvalues β and u·β, x* on the
    eigenvector of u·β, meets the bound with equality."""
    grid = np.linspace(0, 1, 200001)
    u = grid[np.argmax(grid * (1 - s * grid) ** (2 * T))]
    M = np.diag([math.sqrt(beta), math.sqrt(u * beta)])[None]
    x_star = np.array([[0.0, 1.0]]) if u < 1 else np.array([[1.0, 0.0]])
    Y = np.einsum("nbd,nd->nb", M, x_star)
    F = f_i(M, Y, run_gd(M, Y, T, s)).sum()
    bound = 0.5 * gd.gd_rate_factor(s, T) * beta * 1.0
    assert F <= bound * (1 + 1e-9)
    assert F >= bound * (1 - 1e-4)  # the grid's resolution


def test_stated_gd_form_fails_for_steps_near_2_and_says_so():
    M = np.diag([1.0, 0.5])[None]
    Y = np.einsum("nbd,nd->nb", M, np.array([[1.0, 0.0]]))
    v = gd.GD_RATE.evaluate(data_q(M, Y, T=10, s=1.9))
    assert v.holds is False and "gd.rate_s" in v.note


# -- steps ---------------------------------------------------------------------------------------------

@covers("step.descent")
@FAST
@given(problems, st.integers(1, 15), st.floats(0.05, 1.99), st.integers(0, 2 ** 16),
       st.sampled_from(["uniform", "extremes"]))
def test_coordinate_wise_steps_descend_when_s_Pmax_le_2(p, T, s, seed, kind):
    """f_i(x⁺) ≤ f_i(x) − (s/β_i)(1 − s·P_max/2)Σ_j P_j g_j² for any P ∈ (0, 2/s]^d: M_iᵀM_i need not be
    diagonal. ``extremes`` mixes the largest and tiny multipliers, the hardest case for a diagonal bound."""
    M, Y = make_qp(*p)
    rng = np.random.default_rng(seed)
    beta = beta_of(M)
    X = rng.standard_normal((M.shape[0], M.shape[2]))
    Ps = [rng.uniform(0.01, 2 / s, X.shape) if kind == "uniform"
          else np.where(rng.random(X.shape) < 0.5, 2 / s, 1e-3) for _ in range(T)]
    P_max = max(P.max() for P in Ps)
    v = gd.STEP_DESCENT.evaluate({"step_scale": s, "P_max": P_max})
    assert v.holds, v
    for P in Ps:
        g = grad(M, Y, X)
        X_new = X - (s / beta)[:, None] * P * g
        drop = (s / beta) * (1 - s * P_max / 2) * (P * g ** 2).sum(1)
        before, after = f_i(M, Y, X), f_i(M, Y, X_new)
        assert np.all(after <= before - drop + 1e-10 * (1 + before)), (before, after, drop)
        X = X_new


def test_descent_threshold_is_sharp():
    """s·P = 2.2 on the top eigenvector multiplies the error there by −1.2: f rises, and the condition says so."""
    M = np.diag([2.0, 1.0])[None]
    Y = np.zeros((1, 2))
    X = np.array([[1.0, 0.0]])
    s, P = 1.1, 2.0
    X_new = X - (s / 4.0) * P * grad(M, Y, X)
    assert f_i(M, Y, X_new) > f_i(M, Y, X)
    assert gd.STEP_DESCENT.evaluate({"step_scale": s, "P_max": P}).holds is False


@covers("step.range")
@FAST
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=50))
def test_two_sigmoid_lies_in_0_2(u):
    P = 2.0 / (1.0 + np.exp(-np.array(u)))
    assert gd.STEP_RANGE.evaluate({"P_min": P.min(), "P_max": P.max()}).holds


def test_step_range_reports_saturation():
    P = 2.0 / (1.0 + np.exp(-np.array([40.0])))  # rounds to exactly 2 in float64
    assert gd.STEP_RANGE.evaluate({"P_min": 1.0, "P_max": float(P[0])}).holds is False


# -- initialisation -------------------------------------------------------------------------------------

@covers("init.gd_equality")
@SLOW
@given(problems, st.integers(1, 12), st.integers(2, 4), st.integers(2, 9), st.floats(1.0, 50.0),
       st.floats(0.5, 1.5))
def test_model_at_init_is_gd(p, T, L, n, e, s):
    M, Y = make_qp(*p)
    Ws = inner_layers(L, n, e, seed=p[3])
    X_T, _ = unroll(M, Y, T, s, Ws, np.zeros(n))
    q = {"F0": f_i(M, Y, X_T).sum(), "F_gd_T": f_i(M, Y, run_gd(M, Y, T, s)).sum()}
    v = gd.INIT_GD_EQUALITY.evaluate(q)
    assert v.holds, v
    moved = f_i(M, Y, unroll(M, Y, T, s, Ws, np.random.default_rng(0).standard_normal(n) / e ** (L - 1))[0]).sum()
    if abs(moved - q["F_gd_T"]) > 1e-6 * q["F_gd_T"]:  # W_L off 0 changes the loss (unless every ReLU is dead)
        assert gd.INIT_GD_EQUALITY.evaluate({**q, "F0": moved}).holds is False


@SLOW
@given(problems, st.integers(1, 8), st.integers(2, 4), st.integers(2, 12), st.floats(1.5, 40.0))
def test_features_scale_as_e_to_the_L_minus_1(p, T, L, n, e):
    """α₀(e) = e^{L−1}α₀(1) and the same for every singular value of G_{L−1,T} (exact)."""
    M, Y = make_qp(*p)
    G1 = unroll(M, Y, T, 1.0, inner_layers(L, n, 1.0, seed=p[3]), np.zeros(n))[1][-1]
    Ge = unroll(M, Y, T, 1.0, inner_layers(L, n, e, seed=p[3]), np.zeros(n))[1][-1]
    s1, se = np.linalg.svd(G1, compute_uv=False), np.linalg.svd(Ge, compute_uv=False)
    np.testing.assert_allclose(se, theorem.alpha0_of_e(s1, e, L), rtol=1e-9, atol=1e-12 * se.max())


# -- the NTK at W_0: homogeneity in e (Cor. C.1) and the a-priori bound (Eq. 14) -------------------------

def gd_path_gz(M, Y, T, s):
    """‖diag(g) Z_{i,t}‖_F along GD, (N, T): the rows of Z_{i,t} = (g_j, x_j) weighted by g_j."""
    X, beta, out = np.zeros((M.shape[0], M.shape[2])), beta_of(M), []
    for _ in range(T):
        g = grad(M, Y, X)
        Z = np.stack((g, X), axis=-1)  # (N, d, 2)
        out.append(np.linalg.norm(g[..., None] * Z, axis=(1, 2)))
        X = X - (s / beta)[:, None] * g
    return np.array(out).T


@covers("eq14.eta_apriori", "corC1.e_eta", "eq14.eta")
@SLOW
@given(st.builds(lambda N, d, seed: (N, d, max(1, d - 1), seed, 0.0), st.integers(1, 2), st.integers(2, 4),
                 st.integers(0, 2 ** 16)),
       st.integers(1, 6), st.integers(2, 4), st.integers(2, 6), st.floats(1.5, 8.0), st.floats(0.5, 1.5))
def test_ntk_at_init_scales_as_e_2L_2_and_stays_below_the_apriori_bound(p, T, L, n, e, s):
    M, Y = make_qp(*p)
    lam = {}
    for scale in (1.0, e):
        J = fd_jacobian(residual_of_WL(M, Y, T, s, inner_layers(L, n, scale, seed=p[3])), np.zeros(n),
                        h=1e-4 / scale ** (L - 1))
        lam[scale] = np.linalg.eigvalsh(J @ J.T).max()
    assume(lam[1.0] > 1e-8)
    np.testing.assert_allclose(lam[e], local.lambda_max_of_e(lam[1.0], e, L), rtol=1e-5)
    q = {"eta": 1.0, "e": e, "L": L, "step_scale": s, "beta_i": beta_of(M), "gd_gz": gd_path_gz(M, Y, T, s),
         "lambda_max": lam[e]}
    apriori = 1.0 / local.EQ14_APRIORI.evaluate(q).threshold
    assert lam[e] <= apriori * (1 + 1e-6), (lam[e], apriori)
    # Cor. C.1: at e_max the measured kernel meets η·λ_max = 1 exactly (the inverse e–η relation)
    eta = 0.5 / lam[e]
    e_max = local.COR_C1.evaluate({**q, "eta": eta}).threshold
    J = fd_jacobian(residual_of_WL(M, Y, T, s, inner_layers(L, n, e_max, seed=p[3])), np.zeros(n),
                    h=1e-4 / e_max ** (L - 1))
    assert eta * np.linalg.eigvalsh(J @ J.T).max() == pytest.approx(1.0, rel=1e-5)
    # Eq. 14 (𝓛 ≈ λ_max): its threshold is 1/λ_max, where the linearised loss stops decreasing monotonically
    assert local.EQ14.evaluate({"eta": eta, "lambda_max": lam[e]}).threshold == pytest.approx(1 / lam[e])


# -- Thm 4.3: the last-step kernel bound (β₀, δ₃, Θ_L, δ₄), Theorem D.1 ----------------------------------

@covers("thm4_3.rate_derived", "thm4_3.rate", "thm4_3.delta4")
@FAST
@given(st.integers(1, 2), st.integers(2, 4), st.integers(0, 2 ** 16), st.floats(0.5, 1.5), st.floats(0.0, 3.0),
       st.integers(0, 3))
def test_last_step_kernel_bound(N, d, seed, s, theta, extra):
    """λ_min(J_T J_Tᵀ) ≥ 4δ₄²β₀²α₀²/β² for the step-T map W_L ↦ r = M(x − (s/β_i)·2σ(G W_L)⊙g) − y,
    with β₀ = s·σ_min(M)·min|g|, δ₃ = max row norm of G, Θ_L = ‖W_L‖, α₀ = σ_min(G), n ≥ N·d."""
    rng = np.random.default_rng(seed)
    b = max(1, d - 1)
    M, Y = make_qp(N, d, b, seed)
    n = N * d + extra
    G = np.maximum(rng.standard_normal((N * d, n)), 0) + 0.1 * rng.standard_normal((N * d, n))
    W = rng.standard_normal(n)
    W *= theta / max(np.linalg.norm(W), 1e-300)
    X = rng.standard_normal((N, d))
    g = grad(M, Y, X)
    beta = beta_of(M)

    def r(WL):
        P = (2 / (1 + np.exp(-(G @ WL)))).reshape(N, d)
        return (np.einsum("nbd,nd->nb", M, X - (s / beta)[:, None] * P * g) - Y).ravel()

    J = fd_jacobian(r, W, h=1e-6)
    lam_min = np.linalg.eigvalsh(J @ J.T).min()
    sigma_min_M = min(np.linalg.svd(Mi, compute_uv=False)[-1] for Mi in M)
    u = G @ W
    q = {"beta0": s * sigma_min_M * np.abs(g).min(), "beta": beta.max(), "alpha0": np.linalg.svd(G, compute_uv=False)[-1],
         "delta3": np.linalg.norm(G, axis=1).max(), "Theta_L": np.linalg.norm(W), "eta": 1.0,
         "P_min": (2 / (1 + np.exp(-u))).min(), "P_max": (2 / (1 + np.exp(-u))).max()}
    assert theorem.DELTA4.evaluate(q).holds
    sig = 1 / (1 + math.exp(-q["delta3"] * q["Theta_L"]))
    d4 = sig * (1 - sig)
    bound = theorem.kernel_lower_bound(q["beta0"], q["beta"], d4, q["alpha0"])
    assert lam_min >= bound * (1 - 1e-6) - 1e-10, (lam_min, bound)
    # the rates: ρ_D = 1 − η·bound; the stated ρ has δ₄ where ρ_D has δ₄², so ρ ≤ ρ_D (δ₄ ≤ 1/4)
    rho_d = theorem.RATE_DERIVED.evaluate({**q, "eta": 0.5 / max(bound, 1e-300)}).value
    assert rho_d == pytest.approx(0.5, abs=1e-12) or bound == 0
    assert theorem.RATE.evaluate(q).value <= theorem.RATE_DERIVED.evaluate(q).value + 1e-15


@covers("eq13.alpha0", "thm4_3.rate_ntk")
@FAST
@given(st.integers(1, 5), st.integers(0, 4), st.integers(0, 2 ** 16), st.floats(0.05, 1.0), st.integers(1, 60))
def test_theorem_d1_on_a_linear_model(m, extra, seed, eta_frac, K):
    """For r(W) = r_0 + J(W − W_0), A1–A3 hold with λ̲ = λ_min(JJᵀ), Λ̄ = ‖J‖, 𝓛 = λ_max: GD on W with
    η ≤ 1/𝓛 keeps F_k ≤ (1 − ηλ̲)^k F_0 and ‖W_k − W_0‖ ≤ R_min = 2Λ̄√(2F_0)/λ̲."""
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((m, m + extra))
    r0 = rng.standard_normal(m)
    lam = np.linalg.eigvalsh(J @ J.T)
    assume(lam[0] > 1e-6)
    eta = eta_frac / lam[-1]
    F0 = 0.5 * r0 @ r0
    rho, R = bounds.theorem_d1(lam[0], math.sqrt(lam[-1]), F0, eta)
    W, F, far = np.zeros(m + extra), [F0], 0.0
    for _ in range(K):
        W = W - eta * J.T @ (r0 + J @ W)
        F.append(0.5 * np.sum((r0 + J @ W) ** 2))
        far = max(far, np.linalg.norm(W))
    assert all(Fk <= rho ** k * F0 * (1 + 1e-9) + 1e-12 * F0 for k, Fk in enumerate(F))  # ρ = 0: rounding
    assert far <= R * (1 + 1e-9)
    v = theorem.RATE_NTK.evaluate({"eta": eta, "lambda_min": lam[0]})
    assert v.value == pytest.approx(rho) and v.holds
    # Eq. 13 in α₀ form holds exactly when λ̲ = 4δ₄²β₀²α₀²/β² ≥ 2Λ̄√(2F0)/R (choose β₀ = β/2 and δ₃, R free)
    q = {"alpha0": 1.0, "beta": 2.0, "beta0": 1.0, "F0": F0, "delta3": 1.0, "lambda_max": lam[-1], "Theta_L": 1.0}
    d4 = math.exp(-1.0) / (1 + math.exp(-1.0)) ** 2
    lam_lo = 4 * d4 ** 2 * 1.0 / 4.0
    assert local.EQ13.evaluate(q).holds == (lam_lo >= 2 * math.sqrt(lam[-1]) * math.sqrt(2 * F0) / 1.0)


@covers("thm4_3.linear", "thm4_3.alignment", "sec4_5.vs_gd_bound", "thm4_3.alpha0")
@FAST
@given(st.floats(0.0, 2.0), st.integers(2, 40), st.floats(0.5, 1.5))
def test_geometric_predictions_against_geometric_losses(alpha0, K, ratio):
    """F_k = F_0·r^k meets F_k ≤ ρ^k F_0 iff r ≤ ρ (checked at every k, not only the last)."""
    q = {"eta": 0.1, "beta0": 1.0, "beta": 1.0, "delta4": 0.25, "alpha0": alpha0, "alpha0_tol": 1e-12,
         "T": 10, "beta_i": np.array([1.0]), "dist_sq_i": np.array([20.0])}
    rho = 1 - 4 * 0.1 * 0.25 * alpha0 ** 2
    r = rho * ratio
    F = 1.0 * r ** np.arange(K + 1)
    q |= {"F_k": F, "F_gd_T": 1.0, "dist_sq": 20.0}
    expected = bool(np.all(F <= rho ** np.arange(K + 1) * (1 + 1e-12)))
    for cond in (theorem.LINEAR, theorem.ALIGNMENT, theorem.VS_GD_BOUND):  # GD's bound: β·20/(2T) = 1 = F_0
        assert cond.evaluate(q).holds == expected
    assert theorem.ALPHA0.evaluate(q).holds == (alpha0 > 1e-12)
    if alpha0 == 0:
        assert "vacuous" in theorem.RATE.evaluate(q).note and "vacuous" in theorem.ALPHA0.evaluate(q).note


@covers("thm4_3.alpha0")
@pytest.mark.parametrize("bound, exact", [(None, False), (9, True), (12, False), (40, False)])
def test_alpha0_is_called_exactly_zero_only_when_the_pattern_bound_proves_it(bound, exact):
    """α₀ = 0 below its tolerance is "exactly zero" when the activation patterns bound rank G below
    min(N·d, n) = 12 (DERIVATIONS §3b), and "zero to working precision" otherwise."""
    q = {"alpha0": 0.0, "alpha0_tol": 1e-13, "alpha0_rank": 4, "N": 3, "d": 4, "n": 16}
    if bound is not None:
        q["alpha0_rank_bound"] = bound
    note = theorem.ALPHA0.evaluate(q).note
    assert ("exactly zero" in note) == exact and ("working precision" in note) == (not exact)
    assert not theorem.ALPHA0.evaluate(q).holds


# -- width ----------------------------------------------------------------------------------------------

@covers("width.nd")
@SLOW
@given(problems, st.integers(1, 6), st.integers(2, 3), st.integers(2, 30))
def test_rank_of_wide_features_never_exceeds_width(p, T, L, n):
    """rank G_{L−1,T} ≤ min(N·d, n): when the width check fails, α₀ is 0."""
    M, Y = make_qp(*p)
    G = unroll(M, Y, T, 1.0, inner_layers(L, n, 3.0, seed=p[3]), np.zeros(n))[1][-1]
    gram = np.linalg.eigvalsh(G @ G.T)  # (N·d,): α₀² is the smallest
    v = theorem.WIDTH.evaluate({"n": n, "N": p[0], "d": p[1]})
    if not v.holds:
        assert gram[0] <= 1e-10 * gram[-1] + 1e-300


@FAST
@given(st.integers(1, 3), st.integers(1, 6), st.integers(-3, 3), st.integers(0, 2 ** 16))
def test_width_threshold_is_sharp_for_generic_features(N, d, offset, seed):
    """A generic (Gaussian) N·d × n matrix has full row rank exactly when n ≥ N·d."""
    n = max(1, N * d + offset)
    G = np.random.default_rng(seed).standard_normal((N * d, n))
    gram = np.linalg.eigvalsh(G @ G.T)
    full = gram[0] > 1e-10 * gram[-1]
    assert theorem.WIDTH.evaluate({"n": n, "N": N, "d": d}).holds == full


# -- the registry -----------------------------------------------------------------------------------------

def test_every_stated_or_derived_condition_has_a_property_test():
    keys = {c.key for c in bounds.registry() if c.status in ("stated", "derived")}
    assert keys <= COVERED, f"no property test for {sorted(keys - COVERED)}"


@pytest.mark.parametrize("cond", bounds.registry(), ids=lambda c: c.key)
def test_condition_declares_its_theory_and_never_raises_on_missing_quantities(cond):
    assert cond.source and cond.latex and cond.text and cond.confidence and cond.title
    assert cond.status in ("stated", "scaling", "derived") and (cond.status == "scaling") == bool(cond.constants)
    assert set(cond.needs) <= set(bounds.QUANTITIES)
    v = cond.evaluate({})
    assert v.holds is None and v.key == cond.key and v.note
    assert all(type(w.holds) in (bool, type(None)) for w in bounds.evaluate_all(FULL))
    assert all(name in v.note for name in cond.needs)
    assert cond.evaluate({name: float("nan") for name in cond.needs}).holds is None
    json.dumps(v.to_dict())


def _full_quantities():
    M, Y = make_qp(2, 5, 3, seed=4)
    q = {**data_q(M, Y, 6, 1.0), "N": 2, "d": 5, "b": 3, "n": 16, "L": 3, "e": 5.0, "eta": 1e-3, "k": 3,
         "alpha0": 0.0, "alpha0_tol": 1e-13, "alpha0_rank": 4, "alpha0_rank_bound": 6, "F0": 1.0,
         "F_k": np.array([1.0, 0.6, 0.5, 0.5]), "P_min": 0.7, "P_max": 1.4, "lambda_max": 10.0, "lambda_min": 0.0, "delta3": 2.0, "Theta_L": 0.3,
         "sigma_min_sq_i": np.array([0.1, 0.2]), "grad_T_min": 0.01, "gd_gz": np.ones((2, 6))}
    return q


FULL = _full_quantities()


def test_with_every_quantity_every_condition_is_evaluated():
    verdicts = bounds.evaluate_all(FULL)
    assert all(not v.note.startswith("not evaluated") for v in verdicts), [v.note for v in verdicts]
    json.dumps([v.to_dict() for v in verdicts])


def test_keys_are_unique_and_evaluate_all_gives_one_verdict_each():
    keys = [c.key for c in bounds.registry()]
    assert len(keys) == len(set(keys))
    assert [v.key for v in bounds.evaluate_all({})] == keys


def test_gd_quantities_agree_with_an_independent_computation():
    M, Y = make_qp(3, 6, 4, seed=1)
    q = bounds.gd_quantities(M, Y, T=7, step_scale=0.9)
    ref = data_q(M, Y, 7, 0.9)
    np.testing.assert_allclose(q["beta_i"], ref["beta_i"], rtol=1e-12)
    np.testing.assert_allclose(q["dist_sq_i"], ref["dist_sq_i"], rtol=1e-9)
    assert q["F_gd_T"] == pytest.approx(ref["F_gd_T"], rel=1e-12)
    np.testing.assert_allclose(q["gd_gz"], gd_path_gz(M, Y, 7, 0.9), rtol=1e-12)


def test_bounds_imports_neither_torch_nor_ntkcheck():
    code = "import sys, bounds; bounds.evaluate_all({}); print(sorted({'torch', 'ntkcheck'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- nothing raises: huge and tiny inputs (issue 12) ----------------------------------------------------------

POSITIVE = st.floats(min_value=5e-324, max_value=1e308, allow_nan=False, allow_infinity=False)
HUGE_OR_TINY = {"e": POSITIVE, "T": st.integers(1, 10 ** 6), "L": st.integers(1, 10 ** 4),
                "eta": st.floats(1e-300, 1e300)}
SCALES = st.floats(1e-300, 1e300)  # multiplies every other scalar quantity of FULL
NOT_COMPARABLE = {"thm4_3.rate", "thm4_3.rate_derived", "thm4_3.rate_ntk"}  # holds is 0 ≤ ρ < 1, not ρ < 1 alone


def _consistent(v):
    """A decided verdict agrees with its own value and threshold, where both are finite, positive floats."""
    if v.holds is None or v.key in NOT_COMPARABLE or v.relation not in ("<=", ">=", "<", ">"):
        return True
    a, b = v.value, v.threshold
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        return True
    r = a / b
    below, above = r <= 1 + 1e-9, r >= 1 - 1e-9
    return {"<=": below, "<": below, ">=": above, ">": above}[v.relation] if v.holds else \
        {"<=": r > 1 - 1e-9, "<": r > 1 - 1e-9, ">=": r < 1 + 1e-9, ">": r < 1 + 1e-9}[v.relation]


def _check_verdicts(verdicts):
    for v in verdicts:
        assert v.holds in (True, False, None), v
        assert isinstance(v.value, float) and isinstance(v.threshold, float), v
        assert _consistent(v), v
        json.dumps(v.to_dict(), allow_nan=False)  # non-finite numbers become None


@given(**HUGE_OR_TINY, scale=SCALES, data_scale=SCALES, C=st.one_of(st.none(), POSITIVE))
@settings(max_examples=200, deadline=None)
def test_every_condition_evaluates_on_huge_and_tiny_inputs(e, T, L, eta, scale, data_scale, C):
    """Every condition of the registry, with every quantity given: no exception, whatever the magnitudes; a
    value or threshold beyond float64 is inf or 0, and a decided verdict agrees with them."""
    q = {k: (v * scale if k not in ("N", "d", "b", "n", "k", "alpha0_rank", "alpha0_rank_bound", "P_min", "P_max", "step_scale")
             and isinstance(v, float) else v) for k, v in FULL.items()}
    q |= {"e": e, "T": T, "L": L, "eta": eta, "eps": 1.1920929e-07, "F_k": FULL["F_k"] * scale,
          **{k: FULL[k] * data_scale for k in ("beta_i", "dist_sq_i", "sigma_min_sq_i", "gd_gz")}}
    verdicts = bounds.evaluate_all(q, **({} if C is None else {"C": C}))
    _check_verdicts(verdicts)
    for cond in bounds.registry():  # and one at a time, with every needed quantity at the extremes of float64
        for x in (5e-324, 1e-300, 1e300, 1.7976931348623157e308):
            extreme = {**q, **{n: x for n in cond.needs if n not in ("F_k", "beta_i", "dist_sq_i", "sigma_min_sq_i",
                                                                       "gd_gz", "P_min", "P_max")}}
            _check_verdicts([cond.evaluate(extreme)])


@given(**HUGE_OR_TINY, step_scale=st.floats(1e-300, 1.999), n=st.integers(1, 10 ** 6),
       C=st.one_of(st.none(), POSITIVE), data=st.booleans())
@settings(max_examples=200, deadline=None)
def test_thresholds_never_raise(e, T, L, eta, step_scale, n, C, data):
    """``bounds.thresholds`` (what ``ntkcheck bounds`` prints) on a configuration at the edges of float64."""
    rows = bounds.thresholds(T, L, e, eta, N=2, d=5, b=3, n=n, step_scale=step_scale, C=C,
                             data=DATA if data else None)
    assert {r["key"] for r in rows} >= {"width.nd", "lemma5_1.e", "step.descent"}
    for r in rows:
        assert r["holds"] in (True, False, None), r
        if r["holds"] is None and r["status"] != "scaling":
            assert r["note"], r
    json.dumps(rows)


DATA = bounds.gd_quantities(*make_qp(2, 5, 3, seed=7), T=4)


@pytest.mark.parametrize("args", [["--e", "1e300"], ["--e", "1e308"], ["--e", "1e-300"], ["--T", "100000", "--N", "2"],
                                  ["--L", "1000"], ["--L", "10000", "--e", "1e308"], ["--lr", "1e300"],
                                  ["--lr", "1e-300"], ["--e", "1e-300", "--L", "10000", "--lr", "1e300"]])
def test_bounds_command_reports_overflow_instead_of_raising(args, capsys, monkeypatch):
    from ntkcheck.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["bounds", *args]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out and "eq14.eta_apriori" in out.out


def test_overflowing_thresholds_are_inf_and_still_decided():
    """e = 1e300 at L = 3: Λ̄₀² ∝ e⁴ overflows float64, so 1/Λ̄₀² is 0 (shown) and η ≤ it FAILS, decided on
    logarithms; e_max of Cor. C.1 stays finite."""
    rows = {r["key"]: r for r in bounds.thresholds(20, 3, 1e300, 1e-7, N=2, d=5, b=3, n=16, data=DATA)}
    apriori = rows["eq14.eta_apriori"]
    assert apriori["holds"] is False and apriori["threshold"] == 0.0 and "overflows float64" in apriori["note"]
    cor = rows["corC1.e_eta"]
    assert cor["holds"] is False and 0 < cor["threshold"] < 1e300
    tiny = {r["key"]: r for r in bounds.thresholds(20, 3, 1e-300, 1e-7, N=2, d=5, b=3, n=16, data=DATA)}
    assert tiny["eq14.eta_apriori"]["holds"] is True and tiny["eq14.eta_apriori"]["threshold"] == math.inf
    lemma = bounds.get("lemma5_2.e").evaluate({"T": 5, "L": 2, "e": 1e300}, C=1.0)  # T^{21/1}: fine; a huge T·L…
    assert lemma.holds is True
    huge = bounds.get("lemma5_2.e").evaluate({"T": 10 ** 6, "L": 2, "e": 1e300}, C=1e300)
    assert huge.holds is False and huge.threshold == math.inf and "overflows float64" in huge.note


def test_undecidable_overflow_says_so():
    """δ₃Θ_L beyond float64 and a measured slope of exactly 0: both sides of δ₄'s check are 0, undecided."""
    v = theorem.DELTA4.evaluate({"delta3": 1e200, "Theta_L": 1e200, "P_min": 1.0, "P_max": 2.0})
    assert v.holds is None and "overflows float64" in v.note
    # δ₄ = e^{−1000} > 0 underflows, and P = 2 exactly (σ rounded to 1) reads as slope 0: the bound is proved
    # (|u| ≤ δ₃Θ_L), so a "FAILS" here could only be rounding; both sides are below float64's resolution
    w = theorem.DELTA4.evaluate({"delta3": 1e3, "Theta_L": 1.0, "P_min": 1.0, "P_max": 2.0})
    assert w.holds is None and w.threshold == 0.0 and "precision resolves" in w.note


# -- rounding: float32 runs against float64 GD (DERIVATIONS §2b) ------------------------------------------------

@covers("init.gd_equality", "thm4_3.alignment")
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 2, 3, 5, 8, 16, 30, 64, 128, 256]), st.floats(0.0, 1.0),
       st.sampled_from([1, 2, 3, 5, 10, 20, 50, 100]), st.sampled_from([0.5, 0.9999, 1.0, 1.5, 1.9, 1.99, 1.999]),
       st.integers(2, 4), st.floats(1.0, 100.0), st.sampled_from(["auto", "dense"]), st.integers(0, 2 ** 20))
def test_rounding_bound_holds_for_float32_unrolls_of_the_model(N, d, frac, T, s, L, e, wide, seed):
    """The model at W_0 in float32 (P ≡ 1 exactly) against GD in float64: |F̂ − F_GD| within the rounding
    bound σ(eps32) + σ(eps64), c = d + 1, with b from 1 (where the inner products round coherently) to d."""
    import torch

    from ntkcheck import TrainConfig, build_model
    from ntkcheck.problems import qp as probs

    b = max(1, round(frac * d))
    cfg = TrainConfig(N=N, d=d, b=b, width=6, T=T, L=L, e=e, step_scale=s, seed=seed, dtype="float32",
                      wide_layer=wide)
    p = probs.generate(N, d, b, seed)
    p32 = p.to(dtype=torch.float32)
    with torch.no_grad():
        traj = build_model(cfg, dtype=torch.float32, device="cpu").unroll(p32, T)
        F32 = float(probs.objective(p32, traj.X[-1]))
    assert all(bool((P == 1).all()) for P in traj.P)  # exactly GD: 2σ(0) = 1 in float32 too
    q = {**bounds.gd_quantities(p.M.numpy(), p.Y.numpy(), T, s), "T": T, "d": d, "eps": float(np.finfo(np.float32).eps)}
    v = gd.INIT_GD_EQUALITY.evaluate({**q, "F0": F32})
    assert v.holds, v
    # Thm 4.3 at ρ = 1 (α₀ = 0): alignment is F_k ≤ F_GD up to the same rounding
    rate = {"eta": 1e-3, "beta0": 1.0, "delta4": 0.25, "alpha0": 0.0}
    assert theorem.ALIGNMENT.evaluate({**q, **rate, "F_k": np.array([F32])}).holds


def _float32_run():
    import ntkcheck
    from ntkcheck.theory import problem_constants, quantities

    cfg = ntkcheck.TrainConfig(N=3, d=8, b=6, width=16, T=5, e=5.0, lr=1e-3, iters=4, dtype="float32")
    run = ntkcheck.verify(cfg, ntkcheck.ProbeConfig(ntk_every=2), figures=False)
    q = quantities(run.config, problem_constants(ntkcheck.make_problem(cfg), cfg.T, cfg.step_scale), run.probes,
                   run.training.metrics, ntkcheck.initial_weights(cfg))
    return run, q


def test_a_float32_verify_passes_the_gd_checks_and_a_real_violation_still_fails():
    run, q = _float32_run()
    verdicts = {c["key"]: c for c in run.report["conditions"]}
    assert verdicts["init.gd_equality"]["holds"] is True and verdicts["thm4_3.alignment"]["holds"] is True
    assert q["eps"] == pytest.approx(1.1920929e-07)
    assert verdicts["init.gd_equality"]["value"] > 1e-9  # the fixed float64 tolerance would have failed it
    # F_0 off by 1 %, far beyond rounding (the bound here is ~2e-4): both FAIL
    F_k = q["F_k"].copy()
    F_k[0] *= 1.01
    wrong = {**q, "F0": q["F0"] * 1.01, "F_k": F_k}
    assert gd.INIT_GD_EQUALITY.evaluate(wrong).holds is False
    assert theorem.ALIGNMENT.evaluate(wrong).holds is False
    # and below GD by as much: alignment holds (the theorem bounds from above), equality does not
    F_k[0] = q["F_k"][0] * 0.99
    assert gd.INIT_GD_EQUALITY.evaluate({**q, "F0": q["F0"] * 0.99}).holds is False
    assert theorem.ALIGNMENT.evaluate({**q, "F_k": F_k}).holds is True


def test_delta4_is_undecided_where_the_sigmoid_saturated_in_floating_point():
    """P = 2 exactly means σ rounded to 1, so the measured slope reads 0; δ₃Θ_L = 117 puts δ₄ = σ'(117) ≈ e^−117 far
    below float64's resolution too: neither holds nor FAILS can be read from these numbers (the verify of the
    paper's small configuration is such a case). A slope that is resolved still decides."""
    c = bounds.get("thm4_3.delta4")
    saturated = {"P_min": 1.0, "P_max": 2.0, "delta3": 117.0, "Theta_L": 1.0}
    assert c.evaluate(saturated).holds is None
    assert c.evaluate(saturated | {"eps": float(np.finfo(np.float32).eps)}).holds is None
    resolved = {"P_min": 0.5, "P_max": 1.5, "delta3": 1.0, "Theta_L": 1.0}  # σ(1 − σ) = 0.1875 against σ'(1)
    sig = np.array([0.25, 0.75])
    assert c.evaluate(resolved).holds == bool((sig * (1 - sig)).min() >= np.exp(-1.0) / (1 + np.exp(-1.0)) ** 2)


def test_every_condition_covers_the_theorems_setting_and_names_the_setting_it_does_not_cover():
    """The theorem's own setting (least squares, gd) is inside every condition's declared setting; outside, the
    reason names the run's problem and update."""
    import bounds
    from bounds.core import ANY, THEOREM

    for c in bounds.registry():
        assert c.setting.outside("qp", "gd") is None, c.key
    assert ANY.outside("logistic", "fista") is None
    for problem, update in (("lasso", "gd"), ("qp", "nag"), ("logistic", "fista")):
        why = THEOREM.outside(problem, update)
        assert why is not None and f"problem {problem} with update {update}" in why
