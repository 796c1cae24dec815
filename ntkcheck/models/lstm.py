"""Math-L2O as Liu, Chen, Wang, Yin & Cai (ICML 2023) define it: a coordinate-wise LSTM that outputs
a diagonal preconditioner P_t and, for the -PA variant, an accelerator A_t.

Their Eq. (6) with b₁ = b₂ = 0 (the paper recommends fixing the bias terms to zero), on the smooth QP
(prox = identity), for t = 1..T, with the same weights at every coordinate, instance and step:

    o_t, h_t = LSTM((∇F(Y_{t−1}), Y_{t−1}), h_{t−1})      h_0 ~ N(0, ς²) (ς = ``state_scale``)
    u_t      = ReLU(W_u o_t + c_u)
    P_t      = 2σ(W_P u_t + c_P),   A_t = 2σ(W_A u_t + c_A)    (A_t ≡ 0 for the -P variant)
    X_t      = Y_{t−1} − (s/β_i) P_t ⊙ ∇F(Y_{t−1})
    Y_t      = X_t + A_t ⊙ (X_t − X_{t−1})                  X_0 = Y_0 = 0

With ``detach=True`` (the default, as in both official codes) the LSTM inputs are constants for backprop;
``detach=False`` gives the true gradient. The objective is measured at Y_t, the iterate the next step starts
from (= X_t when A ≡ 0).

h_0 and c_0 are drawn from ``state_seed`` afresh at every unroll (a generator seeded inside
:meth:`MathL2OLSTM.initial_state`), so two unrolls draw the same state and X_T(W) is a pure function of the
weights: ``torch.func`` (functional_call, jacrev, jvp) can differentiate it. Row j of h_0 belongs to row j of the
stacked problem (instance i, coordinate k at j = i·d + k), so the draw depends on the batch, not per instance.

``b_terms=True`` adds the unconstrained bias terms B, B₁, B₂ of the authors' code (identity
output, learned scale 1):

    X_t = B ⊙ (Y_{t−1} − αP ⊙ ∇F(Y_{t−1})) + (1 − B) ⊙ (X_{t−1} − αP ⊙ ∇F(X_{t−1})) + B₁
    Y_t = X_t + A ⊙ (X_t − X_{t−1}) + B₂

The NeurIPS 2025 code runs its Math-L2O baseline with these terms on because they are the constructor's
defaults (shared/research/official_code.md §8.2, item 7); Liu et al. leave them off. Off is our default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck.models.base import copy_with_detach
from ntkcheck.problems.qp import Problem, gradient

VARIANTS = ("P", "PA")


@dataclass
class LSTMState:
    """What step t needs from step t−1: the LSTM state (h, c), X_{t−1} and Y_{t−1}."""

    h: torch.Tensor
    c: torch.Tensor
    X: torch.Tensor
    Y: torch.Tensor

    def detach(self) -> "LSTMState":
        return LSTMState(self.h.detach(), self.c.detach(), self.X.detach(), self.Y.detach())


@dataclass
class Unrolled:
    """One unroll of a learned baseline: Y_0..Y_T (each (N, d)), step multipliers P_1..P_T, and the
    state to continue from (truncated BPTT, inference beyond T)."""

    X: list[torch.Tensor]
    P: list[torch.Tensor]
    state: object


class MathL2OLSTM(nn.Module):
    """Liu et al.'s coordinate-wise LSTM optimiser (module docstring).

    ``hidden`` and ``layers``: LSTM size (Liu et al. and the NeurIPS baseline: 20 and 2). Weights take
    PyTorch's default initialisation drawn from ``seed``; h_0 and c_0 are drawn at every unroll from a
    generator seeded by ``state_seed`` (default ``seed``), the same draw every time. ``detach``: the LSTM
    inputs are constants for backprop (module docstring).
    """

    def __init__(self, variant: str = "P", *, hidden: int = 20, layers: int = 2, state_scale: float = 1.0,
                 b_terms: bool = False, step_scale: float = 1.0, seed: int = 0, state_seed: int | None = None,
                 detach: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
        self.variant, self.hidden, self.layers = variant, hidden, layers
        self.state_scale, self.b_terms, self.step_scale = state_scale, b_terms, step_scale
        self.state_seed, self.detach = seed if state_seed is None else int(state_seed), bool(detach)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lstm = nn.LSTM(2, hidden, layers, dtype=torch.float64)
            self.linear = nn.Linear(hidden, hidden, dtype=torch.float64)
            heads = ["P", "A"] if variant == "PA" else ["P"]
            heads += ["B", "B1", "B2"] if b_terms else []
            self.heads = nn.ModuleDict({k: nn.Linear(hidden, 1, dtype=torch.float64) for k in heads})
        if b_terms:
            self.b_scales = nn.ParameterDict({k: nn.Parameter(torch.ones((), dtype=torch.float64))
                                              for k in ("B", "B1", "B2")})

    def with_detach(self, detach: bool) -> "MathL2OLSTM":
        """A copy with the same weights and ``state_seed``, with ``detach`` set (the Learner protocol)."""
        return copy_with_detach(self, detach)

    def initial_state(self, problem: Problem, X0: torch.Tensor | None = None) -> LSTMState:
        """h_0, c_0 ~ N(0, ς²) per coordinate row, from a generator seeded by ``state_seed`` at every call (so the
        same draw every time; drawn in float64 on the CPU, then moved to X_0's device and dtype); X_0 = Y_0
        (default 0)."""
        X0 = problem.X0() if X0 is None else X0
        generator = torch.Generator().manual_seed(self.state_seed)
        shape = (self.layers, X0.numel(), self.hidden)
        h, c = (self.state_scale * torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(2))
        return LSTMState(h.to(X0), c.to(X0), X0, X0)

    def outputs(self, Z: torch.Tensor, h, c):
        """The heads for input rows Z (R, 2): ({"P": 2σ(·), "A": 2σ(·), "B": ·, …}, h, c)."""
        o, (h, c) = self.lstm(Z[None], (h, c))
        u = torch.relu(self.linear(o[0]))
        out = {k: head(u)[:, 0] for k, head in self.heads.items()}
        for k in ("P", "A"):
            if k in out:
                out[k] = 2.0 * torch.sigmoid(out[k])
        for k in ("B", "B1", "B2"):
            if k in out:
                out[k] = out[k] * self.b_scales[k]
        return out, h, c

    def step(self, problem: Problem, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One step of the module docstring: P_t and the new state."""
        alpha = (self.step_scale / problem.beta)[:, None]
        grad_Y = gradient(problem, state.Y)
        Z = torch.stack((grad_Y, state.Y), dim=-1).reshape(-1, 2)
        Z = Z.detach() if self.detach else Z
        out, h, c = self.outputs(Z, state.h, state.c)
        shape = state.Y.shape
        P = out["P"].reshape(shape)
        X = state.Y - alpha * P * grad_Y
        if self.b_terms:
            B = out["B"].reshape(shape)
            X_from_X = state.X - alpha * P * gradient(problem, state.X)
            X = B * X + (1 - B) * X_from_X + out["B1"].reshape(shape)
        A = out["A"].reshape(shape) if "A" in out else 0.0
        Y = X + A * (X - state.X)
        if self.b_terms:
            Y = Y + out["B2"].reshape(shape)
        return P, LSTMState(h, c, X, Y)

    def unroll(self, problem: Problem, T: int, *, X0: torch.Tensor | None = None,
               state: LSTMState | None = None) -> Unrolled:
        """T steps from ``state`` (default: a fresh h_0 and X_0 = Y_0 = 0); X lists Y_0..Y_T."""
        state = self.initial_state(problem, X0) if state is None else state
        traj = Unrolled(X=[state.Y], P=[], state=state)
        for _ in range(T):
            P, state = self.step(problem, state)
            traj.X.append(state.Y)
            traj.P.append(P)
        traj.state = state
        return traj

    def forward(self, problem: Problem, T: int, **kwargs) -> Unrolled:
        return self.unroll(problem, T, **kwargs)
