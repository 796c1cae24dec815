"""The structured Jacobian equals torch.func's Jacobian of the dense model, in both modes."""

import pytest
import torch
from drawn import drawn_weights
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import functional_call, jacrev

from ntkcheck.config import hidden_widths
from ntkcheck.instruments.structured import structured_jacobian
from ntkcheck.models import init
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems


def reference_jacobian(widths, params, problem, T, mode):
    """∂ vec(M X_T − Y)/∂W by reverse-mode autograd through the dense model (torch.func.jacrev)."""
    model = build(widths, params, detach=mode == "detached", wide_layer="dense")

    def r(p):
        return problems.residual(problem, functional_call(model, p, (problem, T)).X[-1]).reshape(-1)

    J = jacrev(r)({k: v.detach() for k, v in model.named_parameters()})
    return {k: v.reshape(v.shape[0], -1) for k, v in J.items()}


@settings(max_examples=20, deadline=None)
@given(N=st.integers(1, 3), d=st.integers(2, 9), data=st.data(), width=st.integers(1, 24), L=st.integers(2, 4),
       T=st.integers(1, 5), log_e=st.floats(0, 3), mode=st.sampled_from(["true", "detached"]),
       kind=st.sampled_from(["deterministic", "random"]), seed=st.integers(0, 10**6))
def test_structured_jacobian_equals_autograd(N, d, data, width, L, T, log_e, mode, kind, seed):
    b = data.draw(st.integers(1, d))
    problem = problems.generate(N, d, b, seed)
    widths = hidden_widths(width, L)
    params = drawn_weights(widths, kind, 10**log_e, seed)
    model = build(widths, params, detach=mode == "detached")
    with torch.no_grad():  # J is a sum of terms ∝ g_t: meaningful only while they stand above rounding
        r_T = problems.residual(problem, model.unroll(problem, T).X[-1])
    assume(float(r_T.norm()) > 1e-4 * float(problem.Y.norm()))
    J = structured_jacobian(model, problem, T, mode=mode)
    ref = reference_jacobian(widths, params, problem, T, mode)
    assert J.keys() == ref.keys()
    scale = max(float(v.abs().max()) for v in ref.values())  # the Jacobian's overall scale
    # Every ReLU dead: autograd's J is exactly 0, while the structured sums of ±terms over the sorted columns
    # leave rounding residue (3.5e-18 found by CI); nothing relative can be asserted there.
    assume(scale > 0)
    for name in J:
        assert float((J[name] - ref[name]).abs().max()) <= 1e-10 * scale, name


def test_at_the_deterministic_init_inner_blocks_vanish_and_modes_agree():
    problem = problems.generate(2, 6, 4, 0)
    widths = hidden_widths(16, 3)
    model = build(widths, init.deterministic(widths, 5.0, 0))
    true, detached = (structured_jacobian(model, problem, 4, mode=m) for m in ("true", "detached"))
    assert not true["W1"].any() and not true["W2"].any()
    assert true["W3"].abs().max() > 0
    for name in true:
        torch.testing.assert_close(true[name], detached[name], rtol=0, atol=0)


def test_rejects_the_dense_only_configurations():
    widths = hidden_widths(8, 3)
    with pytest.raises(ValueError, match="angular"):
        structured_jacobian(build(widths, init.deterministic(widths, 2.0, 0, bias=True), bias=True),
                            problems.generate(1, 4, 3, 0), 2)
