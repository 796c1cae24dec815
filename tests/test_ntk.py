"""The empirical NTK (ntkcheck.instruments.ntk) against independent computations, in float64.

    r(W) = vec(M X_T(W) − Y) (rows (i, k)),  J = ∂r/∂W (detach=False),  J̃ = what detached BPTT computes
    K = J Jᵀ,  K̃ = J J̃ᵀ,  summed over parameters

References used here, none of which goes through ntkcheck.instruments.ntk:
  - central finite differences of the model's forward (true mode: r(W); detached mode: the frozen-input
    surrogate model.unroll(problem, T, inputs=[Z_1..Z_T]) with Z_t taken along the trajectory at W);
  - an untied model written out below (one copy of the weights per step) differentiated by autograd;
  - single-instance problems; numpy's eigvalsh and matrix_rank.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck.build.experiment import initial_weights, make_problem
from ntkcheck.cli import main
from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.instruments import linalg, ntk
from ntkcheck.models import init as inits
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems
from ntkcheck.problems.qp import Problem

KINK_MARGIN = 1e-4


# -- set-ups -------------------------------------------------------------------------------------------------


def min_preactivation(model, problem, T) -> float:
    """min |pre-activation| over the trajectory, over rows whose layer input is not exactly 0 (a zero row
    stays zero under small perturbations and is not a kink); 0 when a layer is dead on most rows (then
    some blocks of J would vanish and a test of them would be empty)."""
    smallest = np.inf
    with torch.no_grad():
        for X in model.unroll(problem, T).X[:-1]:
            G = model.inputs(problem, X)
            for ell in range(1, model.L):
                W, b = model.layer(ell)
                pre = G @ W + (0.0 if b is None else b)
                live = (G != 0).any(dim=1) if b is None else torch.ones(len(G), dtype=torch.bool)
                if live.any():
                    smallest = min(smallest, float(pre[live].abs().min()))
                G = torch.relu(pre)
                if float((G != 0).any(dim=1).double().mean()) < 0.25:
                    return 0.0
    return smallest


def random_setup(N=2, d=4, b=3, width=6, T=3, L=3, bias=False, wide_layer="auto", scale=3.0, seed0=0):
    """A problem and random weights (W_L enlarged so P varies) with no kink within KINK_MARGIN."""
    widths = hidden_widths(width, L)
    for seed in range(seed0, seed0 + 100):
        p = problems.generate(N, d, b, seed)
        params = inits.random(widths, seed, bias=bias)
        params[f"W{L}"] = scale * params[f"W{L}"]
        model = build(widths, params, bias=bias, wide_layer=wide_layer)
        if min_preactivation(build(widths, params, bias=bias, detach=False), p, T) > KINK_MARGIN:
            return p, widths, params, model
    raise AssertionError("no kink-free seed")


def unroll_r(widths, params, problem, T, *, bias=False, inputs=None, wide_layer="auto") -> torch.Tensor:
    with torch.no_grad():
        m = build(widths, params, bias=bias, wide_layer=wide_layer)
        return problems.residual(problem, m.unroll(problem, T, inputs=inputs).X[-1]).reshape(-1)


def central_fd(fun, params, h=1e-6) -> dict[str, torch.Tensor]:
    """{name: (rows, numel)} by (f(W + h e) − f(W − h e)) / 2h, one coordinate at a time."""
    out = {}
    for name, value in params.items():
        cols = []
        for idx in range(value.numel()):
            plus = {k: v.clone() for k, v in params.items()}
            minus = {k: v.clone() for k, v in params.items()}
            plus[name].view(-1)[idx] += h
            minus[name].view(-1)[idx] -= h
            cols.append((fun(plus) - fun(minus)) / (2 * h))
        out[name] = torch.stack(cols, dim=1)
    return out


def assert_blocks_close(J, ref, rtol):
    assert J.keys() == ref.keys()
    for name in J:
        assert J[name].shape == ref[name].shape, name
        err = float((J[name] - ref[name]).norm())
        assert err <= rtol * float(ref[name].norm()), (name, err, float(ref[name].norm()))


def frozen_inputs(widths, params, problem, T, bias=False):
    """Z_1..Z_T along the trajectory at W (the inputs detached BPTT treats as constants)."""
    with torch.no_grad():
        X = build(widths, params, bias=bias).unroll(problem, T).X
    return [torch.stack((problems.gradient(problem, Xt), Xt), dim=-1).reshape(-1, 2) for Xt in X[:-1]]


def subproblem(p: Problem, idx) -> Problem:
    take = lambda t: None if t is None else t[idx]  # noqa: E731
    return Problem(p.M[idx], p.Y[idx], p.beta[idx], take(p.x_star), take(p.H), take(p.c))


# -- Jacobians against finite differences ------------------------------------------------------------------------


CASES = [dict(bias=False, wide_layer="auto"), dict(bias=False, wide_layer="dense"), dict(bias=True, wide_layer="auto"),
         dict(bias=False, wide_layer="auto", L=4), dict(bias=False, wide_layer="auto", L=2)]


@pytest.mark.parametrize("method", ["func", "auto"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_true_jacobian_matches_finite_differences(case, method):
    bias, wl = case["bias"], case["wide_layer"]
    p, widths, params, model = random_setup(bias=bias, wide_layer=wl, L=case.get("L", 3))
    J = ntk.jacobian(model, p, 3, mode="true", method=method)
    ref = central_fd(lambda w: unroll_r(widths, w, p, 3, bias=bias, wide_layer=wl), params)
    assert list(J) == list(params)  # every parameter, in the model's order
    assert_blocks_close(J, ref, rtol=1e-6)
    for name in J:  # every block takes part
        assert float(J[name].norm()) > 1e-6 * sum(float(v.norm()) for v in J.values()), name


@pytest.mark.parametrize("method", ["func", "auto"])
@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_detached_jacobian_is_the_jacobian_of_the_frozen_input_surrogate(case, method):
    bias, wl = case["bias"], case["wide_layer"]
    p, widths, params, model = random_setup(bias=bias, wide_layer=wl)
    Z = frozen_inputs(widths, params, p, 3, bias=bias)
    Jt = ntk.jacobian(model, p, 3, mode="detached", method=method)
    ref = central_fd(lambda w: unroll_r(widths, w, p, 3, bias=bias, inputs=Z, wide_layer=wl), params)
    assert_blocks_close(Jt, ref, rtol=1e-6)
    # the two modes are genuinely different maps here
    J = ntk.jacobian(model, p, 3, mode="true")
    diff = sum(float((J[k] - Jt[k]).norm() ** 2) for k in J) ** 0.5
    assert diff > 1e-3 * sum(float(v.norm() ** 2) for v in J.values()) ** 0.5


def test_jacobian_of_X_T_matches_finite_differences():
    p, widths, params, model = random_setup()

    def X_T(w):
        with torch.no_grad():
            return build(widths, w).unroll(p, 3).X[-1].reshape(-1)

    J = ntk.jacobian(model, p, 3, output="X")
    assert next(iter(J.values())).shape[0] == p.N * p.d
    assert_blocks_close(J, central_fd(X_T, params), rtol=1e-6)


def test_a_subset_of_parameters_and_the_chunk_size_do_not_change_the_blocks():
    p, _, _, model = random_setup(N=3, d=5, b=4)
    J = ntk.jacobian(model, p, 3)
    for chunk in (1, 3, None):
        sub = ntk.jacobian(model, p, 3, params=["W2"], chunk=chunk)
        assert list(sub) == ["W2"]
        torch.testing.assert_close(sub["W2"], J["W2"], rtol=1e-13, atol=1e-15)


# -- weight sharing across the T steps -----------------------------------------------------------------------------


def untied_residual(step_params: list[dict], problem: Problem, L: int, detach: bool) -> torch.Tensor:
    """r with its own weights W^(t) at every step t (the step of docs/ARCHITECTURE.md §1 written out), so that
    ∂r/∂W^(t) is the contribution of step t alone; the tied Jacobian is Σ_t ∂r/∂W^(t)."""
    X = problem.X0()
    for W in step_params:
        g = problems.gradient(problem, X)
        G = torch.stack((g, X), dim=-1).reshape(-1, 2)
        G = G.detach() if detach else G
        for ell in range(1, L):
            G = torch.relu(G @ W[f"W{ell}"])
        P = 2.0 * torch.sigmoid((G @ W[f"W{L}"])[:, 0]).reshape(X.shape)
        X = X - P * g / problem.beta[:, None]
    return problems.residual(problem, X).reshape(-1)


@pytest.mark.parametrize("mode", ["true", "detached"])
def test_weight_sharing_every_step_contributes(mode):
    T = 4
    p, widths, params, model = random_setup(N=2, d=4, b=3, width=6, T=T)
    copies = [{k: v.clone().requires_grad_(True) for k, v in params.items()} for _ in range(T)]
    r = untied_residual(copies, p, 3, detach=mode == "detached")
    per_step = [{k: torch.zeros(r.numel(), v.numel(), dtype=torch.float64) for k, v in params.items()} for _ in range(T)]
    for row in range(r.numel()):
        grads = torch.autograd.grad(r[row], [v for c in copies for v in c.values()], retain_graph=True)
        for t in range(T):
            for q, name in enumerate(params):
                per_step[t][name][row] = grads[t * len(params) + q].reshape(-1)
    total = {k: sum(s[k] for s in per_step) for k in params}

    J = ntk.jacobian(model, p, T, mode=mode)
    assert_blocks_close(J, total, rtol=1e-12)

    def flat(blocks):
        return torch.cat([blocks[k] for k in params], dim=1)

    Jf = flat(J)
    # counting only the last step, or only the first, misses most of J
    for t in (0, T - 1):
        assert float((Jf - flat(per_step[t])).norm()) > 0.1 * float(Jf.norm()), t
    # and K is not the sum of same-step products Σ_t J^(t) J^(t)ᵀ: the cross-step terms matter
    K = Jf @ Jf.T
    same_step = sum(flat(s) @ flat(s).T for s in per_step)
    assert float((K - same_step).norm()) > 0.1 * float(K.norm())
    torch.testing.assert_close(ntk.gram(J, N=p.N).K, K, rtol=1e-12, atol=1e-14 * float(K.abs().max()))


# -- the deterministic initialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [2, 3, 4])
def test_at_initialisation_inner_blocks_vanish_and_both_kernels_agree(L):
    p = problems.generate(3, 6, 5, seed=1)
    widths = hidden_widths(8, L)
    model = build(widths, inits.deterministic(widths, 5.0, seed=2))
    for mode in ("true", "detached"):
        J = ntk.jacobian(model, p, 4, mode=mode)
        for ell in range(1, L):
            assert torch.count_nonzero(J[f"W{ell}"]) == 0, (mode, ell)
        assert float(J[f"W{L}"].norm()) > 0
    K, Kt = ntk.empirical_ntk(model, p, 4), ntk.empirical_ntk(model, p, 4, kernel="training")
    torch.testing.assert_close(Kt.K, K.K, rtol=1e-14, atol=0)
    torch.testing.assert_close(K.layer(L), K.K, rtol=0, atol=0)
    for ell in range(1, L):
        assert torch.count_nonzero(K.layer(ell)) == 0


# -- the Gram matrix and its products -----------------------------------------------------------------------------


def test_K_is_symmetric_psd_and_the_training_kernel_is_not_symmetric():
    p, _, _, model = random_setup(N=3, d=6, b=5, width=10, T=4, scale=10.0)
    G = ntk.empirical_ntk(model, p, 4)
    K = G.K
    assert float((K - K.T).abs().max()) <= 1e-14 * float(K.abs().max())
    lam = np.linalg.eigvalsh(K.numpy())
    assert lam[0] >= -K.shape[0] * np.finfo(float).eps * lam[-1]
    Kt = ntk.empirical_ntk(model, p, 4, kernel="training").K
    assert float((Kt - Kt.T).norm()) > 1e-3 * float(Kt.norm())  # the training kernel is a different object
    # per-layer blocks sum to K, and each is PSD
    layers = G.layers()
    assert sorted(layers) == [1, 2, 3]
    torch.testing.assert_close(sum(layers.values()), K, rtol=1e-13, atol=0)
    for B in layers.values():
        assert np.linalg.eigvalsh(B.numpy())[0] >= -1e-13 * float(K.abs().max())


def test_trace_and_instance_blocks_from_single_instance_jacobians():
    """trace K = Σ_i ‖J_i‖_F², and block (i, j) = J_i J_jᵀ, with J_i computed on instance i alone."""
    p, _, _, model = random_setup(N=3, d=5, b=4, width=8)
    G = ntk.empirical_ntk(model, p, 3)
    Js = []
    for i in range(p.N):
        Ji = ntk.jacobian(model, subproblem(p, slice(i, i + 1)), 3)
        Js.append(torch.cat(list(Ji.values()), dim=1))
    np.testing.assert_allclose(float(torch.trace(G.K)), sum(float(J.square().sum()) for J in Js), rtol=1e-13)
    np.testing.assert_allclose(sum(G.layer_traces().values()), float(torch.trace(G.K)), rtol=1e-13)
    blocks = G.instance_blocks()
    assert blocks.shape == (3, 3, 4, 4)
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(G.instance_block(i, j), Js[i] @ Js[j].T, rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(blocks[i, j], G.instance_block(i, j), rtol=0, atol=0)


def test_permuting_instances_permutes_K():
    p, _, _, model = random_setup(N=4, d=5, b=3, width=8)
    perm = torch.tensor([2, 0, 3, 1])
    K = ntk.empirical_ntk(model, p, 3).K
    Kp = ntk.empirical_ntk(model, subproblem(p, perm), 3).K
    rows = (perm[:, None] * p.b + torch.arange(p.b)[None]).reshape(-1)
    torch.testing.assert_close(Kp, K[rows][:, rows], rtol=1e-12, atol=1e-14 * float(K.abs().max()))
    assert not torch.allclose(Kp, K)  # the permutation is not trivial


@pytest.mark.parametrize("kernel", ["true", "training"])
def test_matrix_free_products_equal_the_dense_kernel(kernel):
    p, _, _, model = random_setup(N=3, d=6, b=5, width=10, T=4, scale=10.0)
    K = ntk.empirical_ntk(model, p, 4, kernel=kernel).K.numpy()
    n = K.shape[0]
    scale = np.abs(K).max()
    op = ntk.ntk_operator(model, p, 4, kernel=kernel)
    np.testing.assert_allclose(op @ np.eye(n), K, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(op.rmatmat(np.eye(n)), K.T, rtol=0, atol=1e-12 * scale)
    if kernel == "training":
        sym = ntk.ntk_operator(model, p, 4, kernel=kernel, part="symmetric")
        np.testing.assert_allclose(sym @ np.eye(n), 0.5 * (K + K.T), rtol=0, atol=1e-12 * scale)


def test_lanczos_on_the_operator_agrees_with_the_dense_spectrum():
    p, _, _, model = random_setup(N=4, d=6, b=5, width=10, T=4, scale=10.0)
    K = ntk.empirical_ntk(model, p, 4).K.numpy()
    lam = np.linalg.eigvalsh(K)
    ext = linalg.extreme_eigenvalues(ntk.ntk_operator(model, p, 4), k=2, method="lanczos")
    assert ext.method == "lanczos"
    np.testing.assert_allclose(ext.largest, lam[::-1][:2], rtol=1e-10)
    # the bottom is determined to an absolute accuracy ≈ tol·λ_max, which the result states
    acc = ext.extra["abs_accuracy_min"]
    assert acc == pytest.approx(1e-12 * lam[-1], rel=1e-6)
    np.testing.assert_allclose(ext.smallest, lam[:2], rtol=0, atol=10 * acc)


def test_lanczos_finds_a_zero_bottom_and_falls_back_to_dense():
    rng = np.random.default_rng(0)
    n, r = 120, 40
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.zeros(n)
    lam[-r:] = np.logspace(1, 3, r)  # decay over two decades, then an exact null space of dimension 80
    A = (U * lam) @ U.T
    A = 0.5 * (A + A.T)
    op = ntk.LinearOperator((n, n), matvec=lambda v: A @ v, dtype=np.float64)
    ext = linalg.extreme_eigenvalues(op, k=1, method="lanczos")
    assert ext.method == "lanczos"
    assert ext.lambda_max == pytest.approx(1e3, rel=1e-10)
    assert abs(ext.lambda_min) <= 10 * ext.extra["abs_accuracy_min"]  # 0, to the accuracy it states
    forced = linalg.extreme_eigenvalues(op, k=3, method="lanczos", maxiter=1)  # cannot converge in one restart
    assert forced.method == "dense" and "did not converge" in forced.note
    dense = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(forced.largest, dense[::-1][:3], rtol=1e-12)
    np.testing.assert_allclose(forced.smallest, dense[:3], rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="dense_max"):
        linalg.extreme_eigenvalues(op, k=3, method="lanczos", maxiter=1, dense_max=10)
    auto = linalg.extreme_eigenvalues(A, k=2)  # a small dense matrix: eigvalsh directly
    assert auto.method == "dense"


# -- numerical rank ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), data=st.data(), seed=st.integers(0, 2**31 - 1),
       log_scale=st.floats(-8, 8))
def test_numerical_rank_follows_numpy_and_reports_the_zeros(m, n, data, seed, log_scale):
    r = data.draw(st.integers(0, min(m, n)), label="r")
    rng = np.random.default_rng(seed)
    A = 10**log_scale * rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    rank = linalg.matrix_rank(A)
    s = np.linalg.svd(A, compute_uv=False)
    assert rank.rank == np.linalg.matrix_rank(A) == r  # numpy's default tolerance is the same convention
    assert rank.tol == pytest.approx(max(m, n) * np.finfo(float).eps * s[0], rel=1e-12, abs=0)
    assert rank.sigma_max == pytest.approx(s[0], rel=1e-12, abs=0)
    assert rank.sigma_min == pytest.approx(s[-1], rel=1e-6, abs=1e-15 * max(s[0], 1e-300) * 100)
    assert rank.full == (r == min(m, n))
    if r < min(m, n):  # a zero singular value is reported as computed, below the tolerance, not hidden
        assert rank.sigma_min <= rank.tol


# -- the structured path ------------------------------------------------------------------------------------------


def test_structured_method_is_called_with_the_mode(monkeypatch):
    calls = []

    def fake(model, problem, T, *, mode):
        calls.append((model.detach, T, mode))
        return ntk.jacobian(model, problem, T, mode=mode, method="func")

    monkeypatch.setattr(ntk, "structured_jacobian", fake)
    p, _, _, model = random_setup()
    J = ntk.jacobian(model, p, 3, mode="detached", method="structured", params=["W3"])
    assert calls == [(True, 3, "detached")] and list(J) == ["W3"]


@pytest.mark.parametrize("mode", ["true", "detached"])
def test_structured_jacobian_agrees_with_the_func_reference(mode):
    p, _, _, model = random_setup(N=3, d=6, b=5, width=12, T=4, scale=10.0)
    J = ntk.jacobian(model, p, 4, mode=mode, method="structured")
    ref = ntk.jacobian(model, p, 4, mode=mode, method="func")
    assert_blocks_close(J, ref, rtol=1e-10)


# -- validation ---------------------------------------------------------------------------------------------------


def test_invalid_arguments_say_what_is_allowed():
    p, _, _, model = random_setup()
    with pytest.raises(ValueError, match="mode must be one of"):
        ntk.jacobian(model, p, 3, mode="exact")
    with pytest.raises(ValueError, match="method must be one of"):
        ntk.jacobian(model, p, 3, method="jax")
    with pytest.raises(ValueError, match="params must be a non-empty subset"):
        ntk.jacobian(model, p, 3, params=["W9"])
    with pytest.raises(ValueError, match="T must be an integer"):
        ntk.jacobian(model, p, 0)
    with pytest.raises(ValueError, match="chunk must be"):
        ntk.jacobian(model, p, 3, chunk=0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ntk.empirical_ntk(model, p, 3, kernel="ntk")


# -- the command line ---------------------------------------------------------------------------------------------

TINY = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3"]


def test_cli_ntk_writes_the_kernel_of_the_configured_model(tmp_path, capsys):
    out = tmp_path / "ntk"
    assert main(["ntk", *TINY, "--init", "random", "--lr", "0.5", "--out", str(out)]) == 0
    report = json.loads((out / "ntk.json").read_text())
    spectra = np.load(out / "spectra.npz")
    cfg = TrainConfig(N=2, d=6, b=4, width=8, T=3, e=3.0, init="random")
    model = build(hidden_widths(8, 3), initial_weights(cfg))
    lam = np.linalg.eigvalsh(ntk.empirical_ntk(model, make_problem(cfg), 3).K.numpy())
    point = report["points"]["init"]
    assert point["K"]["lambda_max"] == pytest.approx(lam[-1], rel=1e-12)
    np.testing.assert_allclose(spectra["init_K_eigenvalues"], lam, rtol=0, atol=1e-12 * lam[-1])
    assert point["linearised"]["threshold"] == pytest.approx(2 / lam[-1], rel=1e-12)
    assert point["linearised"]["stable"] == (0.5 < 2 / lam[-1])
    assert point["alpha"]["t"] == 3 and point["alpha"]["n_rows"] == 12 and point["alpha"]["n_cols"] == 8
    bound = point["alpha"]["rank_bound"]  # from the activation patterns, where that factor is the smaller one
    assert bound is None or point["alpha"]["rank"] <= bound < 8
    printed = capsys.readouterr().out
    assert "λ_max" in printed and "activation patterns" in printed


def test_cli_ntk_on_a_finished_run_measures_both_ends_and_the_drift(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--init", "random", "--iters", "3", "--lr", "0.05", "--out", str(run)]) == 0
    assert main(["ntk", "--run", str(run)]) == 0
    report = json.loads((run / "ntk.json").read_text())
    assert set(report["points"]) == {"init", "end"}
    assert report["points"]["end"]["iteration"] == 3
    assert report["drift"]["rel_change"] > 0
    assert report["points"]["init"]["loss"] > report["points"]["end"]["loss"]
    assert (run / "spectra.npz").is_file()


def test_cli_ntk_on_a_diverged_run_measures_the_start_and_says_why_not_the_end(tmp_path):
    run = tmp_path / "run"
    # η = 1e300 sends the weights to ~1e300 after one update; the next gradients overflow (the run diverges)
    # and the kernel at those weights overflows too
    assert main(["train", *TINY, "--init", "random", "--iters", "3", "--lr", "1e300", "--on-divergence", "skip",
                 "--out", str(run)]) == 0
    assert json.loads((run / "report.json").read_text())["diverged_iterations"]
    assert main(["ntk", "--run", str(run)]) == 0
    report = json.loads((run / "ntk.json").read_text())
    assert set(report["points"]) == {"init"} and "drift" not in report
    assert any("end" in note and "non-finite" in note for note in report["notes"])


@pytest.mark.parametrize(("args", "param"), [
    (["--width", "0"], "--width"),
    (["--method", "jax"], "--method"),
    (["--alpha-step", "0"], "--alpha-step"),
    (["--alpha-step", "9"], "--alpha-step"),
    (["--run", "/nonexistent-run"], "--run"),
])
def test_cli_ntk_bad_input_exits_2_naming_the_parameter(args, param, tmp_path, capsys):
    code = main(["ntk", *TINY, *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and param in err and len(err.strip().splitlines()) == 1, err


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 30), dtype=st.sampled_from([torch.float64, torch.float32]),
       transposed=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_self_gram_by_syrk_equals_the_general_product_and_is_exactly_symmetric(rows, cols, dtype, transposed, seed):
    """K = A Aᵀ by BLAS syrk (one triangle, mirrored) = numpy's A @ A.T in float64 to rounding; exactly symmetric,
    also for a non-contiguous A."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(cols, rows, dtype=dtype, generator=g).T if transposed else torch.randn(rows, cols, dtype=dtype, generator=g)
    K = ntk.self_gram(A)
    ref = A.double().numpy() @ A.double().numpy().T
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(K.double().numpy(), ref, rtol=0, atol=4 * cols * eps * float(np.abs(ref).max()))
    assert K.dtype == dtype and torch.equal(K, K.T)
