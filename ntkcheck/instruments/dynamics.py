"""Kernel drift along training, linearised predictions of the training loss, and the measured rate.

Notation (:mod:`ntkcheck.instruments.ntk`): r_k = r(W_k) ∈ R^{N·b}, loss L_k = ½‖r_k‖² = F(X_T(W_k)) (summed over
instances), K = J Jᵀ, K̃ = J J̃ᵀ, η the meta learning rate of plain SGD W_{k+1} = W_k − η J̃ᵀ r_k.

Linearised dynamics (first order in ΔW = −η J̃ᵀ r_k, kernel frozen at the iteration it was measured):

    r_{k+1} = (I − η K̃) r_k                                                   (residual recursion)
    L_k     = ½ Σ_i (1 − η λ_i)^{2k} (u_iᵀ r_0)²        K = Σ_i λ_i u_i u_iᵀ  (symmetric K: K̃ = K at init)
    ‖r_{k+1}‖ ≤ (1 − η λ_min) ‖r_k‖  when 0 < η λ_i < 2 for all i;  the loss contracts by (1 − η λ_min)²
    stable ⇔ η < 2/λ_max                                                     (|1 − η λ_max| < 1)
    plateau = lim_k L_k = ½ ‖P_null r_0‖²       P_null: projector on the eigenvectors with λ_i ≤ tol

The error of the linearisation after one step is the second-order term ½ΔWᵀ∇²r ΔW = O(η²‖J̃ᵀr‖²‖∇²r‖),
plus, after k steps, the drift of the kernel (K_k − K_0 = O(kη)); see tests/test_dynamics.py for the
tolerance this implies.

Measured rate: a Theil–Sen fit (robust to outliers, scipy.stats.theilslopes) of log L_k against k over a
window gives the per-iteration contraction exp(slope) of the loss, with a confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ntkcheck.instruments.features import alpha as alpha_of
from ntkcheck.instruments.linalg import as_float64, eigh, kernel_drift, kernel_spectrum
from ntkcheck.instruments.ntk import gram, jacobian, parameters, residual_fn, with_mode
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.qp import Problem


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
    return float(value)


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0 (got {steps!r})")
    return int(steps)


# -- linearised predictions ----------------------------------------------------------------------------------


def residual_recursion(Kt, r0, lr: float, steps: int) -> np.ndarray:
    """r_0..r_steps of r_{k+1} = (I − η K̃) r_k, shape (steps + 1, n). Any square K̃ (symmetric or not)."""
    A, r = as_float64(Kt), as_float64(r0).ravel()
    lr, steps = _positive("lr", lr), _steps(steps)
    if A.shape != (r.size, r.size):
        raise ValueError(f"K̃ must be {r.size}×{r.size} to match r0 (got {A.shape})")
    out = np.empty((steps + 1, r.size))
    out[0] = r
    for k in range(steps):
        r = r - lr * (A @ r)
        out[k + 1] = r
    return out


def loss_of(residuals) -> np.ndarray:
    """½‖r_k‖² for each row r_k."""
    R = as_float64(residuals)
    return 0.5 * np.sum(R * R, axis=-1)


def eig_loss_curve(K, r0, lr: float, steps: int, *, eig=None) -> np.ndarray:
    """L_k = ½ Σ_i (1 − ηλ_i)^{2k} (u_iᵀ r_0)², k = 0..steps, from the eigendecomposition of symmetric K
    (``eig`` = :func:`eigh` of K when already computed)."""
    lam, U = eigh(K) if eig is None else eig
    lr, steps = _positive("lr", lr), _steps(steps)
    proj2 = (U.T @ as_float64(r0).ravel()) ** 2
    k = np.arange(steps + 1)[:, None]
    return 0.5 * np.sum((1.0 - lr * lam[None, :]) ** (2 * k) * proj2[None, :], axis=1)


def linear_rate(lambda_min: float, lr: float) -> float:
    """1 − η λ_min: the per-iteration contraction of ‖r‖ the smallest eigenvalue implies (the loss contracts
    by its square)."""
    return 1.0 - lr * lambda_min


def stability_threshold(lambda_max: float) -> float:
    """2/λ_max: the recursion is stable iff η < 2/λ_max (|1 − ηλ_max| < 1)."""
    return 2.0 / lambda_max if lambda_max > 0 else float("inf")


@dataclass(frozen=True)
class Plateau:
    """½‖P_null r_0‖²: the loss the linearised dynamics cannot remove (null space of K, |λ| ≤ ``tol``)."""

    value: float
    null_dim: int
    tol: float
    n: int


def null_space_plateau(K, r0, *, tol: float | None = None, eig=None) -> Plateau:
    """½‖P_null r_0‖² with null = span{u_i : |λ_i| ≤ tol}, tol = n·eps·max|λ| (numpy's rank tolerance);
    ``eig`` = :func:`eigh` of K when already computed."""
    lam, U = eigh(K) if eig is None else eig
    n = lam.size
    tol = n * np.finfo(np.float64).eps * float(np.abs(lam).max()) if tol is None else float(tol)
    null = np.abs(lam) <= tol
    p = U[:, null].T @ as_float64(r0).ravel()
    return Plateau(float(0.5 * p @ p), int(null.sum()), tol, n)


@dataclass(frozen=True)
class LinearPrediction:
    """The linearised predictions from one kernel K (and K̃) at residual r_0 and learning rate η."""

    eigenvalues: np.ndarray  # of K, ascending
    projections: np.ndarray  # (u_iᵀ r_0)², same order
    loss_eig: np.ndarray  # ½Σ(1−ηλ_i)^{2k}(u_iᵀr_0)², k = 0..steps
    loss_recursion: np.ndarray  # ½‖(I − ηK̃)^k r_0‖² (K̃ = K when not given)
    lr: float
    rate: float  # 1 − ηλ_min
    threshold: float  # 2/λ_max
    plateau: Plateau

    @property
    def stable(self) -> bool:
        return self.lr < self.threshold

    def as_dict(self) -> dict:
        return {"lr": self.lr, "lambda_min": float(self.eigenvalues[0]), "lambda_max": float(self.eigenvalues[-1]),
                "rate": self.rate, "loss_rate": self.rate * self.rate, "threshold": self.threshold, "stable": self.stable,
                "plateau": self.plateau.value, "null_dim": self.plateau.null_dim, "null_tol": self.plateau.tol,
                "loss_0": float(self.loss_eig[0])}


def predict(K, r0, lr: float, steps: int, *, Kt=None) -> LinearPrediction:
    """All linearised predictions from K (symmetric; eigen-curve, rate, threshold, plateau) and the residual
    recursion with K̃ = ``Kt`` (default K)."""
    lam, U = eig = eigh(K)
    r0 = as_float64(r0).ravel()
    return LinearPrediction(
        eigenvalues=lam,
        projections=(U.T @ r0) ** 2,
        loss_eig=eig_loss_curve(K, r0, lr, steps, eig=eig),
        loss_recursion=loss_of(residual_recursion(K if Kt is None else Kt, r0, lr, steps)),
        lr=float(lr),
        rate=linear_rate(float(lam[0]), lr),
        threshold=stability_threshold(float(lam[-1])),
        plateau=null_space_plateau(K, r0, eig=eig),
    )


# -- the measured rate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContractionFit:
    """Theil–Sen fit of log L_k = a + s·k over k in [start, stop): the loss contracts by ``rate`` = e^s per
    iteration, with the confidence interval [``low``, ``high``] = [e^{s_low}, e^{s_high}]."""

    rate: float
    low: float
    high: float
    slope: float
    intercept: float
    start: int
    stop: int
    confidence: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def fit_contraction(loss, *, start: int = 0, stop: int | None = None, confidence: float = 0.95,
                    iterations=None) -> ContractionFit:
    """Robust per-iteration contraction of the loss over the window [start, stop) of ``loss`` (iteration k at
    index k unless ``iterations`` gives them). Needs ≥ 3 positive, finite values in the window."""
    y = as_float64(loss).ravel()
    k = np.arange(y.size, dtype=np.float64) if iterations is None else as_float64(iterations).ravel()
    if k.size != y.size:
        raise ValueError(f"iterations ({k.size}) and loss ({y.size}) must have the same length")
    stop = y.size if stop is None else stop
    if not 0 <= start < stop <= y.size:
        raise ValueError(f"the window [start, stop) must satisfy 0 ≤ start < stop ≤ {y.size} (got [{start}, {stop}))")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence})")
    y, k = y[start:stop], k[start:stop]
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 3:
        raise ValueError(f"need at least 3 positive finite losses in the window (got {int(ok.sum())})")
    slope, intercept, lo, hi = stats.theilslopes(np.log(y[ok]), k[ok], alpha=confidence)
    return ContractionFit(float(np.exp(slope)), float(np.exp(lo)), float(np.exp(hi)), float(slope), float(intercept),
                          start, stop, confidence)


# -- along training ------------------------------------------------------------------------------------------


def drift_table(model: MathL2O, problem: Problem, T: int, snapshots: Mapping[int, dict], *, reference: int | None = None,
                method: str = "auto", t: int | None = None) -> pd.DataFrame:
    """K_k, K̃_k and α_k at every snapshot (iteration k → weights), next to the reference kernel K_0
    (``reference``, default the smallest k). float64. Columns: k; rel_change, distance (K_k against K_0);
    rel_change_training, distance_training (K̃_k against K̃_0); lambda_max, lambda_min, rank, tol of K_k;
    lambda_max_training, lambda_min_training of ½(K̃_k + K̃_kᵀ); alpha, alpha_rank, alpha_tol of G_{L−1,t}
    (t = T by default); loss ½‖r_k‖²."""
    if not snapshots:
        raise ValueError("snapshots must hold at least one iteration")
    ks = sorted(snapshots)
    reference = ks[0] if reference is None else reference
    if reference not in snapshots:
        raise ValueError(f"reference must be one of the snapshot iterations {ks} (got {reference})")
    p64 = problem.to(dtype=torch.float64)
    kernels, rows = {}, {}
    for k in ks:
        m = with_mode(model, "true", dtype=torch.float64).load_weights(snapshots[k])
        J = jacobian(m, p64, T, mode="true", method=method)
        Jt = jacobian(m, p64, T, mode="detached", method=method)
        K, Kt = gram(J, N=p64.N).K, gram(J, Jt, N=p64.N).K
        kernels[k] = (K, Kt)
        spec, spec_t = kernel_spectrum(K), kernel_spectrum(0.5 * (Kt + Kt.T))
        a = alpha_of(m, p64, T, t=t)
        with torch.no_grad():
            r = residual_fn(m, p64, T)(parameters(m))
        rows[k] = {"k": k, "lambda_max": spec.lambda_max, "lambda_min": spec.lambda_min, "rank": spec.rank.rank,
                   "tol": spec.rank.tol, "lambda_max_training": spec_t.lambda_max,
                   "lambda_min_training": spec_t.lambda_min, "alpha": a.alpha, "alpha_rank": a.rank.rank,
                   "alpha_tol": a.rank.tol, "loss": float(0.5 * r @ r)}
    K0, Kt0 = kernels[reference]
    for k in ks:
        d, dt = kernel_drift(K0, kernels[k][0]), kernel_drift(Kt0, kernels[k][1])
        rows[k] |= {"rel_change": d.rel_change, "distance": d.distance,
                    "rel_change_training": dt.rel_change, "distance_training": dt.distance}
    return pd.DataFrame([rows[k] for k in ks])
