"""Model-free linear algebra: numerical ranks with their tolerance, kernel spectra, Lanczos extremes, kernel drift.

Nothing here knows the model: every function takes matrices (torch or numpy) or a scipy LinearOperator and
returns float64 numbers. The conventions shared by every number ntkcheck reports:

    rank = #{σ_i > tol},   tol = max(shape)·eps·σ_max     (numpy's matrix_rank; eps of the dtype computed in)
    λ_min, σ_min are reported as computed, also below tol (then they are zero to working precision)
    drift(K_0, K_k) = ‖K_k − K_0‖_F / ‖K_0‖_F,  distance = 1 − ⟨K_0, K_k⟩_F / (‖K_0‖_F ‖K_k‖_F)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))} (got {value!r})")


def as_float64(A) -> np.ndarray:
    """A torch tensor or array-like as a float64 numpy array (on the CPU, detached)."""
    if isinstance(A, torch.Tensor):
        return A.detach().cpu().double().numpy()
    return np.asarray(A, dtype=np.float64)


def symmetric_part(A: np.ndarray) -> np.ndarray:
    """½(A + Aᵀ)."""
    return 0.5 * (A + A.T)


# -- ranks ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rank:
    """Numerical rank with its tolerance (numpy's convention): rank = #{σ_i > tol},
    tol = max(shape)·eps·σ_max, eps the machine epsilon of the dtype the matrix was computed in.

    ``sigma_min`` is the smallest singular value as computed — reported even when it is below ``tol``
    (then it is zero to working precision, and that is what the numbers say)."""

    rank: int
    tol: float
    sigma_max: float
    sigma_min: float
    shape: tuple[int, int]
    eps: float

    @property
    def full(self) -> bool:
        return self.rank == min(self.shape)

    def as_dict(self) -> dict:
        return {"rank": self.rank, "tol": self.tol, "sigma_max": self.sigma_max, "sigma_min": self.sigma_min,
                "shape": list(self.shape), "eps": self.eps, "full_rank": self.full}


def numerical_rank(singular_values, shape: tuple[int, int], *, eps: float | None = None,
                   tol: float | None = None) -> Rank:
    """:class:`Rank` from the min(shape) singular values of a matrix of ``shape`` (absolute eigenvalues for a
    symmetric one). ``eps`` defaults to float64's; ``tol`` overrides max(shape)·eps·σ_max."""
    s = np.abs(np.asarray(singular_values, dtype=np.float64).ravel())
    if s.size != min(shape):
        raise ValueError(f"a {shape[0]}×{shape[1]} matrix has {min(shape)} singular values (got {s.size})")
    eps = float(np.finfo(np.float64).eps) if eps is None else float(eps)
    smax = float(s.max()) if s.size else 0.0
    tol = max(shape) * eps * smax if tol is None else float(tol)
    return Rank(int((s > tol).sum()), float(tol), smax, float(s.min()) if s.size else 0.0,
                (int(shape[0]), int(shape[1])), eps)


def matrix_rank(A) -> Rank:
    """:class:`Rank` of a dense matrix (torch or numpy) from its singular values, eps of its dtype."""
    A_t = torch.as_tensor(A)
    s = torch.linalg.svdvals(A_t).cpu().double().numpy()
    return numerical_rank(s, tuple(A_t.shape), eps=torch.finfo(A_t.dtype).eps)


def singular_spectrum(A) -> tuple[np.ndarray, Rank]:
    """All singular values of A (descending, float64, by ``torch.linalg.svdvals`` — not via AᵀA, which
    would square the condition number and lose every σ below √eps·σ_max) and its :class:`Rank`."""
    A_t = torch.as_tensor(A).double()
    if A_t.ndim != 2:
        raise ValueError(f"A must be a matrix (got shape {tuple(A_t.shape)})")
    if 0 in A_t.shape:
        raise ValueError(f"A must have at least one row and one column (got shape {tuple(A_t.shape)})")
    s = torch.linalg.svdvals(A_t).cpu().numpy()
    return s, numerical_rank(s, tuple(A_t.shape))


# -- spectra -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpectrum:
    """All eigenvalues of a symmetric kernel (ascending), λ_max, λ_min, trace and the numerical rank.

    λ_min is reported as computed (it may be a tiny negative number for a singular PSD kernel); compare it
    with ``rank.tol``."""

    eigenvalues: np.ndarray
    rank: Rank
    trace: float

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    def as_dict(self) -> dict:
        return {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min, "trace": self.trace,
                **{f"rank_{k}" if k != "rank" else "rank": v for k, v in self.rank.as_dict().items()}}


def kernel_spectrum(K, eigenvalues=None) -> KernelSpectrum:
    """Dense eigen-decomposition (eigvalsh, float64) of a symmetric kernel, with its numerical rank.
    ``eigenvalues``: those of ½(K + Kᵀ) (ascending), when already computed (e.g. by :func:`eigh`)."""
    K_t = torch.as_tensor(K)
    eps = torch.finfo(K_t.dtype).eps
    K64 = K_t.double()
    lam = (torch.linalg.eigvalsh(0.5 * (K64 + K64.T)).cpu().numpy() if eigenvalues is None
           else np.asarray(eigenvalues, dtype=np.float64))
    return KernelSpectrum(lam, numerical_rank(lam, tuple(K_t.shape), eps=eps), float(torch.trace(K64)))


@dataclass(frozen=True)
class Extremes:
    """The k largest (descending) and k smallest (ascending) eigenvalues of a symmetric operator.

    ``method``: ``"lanczos"`` (scipy eigsh, ARPACK) or ``"dense"`` (eigvalsh of the materialised matrix).
    Lanczos determines each eigenvalue to about tol·λ_max in absolute terms, so a λ_min far below
    λ_max·1e-12 is "zero to working precision", not a measured value: compare with the rank tolerance."""

    largest: np.ndarray
    smallest: np.ndarray
    method: str
    n: int
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.largest[0])

    @property
    def lambda_min(self) -> float:
        return float(self.smallest[0])


def _dense(A) -> np.ndarray:
    if isinstance(A, LinearOperator):
        return np.asarray(A @ np.eye(A.shape[0]))
    return torch.as_tensor(A).detach().cpu().double().numpy()


def extreme_eigenvalues(A, k: int = 1, *, method: str = "auto", tol: float = 1e-12, maxiter: int | None = None,
                        dense_max: int = 2000, seed: int = 0) -> Extremes:
    """λ_max, λ_min (and the k largest/smallest) of a symmetric matrix or LinearOperator ``A``.

    ``method="lanczos"`` (scipy eigsh, from a seeded start vector):
        top:     eigsh(A, which="LA")                       relative accuracy ``tol``
        bottom:  λ_i(A) = σ − μ_i with μ_i = eigsh(σI − A, which="LA"), σ = λ_max(A)
    The shift makes the bottom of a (nearly) singular PSD kernel converge: ARPACK stops when a Ritz
    residual is ≤ tol·|Ritz value|, which a cluster of eigenvalues at 0 never satisfies, whereas for σI − A
    the Ritz values are ≈ λ_max. So λ_min comes out to an absolute accuracy of about tol·λ_max (``extra``
    records it as ``abs_accuracy_min``): a λ_min below that is zero to this precision, and is reported as
    computed, sign included.
    ``method="dense"``: eigvalsh (a LinearOperator is materialised column by column).
    ``method="auto"``: dense for a matrix (not an operator) of size ≤ ``dense_max``, Lanczos otherwise.
    If Lanczos does not converge, the dense fallback is used when n ≤ ``dense_max`` (``note`` says so),
    else a RuntimeError names the options to change.
    """
    _choice("method", method, ("auto", "lanczos", "dense"))
    n = A.shape[0]
    if A.shape != (n, n):
        raise ValueError(f"A must be square (got shape {A.shape})")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n = {n}] (got {k!r})")
    use_dense = method == "dense" or (method == "auto" and (not isinstance(A, LinearOperator) and n <= dense_max))
    use_dense = use_dense or k >= n - 1  # ARPACK needs k < n − 1 for a symmetric problem
    if use_dense:
        return _dense_extremes(A, k, n)
    op = A if isinstance(A, LinearOperator) else _as_operator(A)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        top = np.sort(eigsh(op, k=k, which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False))[::-1]
        sigma = float(top[0])
        shifted = LinearOperator((n, n), matvec=lambda v: sigma * np.ravel(v) - np.ravel(op @ np.ravel(v)),
                                 dtype=np.float64)
        mu = eigsh(shifted, k=k, which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
    except ArpackNoConvergence as err:
        if n > dense_max:
            raise RuntimeError(f"Lanczos did not converge for n = {n} ({err}); raise maxiter, loosen tol, or "
                               f"raise dense_max to ≥ {n} to allow the dense fallback") from None
        return _dense_extremes(A, k, n, note=f"Lanczos did not converge ({err}); dense fallback")
    smallest = np.sort(sigma - mu)
    accuracy = max(tol, float(np.finfo(np.float64).eps)) * abs(sigma)
    return Extremes(top.copy(), smallest, "lanczos", n, extra={"abs_accuracy_min": accuracy, "tol": tol})


def _dense_extremes(A, k: int, n: int, note: str = "") -> Extremes:
    lam = np.linalg.eigvalsh(symmetric_part(_dense(A)))
    return Extremes(lam[::-1][:k].copy(), lam[:k].copy(), "dense", n, note=note)


def _as_operator(A) -> LinearOperator:
    M = _dense(A)
    return LinearOperator(M.shape, matvec=lambda v: M @ v, rmatvec=lambda v: M.T @ v, dtype=np.float64)


def eigh(K) -> tuple[np.ndarray, np.ndarray]:
    """(λ ascending, U) of the symmetric part of K, float64."""
    return np.linalg.eigh(symmetric_part(as_float64(K)))


# -- drift -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDrift:
    """How far K_k moved from K_0.

    ``rel_change`` = ‖K_k − K_0‖_F / ‖K_0‖_F; ``distance`` = 1 − ⟨K_0, K_k⟩_F / (‖K_0‖_F ‖K_k‖_F) (Fort et al.
    2020: 0 for kernels equal up to a positive scale, ≤ 1 for PSD kernels; NaN when K_k = 0, which has no
    direction)."""

    rel_change: float
    distance: float

    def as_dict(self) -> dict[str, float]:
        return {"rel_change": self.rel_change, "distance": self.distance}


def kernel_drift(K0, Kk) -> KernelDrift:
    """:class:`KernelDrift` of ``Kk`` against ``K0`` (same shape; K_0 ≠ 0)."""
    A, B = as_float64(K0), as_float64(Kk)
    if A.shape != B.shape:
        raise ValueError(f"the kernels must have the same shape (got {A.shape} and {B.shape})")
    nA, nB = np.linalg.norm(A), np.linalg.norm(B)
    if nA == 0:
        raise ValueError("kernel drift is undefined against a zero kernel K_0")
    distance = float(1.0 - np.sum(A * B) / (nA * nB)) if nB > 0 else math.nan
    return KernelDrift(float(np.linalg.norm(B - A) / nA), distance)
