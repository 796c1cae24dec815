"""The Learner protocol (ntkcheck.models.base), proved on Liu et al.'s LSTM, in float64.

The reference below writes the LSTM optimiser out by hand (gates i, f, g, o of torch's nn.LSTM; heads u, P, A, B…)
from the module's parameter dict and differentiates it with a dense ``torch.func.jacrev``; it goes through neither
the module's forward nor ntkcheck.instruments.ntk. J is its Jacobian with live inputs z_t = (∇F(Y_{t−1}), Y_{t−1}), J̃ its
Jacobian with the inputs frozen at their values along the trajectory at W (what detached BPTT computes).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacrev

from ntkcheck.engine.learned import fit
from ntkcheck.instruments import ntk
from ntkcheck.instruments.probes import ProbeResult, measure
from ntkcheck.models import init as inits
from ntkcheck.models.base import Learner, Path
from ntkcheck.models.lista import weight_only
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.models.math_l2o import MathL2O, build
from ntkcheck.problems import qp as problems

CASES = {"P": {"variant": "P"}, "PA": {"variant": "PA"}, "P+B": {"variant": "P", "b_terms": True}}
T = 3


def tiny_problem(seed=0):
    return problems.generate(2, 3, 4, seed)  # N = 2, d = 3, b = 4: r has 8 rows


def tiny_lstm(case="PA", **kwargs):
    return MathL2OLSTM(**CASES[case], hidden=4, layers=2, seed=1, **kwargs)


# -- the reference: the LSTM optimiser written out ---------------------------------------------------------


def lstm_cell(W, ell, x, h, c):
    """torch's LSTM layer ℓ: (i, f, g, o) = W_ih x + b_ih + W_hh h + b_hh;
    c' = σ(f)c + σ(i)tanh(g), h' = σ(o)tanh(c')."""
    gates = x @ W[f"lstm.weight_ih_l{ell}"].T + W[f"lstm.bias_ih_l{ell}"] + h @ W[f"lstm.weight_hh_l{ell}"].T \
        + W[f"lstm.bias_hh_l{ell}"]
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def head(W, name, u):
    return u @ W[f"heads.{name}.weight"][0] + W[f"heads.{name}.bias"][0]


def grad_F(problem, X):
    """∇F(X)_i = M_iᵀ(M_i x_i − y_i)."""
    return torch.einsum("nbd,nb->nd", problem.M, torch.einsum("nbd,nd->nb", problem.M, X) - problem.Y)


def reference_unroll(model, problem, W, frozen=None):
    """Y_0..Y_T and the inputs Z_1..Z_T (rows (∇F(Y_{t−1})_j, Y_{t−1,j})) of the module docstring of
    ntkcheck.models.lstm, from the weights W; ``frozen`` replaces the inputs by given ones."""
    state = model.initial_state(problem)  # h_0, c_0: constants of the map
    h, c = list(state.h), list(state.c)
    X_prev = Y = problem.X0()
    alpha = (model.step_scale / problem.beta)[:, None]
    Ys, Zs = [Y], []
    for t in range(T):
        g = grad_F(problem, Y)
        Z = torch.stack((g, Y), dim=-1).reshape(-1, 2) if frozen is None else frozen[t]
        Zs.append(Z)
        x = Z
        for ell in range(model.layers):
            h[ell], c[ell] = lstm_cell(W, ell, x, h[ell], c[ell])
            x = h[ell]
        u = torch.relu(x @ W["linear.weight"].T + W["linear.bias"])
        P = 2 * torch.sigmoid(head(W, "P", u)).reshape(Y.shape)
        X = Y - alpha * P * g
        if model.b_terms:
            B = (head(W, "B", u) * W["b_scales.B"]).reshape(Y.shape)
            X = B * X + (1 - B) * (X_prev - alpha * P * grad_F(problem, X_prev)) \
                + (head(W, "B1", u) * W["b_scales.B1"]).reshape(Y.shape)
        A = 2 * torch.sigmoid(head(W, "A", u)).reshape(Y.shape) if model.variant == "PA" else 0.0
        Y = X + A * (X - X_prev)
        if model.b_terms:
            Y = Y + (head(W, "B2", u) * W["b_scales.B2"]).reshape(Y.shape)
        X_prev = X
        Ys.append(Y)
    return Ys, Zs


def reference_jacobians(model, problem):
    """(J, J̃) as dense (N·b, P) matrices, columns in the order of named_parameters."""
    W = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        Z_at_W = reference_unroll(model, problem, W)[1]

    def r(W, frozen=None):
        Y_T = reference_unroll(model, problem, W, frozen)[0][-1]
        return (torch.einsum("nbd,nd->nb", problem.M, Y_T) - problem.Y).reshape(-1)

    def dense(jac):
        return torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in W], dim=1)

    return dense(jacrev(r)(W)), dense(jacrev(lambda w: r(w, Z_at_W))(W))


def flat(J: dict) -> torch.Tensor:
    return torch.cat(list(J.values()), dim=1)


def rel(A, B) -> float:
    return float(torch.linalg.norm(A - B) / torch.linalg.norm(B))


# -- the protocol -----------------------------------------------------------------------------------------


def test_both_math_l2o_models_are_learners_and_other_modules_are_not():
    widths = (2, 8)
    mlp = build(widths, inits.deterministic(widths, 2.0, 0))
    problem = tiny_problem()
    for model in (mlp, tiny_lstm()):
        assert isinstance(model, Learner)
        assert isinstance(model.unroll(problem, 2), Path)
        twin = model.with_detach(not model.detach)
        assert type(twin) is type(model) and twin.detach is not model.detach
    assert not isinstance(weight_only(4, 3, 2), Learner)  # LISTA has no detach mode


@pytest.mark.parametrize("model", [
    build((2, 8), inits.deterministic((2, 8), 2.0, 0)),
    build((2, 8), inits.deterministic((2, 8), 2.0, 0, bias=True), bias=True),
    build((2, 8), inits.deterministic((2, 8), 2.0, 0), wide_layer="dense", step_scale=0.5),
    MathL2OLSTM("PA", hidden=4, state_scale=0.3, seed=2, state_seed=7),
], ids=["angular", "bias", "dense", "lstm"])
def test_with_mode_copies_the_weights_bit_for_bit_and_leaves_the_model_alone(model):
    detach = model.detach
    for mode in ntk.MODES:
        twin = ntk.with_mode(model, mode)
        assert twin.detach == (mode == "detached") and model.detach == detach
        assert vars(twin).keys() == vars(model).keys()
        settings_ = [k for k in vars(model) if not k.startswith("_") and k != "detach"]
        assert all(getattr(twin, k) == getattr(model, k) for k in settings_)
        for (name, p), (name_t, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
            assert name == name_t and torch.equal(p, q) and q.requires_grad and q.grad is None
            assert p.data_ptr() != q.data_ptr()  # a copy: training it leaves the model alone
        low = ntk.with_mode(model, mode, dtype=torch.float32)
        assert all(torch.equal(p.float(), q) for p, q in zip(model.parameters(), low.parameters(), strict=True))


def test_structured_is_refused_for_a_learner_without_the_angular_layer():
    with pytest.raises(ValueError, match="method"):
        ntk.jacobian(tiny_lstm(), tiny_problem(), T, method="structured")


# -- the LSTM's unroll is a pure function of W ------------------------------------------------------------


@given(state_seed=st.integers(0, 2**31 - 1))
@settings(max_examples=10, deadline=None)
def test_the_lstm_unroll_is_pure_and_its_state_comes_from_state_seed(state_seed):
    problem = tiny_problem()
    model = tiny_lstm(state_seed=state_seed)
    first, second = model.unroll(problem, T).X[-1], model.unroll(problem, T).X[-1]
    assert torch.equal(first, second)
    other = tiny_lstm(state_seed=state_seed + 1).unroll(problem, T).X[-1]
    assert not torch.allclose(first, other)
    f = ntk.residual_fn(model, problem, T)
    W = ntk.parameters(model)
    assert torch.equal(f(W), f(W))


def test_the_default_state_seed_is_seed_and_detach_is_on():
    """The first draw of the old per-module generator (seeded by ``seed``), now the draw of every unroll."""
    problem = tiny_problem()
    model = MathL2OLSTM(hidden=4, seed=5)
    assert model.detach and model.state_seed == 5
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(2, problem.N * problem.d, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(2, problem.N * problem.d, 4, generator=gen, dtype=torch.float64)
    for _ in range(2):
        state = model.initial_state(problem)
        assert torch.equal(state.h, h) and torch.equal(state.c, c)


def test_meta_training_at_lr_0_sees_the_same_map_at_every_iteration():
    """fit draws no new h_0 per iteration: with η = 0 every iteration's loss is the same, bit for bit."""
    losses = fit(tiny_lstm(), tiny_problem(), T, lr=0.0, iters=3).metrics["loss"].to_numpy()
    assert np.all(losses == losses[0])


# -- the LSTM's NTK against the written-out reference ----------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lstm_forward_matches_the_reference(case):
    model, problem = tiny_lstm(case), tiny_problem()
    W = {k: v.detach() for k, v in model.named_parameters()}
    with torch.no_grad():
        ours = model.unroll(problem, T).X
        ref = reference_unroll(model, problem, W)[0]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("case", CASES)
def test_lstm_ntk_equals_the_dense_reference(case):
    """K = J Jᵀ and K̃ = J J̃ᵀ from ntk.empirical_ntk, and J̃ (detach=True) from ntk.jacobian, against the reference."""
    model, problem = tiny_lstm(case), tiny_problem()
    J_ref, Jt_ref = reference_jacobians(model, problem)
    K_ref, Kt_ref = J_ref @ J_ref.T, J_ref @ Jt_ref.T
    assert rel(K_ref, Kt_ref) > 1e-6  # detaching changes the kernel here: the comparisons below can tell J from J̃
    assert rel(ntk.empirical_ntk(model, problem, T).K, K_ref) <= 1e-12
    assert rel(ntk.empirical_ntk(model, problem, T, kernel="training").K, Kt_ref) <= 1e-12
    assert rel(flat(ntk.jacobian(model, problem, T, mode="true")), J_ref) <= 1e-12
    assert rel(flat(ntk.jacobian(model, problem, T, mode="detached", chunk=3)), Jt_ref) <= 1e-12


def test_detached_backprop_through_the_lstm_is_the_frozen_input_jacobian():
    """⟨v, J̃ ·⟩ = what loss.backward() computes through the model with detach=True (its training gradient)."""
    model, problem = tiny_lstm("PA"), tiny_problem()
    v = torch.linspace(-1.0, 1.0, problem.N * problem.b, dtype=torch.float64)
    r = problems.residual(problem, model.unroll(problem, T).X[-1]).reshape(-1)
    grads = torch.autograd.grad(r @ v, list(model.parameters()))
    Jt = flat(ntk.jacobian(model, problem, T, mode="detached"))
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in grads]), v @ Jt, rtol=1e-12, atol=1e-14)


def test_lstm_matrix_free_operators_match_the_dense_kernels():
    model, problem = tiny_lstm("PA"), tiny_problem()
    J_ref, Jt_ref = reference_jacobians(model, problem)
    eye = np.eye(problem.N * problem.b)
    for kernel, K in (("true", J_ref @ J_ref.T), ("training", J_ref @ Jt_ref.T)):
        op = ntk.ntk_operator(model, problem, T, kernel=kernel)
        np.testing.assert_allclose(np.column_stack([op.matvec(e) for e in eye]), K.numpy(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(np.column_stack([op.rmatvec(e) for e in eye]), K.T.numpy(), rtol=1e-11, atol=1e-13)


# -- the probe on a learner without a wide layer ----------------------------------------------------------


def test_measure_on_the_lstm_gives_k_and_reports_alpha_as_not_applicable():
    model, problem = tiny_lstm("PA"), tiny_problem()
    J_ref, Jt_ref = reference_jacobians(model, problem)
    result = measure(model, problem, T, lr=0.1, method="dense")
    np.testing.assert_allclose(result.K.eigenvalues, np.linalg.eigvalsh((J_ref @ J_ref.T).numpy()),
                               rtol=1e-10, atol=1e-14)
    Kt = (J_ref @ Jt_ref.T).numpy()
    np.testing.assert_allclose(result.K_training.eigenvalues, np.linalg.eigvalsh(0.5 * (Kt + Kt.T)),
                               rtol=1e-10, atol=1e-14)
    assert result.K.rank.rank == problem.N * problem.d  # r_i moves in range(M_i), of dimension d
    assert sum(result.K.layer_traces.values()) == pytest.approx(float(torch.trace(J_ref @ J_ref.T)), rel=1e-12)
    assert result.n_params == J_ref.shape[1]
    assert result.alpha is None and result.delta3 is None and result.weights == ()
    assert {"alpha", "delta3", "weights"} <= result.not_applicable.keys()
    assert "MathL2OLSTM" in result.not_applicable["alpha"]
    numbers = json.loads(json.dumps(result.as_dict()))
    back = ProbeResult.from_dict(numbers, result.arrays())
    assert back.alpha is None and back.not_applicable == result.not_applicable and back.K == result.K


def test_measure_of_math_l2o_keeps_alpha_and_reports_nothing_as_not_applicable():
    widths = (2, 8)
    model = build(widths, inits.deterministic(widths, 2.0, 0))
    result = measure(model, tiny_problem(), T, lr=0.1, method="dense")
    assert isinstance(model, MathL2O) and result.alpha is not None and result.delta3 is not None
    assert not result.not_applicable and "not_applicable" not in result.as_dict()
    assert set(result.K.layer_traces) == {"layer1", "layer2", "layer3"}
