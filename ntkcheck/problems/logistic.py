"""The logistic-regression family: N regularised logistic regressions, stacked (X has shape (…, N, d)).

Instance i has b samples m_ij ∈ R^d (the rows of M_i, (b, d)) with labels y_ij ∈ {−1, +1}, and z_i = M_i x its logits:

    g_i(z) = Σ_j softplus(−y_ij z_j),      softplus(w) = log(1 + eʷ) = logaddexp(w, 0)   (no overflow)
    penalty="l1":  F_i(x) = g_i(M_i x) + λ_i‖x‖₁,    f_i = g_i∘M_i,  β_i = ‖M_i‖₂²/4,  prox = soft-thresholding
    penalty="l2":  F_i(x) = g_i(M_i x) + ½λ_i‖x‖²,   f_i = F_i (smooth), β_i = ‖M_i‖₂²/4 + λ_i,  prox = identity
    ∇g_i(z)_j = −y_ij σ(−y_ij z_j),        ∇f_i(x) = M_iᵀ∇g_i(M_i x)  (+ λ_i x for l2)

(softplus'' ≤ ¼, hence β_i.) Data (:func:`generate`), from the stream ``SeedSequence([seed, split])`` of
:func:`ntkcheck.problems.qp.generate`: M_i with i.i.d. N(0, 1) entries and every row (sample) scaled to unit norm, so
that a planted x*_i ~ N(0, I) on ⌈sparsity·d⌉ coordinates (:func:`ntkcheck.problems.lasso.planted_sparse`) gives
logits of order one; then labels y_ij = +1 with probability σ(m_ijᵀx*_i), else −1 (the logistic model itself). λ is
absolute or relative: λ_i = lam·λ_max,i with λ_max,i = ‖∇(g_i∘M_i)(0)‖∞ = ½‖M_iᵀy_i‖∞, the smallest λ for which
x = 0 minimises the l1 objective. X_0 = 0.

**The NTK's residual** is the logits, r_i = M_i x_i (N, b): the network output in neural-tangents' sense, on which the
loss g acts. F is not ½‖r‖², so the eigen-projection predictions do not apply; linearised training does.

**Certificate** (:meth:`Problem.duality_gap`, F(x) − F* ≤ gap(x), 0 at the optimum):
l1: with u = s·∇g(M x), s = min(1, λ/‖Mᵀ∇g(M x)‖∞), and g*(u) = Σ_j φ(−y_j u_j), φ(v) = v log v + (1 − v) log(1 − v),
gap = F(x) + g*(u) (Fenchel duality; v = s·σ(−y z) ∈ (0, 1)). l2 (λ-strongly convex): gap = ‖∇F(x)‖²/(2λ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ntkcheck.problems.lasso import dual_scale, planted_sparse, soft_threshold
from ntkcheck.problems.qp import SPLITS, _numbers

PENALTIES = ("l1", "l2")


def softplus(w: torch.Tensor) -> torch.Tensor:
    """log(1 + eʷ) = logaddexp(w, 0) = max(w, 0) + log1p(e^{−|w|}): no overflow, exact for every w (torch's softplus
    returns w itself beyond its threshold, an error of up to 2e-9), and autograd's derivative is σ(w) everywhere (the
    max/|·| form would give 0 at w = 0, where every logit is at X_0 = 0)."""
    return torch.logaddexp(w, w.new_zeros(()))


def _rows_times(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """A_i x_i for every instance: (…, N, b, d) × (…, N, d) → (…, N, b)."""
    return torch.einsum("...nbd,...nd->...nb", A, X)


def smoothness(M: torch.Tensor) -> torch.Tensor:
    """‖M_i‖₂² (…, N), from the smaller Gram side in float64, returned in M's dtype."""
    M64 = M.double()
    gram = M64 @ M64.mT if M.shape[-2] <= M.shape[-1] else M64.mT @ M64
    return torch.linalg.eigvalsh(gram)[..., -1].to(M.dtype)


@dataclass(frozen=True)
class Problem:
    """N logistic regressions: samples ``M`` (…, N, b, d), labels ``Y`` ∈ {±1} (…, N, b), λ_i ``lam`` (…, N),
    ``penalty`` l1 or l2, β_i (``beta``), the planted ``x_star``."""

    M: torch.Tensor
    Y: torch.Tensor
    lam: torch.Tensor
    beta: torch.Tensor
    penalty: str = "l1"
    x_star: torch.Tensor | None = None

    @property
    def N(self) -> int:
        return self.M.shape[-3]

    @property
    def b(self) -> int:
        return self.M.shape[-2]

    @property
    def d(self) -> int:
        return self.M.shape[-1]

    def X0(self) -> torch.Tensor:
        """X_0 = 0, (N, d)."""
        return self.M.new_zeros(self.N, self.d)

    def _tensors(self):
        return self.M, self.Y, self.lam, self.beta

    def to(self, device=None, dtype=None) -> Problem:
        """Every tensor on ``device`` in ``dtype``."""
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)
        return Problem(*(move(t) for t in self._tensors()), self.penalty, move(self.x_star))

    def select(self, index) -> Problem:
        """The cells ``index`` of a problem stacked per cell (every tensor (C, N, …))."""
        pick = lambda t: None if t is None else t[index]
        return Problem(*(pick(t) for t in self._tensors()), self.penalty, pick(self.x_star))

    # -- the Problem protocol of :mod:`ntkcheck.problems.base` ---------------------------------------------

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """The logits r_i = M_i x_i, shape (…, N, b) (module docstring)."""
        return _rows_times(self.M, X)

    def loss(self, X: torch.Tensor) -> torch.Tensor:
        """g_i(M_i x_i) = Σ_j softplus(−y_ij m_ijᵀx_i), shape (…, N)."""
        return softplus(-self.Y * self.residual(X)).sum(-1)

    def penalty_value(self, X: torch.Tensor) -> torch.Tensor:
        """λ_i‖x_i‖₁ (l1) or ½λ_i‖x_i‖² (l2), shape (…, N)."""
        if self.penalty == "l1":
            return self.lam * X.abs().sum(-1)
        return 0.5 * self.lam * X.square().sum(-1)

    def objective_per_instance(self, X: torch.Tensor) -> torch.Tensor:
        """F_i(x_i) = g_i(M_i x_i) + the penalty, shape (…, N)."""
        return self.loss(X) + self.penalty_value(X)

    def loss_gradient(self, X: torch.Tensor) -> torch.Tensor:
        """∇g_i(M_i x_i) = −y_i ⊙ σ(−y_i ⊙ M_i x_i), shape (…, N, b)."""
        return -self.Y * torch.sigmoid(-self.Y * self.residual(X))

    def gradient(self, X: torch.Tensor) -> torch.Tensor:
        """∇f_i(x_i) = M_iᵀ∇g_i(M_i x_i) (+ λ_i x_i for l2), shape (…, N, d)."""
        grad = torch.einsum("...nb,...nbd->...nd", self.loss_gradient(X), self.M)
        return grad if self.penalty == "l1" else grad + self.lam[..., None] * X

    def prox(self, V: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """l1: S_{λ_i a}(v) (soft-thresholding, a = ``step``); l2: the identity (the penalty is in f)."""
        return soft_threshold(V, self.lam[..., None] * step) if self.penalty == "l1" else V

    # -- optimality ------------------------------------------------------------------------------------------

    def duality_gap(self, X: torch.Tensor) -> torch.Tensor:
        """gap_i(x_i) ≥ F_i(x_i) − F_i*, zero at the optimum (module docstring), shape (…, N)."""
        F = self.objective_per_instance(X)
        if self.penalty == "l2":
            return self.gradient(X).square().sum(-1) / (2 * self.lam)
        G = self.loss_gradient(X)
        v = dual_scale(torch.einsum("...nb,...nbd->...nd", G, self.M), self.lam)[..., None] * (-self.Y * G)
        return F + (torch.xlogy(v, v) + torch.xlogy(1 - v, 1 - v)).sum(-1)


def lam_max(M: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """λ_max,i = ‖∇(g_i∘M_i)(0)‖∞ = ½‖M_iᵀy_i‖∞ (…, N): for λ_i ≥ λ_max,i the l1 minimiser is x = 0."""
    return 0.5 * torch.einsum("...bd,...b->...d", M, Y).abs().amax(-1)


def from_tensors(M, Y, lam: float, *, relative: bool = True, penalty: str = "l1", x_star=None) -> Problem:
    """A Problem from samples M (N, b, d) and labels Y ∈ {±1} (N, b); λ_i = lam·λ_max,i (``relative``) or lam."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {', '.join(PENALTIES)} (got {penalty!r})")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number ≥ 0 (got {lam!r})")
    M, Y = _numbers("M", M).double(), _numbers("Y", Y).double()
    if M.ndim != 3 or tuple(Y.shape) != tuple(M.shape[:2]):
        raise ValueError(f"M must have shape (N, b, d) and Y (N, b) (got {tuple(M.shape)} and {tuple(Y.shape)})")
    if not bool(((Y == 1) | (Y == -1)).all()):
        raise ValueError("Y must hold labels −1 and +1 only")
    lam_i = lam * lam_max(M, Y) if relative else M.new_full(M.shape[:1], float(lam))
    if penalty == "l2" and not bool((lam_i > 0).all()):
        raise ValueError("lam must be > 0 for penalty='l2' (the certificate and the existence of a minimiser need it)")
    beta = smoothness(M) / 4 + (lam_i if penalty == "l2" else 0)
    return Problem(M, Y, lam_i, beta, penalty, None if x_star is None else _numbers("x_star", x_star).double())


def generate(N: int, d: int, b: int, seed: int, split: str = "train", *, lam: float = 0.1, relative: bool = True,
             sparsity: float = 0.1, penalty: str = "l1") -> Problem:
    """Draw the logistic family in float64, reproducibly (module docstring): from ``SeedSequence([seed, split])``,
    M_i first, then the planted x*_i, then the labels."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split]]))
    M = rng.standard_normal((N, b, d))
    M /= np.linalg.norm(M, axis=2, keepdims=True)  # unit-norm rows: one sample each
    x_star = planted_sparse(rng, N, d, sparsity)
    p = 1.0 / (1.0 + np.exp(-np.einsum("nbd,nd->nb", M, x_star)))
    Y = np.where(rng.random((N, b)) < p, 1.0, -1.0)
    return from_tensors(torch.from_numpy(M), torch.from_numpy(Y), lam, relative=relative, penalty=penalty,
                        x_star=torch.from_numpy(x_star))
