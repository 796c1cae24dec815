"""Layer features and α = σ_min(G_{L−1,t}) (ntkcheck.instruments.features), in float64.

Properties tested: exact scaling α(e) = e^{L−1}·α(1) of the deterministic init (ReLU homogeneity, and
P ≡ 1 makes the trajectory independent of e), interlacing of singular values under the removal of a row
or a column, the rank ≤ 2 of G_{L−1,1} with X_0 = 0, and the bookkeeping (rows, step, tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.config import hidden_widths
from ntkcheck.instruments import features, linalg
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems

# -- α(e) = e^{L−1} α(1) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
def test_alpha_scales_as_e_to_the_L_minus_1(L):
    """Deterministic init: W_ℓ = e·Q_ℓ (ℓ < L), W_L = 0. P ≡ 1 for every e, so X_t (hence z_t) does not
    depend on e, and a bias-free ReLU network is positively homogeneous: G_{L−1,t}(e) = e^{L−1}G_{L−1,t}(1).
    Every singular value scales by e^{L−1}; with e a power of two the scaling is exact in floating point."""
    p = problems.generate(3, 8, 6, seed=L)
    widths = hidden_widths(16, L)
    T = 4
    base = build(widths, inits.deterministic(widths, 1.0, seed=7))
    ref = features.alpha_table(base, p, T)
    for e in (4.0, 50.0):
        model = build(widths, inits.deterministic(widths, e, seed=7))
        table = features.alpha_table(model, p, T)
        c = e ** (L - 1)
        np.testing.assert_allclose(table["sigma_max"], c * ref["sigma_max"], rtol=1e-13)
        np.testing.assert_allclose(table["tol"], c * ref["tol"], rtol=1e-13)
        assert (table["rank"] == ref["rank"]).all()
        for t in (1, T):
            G1 = features.features(base, p, t)
            Ge = features.features(model, p, t)
            if e == 4.0:
                assert torch.equal(Ge, c * G1)
            a1, ae = features.alpha(base, p, T, t=t), features.alpha(model, p, T, t=t)
            # σ_min scales too, also when it is a rounding-level zero (then only to that level)
            assert abs(ae.alpha - c * a1.alpha) <= 1e-13 * c * a1.sigma_max + 1e-13 * c * a1.alpha
            np.testing.assert_allclose(ae.singular_values, c * a1.singular_values, rtol=0,
                                       atol=1e-13 * c * a1.sigma_max)
    # a wide matrix of full rank (t = 2, so the rows are no longer collinear; 2 rows, since the narrow ReLU
    # layers put most rows on a few rays): α > 0, and it scales to full relative precision
    def found():
        for init_seed in range(20):
            for seed in range(10):
                small = problems.generate(1, 2, 1, seed=seed)
                a1 = features.alpha(build(widths, inits.deterministic(widths, 1.0, init_seed)), small, 2)
                if a1.rank.full and a1.alpha > 1e6 * a1.rank.tol:
                    return init_seed, small, a1
        raise AssertionError("no full-rank example")

    init_seed, small, a1 = found()
    for e in (4.0, 50.0):
        ae = features.alpha(build(widths, inits.deterministic(widths, e, init_seed)), small, 2)
        assert ae.alpha == pytest.approx(e ** (L - 1) * a1.alpha, rel=1e-12)


# -- interlacing ------------------------------------------------------------------------------------------------


def low_rank_matrix(m, n, r, seed, log_scale):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) if r else np.zeros((m, n))
    return 10.0**log_scale * A


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 25), n=st.integers(2, 25), data=st.data(), seed=st.integers(0, 2**31 - 1),
       log_scale=st.floats(-6, 6), axis=st.sampled_from(["row", "column"]))
def test_singular_values_interlace_when_a_row_or_column_is_removed(m, n, data, seed, log_scale, axis):
    """B = A without one row (or column): σ_i(A) ≥ σ_i(B) ≥ σ_{i+1}(A) (Thompson's interlacing), with
    σ_i = 0 beyond min(shape). Hence σ_max never grows, and σ_min = σ_{min(shape)}:
      - removing a row of a wide A (m ≤ n) can only raise σ_min (B has one singular value fewer);
      - removing a column of a wide A (m ≤ n − 1) can only lower σ_min.
    Checked on rank-deficient A too (r < min(m, n)), where the zeros must stay zeros."""
    r = data.draw(st.integers(0, min(m, n)), label="r")
    A = low_rank_matrix(m, n, r, seed, log_scale)
    k = data.draw(st.integers(0, (m if axis == "row" else n) - 1), label="removed")
    B = np.delete(A, k, axis=0 if axis == "row" else 1)
    sA, rankA = linalg.singular_spectrum(A)
    sB, rankB = linalg.singular_spectrum(B)
    slack = 1e-12 * max(sA[0], 1e-300)
    padA = np.concatenate((sA, np.zeros(len(sB) + 1)))
    for i in range(len(sB)):
        assert sA[i] + slack >= sB[i] >= padA[i + 1] - slack, (i, sA, sB)
    assert rankB.sigma_max <= rankA.sigma_max + slack
    assert rankA.rank - 1 <= rankB.rank <= rankA.rank
    if axis == "row" and m <= n:
        assert rankB.sigma_min >= rankA.sigma_min - slack
    if axis == "column" and m <= n - 1:
        assert rankB.sigma_min <= rankA.sigma_min + slack


# -- rank at step 1 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("L", [2, 3])
def test_at_step_one_the_wide_features_have_rank_at_most_two_and_alpha_is_a_reported_zero(L, absolute):
    """X_0 = 0: every row is z_j = (g_j, 0) = g_j e₁, so G_{L−1,1}[j] = g_j⁺ G(e₁) + g_j⁻ G(−e₁): rank ≤ 2
    (≤ 1 with the absolute-value init, where G(−e₁) = 0). With N·d ≤ n the matrix is wide, α = σ_min is the
    (N·d)-th singular value: zero to working precision, and reported as computed with its tolerance."""
    p = problems.generate(2, 12, 10, seed=0)
    widths = hidden_widths(32, L)
    model = build(widths, inits.deterministic(widths, 10.0, seed=3, absolute=absolute))
    a = features.alpha(model, p, T=5, t=1)
    assert a.t == 1 and a.layer == L - 1 and a.shape == (24, 32)
    assert 1 <= a.rank.rank <= (1 if absolute else 2)
    assert a.alpha <= a.rank.tol and not a.rank.full
    assert a.alpha == float(a.singular_values[-1])  # the value itself, not a clipped 0
    assert a.rank.tol == pytest.approx(32 * np.finfo(float).eps * a.sigma_max, rel=1e-12)
    # an independent computation of the same rank: the rows are combinations of G(e₁) and G(−e₁)
    with torch.no_grad():
        Gpm = model.features(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))[-1].numpy()
    assert a.rank.rank == np.linalg.matrix_rank(Gpm)


# -- bookkeeping ---------------------------------------------------------------------------------------------------


def test_rows_are_instance_then_coordinate_and_table_matches_single_steps():
    p = problems.generate(3, 5, 4, seed=1)
    widths = hidden_widths(9, 3)
    params = inits.random(widths, seed=2)
    model = build(widths, params)
    labels = features.row_labels(3, 5)
    assert labels.shape == (15, 2) and tuple(labels[7]) == (1, 2)  # row 7 = 1·5 + 2
    # rows of G_1 at t = 1 are ReLU(z W_1), z_{(i, j)} = (∇F(0)_{ij}, 0): check row by row from (i, j)
    g = problems.gradient(p, p.X0()).numpy()
    G1 = features.features(model, p, 1, layer=1).numpy()
    for row, (i, j) in enumerate(labels):
        np.testing.assert_allclose(G1[row], np.maximum(g[i, j] * params["W1"][0].numpy(), 0), rtol=1e-14)
    table = features.alpha_table(model, p, 4)
    assert list(table["t"]) == [1, 2, 3, 4]
    for t in (1, 3, 4):
        a = features.alpha(model, p, 4, t=t)
        row = table.set_index("t").loc[t]
        assert row["sigma_min"] == pytest.approx(a.alpha, rel=1e-12, abs=1e-14 * a.sigma_max)
        assert row["sigma_max"] == pytest.approx(a.sigma_max, rel=1e-12)
        assert row["rank"] == a.rank.rank and row["n_rows"] == 15 and row["n_cols"] == 9
    assert features.alpha(model, p, 4).t == 4  # default t = T
    info = features.alpha(model, p, 4).as_dict()
    assert info["rows"].startswith("(instance i, coordinate j)") and info["N"] == 3 and info["d"] == 5


def test_float32_model_is_measured_in_float64():
    p = problems.generate(2, 6, 5, seed=0)
    widths = hidden_widths(12, 3)
    params = inits.deterministic(widths, 3.0, seed=0)
    m32 = build(widths, params, dtype=torch.float32)
    G = features.features(m32, p.to(dtype=torch.float32), 2)
    assert G.dtype == torch.float64
    ref = features.features(build(widths, params), p, 2)
    torch.testing.assert_close(G, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_weight_spectra_of_the_deterministic_init():
    """e·Q: every singular value equals e (orthonormal rows or columns); W_L = 0 has σ = 0 (rank 0)."""
    widths = hidden_widths(7, 4)
    model = build(widths, inits.deterministic(widths, 3.0, seed=1))
    table = features.weight_spectra(model).set_index("name")
    assert list(table.index) == ["W1", "W2", "W3", "W4"]
    for name in ("W1", "W2", "W3"):
        assert table.loc[name, "sigma_min"] == pytest.approx(3.0, rel=1e-13)
        assert table.loc[name, "sigma_max"] == pytest.approx(3.0, rel=1e-13)
    assert table.loc["W4", "sigma_max"] == 0.0 and table.loc["W4", "rank"] == 0
    # against numpy on random weights
    params = inits.random(widths, seed=4)
    table = features.weight_spectra(build(widths, params)).set_index("name")
    for name, W in params.items():
        s = np.linalg.svd(W.numpy(), compute_uv=False)
        assert table.loc[name, "sigma_max"] == pytest.approx(s[0], rel=1e-13)
        assert table.loc[name, "sigma_min"] == pytest.approx(s[-1], rel=1e-12)
        assert table.loc[name, "shape"] == tuple(W.shape)


def test_invalid_step_and_layer():
    p = problems.generate(2, 4, 3, seed=0)
    widths = hidden_widths(5, 3)
    model = build(widths, inits.deterministic(widths, 2.0, seed=0))
    with pytest.raises(ValueError, match=r"t must be an integer in \[1, T = 3\]"):
        features.alpha(model, p, 3, t=4)
    with pytest.raises(ValueError, match="layer must be"):
        features.alpha(model, p, 3, layer=3)
    with pytest.raises(ValueError, match="t must be"):
        features.features(model, p, 0)


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("kind", ["random", "deterministic"])
def test_delta3_by_prefix_sums_equals_the_dense_features(L, kind):
    """δ₃ = max_{t ≤ T, j} ‖G_{L−1,t}[j, :]‖₂ of a probe (angular path, no R×n matrix) = the same maximum over
    the dense features G_{L−1,t} of every step, formed one by one (``features_at``), in float64."""
    from drawn import drawn_weights

    from ntkcheck.instruments.probes import max_feature_row_norm

    p = problems.generate(3, 8, 6, seed=L)
    widths = hidden_widths(L, 16)
    params = drawn_weights(widths, kind, 3.0, seed=L)
    m = build(widths, params, wide_layer="angular")
    assert m.angular
    T = 4
    dense = max(float(m.features_at(p, t)[-1].norm(dim=1).max()) for t in range(1, T + 1))
    np.testing.assert_allclose(max_feature_row_norm(m, p, T), dense, rtol=1e-12)
    np.testing.assert_allclose(max_feature_row_norm(build(widths, params, wide_layer="dense"), p, T), dense,
                               rtol=1e-12)


# -- singular values through the activation patterns ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rays=st.integers(1, 6), rows=st.integers(1, 40), n=st.integers(1, 30), fan_in=st.integers(1, 3),
       bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_singular_values_through_activation_patterns_equal_the_dense_svd(rays, rows, n, fan_in, bias, seed):
    """G = ReLU(G_in W + b): the pattern factor C (G = Q·C) has G's singular values, and the rest are exact zeros.
    Inputs on a few rays (the model's G_{L−2} rows: many rows, few patterns) mixed with generic rows; checked against
    numpy's SVD of the dense G to 1e-13·σ_max, and the rank bound against numpy's numerical rank."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((rays, fan_in))
    G_in = np.abs(rng.standard_normal((rows, 1))) * directions[rng.integers(0, rays, rows)]
    G_in[rng.random(rows) < 0.2] = rng.standard_normal(fan_in)  # some generic rows
    G_in[rng.random(rows) < 0.1] = 0.0  # and some zero rows
    W, b = rng.standard_normal((fan_in, n)), (rng.standard_normal(n) if bias else None)
    G = np.maximum(G_in @ W + (0.0 if b is None else b), 0.0)
    t = lambda x: None if x is None else torch.from_numpy(x)  # noqa: E731
    dense = np.linalg.svd(G, compute_uv=False)
    factor = features.pattern_factor(t(G_in), t(W), t(b), t(G))
    live_patterns = {tuple(row) for row in (G > 0) if row.any()}
    bound = sum(min(sum(tuple(r) == pat for r in (G > 0)), fan_in + bias) for pat in live_patterns)
    assert (factor is None) == (bound >= min(G.shape))
    if factor is None:
        return
    C, patterns = factor
    by_patterns = np.zeros(min(G.shape))
    by_patterns[:min(C.shape)] = np.linalg.svd(C, compute_uv=False) if C.size else 0.0
    scale = max(dense[0], 1e-300)
    np.testing.assert_allclose(by_patterns, dense, rtol=0, atol=1e-13 * scale)
    assert patterns == len(live_patterns) and C.shape[0] == bound
    assert np.linalg.matrix_rank(G) <= C.shape[0]
    spec = features.spectrum_of(t(G), layer=1, t=1, N=1, d=rows, G_in=t(G_in), W=t(W), b=t(b))
    np.testing.assert_allclose(spec.singular_values, dense, rtol=0, atol=1e-13 * scale)
    assert spec.rank_bound == C.shape[0] < min(G.shape)  # the pattern route ran: the singular values past C's are 0
    assert (spec.singular_values[spec.rank_bound:] == 0).all()


@pytest.mark.parametrize("L", [2, 3, 4])
def test_alpha_through_activation_patterns_equals_the_dense_features_svd(L):
    """On the model, along a trained-like (random last layer) trajectory: α, σ_max, rank and every singular value
    of G_{L−1,t} agree with the SVD of the dense features; with L = 3 the pattern route runs and proves α = 0."""
    p = problems.generate(4, 16, 12, seed=L)
    widths = hidden_widths(256, L)
    params = inits.deterministic(widths, 3.0, seed=1)
    params[f"W{L}"] = torch.from_numpy(np.random.default_rng(L).standard_normal((widths[-1], 1)) * 1e-3)
    model = build(widths, params)
    for t in (1, 3, 6):
        a = features.alpha(model, p, 6, t=t)
        s, rank = linalg.singular_spectrum(features.features(model, p, t))
        np.testing.assert_allclose(a.singular_values, s, rtol=0, atol=1e-13 * s[0])
        assert (a.rank.rank, a.rank.tol) == (rank.rank, pytest.approx(rank.tol, rel=1e-12))
        if L == 3:
            assert a.rank_bound is not None and a.rank_bound < 64 and a.alpha == 0.0


@pytest.mark.parametrize("update", ["gd", "nag", "prox", "fista"])
def test_alpha_reads_the_features_where_each_step_reads_its_inputs(update):
    """α's G_{L−1,t} is the matrix the network's step t actually multiplied: P_t = 2σ(G_{L−1,t} W_L) (bias-free) for
    the P_t of the model's own unroll, at every t; for nag and fista its inputs sit at the extrapolated point Y_{t−1}
    (the iterate X_{t−1} gives other features)."""
    from ntkcheck.build.experiment import setup
    from ntkcheck.config import TrainConfig

    cfg = TrainConfig(N=2, d=6, b=4, width=16, T=4, e=3.0, init="random", update=update,
                      problem="lasso" if update in ("prox", "fista") else "qp")
    exp = setup(cfg)
    m, p = exp.model.to(torch.float64), exp.problem.to(dtype=torch.float64)
    W_L = dict(m.named_parameters())[f"W{m.L}"].detach()
    with torch.no_grad():
        traj = m.unroll(p, cfg.T)
    for t in range(1, cfg.T + 1):
        G = features.features(m, p, t)
        torch.testing.assert_close(traj.P[t - 1].reshape(-1), (2 * torch.sigmoid(G @ W_L))[:, 0], rtol=1e-12,
                                   atol=1e-14)
    G_T = features.alpha_features(m, p, cfg.T)
    torch.testing.assert_close(traj.P[-1].reshape(-1), (2 * torch.sigmoid(G_T @ W_L))[:, 0], rtol=1e-12, atol=1e-14)
    table = features.alpha_table(m, p, cfg.T)
    assert table["sigma_max"].iloc[-1] == pytest.approx(float(torch.linalg.svdvals(G_T)[0]), rel=1e-12)
    if update in ("nag", "fista"):
        with torch.no_grad():
            at_X = m.features(m.inputs(p, traj.X[cfg.T - 1]))[-1]
        assert not torch.allclose(G_T, at_X)
