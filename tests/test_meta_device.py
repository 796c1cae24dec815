"""The compute core on torch's ``meta`` device: every tensor it makes must follow its inputs' device.

A meta tensor has a shape, a dtype and a device but no values, and an operation that mixes it with a (non-scalar)
CPU tensor raises ``Tensor on device meta is not on the expected device cpu!``. A run on meta therefore proves
that no step allocates on the CPU by mistake: the failure ``verify --device cuda`` would hit at its first probe on
a GPU, found here without one. The model and the problem are built on the CPU with the library and then moved
(``model.to("meta")``, ``problem.to(device="meta")``); every output's shape, dtype and device are checked.

Host transfers (``.cpu()``, ``float()``, numpy, ``torch.equal``) cannot run on meta, and the tests stop where the
code moves to the host on purpose:
  * :func:`~ntkcheck.instruments.ntk.gram` of a training kernel compares J̃_p with J_p by ``torch.equal`` (a host
    read): tested are J and J̃ themselves and the Gram product K = J Jᵀ (:func:`empirical_ntk`, ``kernel="true"``).
  * :func:`~ntkcheck.instruments.ntk.ntk_operator` builds its VJP graphs at construction (tested), and each matvec
    crosses numpy: its product J(J̃ᵀv) is tested on meta through :func:`residual_fn`, VJP then JVP, as it computes it.
  * :mod:`ntkcheck.instruments.linalg` (spectra, ranks, drift) returns numpy numbers: not run here.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jvp, vjp

from ntkcheck.config import LOSSES
from ntkcheck.engine.training import training_loss
from ntkcheck.instruments import ntk
from ntkcheck.instruments.structured import structured_jacobian
from ntkcheck.models import init as inits
from ntkcheck.models.angular import row_norms_sq, wide_readout
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp
from ntkcheck.problems.qp import Problem

META = torch.device("meta")
N, T, C = 2, 3, 3
SIZES = {"H": (5, 3), "M": (8, 3)}  # (d, b): d < 2b keeps H_i = M_iᵀM_i, d ≥ 2b multiplies by M_i and M_iᵀ


def meta_model(widths=(2, 16), *, bias=False, detach=True, wide_layer="auto", dtype=torch.float64):
    """A Math-L2O with random weights, built on the CPU by the library, then moved to meta."""
    return build(widths, inits.random(widths, 0, bias), bias=bias, detach=detach, wide_layer=wide_layer,
                 dtype=dtype).to(META)


def meta_problem(gram="H", dtype=torch.float64) -> Problem:
    """The paper's QP family drawn on the CPU, then moved to meta (the dtype change, if any, on the CPU)."""
    d, b = SIZES[gram]
    problem = qp.generate(N, d, b, seed=0).to(dtype=dtype).to(device=META)
    assert (problem.H is not None) == (gram == "H")
    return problem


def on_meta(t: torch.Tensor, shape, dtype=torch.float64) -> None:
    assert t.device.type == "meta", t.device
    assert tuple(t.shape) == tuple(shape)
    assert t.dtype == dtype


# -- the problem and the model move without reading values ---------------------------------------------------------


def test_problem_to_meta_moves_every_tensor_and_reads_no_values():
    cpu = qp.generate(N, 5, 3, seed=0)
    for moved in (cpu.to(device=META), cpu.to(device=META).to(dtype=torch.float32)):
        for name in ("M", "Y", "beta", "x_star", "H", "c"):
            on_meta(getattr(moved, name), getattr(cpu, name).shape, moved.M.dtype)
    on_meta(cpu.to(device=META).X0(), (N, 5))


def test_build_puts_weights_given_on_meta_on_meta():
    widths = (2, 16)
    params = {k: v.to(META) for k, v in inits.random(widths, 0).items()}
    model = build(widths, params, device=META, dtype=torch.float32)
    for name, p in model.named_parameters():
        on_meta(p, params[name].shape, torch.float32)


# -- the unroll, the loss and its backward ---------------------------------------------------------------------------


@pytest.mark.parametrize("gram", list(SIZES))
@pytest.mark.parametrize("wide_layer,bias", [("angular", False), ("dense", False), ("dense", True)])
@pytest.mark.parametrize("detach", [True, False])
def test_unroll_and_loss_backward_stay_on_meta(gram, wide_layer, bias, detach):
    model, problem = meta_model(bias=bias, detach=detach, wide_layer=wide_layer), meta_problem(gram)
    assert model.angular == (wide_layer == "angular")
    traj = model.unroll(problem, T, record_active=True)
    assert len(traj.X) == T + 1 and len(traj.P) == len(traj.active) == T
    for X in traj.X:
        on_meta(X, (N, problem.d))
    for P, share in zip(traj.P, traj.active):
        on_meta(P, (N, problem.d))
        on_meta(share, ())
    for kind in LOSSES:
        loss = training_loss(problem, model.unroll(problem, T), kind)
        on_meta(loss, ())
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            on_meta(p.grad, p.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_angular_layer_stays_on_meta(dtype):
    W, w_out, h = (torch.ones(shape, dtype=dtype, device=META) for shape in ((2, 16), (16,), (7, 2)))
    phi, active = wide_readout(h, W, w_out)
    on_meta(phi, (7,), dtype)
    on_meta(active, (7,), torch.int64)
    on_meta(row_norms_sq(h, W), (7,))


def test_features_at_stays_on_meta():
    widths = (2, 2, 16)
    model, problem = meta_model(widths), meta_problem()
    G = model.features_at(problem, 2)
    assert len(G) == len(widths)
    for G_ell, width in zip(G, widths):
        on_meta(G_ell, (N * problem.d, width))


# -- cells: weights with a leading cell axis through functional_call -------------------------------------------------


def stacked(model, cells=C) -> dict[str, torch.Tensor]:
    """The model's weights repeated along a leading cell axis, (C, in, out), as leaves that take gradients."""
    return {k: v.detach()[None].repeat(cells, *(1,) * v.ndim).requires_grad_() for k, v in model.named_parameters()}


def per_cell(problem: Problem, cells=C) -> Problem:
    """One problem per cell: every tensor with a leading cell axis."""
    return Problem(*(None if t is None else t[None].expand(cells, *t.shape)
                     for t in (problem.M, problem.Y, problem.beta, problem.x_star, problem.H, problem.c)))


@pytest.mark.parametrize("wide_layer", ["angular", "dense"])
@pytest.mark.parametrize("shared", [True, False])
def test_batched_cells_stay_on_meta(wide_layer, shared):
    model, problem = meta_model(wide_layer=wide_layer), meta_problem()
    params = stacked(model)
    cells_problem = problem if shared else per_cell(problem)
    traj = functional_call(model, params, (cells_problem, T), {"record_active": True})
    on_meta(traj.X[-1], (C, N, problem.d))
    on_meta(traj.P[-1], (C, N, problem.d))
    on_meta(traj.active[-1], (C,))
    loss = training_loss(cells_problem, traj, "weighted")
    on_meta(loss, (C,))
    loss.sum().backward()
    for name, p in params.items():
        on_meta(p.grad, p.shape)


# -- Jacobians, the Gram matrix, the operator's products ---------------------------------------------------------------


@pytest.mark.parametrize("gram", list(SIZES))
@pytest.mark.parametrize("method", ["func", "structured"])
@pytest.mark.parametrize("mode", ["true", "detached"])
def test_jacobian_stays_on_meta(gram, method, mode):
    widths = (2, 2, 16)  # an early 2×2 layer, so that the structured path's forward-mode part runs too
    model, problem = meta_model(widths), meta_problem(gram)
    J = ntk.jacobian(model, problem, T, mode=mode, method=method)
    assert list(J) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        on_meta(J[name], (N * problem.b, p.numel()))


def test_structured_jacobian_of_a_float32_problem_stays_on_meta():
    model, problem = meta_model(dtype=torch.float32), meta_problem(dtype=torch.float32)
    J = structured_jacobian(model, problem, T, mode="true")  # converts to float64 on meta
    for name, p in model.named_parameters():
        on_meta(J[name], (N * problem.b, p.numel()))


@pytest.mark.parametrize("wide_layer,bias", [("dense", False), ("dense", True)])
def test_jacobian_of_X_T_stays_on_meta(wide_layer, bias):
    model, problem = meta_model(bias=bias, wide_layer=wide_layer), meta_problem()
    J = ntk.jacobian(model, problem, T, method="func", output="X")
    for name, p in model.named_parameters():
        on_meta(J[name], (N * problem.d, p.numel()))


@pytest.mark.parametrize("method", ["func", "structured"])
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float64])
def test_empirical_ntk_stays_on_meta(method, model_dtype):
    """K = J Jᵀ in float64 from a model and problem in ``model_dtype``; a non-CPU J takes ``A @ A.T``, not syrk."""
    model, problem = meta_model(dtype=model_dtype), meta_problem(dtype=model_dtype)
    n = N * problem.b
    K = ntk.empirical_ntk(model, problem, T, method=method)
    on_meta(K.K, (n, n))
    assert set(K.blocks) == {name for name, _ in model.named_parameters()}
    for block in (*K.blocks.values(), *K.layers().values(), K.symmetric_part()):
        on_meta(block, (n, n))
    on_meta(K.instance_blocks(), (N, N, problem.b, problem.b))
    on_meta(K.instance_block(1, 0), (problem.b, problem.b))


def test_gram_of_given_jacobians_stays_on_meta():
    """gram(J) with J on meta (the true kernel: Jt is J, so no host comparison)."""
    model, problem = meta_model(), meta_problem()
    J = ntk.jacobian(model, problem, T, mode="detached", method="func")
    K = ntk.gram(J, N=N)
    assert K.kind == "true"
    on_meta(K.K, (N * problem.b, N * problem.b))


@pytest.mark.parametrize("kernel", ["true", "training"])
def test_ntk_operator_products_stay_on_meta(kernel):
    """The operator's VJP graphs (built at construction) and its product J(J̃ᵀv), up to the host transfer."""
    model, problem = meta_model(dtype=torch.float32), meta_problem(dtype=torch.float32)
    n = N * problem.b
    assert ntk.ntk_operator(model, problem, T, kernel=kernel).shape == (n, n)
    f_true = ntk.residual_fn(model, problem, T, mode="true", dtype=torch.float64)
    f_in = ntk.residual_fn(model, problem, T, mode="true" if kernel == "true" else "detached", dtype=torch.float64)
    W = {k: v.double() for k, v in ntk.parameters(model).items()}
    r0, pull = vjp(f_in, W)
    on_meta(r0, (n,))
    v = r0.new_ones(n)
    (tangent,) = pull(v)
    for name, p in model.named_parameters():
        on_meta(tangent[name], p.shape)
    on_meta(jvp(f_true, (W,), (tangent,))[1], (n,))


# -- the settings beyond the theorem: LASSO and logistic objectives, NAG/prox/FISTA backbones ------------------------


def _beyond_problem(family: str):
    from ntkcheck.problems import lasso, logistic

    module = {"lasso": lasso, "logistic": logistic}[family]
    return module.generate(N, 6, 4, seed=0).to(device=META)


@pytest.mark.parametrize("family, update", [("qp", "nag"), ("lasso", "prox"), ("lasso", "fista"),
                                            ("logistic", "prox"), ("logistic", "fista"), ("logistic", "gd")])
def test_unroll_of_every_objective_and_backbone_stays_on_meta(family, update):
    """X_t, P_t and the training loss's gradient of each (objective, backbone) follow the inputs' device: the prox's
    soft-threshold, the momentum's extrapolation and the logistic softplus make nothing on the CPU."""
    widths = (2, 16)
    model = build(widths, inits.random(widths, 0, False), update=update).to(META)
    problem = meta_problem("H") if family == "qp" else _beyond_problem(family)
    traj = model.unroll(problem, T)
    for X in traj.X:
        on_meta(X, (N, problem.d))
    loss = training_loss(problem, traj, "last")
    on_meta(loss, ())
    loss.backward()
    for p in model.parameters():
        on_meta(p.grad, p.shape)
