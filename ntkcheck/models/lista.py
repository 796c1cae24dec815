"""LISTA-CPSS (Chen, Liu, Wang & Yin, NeurIPS 2018): unrolled ISTA with coupled weights and support
selection, for min_x ½‖Mx − y‖² + λ‖x‖₁ (λ = 0 on the paper's QP).

Layer k = 1..T (untied: its own W^k ∈ R^{d×b} and θ^k; tied: one of each), per instance i:

    v   = x^{k−1} + W^k (y_i − M_i x^{k−1})               coupling (CP): W₂^k = I − W^k M, W₁^k = W^k
    x^k = η_ss(v; θ^k, p^k)                               x^0 = 0
    η_ss(v)_j = v_j                 for the ⌊p^k d⌋ coordinates j of largest |v_j| (support selection)
              = sign(v_j)(|v_j| − θ^k)₊   otherwise       p^k = min(k·p, p_max)

The ranking runs over the coordinates of each instance, as in Chen et al.'s code, not over the batch
axis as in the NeurIPS 2025 port (official_code.md §8.2, item 8). Initialisation as in Chen et al.:
W^k = Mᵀ/(1.001‖M‖₂²) and θ^k = λ/(1.001‖M‖₂²) for the dictionary M. LISTA-CPSS learns one dictionary
shared by all instances (Chen et al.; the NeurIPS 2025 code also needs ``--identical-dict`` to run it):
:func:`shared_dictionary` draws that version of the QP family. Past layer T (inference beyond the
horizon) the last layer repeats.

:func:`weight_only` is the different, linear model that the NeurIPS 2025 paper runs as "LISTA-CPSS" on
the QP (``LISTACPSSWOnly``): θ ≡ 0 (so η_ss is the identity), one tied W, initialised N(0, (bd)⁻⁴):

    x^k = x^{k−1} + W (y_i − M_i x^{k−1})
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ntkcheck.models.lstm import Unrolled
from ntkcheck.problems.qp import SPLITS, Problem, from_tensors, residual

SCALE = 1.001  # Chen et al.: W = Mᵀ/(1.001‖M‖²), θ = λ/(1.001‖M‖²)


def soft_threshold(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """η_θ(v) = sign(v)(|v| − θ)₊."""
    return torch.sign(v) * torch.relu(v.abs() - theta)


def support_mask(v: torch.Tensor, p: float) -> torch.Tensor:
    """True at the ⌊p·d⌋ entries of largest |v| in every row (instance) of v (N, d)."""
    count = int(math.floor(p * v.shape[-1]))
    mask = torch.zeros_like(v, dtype=torch.bool)
    if count > 0:
        mask.scatter_(-1, v.detach().abs().topk(count, dim=-1).indices, True)
    return mask


def shrink_ss(v: torch.Tensor, theta: torch.Tensor, p: float) -> torch.Tensor:
    """η_ss(v; θ, p): the support-selected coordinates pass unchanged, the rest are soft-thresholded."""
    return torch.where(support_mask(v, p), v, soft_threshold(v, theta))


class LISTACPSS(nn.Module):
    """LISTA-CPSS with T layers (module docstring); ``support_selection=False`` is LISTA-CP, i.e.
    LISTA x^k = η_θ(W_e y + S x^{k−1}) with W_e = W^k and S = I − W^k M.

    ``W`` (K, d, b) and ``theta`` (K,) with K = T (untied) or 1 (tied). ``learn_theta=False`` keeps θ
    fixed at its initial value (a buffer).
    """

    def __init__(self, W0: torch.Tensor, theta0: float, T: int, *, tied: bool = False, p: float = 0.012,
                 p_max: float = 0.13, support_selection: bool = True, learn_theta: bool = True):
        super().__init__()
        K = 1 if tied else T
        self.T, self.p, self.p_max, self.support_selection = T, p, p_max, support_selection
        self.W = nn.Parameter(W0.to(torch.float64).expand(K, *W0.shape).clone())
        theta = torch.full((K,), float(theta0), dtype=torch.float64)
        if learn_theta:
            self.theta = nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    @classmethod
    def from_problem(cls, problem: Problem, T: int, lam: float = 0.0, **kwargs) -> "LISTACPSS":
        """Chen et al.'s initialisation from the dictionary M that all instances of ``problem`` share."""
        M = problem.M[0].double()
        if not torch.equal(problem.M, problem.M[:1].expand_as(problem.M)):
            raise ValueError("LISTA-CPSS learns one dictionary: every instance must share M "
                             "(see shared_dictionary); use weight_only for per-instance M_i")
        L = float(torch.linalg.matrix_norm(M, ord=2)) ** 2
        return cls(M.T / (SCALE * L), lam / (SCALE * L), T, **kwargs)

    def layer(self, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(W^k, θ^k, p^k) for k ≥ 1; layers past the last one repeat it."""
        idx = min(k, len(self.theta)) - 1
        return self.W[idx], self.theta[idx], min(k * self.p, self.p_max)

    def step(self, problem: Problem, X: torch.Tensor, k: int) -> torch.Tensor:
        """x^k from x^{k−1}: v = x + W^k(y − Mx), then η_ss (or η_θ without support selection)."""
        W, theta, p = self.layer(k)
        v = X - residual(problem, X) @ W.T
        return shrink_ss(v, theta, p) if self.support_selection else soft_threshold(v, theta)

    def unroll(self, problem: Problem, T: int, *, X0: torch.Tensor | None = None,
               state: int | None = None) -> Unrolled:
        """Layers state+1..state+T from x (default x^0 = 0); ``state`` counts the layers done."""
        X = problem.X0() if X0 is None else X0
        done = 0 if state is None else state
        traj = Unrolled(X=[X], P=[], state=done)
        for k in range(done + 1, done + T + 1):
            X = self.step(problem, X, k)
            traj.X.append(X)
        traj.state = done + T
        return traj

    def forward(self, problem: Problem, T: int, **kwargs) -> Unrolled:
        return self.unroll(problem, T, **kwargs)


def weight_only(d: int, b: int, T: int, seed: int = 0) -> LISTACPSS:
    """The NeurIPS 2025 paper's QP baseline (module docstring): linear, θ ≡ 0, one tied W ~ N(0, (bd)⁻⁴)."""
    gen = torch.Generator().manual_seed(seed)
    W0 = torch.randn(d, b, generator=gen, dtype=torch.float64) / (b * d) ** 2
    return LISTACPSS(W0, 0.0, T, tied=True, support_selection=False, learn_theta=False)


def shared_dictionary(N: int, d: int, b: int, seed: int, split: str = "train") -> Problem:
    """The QP family with one M for all N instances: M b×d Gaussian with unit-norm columns, x*_i ~ N(0, I_d),
    y_i = M x*_i, drawn from the stream ``SeedSequence([seed, split, 3])`` (distinct from problems.generate)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], 3]))
    M = rng.standard_normal((b, d))
    M /= np.linalg.norm(M, axis=0, keepdims=True)
    x_star = rng.standard_normal((N, d))
    M_all = np.broadcast_to(M, (N, b, d)).copy()
    return from_tensors(torch.from_numpy(M_all), torch.from_numpy(x_star @ M.T), torch.from_numpy(x_star))
