"""The sweep's feature columns (features_drift_rel, sigma_min_nonzero) against a dense numpy reference: the wide
layer's features G_{L−1,T} built independently (the unroll and the layers written out in numpy from the weights), the
relative Frobenius change from W_0, and the smallest singular value above numpy's rank tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ntkcheck import train
from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.build.experiment import initial_weights, make_problem
from ntkcheck.config import TrainConfig
from ntkcheck.instruments.features import FeatureSpectrum, features_drift
from ntkcheck.instruments.linalg import numerical_rank

TINY = {"N": 3, "d": 4, "b": 3, "width": 24, "T": 3, "e": 5.0, "lr": 0.3, "iters": 15}


def numpy_features(weights: dict, problem, T: int, L: int) -> np.ndarray:
    """G_{L−1,T} in numpy: X_t = X_{t−1} − (1/β_i)·P_t ⊙ ∇f_i(X_{t−1}), ∇f_i = M_iᵀ(M_i x_i − y_i), the rows
    z = (∇f_i(x)_j, x_j) at row i·d + j, G_ℓ = ReLU(G_{ℓ−1} W_ℓ), P = 2σ(G_{L−1} W_L); G at the inputs of step T."""
    W = {k: v.detach().double().numpy() for k, v in weights.items()}
    M, Y, beta = (problem.M.double().numpy(), problem.Y.double().numpy(), problem.beta.double().numpy())
    X = np.zeros((M.shape[0], M.shape[2]))

    def wide(X):
        grad = np.einsum("nbd,nb->nd", M, np.einsum("nbd,nd->nb", M, X) - Y)
        G = np.stack((grad.ravel(), X.ravel()), axis=1)
        for ell in range(1, L):
            G = np.maximum(G @ W[f"W{ell}"], 0.0)
        return G, grad

    for _ in range(T - 1):
        G, grad = wide(X)
        P = 2.0 / (1.0 + np.exp(-(G @ W[f"W{L}"]).ravel()))
        X = X - P.reshape(X.shape) * grad / beta[:, None]
    return wide(X)[0]


def sigma_min_above_tol(G: np.ndarray) -> float:
    s = np.linalg.svd(G, compute_uv=False)
    tol = max(G.shape) * np.finfo(np.float64).eps * s.max()
    return float(s[s > tol].min())


@pytest.fixture(scope="module")
def probed():
    cfg = TrainConfig(**TINY)
    spec = make_spec("small", base=TINY, grid={"e": (5.0,)}, seeds=[0], probe_at=(0, 5, "K"), probe_method="dense")
    return cfg, sweep(spec).probes.set_index("iteration")


def test_the_features_drift_and_sigma_min_nonzero_equal_the_numpy_reference(probed):
    cfg, probes = probed
    problem = make_problem(cfg)
    G0 = numpy_features(initial_weights(cfg), problem, cfg.T, cfg.L)
    trained = dict(train(cfg).model().named_parameters())  # W_K: the last iteration takes no step
    GK = numpy_features(trained, problem, cfg.T, cfg.L)
    want_drift = np.linalg.norm(GK - G0) / np.linalg.norm(G0)
    assert want_drift > 1e-3  # the features moved
    assert probes.loc[cfg.iters, "features_drift_rel"] == pytest.approx(want_drift, rel=1e-10)
    assert probes.loc[0, "features_drift_rel"] == 0.0
    assert probes.loc[0, "sigma_min_nonzero"] == pytest.approx(sigma_min_above_tol(G0), rel=1e-10)
    assert probes.loc[cfg.iters, "sigma_min_nonzero"] == pytest.approx(sigma_min_above_tol(GK), rel=1e-10)
    # below full rank (this architecture's G is rank-deficient): σ_min⁺ is not α = σ_min, which is 0 to rounding
    assert probes.loc[0, "alpha_rank"] < min(G0.shape)
    assert probes.loc[0, "alpha"] < 1e-8 * probes.loc[0, "sigma_min_nonzero"]


def test_the_sweep_with_an_lstm_cell_reads_nan():
    spec = make_spec("small", base={"N": 2, "d": 4, "b": 3, "T": 3, "lr": 1e-2, "iters": 3, "model": "lstm", "lstm_hidden": 4},
                     seeds=[0], probe_at=(0, "K"), probe_method="dense")
    probes = sweep(spec).probes
    assert probes["features_drift_rel"].isna().all() and probes["sigma_min_nonzero"].isna().all()
    assert probes["lambda_max"].notna().all()


@settings(deadline=None, max_examples=40)
@given(arrays(np.float64, (5, 3), elements=st.floats(-10, 10)), arrays(np.float64, (5, 3), elements=st.floats(-10, 10)))
def test_features_drift_is_the_relative_frobenius_change(G0, G):
    got = features_drift(G0, G)
    norm0 = np.sqrt((G0 ** 2).sum())
    if norm0 == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(np.sqrt(((G - G0) ** 2).sum()) / norm0, rel=1e-12, abs=1e-300)
        assert features_drift(G0, G0) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        features_drift(G0, G[:4])


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=6))
def test_sigma_min_nonzero_is_the_smallest_singular_value_above_the_tolerance(s):
    s = np.sort(np.asarray(s))[::-1]
    rank = numerical_rank(s, (len(s) + 2, len(s)))
    spectrum = FeatureSpectrum(1, 1, 1, len(s), s, rank)
    above = s[s > rank.tol]
    if above.size:
        assert spectrum.sigma_min_nonzero == above.min() and spectrum.as_dict()["sigma_min_nonzero"] == above.min()
        assert np.sum(s >= spectrum.sigma_min_nonzero) >= rank.rank  # the bottom of the numerical range
    else:
        assert math.isnan(spectrum.sigma_min_nonzero)


def test_a_verify_probe_reports_sigma_min_nonzero_from_torch():
    """The α probe's spectrum (through its activation patterns) against numpy's SVD of the dense G."""
    from ntkcheck import measure
    from ntkcheck.build.experiment import build_model

    cfg = TrainConfig(**TINY)
    r = measure(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, method="dense")
    G = numpy_features(initial_weights(cfg), make_problem(cfg), cfg.T, cfg.L)
    assert r.as_dict()["alpha"]["sigma_min_nonzero"] == pytest.approx(sigma_min_above_tol(G), rel=1e-10)
