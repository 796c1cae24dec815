"""Initial weights of φ_W: the paper's deterministic init (e·Q, W_L = 0), the random ablation, and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.build.experiment import initial_weights
from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.models import init as inits


def expected_shapes(widths):
    """(in, out) of W_1..W_L for 2 → widths → 1, written out independently of init.layer_shapes."""
    dims = [2, *widths, 1]
    return [(dims[k], dims[k + 1]) for k in range(len(dims) - 1)]


def test_hidden_widths_are_two_then_the_wide_layer():
    assert hidden_widths(7, 2) == (7,)
    assert hidden_widths(7, 3) == (2, 7)
    assert hidden_widths(7, 4) == (2, 2, 7)
    assert inits.layer_shapes(hidden_widths(7, 3)) == [(2, 2), (2, 7), (7, 1)]


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(1, 40),
    L=st.integers(2, 4),
    e=st.floats(0.01, 1000.0),
    seed=st.integers(0, 2**31 - 1),
    bias=st.booleans(),
)
def test_deterministic_init_singular_values_equal_e(width, L, e, seed, bias):
    widths = hidden_widths(width, L)
    params = inits.deterministic(widths, e, seed, bias=bias)
    shapes = expected_shapes(widths)
    names = {f"W{k}" for k in range(1, L + 1)} | ({f"b{k}" for k in range(1, L + 1)} if bias else set())
    assert set(params) == names
    for ell, shape in enumerate(shapes, start=1):
        W = params[f"W{ell}"]
        assert W.dtype == torch.float64 and tuple(W.shape) == shape
        if bias:
            b = params[f"b{ell}"]
            assert b.dtype == torch.float64 and tuple(b.shape) == (shape[1],)
            assert torch.count_nonzero(b) == 0
        if ell < L:
            sv = np.linalg.svd(W.numpy(), compute_uv=False)
            assert len(sv) == min(shape)
            np.testing.assert_allclose(sv / e, 1.0, rtol=0, atol=1e-12)
            # orthonormal columns (in ≥ out) or rows (in < out), scaled by e
            Wn = W.numpy() / e
            gram = Wn.T @ Wn if shape[0] >= shape[1] else Wn @ Wn.T
            np.testing.assert_allclose(gram, np.eye(min(shape)), rtol=0, atol=1e-12)
        else:
            assert torch.count_nonzero(W) == 0  # W_L = 0 exactly


@pytest.mark.parametrize("L", [2, 3, 4])
def test_deterministic_absolute_is_abs_of_the_same_draw(L):
    widths = hidden_widths(9, L)
    plain = inits.deterministic(widths, 3.0, seed=5)
    absolute = inits.deterministic(widths, 3.0, seed=5, absolute=True)
    assert set(plain) == set(absolute)
    for name in plain:
        assert torch.equal(absolute[name], plain[name].abs()), name
        assert (absolute[name] >= 0).all()
    # and the plain draw genuinely has negative entries (otherwise the variant would be untested)
    assert any((plain[f"W{ell}"] < 0).any() for ell in range(1, L))


def test_deterministic_scales_linearly_in_e_and_is_reproducible():
    widths = hidden_widths(16, 3)
    a = inits.deterministic(widths, 1.0, seed=3)
    b = inits.deterministic(widths, 50.0, seed=3)
    c = inits.deterministic(widths, 50.0, seed=3)
    d = inits.deterministic(widths, 50.0, seed=4)
    for name in a:
        assert torch.equal(b[name], c[name])
        torch.testing.assert_close(b[name], 50.0 * a[name], rtol=1e-15, atol=0)
    assert not torch.allclose(b["W1"], d["W1"]) and not torch.allclose(b["W2"], d["W2"])


def test_deterministic_signs_fixed_by_diag_R():
    """Q from QR with diag(R) ≥ 0 is the unique Q with Qᵀ A upper triangular and non-negative diagonal.

    Reconstruct the Gaussian draws from the documented stream and check that convention independently:
    Q⁻¹A = QᵀA must be upper triangular with positive diagonal.
    """
    widths = hidden_widths(6, 3)
    params = inits.deterministic(widths, 2.0, seed=8)
    rng = np.random.default_rng(np.random.SeedSequence([8, inits.INIT_STREAM]))
    for ell, (rows, cols) in enumerate(expected_shapes(widths)[:-1], start=1):
        A = rng.standard_normal((max(rows, cols), min(rows, cols)))
        W = params[f"W{ell}"].numpy() / 2.0
        Q = W if rows >= cols else W.T
        R = Q.T @ A
        np.testing.assert_allclose(np.tril(R, -1), 0.0, atol=1e-12)
        assert (np.diag(R) > 0).all()


def test_initial_weights_of_a_config_use_hidden_widths():
    for init, absolute in (("deterministic", False), ("deterministic-abs", True)):
        cfg = TrainConfig(N=2, d=4, b=3, width=12, L=4, e=7.0, seed=9, init=init, bias=True)
        got = initial_weights(cfg)
        want = inits.deterministic(hidden_widths(12, 4), 7.0, 9, bias=True, absolute=absolute)
        assert set(got) == set(want)
        for name in want:
            assert torch.equal(got[name], want[name])
        assert [tuple(got[f"W{k}"].shape) for k in range(1, 5)] == [(2, 2), (2, 2), (2, 12), (12, 1)]
    cfg = TrainConfig(N=2, d=4, b=3, width=12, L=3, seed=9, init="random")
    assert all(torch.equal(initial_weights(cfg)[k], v) for k, v in inits.random((2, 12), 9).items())


# -- random ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("L,bias", [(2, False), (3, True), (4, True)])
def test_random_init_within_bounds_and_last_layer_non_zero(L, bias):
    width = 500
    widths = hidden_widths(width, L)
    params = inits.random(widths, seed=1, bias=bias)
    assert set(params) == {f"W{k}" for k in range(1, L + 1)} | ({f"b{k}" for k in range(1, L + 1)} if bias else set())
    for ell, (fan_in, out) in enumerate(expected_shapes(widths), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        for name, shape in ((f"W{ell}", (fan_in, out)), (f"b{ell}", (out,))):
            if name not in params:
                continue
            v = params[name].numpy()
            assert v.shape == shape and params[name].dtype == torch.float64
            assert np.all(np.abs(v) <= bound)
            if v.size >= 100:  # the draw fills the interval: not a narrower or shifted distribution
                assert v.max() > 0.9 * bound and v.min() < -0.9 * bound
                assert abs(v.mean()) < 4 * bound / np.sqrt(3 * v.size)
    WL = params[f"W{L}"].numpy()
    assert np.count_nonzero(WL) == WL.size  # the last layer is non-zero: the untrained model is not GD
    again = inits.random(widths, seed=1, bias=bias)
    assert all(torch.equal(params[k], again[k]) for k in params)
    other = inits.random(widths, seed=2, bias=bias)
    assert not torch.equal(params[f"W{L}"], other[f"W{L}"])


# -- load -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
@pytest.mark.parametrize("bias", [False, True])
def test_load_round_trip(tmp_path, suffix, bias):
    widths = hidden_widths(5, 3)
    params = inits.random(widths, seed=0, bias=bias)
    path = tmp_path / f"w{suffix}"
    if suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in params.items()})
    else:
        torch.save(params, path)
    loaded = inits.load(path, widths, bias=bias)
    assert set(loaded) == set(params)
    for k in params:
        assert loaded[k].dtype == torch.float64 and torch.equal(loaded[k], params[k])


def test_load_casts_to_float64_and_ignores_extra_arrays(tmp_path):
    widths = hidden_widths(3, 2)
    params = {"W1": np.ones((2, 3), np.float32), "W2": np.arange(3, dtype=np.float32).reshape(3, 1), "junk": np.ones(4)}
    np.savez(tmp_path / "w.npz", **params)
    loaded = inits.load(tmp_path / "w.npz", widths)
    assert set(loaded) == {"W1", "W2"}
    assert loaded["W2"].dtype == torch.float64
    np.testing.assert_array_equal(loaded["W2"].numpy(), [[0.0], [1.0], [2.0]])


def test_load_errors(tmp_path):
    widths = hidden_widths(5, 3)
    params = {k: v.numpy() for k, v in inits.random(widths, seed=0, bias=True).items()}

    def write(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    missing = write("missing.npz", **{k: v for k, v in params.items() if k != "W2"})
    with pytest.raises(ValueError, match=r"no array W2; expected W2 of shape \(2, 5\)"):
        inits.load(missing, widths)
    nobias = write("nobias.npz", **{k: v for k, v in params.items() if not k.startswith("b")})
    with pytest.raises(ValueError, match="no array b1"):
        inits.load(nobias, widths, bias=True)
    inits.load(nobias, widths, bias=False)  # fine without bias
    wrong = write("wrong.npz", **{**params, "W3": params["W3"].T})
    with pytest.raises(ValueError, match=r"W3 must have shape \(5, 1\) \(got \(1, 5\)\)"):
        inits.load(wrong, widths)
    # a file written for another width is rejected, not broadcast
    with pytest.raises(ValueError, match="W2 must have shape"):
        inits.load(write("ok.npz", **params), hidden_widths(6, 3))
    nan = write("nan.npz", **{**params, "W1": np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match="W1 must be finite"):
        inits.load(nan, widths)
    with pytest.raises(ValueError, match="not a readable file"):
        inits.load(tmp_path / "absent.pt", widths)


# -- gaussian, xavier, he ----------------------------------------------------------------------------------------

# the variance each paper prescribes, written out here: (fan_in, fan_out) → Var
PAPER_VARIANCE = {
    "gaussian": lambda fan_in, out: 1.0 / fan_in,
    "xavier": lambda fan_in, out: 2.0 / (fan_in + out),  # Glorot & Bengio 2010
    "he": lambda fan_in, out: 2.0 / fan_in,  # He et al. 2015
}


@pytest.mark.parametrize("name", list(PAPER_VARIANCE))
def test_random_schemes_have_their_papers_variance_at_a_wide_layer(name):
    """At the wide layer (64 → 512, 32768 draws) the sample variance is the formula's within 5 standard errors
    (sd of s²/σ² ≈ √(2/n) for a Gaussian, less for a uniform); mean 0; every layer drawn, W_L included."""
    from scipy import stats

    widths = (64, 512)
    params = inits.RANDOM[name](widths, seed=3)
    assert set(params) == {"W1", "W2", "W3"}
    for ell, (fan_in, out) in enumerate(expected_shapes(widths), start=1):
        W = params[f"W{ell}"]
        assert W.dtype == torch.float64 and tuple(W.shape) == (fan_in, out)
        assert torch.count_nonzero(W) == W.numel()
    W = params["W2"].numpy().ravel()
    var = PAPER_VARIANCE[name](64, 512)
    assert abs(W.var() / var - 1) < 5 * np.sqrt(2 / W.size)
    assert abs(W.mean()) < 5 * np.sqrt(var / W.size)
    if name == "xavier":  # the paper's uniform U(−a, a), a = √(6/(fan_in + fan_out)), filled to its ends
        a = np.sqrt(6 / (64 + 512))
        assert np.abs(W).max() <= a and np.abs(W).max() > 0.99 * a
        assert stats.kstest(W, stats.uniform(-a, 2 * a).cdf).pvalue > 1e-4
    else:
        assert stats.kstest(W / np.sqrt(var), "norm").pvalue > 1e-4


@pytest.mark.parametrize("name", list(PAPER_VARIANCE))
def test_random_schemes_are_deterministic_per_seed(name):
    widths = hidden_widths(40, 3)
    a, b, c = (inits.RANDOM[name](widths, seed=s, bias=True) for s in (7, 7, 8))
    assert set(a) == {"W1", "W2", "W3", "b1", "b2", "b3"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.count_nonzero(a[f"b{ell}"]) == 0 for ell in (1, 2, 3))  # biases 0, as in both papers
    assert not any(torch.equal(a[f"W{ell}"], c[f"W{ell}"]) for ell in (1, 2, 3))
    # the stream is the init stream of the seed: the first layer is the first draw from SeedSequence([seed, 2])
    rng = np.random.default_rng(np.random.SeedSequence([7, inits.INIT_STREAM]))
    first = rng.uniform(size=(2, 2)) if name == "xavier" else rng.standard_normal((2, 2))
    std = np.sqrt(PAPER_VARIANCE[name](2, 2))
    want = (2 * first - 1) * np.sqrt(3) * std if name == "xavier" else first * std
    np.testing.assert_allclose(a["W1"].numpy(), want, rtol=1e-14)
