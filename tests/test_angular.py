"""The angular (prefix-sum) wide layer equals the dense one: outputs, trajectories, gradients, jvp.

The dense layer relu(h @ W) @ w is the reference. Both are evaluated in float64 on hypothesis-drawn
configurations, including zero rows, rows on the axes (what a ReLU layer produces), all rows collinear
(X_0 = 0 at t = 1), duplicate columns, and e from 1 to 1e4.
"""

import math

import numpy as np
import pytest
import torch
from drawn import drawn_weights
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import functional_call, jvp

from ntkcheck.config import hidden_widths
from ntkcheck.models import init
from ntkcheck.models.angular import row_norms_sq, wide_readout
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems

RTOL = 1e-10


def close(a, b, rtol=RTOL):
    """|a − b| ≤ rtol·max|b| (relative to the scale of the reference)."""
    scale = max(float(b.abs().max()), 1e-300)
    assert float((a - b).abs().max()) <= rtol * scale, (float((a - b).abs().max()), scale)


def dense_readout(h, W, w):
    return torch.relu(h @ W) @ w


def rows_with_ties(rng, R):
    """Rows h ∈ R²: generic, zero, on each half-axis, and many copies of one direction."""
    h = rng.standard_normal((R, 2))
    kinds = rng.integers(0, 6, R)
    h[kinds == 1] = 0.0
    h[kinds == 2, 1] = 0.0
    h[kinds == 3, 0] = 0.0
    h[kinds == 4] = np.abs(h[kinds == 4])
    h[kinds == 5] = rng.uniform(0.1, 3.0, (int((kinds == 5).sum()), 1)) * np.array([0.6, -0.8])
    return torch.from_numpy(h)


def rows_and_columns(rng, R, n, duplicates, log_e):
    """Rows h (:func:`rows_with_ties`) and a wide layer W (2, n) of scale 10^log_e; with ``duplicates`` the second
    half of the columns repeats the first half's angles with other lengths."""
    h = rows_with_ties(rng, R)
    W = 10**log_e * rng.standard_normal((2, n))
    if duplicates and n > 1:
        W[:, n // 2:] = W[:, : n - n // 2] * rng.uniform(0.5, 2.0, n - n // 2)
    return h, torch.from_numpy(W)


@settings(max_examples=60, deadline=None)
@given(R=st.integers(1, 300), n=st.integers(1, 200), seed=st.integers(0, 2**31 - 1),
       duplicates=st.booleans(), log_e=st.floats(0, 4))
def test_layer_value_active_count_and_derivatives_equal_dense(R, n, seed, duplicates, log_e):
    rng = np.random.default_rng(seed)
    h, W = rows_and_columns(rng, R, n, duplicates, log_e)
    w = torch.from_numpy(rng.standard_normal(n))

    phi, active = wide_readout(h, W, w)
    close(phi, dense_readout(h, W, w))
    assert torch.equal(active, (h @ W > 0).sum(1))

    args = [h.clone().requires_grad_(), W.clone().requires_grad_(), w.clone().requires_grad_()]
    grads = torch.autograd.grad(wide_readout(*args)[0].square().sum(), args)
    ref = torch.autograd.grad(dense_readout(*args).square().sum(), args)
    for g, r in zip(grads, ref):
        close(g, r)

    tangents = tuple(torch.from_numpy(rng.standard_normal(t.shape)) for t in (h, W, w))
    _, out = jvp(lambda *a: wide_readout(*a)[0], (h, W, w), tangents)
    _, out_ref = jvp(dense_readout, (h, W, w), tangents)
    close(out, out_ref)


@settings(max_examples=60, deadline=None)
@given(R=st.integers(1, 300), n=st.integers(1, 200), seed=st.integers(0, 2**31 - 1),
       duplicates=st.booleans(), log_e=st.floats(0, 4))
def test_row_norms_by_prefix_sums_equal_the_dense_features(R, n, seed, duplicates, log_e):
    """‖ReLU(h W)‖² = hᵀB(h)h from prefix sums of w_c w_cᵀ = the squared row norms of the dense R×n features."""
    h, W = rows_and_columns(np.random.default_rng(seed), R, n, duplicates, log_e)
    got, ref = row_norms_sq(h, W), torch.relu(h @ W).square().sum(1)
    close(got, ref)
    assert torch.equal(got[ref == 0], ref[ref == 0])  # rows h = 0, or with no active column: exactly 0


@pytest.mark.parametrize("n", [1, 2, 7])
def test_rows_with_empty_arcs_give_exactly_zero_gradients_as_dense_does(n):
    """Every row outside all columns' half-planes (and some h = 0): φ = 0 and every gradient is exactly 0 in the
    dense layer, so it must be exactly 0 here, not rounding noise of +a − a summed in the table."""
    rng = np.random.default_rng(n)
    W = torch.from_numpy(np.abs(rng.standard_normal((2, n))))  # every column in the first quadrant
    h = -torch.from_numpy(np.abs(rng.standard_normal((50, 2))) * rng.uniform(1e-3, 1e3, (50, 1)))  # third quadrant
    h[::7] = 0.0
    args = [h.requires_grad_(), W.requires_grad_(), torch.from_numpy(rng.standard_normal(n)).requires_grad_()]
    weights = torch.from_numpy(rng.standard_normal(50))
    phi, active = wide_readout(*args)
    assert torch.equal(phi, torch.zeros(50, dtype=torch.float64)) and int(active.sum()) == 0
    for grad in torch.autograd.grad((phi * weights).sum(), args):
        assert torch.equal(grad, torch.zeros_like(grad))


def test_columns_on_the_axes_and_rows_on_the_axes():
    """Exact ties h·w_c = 0 (a column perpendicular to a row): the column is inactive in both forms."""
    W = torch.tensor([[1.0, 0.0, -1.0, 0.0, 0.7], [0.0, 1.0, 0.0, -1.0, 0.7]], dtype=torch.float64)
    h = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -0.5], [0.0, 0.0], [1.0, -1.0]],
                     dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0], dtype=torch.float64)
    phi, active = wide_readout(h, W, w)
    assert torch.equal(active, (h @ W > 0).sum(1))
    close(phi, dense_readout(h, W, w))
    g, = torch.autograd.grad(phi.sum(), h)
    g_ref, = torch.autograd.grad(dense_readout(h, W, w).sum(), h)
    close(g, g_ref)


def test_mixed_precision_accumulates_in_float64():
    """float32 inputs: the result is within float32 rounding of the float64 dense value."""
    rng = np.random.default_rng(0)
    h, W, w = (torch.from_numpy(rng.standard_normal(s)) for s in [(500, 2), (2, 5000), (5000,)])
    phi32, _ = wide_readout(h.float(), W.float(), w.float())
    assert phi32.dtype == torch.float32
    exact = dense_readout(h.float().double(), W.float().double(), w.float().double())
    close(phi32.double(), exact, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 3), d=st.integers(2, 12), data=st.data(), width=st.integers(1, 64),
       L=st.integers(2, 4), T=st.integers(1, 6), log_e=st.floats(0, 4), detach=st.booleans(),
       init_kind=st.sampled_from(["deterministic", "deterministic-abs", "random"]), seed=st.integers(0, 10**6))
def test_unroll_loss_and_every_gradient_equal_dense(N, d, data, width, L, T, log_e, detach, init_kind, seed):
    b = data.draw(st.integers(1, d))
    problem = problems.generate(N, d, b, seed)
    widths = hidden_widths(width, L)
    params = drawn_weights(widths, init_kind, 10**log_e, seed)
    runs = {}
    for kind in ("angular", "dense"):
        model = build(widths, params, detach=detach, wide_layer=kind)
        traj = model.unroll(problem, T, record_active=True)
        loss = problems.objective(problem, traj.X[-1])
        runs[kind] = (traj, loss, torch.autograd.grad(loss, list(model.parameters())))
    # F and its gradient are proportional to r_T = M X_T − Y, which carries rounding noise of about
    # ε‖Y‖. A relative comparison at 1e-10 means something only while ‖r_T‖ ≫ 1e-6‖Y‖.
    assume(float(problems.residual(problem, runs["dense"][0].X[-1]).norm()) > 1e-4 * float(problem.Y.norm()))
    (ta, la, ga), (td, ld, gd) = runs["angular"], runs["dense"]
    for Xa, Xd in zip(ta.X, td.X):
        close(Xa, Xd)
    for Pa, Pd in zip(ta.P, td.P):
        close(Pa, Pd)
    assert [float(a) for a in ta.active] == [float(a) for a in td.active]
    close(la, ld)
    gradient_scale = max(float(r.abs().max()) for r in gd)  # the whole gradient's scale
    for a, r in zip(ga, gd):
        assert float((a - r).abs().max()) <= RTOL * gradient_scale
    # forward mode through the whole unroll: the directional derivative of X_T along a random tangent
    rng = np.random.default_rng(seed + 1)
    tangent = {k: torch.from_numpy(rng.standard_normal(v.shape)) for k, v in params.items()}
    jvps = []
    for kind in ("angular", "dense"):
        model = build(widths, params, detach=detach, wide_layer=kind)
        unroll = lambda p: functional_call(model, p, (problem, T)).X[-1]  # noqa: E731
        jvps.append(jvp(unroll, (params,), (tangent,))[1])
    close(*jvps)


def test_auto_picks_angular_only_where_it_applies():
    assert build((2, 8), init.deterministic((2, 8), 2.0, 0)).angular
    assert not build((2, 8), init.deterministic((2, 8), 2.0, 0, bias=True), bias=True).angular
    assert not build((2, 8), init.deterministic((2, 8), 2.0, 0), wide_layer="dense").angular
    with pytest.raises(ValueError, match="angular"):
        build((2, 8), init.deterministic((2, 8), 2.0, 0, bias=True), bias=True, wide_layer="angular")


def test_paper_scale_step_sizes_equal_dense():
    """One paper-scale step (N=10, 512×400, n=5120, e=100) with a random readout: P and its gradient."""
    problem = problems.generate(10, 512, 400, seed=3)
    widths = hidden_widths(5120, 3)
    params = init.deterministic(widths, 100.0, 3)
    params["W3"] = torch.from_numpy(np.random.default_rng(1).standard_normal((5120, 1)) * 1e-4)
    traj = {k: build(widths, params, wide_layer=k).unroll(problem, 2) for k in ("angular", "dense")}
    for Pa, Pd in zip(traj["angular"].P, traj["dense"].P):
        close(Pa, Pd)
    assert math.isfinite(float(traj["angular"].X[-1].sum()))
