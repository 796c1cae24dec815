"""Each baseline against an independent statement of its update rule, in float64."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.engine.learned import evaluate, fit
from ntkcheck.engine.training import train
from ntkcheck.models import init as inits
from ntkcheck.models.lista import (
    LISTACPSS,
    shared_dictionary,
    shrink_ss,
    soft_threshold,
    weight_only,
)
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems
from ntkcheck.problems.solvers import adam, gd, iterate, nag

diagonals = st.lists(st.floats(0.2, 3.0), min_size=2, max_size=6)


def diagonal_problem(m, c):
    """f(x) = ½‖diag(m)x − diag(m)c‖²: one instance, minimiser c, curvatures m_j², β = max m_j²."""
    m, c = np.asarray(m), np.asarray(c)
    return problems.from_tensors(torch.from_numpy(np.diag(m)), torch.from_numpy(m * c))


# -- classical --------------------------------------------------------------------------------------


@given(m=diagonals, s=st.floats(0.1, 1.9), T=st.integers(1, 30))
@settings(max_examples=30, deadline=None)
def test_gd_matches_its_closed_form_on_a_diagonal_quadratic(m, s, T):
    """x_t = c ⊙ (1 − (1 − s m²/β)^t) from x_0 = 0."""
    c = np.linspace(-1.0, 2.0, len(m))
    curve = gd(diagonal_problem(m, c), T, step_scale=s, keep=True)
    q = 1 - s * np.square(m) / max(np.square(m))
    expected = c * (1 - q[None, :] ** np.arange(T + 1)[:, None])
    np.testing.assert_allclose(curve.X[:, 0].numpy(), expected, rtol=1e-10, atol=1e-12)


@given(m=diagonals, s=st.floats(0.1, 1.0), mu=st.floats(0.0, 0.95), T=st.integers(1, 30))
@settings(max_examples=30, deadline=None)
def test_nag_with_constant_momentum_matches_its_closed_form(m, s, mu, T):
    """e_t = x_t − c solves e_{t+1} = (1 − h)((1 + μ)e_t − μe_{t−1}), e_1 = (1 − h)e_0, h = s m²/β:
    e_t = A r₁ᵗ + B r₂ᵗ with r₁, r₂ the roots of r² − (1 − h)(1 + μ)r + (1 − h)μ."""
    c = np.linspace(1.0, -2.0, len(m))
    curve = nag(diagonal_problem(m, c), T, step_scale=s, momentum=mu, keep=True)
    h = s * np.square(m) / max(np.square(m))
    a, q = (1 - h) * (1 + mu), (1 - h) * mu
    disc = np.sqrt((a * a - 4 * q).astype(complex))
    r1, r2 = (a + disc) / 2, (a - disc) / 2
    assume(np.all(np.abs(r1 - r2) > 1e-4))
    e0 = -c
    B = ((1 - h) * e0 - r1 * e0) / (r2 - r1)
    A = e0 - B
    t = np.arange(T + 1)[:, None]
    expected = c + (A * r1**t + B * r2**t).real
    np.testing.assert_allclose(curve.X[:, 0].numpy(), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_nag_meets_nesterovs_bound_and_reduces_to_gd_without_momentum(seed):
    """f_i(x_T) ≤ 2β_i‖x_0 − x*_i‖²/(s(T + 1)²) for μ_t = (t − 1)/(t + 2); μ = 0 is GD."""
    problem = problems.generate(6, 20, 15, seed)
    for T in (1, 5, 20, 60):
        f_T = nag(problem, T).f[-1]
        bound = 2 * problem.beta * problem.x_star.square().sum(-1) / (T + 1) ** 2
        assert (f_T <= bound).all()
    torch.testing.assert_close(nag(problem, 15, momentum=0.0, keep=True).X, gd(problem, 15, keep=True).X)


@pytest.mark.parametrize(("beta1", "beta2", "eps"), [(0.9, 0.999, 1e-8), (0.1, 0.95, 1e-8), (0.5, 0.3, 1e-3)])
def test_adam_matches_torch_optim_adam(beta1, beta2, eps):
    """torch.optim.Adam on F(X) with one parameter group per instance at lr 1/β_i."""
    problem = problems.generate(4, 12, 9, 0)
    xs = [torch.zeros(problem.d, dtype=torch.float64, requires_grad=True) for _ in range(problem.N)]
    opt = torch.optim.Adam([{"params": [x], "lr": float(1 / beta)} for x, beta in zip(xs, problem.beta)],
                           betas=(beta1, beta2), eps=eps)
    for _ in range(25):
        opt.zero_grad()
        problems.objective(problem, torch.stack(xs)).backward()
        opt.step()
    ours = adam(problem, 25, beta1=beta1, beta2=beta2, eps=eps).X_last
    torch.testing.assert_close(ours, torch.stack(xs).detach(), rtol=1e-10, atol=1e-12)


def test_a_divergence_is_recorded_where_it_happens():
    problem = problems.generate(2, 6, 4, 0)
    blow_up = lambda t, state: (state[0] + (math.inf if t == 3 else 1.0), (state[0] + 1.0,))  # noqa: E731
    curve = iterate(problem, 6, blow_up, (problem.X0(),))
    assert curve.diverged_at == 3
    assert torch.isfinite(curve.f[:3]).all() and torch.isnan(curve.f[3:]).all()


# -- Math-L2O (Liu et al. 2023) ---------------------------------------------------------------------


def set_head(model, name, bias):
    with torch.no_grad():
        model.heads[name].weight.zero_()
        model.heads[name].bias.fill_(bias)


@pytest.mark.parametrize("variant", ["P", "PA"])
def test_lstm_l2o_with_p_1_and_a_0_is_gd(variant):
    """2σ(0) = 1 and 2σ(−10⁴) = 0 exactly: the LSTM optimiser is then GD, whatever its LSTM state."""
    problem = problems.generate(3, 10, 8, 1)
    model = MathL2OLSTM(variant, seed=3)
    set_head(model, "P", 0.0)
    if variant == "PA":
        set_head(model, "A", -1e4)
    torch.testing.assert_close(torch.stack(model.unroll(problem, 12).X), gd(problem, 12, keep=True).X)


@given(mu=st.floats(0.05, 0.9))
@settings(max_examples=5, deadline=None)
def test_lstm_l2o_pa_with_constant_a_is_nesterov_with_constant_momentum(mu):
    """P ≡ 1, A ≡ μ: X_t = Y_{t−1} − α∇F(Y_{t−1}), Y_t = X_t + μ(X_t − X_{t−1}), i.e. NAG with constant μ."""
    problem = problems.generate(2, 8, 6, 2)
    model = MathL2OLSTM("PA", seed=0)
    set_head(model, "P", 0.0)
    set_head(model, "A", math.log(mu / (2 - mu)))  # 2σ(z) = μ
    X = nag(problem, 10, momentum=mu, keep=True).X
    Y = torch.cat([X[:1], X[1:] + mu * (X[1:] - X[:-1])])  # the LSTM optimiser records Y_t
    torch.testing.assert_close(torch.stack(model.unroll(problem, 10).X), Y)


def test_b_terms_are_off_by_default_and_reduce_to_gd_at_b_1_and_b1_b2_0():
    """With B ≡ 1 and B₁ = B₂ ≡ 0 the authors' biased update is Liu et al.'s again."""
    assert set(MathL2OLSTM("PA").heads) == {"P", "A"}
    problem = problems.generate(2, 8, 6, 0)
    model = MathL2OLSTM("P", b_terms=True, seed=1)
    for name, bias in (("P", 0.0), ("B", 1.0), ("B1", 0.0), ("B2", 0.0)):
        set_head(model, name, bias)
    torch.testing.assert_close(torch.stack(model.unroll(problem, 8).X), gd(problem, 8, keep=True).X)


def test_lstm_initial_state_has_the_asked_scale():
    problem = problems.generate(8, 32, 25, 0)
    for scale in (0.01, 1.0, 3.0):
        state = MathL2OLSTM(state_scale=scale, seed=0).initial_state(problem)
        assert state.h.std().item() == pytest.approx(scale, rel=0.05)
        assert state.c.std().item() == pytest.approx(scale, rel=0.05)


# -- LISTA-CPSS (Chen et al. 2018) ------------------------------------------------------------------


def test_lista_cpss_without_support_selection_is_lista():
    """x^k = η_θ(W_e y + S x^{k−1}) with W_e = W^k, S = I − W^k M (Gregor & LeCun's parameterisation)."""
    problem = shared_dictionary(4, 12, 8, 0)
    gen = torch.Generator().manual_seed(0)
    W = 0.1 * torch.randn(3, 12, 8, generator=gen, dtype=torch.float64)
    model = LISTACPSS(W[0], 0.05, 3, support_selection=False)
    with torch.no_grad():
        model.W.copy_(W)
        model.theta.copy_(torch.tensor([0.05, 0.02, 0.01]))
    M, Y, x = problem.M[0], problem.Y, problem.X0()
    for k in range(3):
        S = torch.eye(12, dtype=torch.float64) - W[k] @ M
        x = soft_threshold(Y @ W[k].T + x @ S.T, model.theta[k])
    torch.testing.assert_close(model.unroll(problem, 3).X[-1], x)


@given(seed=st.integers(0, 1000), p=st.floats(0.0, 0.5))
@settings(max_examples=25, deadline=None)
def test_support_selection_ranks_coordinates_within_each_instance(seed, p):
    """The ⌊p·d⌋ largest |v_j| of each instance pass unchanged, the rest are soft-thresholded; permuting
    instances permutes the output (a ranking over the batch axis would break this)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(5, 40, generator=gen, dtype=torch.float64)
    theta = torch.tensor(0.3, dtype=torch.float64)
    out = shrink_ss(v, theta, p)
    k = math.floor(p * 40)
    kept = out == v
    order = v.abs().argsort(dim=-1, descending=True)
    assert kept.gather(-1, order[:, :k]).all()
    torch.testing.assert_close(out.gather(-1, order[:, k:]), soft_threshold(v, theta).gather(-1, order[:, k:]))
    perm = torch.randperm(5, generator=gen)
    torch.testing.assert_close(shrink_ss(v[perm], theta, p), out[perm])


def test_lista_cpss_initialisation_is_chen_et_al():
    """W^k = Mᵀ/(1.001‖M‖²), θ^k = λ/(1.001‖M‖²); at λ = 0 the untrained network is GD with step 1/(1.001β)."""
    problem = shared_dictionary(4, 16, 12, 1)
    L = float(problem.beta[0])
    model = LISTACPSS.from_problem(problem, 5, lam=0.2)
    torch.testing.assert_close(model.W[2], problem.M[0].T / (1.001 * L))
    assert model.theta.tolist() == pytest.approx([0.2 / (1.001 * L)] * 5)
    plain = LISTACPSS.from_problem(problem, 5)
    torch.testing.assert_close(torch.stack(plain.unroll(problem, 5).X), gd(problem, 5, step_scale=1 / 1.001, keep=True).X)
    with pytest.raises(ValueError, match="share M"):
        LISTACPSS.from_problem(problems.generate(3, 16, 12, 0), 5)


def test_weight_only_variant_is_linear_with_one_tied_w():
    problem = problems.generate(3, 10, 7, 0)
    model = weight_only(10, 7, T=4, seed=0)
    assert [name for name, _ in model.named_parameters()] == ["W"] and model.W.shape == (1, 10, 7)
    W, x = model.W[0].detach(), problem.X0()
    for _ in range(6):  # past T the tied layer repeats
        x = x + (problem.Y - torch.einsum("nbd,nd->nb", problem.M, x)) @ W.T  # x + W(y − Mx)
    torch.testing.assert_close(model.unroll(problem, 6).X[-1].detach(), x)


# -- training and inference -------------------------------------------------------------------------


def test_fit_of_our_model_matches_the_trainer_of_record(tmp_path):
    cfg = TrainConfig(N=4, d=8, b=6, width=16, T=3, e=5.0, lr=1e-3, iters=4, device="cpu", checkpoint_every=100)
    record = train(cfg, tmp_path / "run").metrics
    widths = hidden_widths(cfg.width, cfg.L)
    model = build(widths, inits.deterministic(widths, cfg.e, cfg.seed))
    ours = fit(model, problems.generate(4, 8, 6, 0), cfg.T, lr=cfg.lr, iters=cfg.iters).metrics
    for quantity in ("loss", "F_T", "gain", "gain_mean"):
        np.testing.assert_allclose(ours[quantity].to_numpy(), record[quantity].to_numpy(), rtol=1e-12)


def test_fit_records_a_divergence_instead_of_raising():
    problem = problems.generate(4, 8, 6, 0)
    result = fit(weight_only(8, 6, 10), problem, 10, lr=10.0, iters=20)
    assert result.status == "diverged" and result.diverged_at is not None
    assert result.metrics["diverged"].iloc[-1] == 1.0


def test_truncation_at_the_horizon_is_full_backpropagation():
    problem = problems.generate(3, 8, 6, 0)
    full = fit(MathL2OLSTM("PA", seed=0), problem, 6, lr=1e-3, iters=3).metrics
    same = fit(MathL2OLSTM("PA", seed=0), problem, 6, lr=1e-3, iters=3, truncation=6).metrics
    cut = fit(MathL2OLSTM("PA", seed=0), problem, 6, lr=1e-3, iters=3, truncation=2).metrics
    assert np.array_equal(full.to_numpy(), same.to_numpy())
    assert not np.array_equal(full.to_numpy(), cut.to_numpy())


def test_inference_past_the_horizon_at_initialisation_is_gd():
    """Our model at its deterministic init is GD for any number of steps; held-out instances."""
    test_set = problems.generate(5, 12, 9, 0, split="test")
    widths = hidden_widths(32, 3)
    model = build(widths, inits.deterministic(widths, 10.0, 0))
    torch.testing.assert_close(evaluate(model, test_set, 200).f, gd(test_set, 200).f)
    lista = LISTACPSS.from_problem(shared_dictionary(3, 12, 9, 0), T=4)
    assert evaluate(lista, shared_dictionary(3, 12, 9, 0, "test"), 50).diverged_at is None
