"""The names of the plain numbers that :mod:`bounds` reads, with their meaning (one place).

Symbols follow docs/ARCHITECTURE.md §1. F is a sum over the N instances (never an average). "At W_0" means at the
deterministic initialisation (W_L = 0, so P ≡ 1 and the model is GD with step s/β_i).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["QUANTITIES", "CONFIG", "complete", "sigmoid_prime", "log_sigmoid_prime", "scalar", "optional"]

QUANTITIES: dict[str, str] = {
    # configuration
    "N": "training instances",
    "d": "variable dimension of each instance",
    "b": "rows of each M_i",
    "n": "width of layer L−1 (the wide layer)",
    "L": "layers of the step-size network 2 → 2 → … → n → 1",
    "T": "unrolled optimisation steps",
    "e": "expansion coefficient of the deterministic init (W_ℓ = e·Q_ℓ, ℓ < L)",
    "eta": "η, meta learning rate of plain SGD on W",
    "k": "training iteration",
    "step_scale": "s in the optimisee step s/β_i (repo default 1, the paper's code 0.9999)",
    # the data
    "beta": "β = max_i β_i",
    "beta_i": "array (N,): β_i = ‖M_i‖₂² = λ_max(M_iᵀM_i)",
    "sigma_min_sq_i": "array (N,): σ_min(M_i)² = λ_min(M_i M_iᵀ) (b ≤ d, full row rank)",
    "dist_sq": "‖X_0 − X*‖² summed over instances, X* the minimum-norm solution (X_0 = 0: ‖X*‖²)",
    "dist_sq_i": "array (N,): ‖x_{i,0} − x_i*‖² per instance",
    "F_gd_T": "F of plain GD (step s/β_i) after T steps from X_0 = 0",
    "grad_T_min": "min over i, j of |∇F_i(X_{T−1})_j| on the GD trajectory (the input of step T at W_0)",
    "gd_gz": "array (N, T): ‖diag(g) Z_{i,t}‖_F = (Σ_j g_j²(g_j² + x_j²))^{1/2}, g = ∇f_i(x_{i,t−1}), x = x_{i,t−1}, "
             "along GD, t = 1..T",
    # the model
    "alpha0": "α₀ = σ_min(G_{L−1,T}) at W_0 (rows: the N·d coordinates at step T)",
    "alpha0_tol": "tolerance below which a singular value of G_{L−1,T} counts as zero",
    "alpha0_rank": "numerical rank of G_{L−1,T} at that tolerance",
    "alpha0_rank_bound": "rank G_{L−1,T} ≤ this, from its activation patterns (DERIVATIONS.md §3b): below min(N·d, n), "
                         "α₀ is exactly 0",
    "beta0": "β₀ = s · min_i σ_min(M_i) · min_{i,j} |∇F_i(X_{T−1})_j| (derived definition, DERIVATIONS.md §4)",
    "delta3": "δ₃ = max over steps t ≤ T and rows j of ‖G_{L−1,t}[j, :]‖₂ (derived definition, §4)",
    "Theta_L": "Θ_L = bound on ‖W_L‖₂ over the training trajectory (derived definition, §4)",
    "delta4": "δ₄ = σ'(δ₃Θ_L) = σ(δ₃Θ_L)(1 − σ(δ₃Θ_L)), σ the logistic sigmoid",
    "lambda_max": "λ_max of the NTK K = J Jᵀ at W_0 (J = ∂r/∂W, r = M X_T − Y)",
    "lambda_min": "λ_min of K at W_0",
    "smoothness": "𝓛, a Lipschitz constant of ∇_W F on the ball of Theorem D.1 (optional)",
    # the run
    "F0": "F(X_T) at W_0 (the training loss at k = 0)",
    "F_k": "array (K+1,): measured F(X_T^k), k = 0..K",
    "P_min": "smallest step multiplier P measured over the run",
    "P_max": "largest step multiplier P measured over the run",
    "eps": "machine epsilon of the dtype the run computed F0 and F_k in (float32: 2^−23 ≈ 1.19e−7, float64: "
           "2^−52 ≈ 2.22e−16); F_gd_T and the data's quantities are float64 (bounds.gd_quantities). Sets the "
           "rounding slack of the comparisons with GD (DERIVATIONS.md §2b, rounding_slack); absent: no slack",
}

CONFIG = ("N", "d", "b", "n", "L", "T", "e", "eta", "step_scale")


def sigmoid_prime(u):
    """σ'(u) = σ(u)(1 − σ(u)), even in u and decreasing in |u|; σ'(0) = 1/4."""
    s = 1.0 / (1.0 + np.exp(-np.abs(u)))
    return s * (1.0 - s)


def log_sigmoid_prime(u) -> float:
    """ln σ'(u) = −|u| − 2·ln(1 + e^{−|u|}), finite for every finite u (σ'(u) itself underflows to 0 past |u| ≈ 745)."""
    a = abs(float(u))
    return -a - 2.0 * math.log1p(math.exp(-a))


def scalar(q: Mapping, name: str) -> np.float64:
    """q[name] as a numpy float64: arithmetic on it overflows to inf (under the errstate of
    ``Condition.evaluate``, silently) where Python floats would raise OverflowError or ZeroDivisionError."""
    return np.float64(np.asarray(q[name], dtype=float))


def optional(q: Mapping, name: str):
    """q[name] as a float array when present and finite everywhere, else None."""
    x = q.get(name)
    if x is None:
        return None
    arr = np.asarray(x, dtype=float)
    return arr if arr.size and np.isfinite(arr).all() else None


def complete(q: Mapping) -> dict:
    """q with the quantities that follow from others filled in (never overwriting a given one):
    β = max_i β_i, ‖X_0 − X*‖² = Σ_i dist_sq_i, β₀ = s·min_i σ_min(M_i)·grad_T_min, δ₄ = σ'(δ₃Θ_L)."""
    out = dict(q)
    have = lambda name: optional(out, name) is not None  # noqa: E731
    if not have("beta") and have("beta_i"):
        out["beta"] = float(np.max(out["beta_i"]))
    if not have("dist_sq") and have("dist_sq_i"):
        out["dist_sq"] = float(np.sum(out["dist_sq_i"]))
    if not have("beta0") and have("sigma_min_sq_i") and have("grad_T_min"):
        s = scalar(out, "step_scale") if have("step_scale") else 1.0
        out["beta0"] = s * float(np.sqrt(np.min(out["sigma_min_sq_i"]))) * scalar(out, "grad_T_min")
    if not have("delta4") and have("delta3") and have("Theta_L"):
        out["delta4"] = float(sigmoid_prime(scalar(out, "delta3") * scalar(out, "Theta_L")))
    return out
