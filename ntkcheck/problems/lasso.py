"""The LASSO family: N ℓ1-regularised least-squares instances, stacked (X has shape (…, N, d)).

    F_i(x) = f_i(x) + r_i(x),   f_i(x) = ½‖M_i x − y_i‖²,   r_i(x) = λ_i‖x‖₁
    ∇f_i(x) = M_iᵀ(M_i x − y_i),   β_i = ‖M_i‖₂²
    prox_{a r_i}(v)_j = sign(v_j)·max(|v_j| − λ_i a_j, 0)           (soft-thresholding, coordinate-wise step a)

Data (:func:`generate`), from the stream of :func:`ntkcheck.problems.qp.generate` and in the same order: M_i is b×d
with i.i.d. N(0, 1) entries and unit-norm columns (the QP's M_i of the same seed, bit for bit), then a planted
sparse x*_i with ⌈sparsity·d⌉ non-zeros, N(0, 1) on a uniformly drawn support, y_i = M_i x*_i (+ noise·N(0, I_b)).
λ is absolute, or relative: λ_i = lam·λ_max,i with λ_max,i = ‖M_iᵀy_i‖∞ = ‖∇f_i(0)‖∞, the smallest λ for which
x = 0 is optimal. X_0 = 0.

**The NTK's residual** is the smooth part's, r_i = M_i x_i − y_i (as for the QP), so that f = ½‖r‖². For this
composite objective the training loss F(X_T) is not ½‖r‖²: its gradient is Jᵀr + λ J_Xᵀ sign(X_T) (J_X = ∂X_T/∂W),
so the eigen-projection predictions of :mod:`ntkcheck.instruments.dynamics` (which assume F = ½‖r‖²) do not describe
it; linearised training (:mod:`ntkcheck.engine.linearised`) does, for any objective.

**Certificate** (:meth:`Problem.duality_gap`): with g(z) = ½‖z − y‖², Fenchel duality gives, for any x and the dual
point u = s·(M x − y), s = min(1, λ/‖Mᵀ(M x − y)‖∞) (so that ‖Mᵀu‖∞ ≤ λ),

    F(x) − F* ≤ gap(x) = F(x) + g*(u) = F(x) + ½‖u‖² + uᵀy,

which is 0 at the optimum; :func:`ntkcheck.problems.solvers.reference_optimum` stops on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkcheck.problems import qp
from ntkcheck.problems.qp import SPLITS


def soft_threshold(V: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """S_τ(v) = sign(v)·max(|v| − τ, 0) coordinate-wise: prox_{τ‖·‖₁}(v) for τ ≥ 0 (broadcasting τ against V).

    Under autograd the kink |v_j| = τ_j gets relu's derivative at 0, which is 0 (torch's choice), and sign's derivative
    is 0 everywhere: ∂S/∂v_j = 1 where |v_j| > τ_j, 0 where |v_j| ≤ τ_j; ∂S/∂τ_j = −sign(v_j) where |v_j| > τ_j, else 0.
    """
    return V.sign() * torch.relu(V.abs() - tau)


def dual_scale(MTu: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """s = min(1, λ_i/‖M_iᵀu_i‖∞) (…, N): the scale that makes s·u dual-feasible for the ℓ1 term, ‖M_iᵀ(s u_i)‖∞ ≤ λ_i."""
    norm = MTu.abs().amax(-1)
    return torch.where(norm > lam, lam / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.ones_like(norm))


def lam_max(M: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """λ_max,i = ‖M_iᵀy_i‖∞ (…, N): for λ_i ≥ λ_max,i the LASSO's minimiser is x = 0."""
    return torch.einsum("...bd,...b->...d", M, Y).abs().amax(-1)


@dataclass(frozen=True)
class Problem:
    """N LASSO instances: the least squares ``ls`` (M, Y, β, the planted x*) and λ_i (``lam``, shape (…, N))."""

    ls: qp.Problem
    lam: torch.Tensor

    M = property(lambda self: self.ls.M)
    Y = property(lambda self: self.ls.Y)
    beta = property(lambda self: self.ls.beta)
    x_star = property(lambda self: self.ls.x_star)
    N = property(lambda self: self.ls.N)
    b = property(lambda self: self.ls.b)
    d = property(lambda self: self.ls.d)

    def X0(self) -> torch.Tensor:
        """X_0 = 0, (N, d)."""
        return self.ls.X0()

    def to(self, device=None, dtype=None) -> Problem:
        """Every tensor on ``device`` in ``dtype`` (the least squares' overflow check included)."""
        return Problem(self.ls.to(device, dtype), self.lam.to(device=device, dtype=dtype))

    def select(self, index) -> Problem:
        """The cells ``index`` of a problem stacked per cell (every tensor (C, N, …))."""
        return Problem(self.ls.select(index), self.lam[index])

    # -- the Problem protocol of :mod:`ntkcheck.problems.base` ---------------------------------------------

    def l1(self, X: torch.Tensor) -> torch.Tensor:
        """r_i(x_i) = λ_i‖x_i‖₁, shape (…, N). Autograd differentiates it as λ_i sign(x_i): 0 at x_ij = 0, a subgradient
        (the prox makes exact zeros, so a training loss F(X_T) meets that point)."""
        return self.lam * X.abs().sum(-1)

    def objective_per_instance(self, X: torch.Tensor) -> torch.Tensor:
        """F_i(x_i) = ½‖M_i x_i − y_i‖² + λ_i‖x_i‖₁, shape (…, N)."""
        return self.ls.objective_per_instance(X) + self.l1(X)

    def objective_path(self, Xs) -> torch.Tensor:
        """F(X_1), …, F(X_T), shape (…, T): the least squares' one-product path plus Σ_i λ_i‖x_{t,i}‖₁."""
        Xs = list(Xs)
        l1 = torch.stack(Xs, dim=-2).abs().sum(-1)  # (…, N, T)
        return self.ls.objective_path(Xs) + (self.lam[..., None] * l1).sum(-2)

    def gradient(self, X: torch.Tensor) -> torch.Tensor:
        """∇f_i(x_i) = M_iᵀ(M_i x_i − y_i), shape (…, N, d)."""
        return self.ls.gradient(X)

    def prox(self, V: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """prox_{a r_i}(v) = S_{λ_i a}(v) (:func:`soft_threshold`), a = ``step`` coordinate-wise."""
        return soft_threshold(V, self.lam[..., None] * step)

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """r_i = M_i x_i − y_i, shape (…, N, b): the smooth part's residual, f = ½‖r‖² (module docstring)."""
        return self.ls.residual(X)

    # -- optimality ------------------------------------------------------------------------------------------

    def duality_gap(self, X: torch.Tensor) -> torch.Tensor:
        """gap_i(x_i) ≥ F_i(x_i) − F_i*, zero at the optimum (module docstring), shape (…, N)."""
        R = self.ls.residual(X)
        u = dual_scale(torch.einsum("...nb,...nbd->...nd", R, self.M), self.lam)[..., None] * R
        return self.objective_per_instance(X) + 0.5 * u.square().sum(-1) + (u * self.Y).sum(-1)


def from_least_squares(ls: qp.Problem, lam: float, *, relative: bool = True) -> Problem:
    """The LASSO on the data of ``ls`` with λ_i = lam·‖M_iᵀy_i‖∞ (``relative``) or λ_i = lam."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number ≥ 0 (got {lam!r})")
    lam_i = lam * lam_max(ls.M, ls.Y) if relative else ls.beta.new_full(ls.beta.shape, float(lam))
    return Problem(ls, lam_i)


def planted_sparse(rng: np.random.Generator, N: int, d: int, sparsity: float) -> np.ndarray:
    """x*_i with ⌈sparsity·d⌉ non-zeros ~ N(0, 1) on a support drawn uniformly for each instance, shape (N, d)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity <= 1:
        raise ValueError(f"sparsity must be a number in (0, 1] (got {sparsity!r})")
    s = math.ceil(sparsity * d)
    values = rng.standard_normal((N, d))
    support = np.argsort(rng.random((N, d)), axis=-1)[:, :s]
    x_star = np.zeros((N, d))
    np.put_along_axis(x_star, support, np.take_along_axis(values, support, axis=-1), axis=-1)
    return x_star


def generate(N: int, d: int, b: int, seed: int, split: str = "train", *, lam: float = 0.1, relative: bool = True,
             sparsity: float = 0.1, noise: float = 0.0) -> Problem:
    """Draw the LASSO family in float64, reproducibly (module docstring): the stream ``SeedSequence([seed, split])``
    of :func:`ntkcheck.problems.qp.generate`, M_i first (the QP's), then the sparse x*_i, then the noise."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number ≥ 0 (got {noise!r})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split]]))
    M = rng.standard_normal((N, b, d))
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    x_star = planted_sparse(rng, N, d, sparsity)
    Y = np.einsum("nbd,nd->nb", M, x_star)
    if noise:
        Y = Y + noise * rng.standard_normal((N, b))
    ls = qp.from_tensors(torch.from_numpy(M), torch.from_numpy(Y), torch.from_numpy(x_star))
    return from_least_squares(ls, lam, relative=relative)
