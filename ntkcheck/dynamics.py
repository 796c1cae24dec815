"""Kernel drift along training, linearised predictions of the training loss, and the measured rate.

Notation (:mod:`ntkcheck.ntk`): r_k = r(W_k) ∈ R^{N·b}, loss L_k = ½‖r_k‖² = F(X_T(W_k)) (summed over
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

from ntkcheck import problems
from ntkcheck.model import MathL2O
from ntkcheck.ntk import gram, jacobian, kernel_spectrum, parameters, residual_fn, with_mode
from ntkcheck.problems import Problem


def _np(A) -> np.ndarray:
    if isinstance(A, torch.Tensor):
        return A.detach().cpu().double().numpy()
    return np.asarray(A, dtype=np.float64)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
    return float(value)


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0 (got {steps!r})")
    return int(steps)


# -- drift ---------------------------------------------------------------------------------------------------


def kernel_drift(K0, Kk) -> dict[str, float]:
    """Relative change ‖K_k − K_0‖_F / ‖K_0‖_F and kernel distance 1 − ⟨K_0, K_k⟩_F / (‖K_0‖_F ‖K_k‖_F)
    (Fort et al. 2020: 0 for kernels equal up to a positive scale, ≤ 1 for PSD kernels)."""
    A, B = _np(K0), _np(Kk)
    if A.shape != B.shape:
        raise ValueError(f"the kernels must have the same shape (got {A.shape} and {B.shape})")
    nA, nB = np.linalg.norm(A), np.linalg.norm(B)
    if nA == 0 or nB == 0:
        raise ValueError("kernel drift is undefined for a zero kernel")
    return {"rel_change": float(np.linalg.norm(B - A) / nA), "distance": float(1.0 - np.sum(A * B) / (nA * nB))}


# -- linearised predictions ----------------------------------------------------------------------------------


def residual_recursion(Kt, r0, lr: float, steps: int) -> np.ndarray:
    """r_0..r_steps of r_{k+1} = (I − η K̃) r_k, shape (steps + 1, n). Any square K̃ (symmetric or not)."""
    A, r = _np(Kt), _np(r0).ravel()
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
    R = _np(residuals)
    return 0.5 * np.sum(R * R, axis=-1)


def eigh(K) -> tuple[np.ndarray, np.ndarray]:
    """(λ ascending, U) of the symmetric part of K, float64: the one decomposition the predictions share."""
    return np.linalg.eigh(_sym(_np(K)))


def eig_loss_curve(K, r0, lr: float, steps: int, *, eig=None) -> np.ndarray:
    """L_k = ½ Σ_i (1 − ηλ_i)^{2k} (u_iᵀ r_0)², k = 0..steps, from the eigendecomposition of symmetric K
    (``eig`` = :func:`eigh` of K when already computed)."""
    lam, U = eigh(K) if eig is None else eig
    lr, steps = _positive("lr", lr), _steps(steps)
    proj2 = (U.T @ _np(r0).ravel()) ** 2
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
    p = U[:, null].T @ _np(r0).ravel()
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
    r0 = _np(r0).ravel()
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


def _sym(A: np.ndarray) -> np.ndarray:
    return 0.5 * (A + A.T)


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
    y = _np(loss).ravel()
    k = np.arange(y.size, dtype=np.float64) if iterations is None else _np(iterations).ravel()
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


def sgd_snapshots(model: MathL2O, problem: Problem, T: int, lr: float, iters: int, *,
                  keep=None) -> tuple[np.ndarray, dict[int, dict]]:
    """Plain full-batch SGD on L(W) = F(X_T(W)) (loss "last", as :mod:`ntkcheck.train`): W_{k+1} = W_k −
    η∇̃L(W_k), ∇̃ the gradient of the model's mode (detached BPTT when ``model.detach``).

    Returns the losses L_0..L_iters and the weights at the iterations in ``keep`` (default: all), each a
    dict name → tensor. The model is not modified."""
    lr = _positive("lr", lr)
    m = with_mode(model, "detached" if model.detach else "true")
    keep = set(range(iters + 1)) if keep is None else set(keep)
    params = list(m.parameters())
    losses, snaps = [], {}
    for k in range(iters + 1):
        if k in keep:
            snaps[k] = {name: p.detach().clone() for name, p in m.named_parameters()}
        loss = problems.objective(problem, m.unroll(problem, T).X[-1])
        losses.append(float(loss.detach()))
        if k < iters:
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= lr * g
    return np.array(losses), snaps


def drift_table(model: MathL2O, problem: Problem, T: int, snapshots: Mapping[int, dict], *, reference: int | None = None,
                method: str = "auto", t: int | None = None) -> pd.DataFrame:
    """K_k, K̃_k and α_k at every snapshot (iteration k → weights), next to the reference kernel K_0
    (``reference``, default the smallest k). float64. Columns: k; rel_change, distance (K_k against K_0);
    rel_change_training, distance_training (K̃_k against K̃_0); lambda_max, lambda_min, rank, tol of K_k;
    lambda_max_training, lambda_min_training of ½(K̃_k + K̃_kᵀ); alpha, alpha_rank, alpha_tol of G_{L−1,t}
    (t = T by default); loss ½‖r_k‖²."""
    from ntkcheck.features import alpha as alpha_of

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
        rows[k] |= {"rel_change": d["rel_change"], "distance": d["distance"],
                    "rel_change_training": dt["rel_change"], "distance_training": dt["distance"]}
    return pd.DataFrame([rows[k] for k in ks])


# -- everything at one point -----------------------------------------------------------------------------------


class NonFiniteKernel(ValueError):
    """The kernel overflows at these weights: nothing spectral can be measured there."""


def ntk_summary(model: MathL2O, problem: Problem, T: int, *, lr: float, method: str = "auto",
                t: int | None = None, return_kernels: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """All instruments at the weights of ``model``, in float64: what ``ntkcheck ntk`` prints and writes.

    Returns (numbers, arrays). numbers: ``loss`` ½‖r‖²; ``K`` (λ_max, λ_min, trace, rank, tol of K = J Jᵀ)
    with ``layer_traces``; ``K_training`` (the same for the symmetric part of K̃ = J J̃ᵀ, its layer traces,
    and ``asymmetry`` ‖K̃ − K̃ᵀ‖_F/‖K̃‖_F); ``K_vs_K_training`` (:func:`kernel_drift` from K to K̃);
    ``alpha`` (:class:`ntkcheck.features.FeatureSpectrum` of G_{L−1,t}, t = T by default); ``weights``
    (σ_min, ‖·‖₂ per matrix); ``linearised`` (:meth:`LinearPrediction.as_dict` from K at η = ``lr``) and
    ``threshold_training`` = 2/λ_max(½(K̃ + K̃ᵀ)). arrays: eigenvalues of K and of ½(K̃ + K̃ᵀ) (ascending),
    the projections (u_iᵀ r)², the singular values of G_{L−1,t}; with ``return_kernels`` also the dense
    ``K`` and ``K_training`` (= K̃)."""
    from ntkcheck.features import alpha as alpha_of, weight_spectra

    m = with_mode(model, "true", dtype=torch.float64)
    p = problem.to(dtype=torch.float64)
    J = jacobian(m, p, T, mode="true", method=method)
    Jt = jacobian(m, p, T, mode="detached", method=method)
    G, Gt = gram(J, N=p.N), gram(J, Jt, N=p.N)
    if not (torch.isfinite(G.K).all() and torch.isfinite(Gt.K).all()):
        raise NonFiniteKernel("K or K̃ has non-finite entries at these weights (a diverged run?)")
    Ks = Gt.symmetric_part()
    spec, spec_t = kernel_spectrum(G.K), kernel_spectrum(Ks)
    with torch.no_grad():
        r = residual_fn(m, p, T)(parameters(m))
    pred = predict(G.K, r, lr, 0)
    a = alpha_of(m, p, T, t=t)
    norm_t = float(torch.linalg.norm(Gt.K))
    numbers = {
        "loss": float(0.5 * r @ r),
        "n_outputs": int(r.numel()),
        "n_params": int(sum(v.shape[1] for v in J.values())),
        "K": spec.as_dict() | {"layer_traces": {f"layer{ell}": v for ell, v in G.layer_traces().items()}},
        "K_training": spec_t.as_dict() | {
            "layer_traces": {f"layer{ell}": v for ell, v in Gt.layer_traces().items()},
            "asymmetry": float(torch.linalg.norm(Gt.K - Gt.K.T)) / norm_t if norm_t > 0 else 0.0},
        "K_vs_K_training": kernel_drift(G.K, Gt.K) if spec.lambda_max > 0 and norm_t > 0 else None,
        "alpha": a.as_dict(),
        "weights": weight_spectra(m).assign(shape=lambda f: f["shape"].map(list)).to_dict("records"),
        "linearised": pred.as_dict(),
        "threshold_training": stability_threshold(spec_t.lambda_max),
    }
    arrays = {"K_eigenvalues": spec.eigenvalues, "K_training_sym_eigenvalues": spec_t.eigenvalues,
              "K_projections": pred.projections, "alpha_singular_values": a.singular_values}
    if return_kernels:
        arrays |= {"K": G.K.cpu().numpy(), "K_training": Gt.K.cpu().numpy()}
    return numbers, arrays
