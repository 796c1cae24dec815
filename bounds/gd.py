"""Plain gradient descent on F(X) = Σ_i ½‖M_i x_i − y_i‖², and the steps that P ∈ (0, 2) allows.

Per instance, f_i(x) = ½‖M_i x − y_i‖², H_i = M_iᵀM_i, β_i = ‖H_i‖₂, x_i* = M_i⁺y_i (minimum norm),
X_0 = 0. GD takes the step s/β_i; Math-L2O takes s·P_j/β_i on coordinate j with P_j ∈ (0, 2).
Derivations: bounds/DERIVATIONS.md §1–§2b.
"""

from __future__ import annotations

import math

import numpy as np

from bounds.core import OVERFLOW, Condition, Outcome, Setting, at_most
from bounds.quantities import optional, scalar

__all__ = ["gd_rate_factor", "gd_quantities", "rounding_slack", "ROUNDING_C", "EPS64", "GD_RATE", "GD_RATE_S",
           "INIT_GD_EQUALITY", "STEP_RANGE", "STEP_DESCENT", "CONDITIONS"]

EPS64 = float(np.finfo(np.float64).eps)  # F_gd_T and the data's quantities are computed in float64
ROUNDING_C = 1.0  # c = ROUNDING_C·(d + 1) in the rounding bound (DERIVATIONS §2b, assumption R); measured need ≤ 0.32·(d + 1)


def gd_rate_factor(s: float, T: int) -> float:
    """m(s, T) = max_{u ∈ [0, 1]} u(1 − s·u)^{2T}, so that f(x_T) ≤ ½ β m(s, T) ‖x_0 − x*‖² (§1).

    The maximum is at u* = min(1, 1/(s(2T + 1))) or at u = 1 (where 1 − s·u may be negative for s > 1):
    m = max(u*(1 − s u*)^{2T}, (1 − s)^{2T}). Exact for every s ∈ (0, 2); for s = 1, m < 1/(2T + 1).
    In float64 throughout: |1 − s|^{2T} is inf for s > 2 and large T, never an OverflowError.
    """
    with np.errstate(all="ignore"):
        s, T = np.float64(s), np.float64(T)
        u = min(1.0, 1.0 / (s * (2 * T + 1)))
        return float(max(u * np.power(abs(1.0 - s * u), 2 * T), np.power(abs(1.0 - s), 2 * T)))


def _fbar(q) -> float | None:
    """F̄ = ½Σ_i β_i‖x_{i,0} − x_i*‖² (≥ F(X_0)), or None without the data."""
    beta_i, dist_i = optional(q, "beta_i"), optional(q, "dist_sq_i")
    if beta_i is not None and dist_i is not None and beta_i.shape == dist_i.shape:
        return 0.5 * float((beta_i * dist_i).sum())
    if optional(q, "beta") is not None and optional(q, "dist_sq") is not None:
        return 0.5 * float(scalar(q, "beta") * scalar(q, "dist_sq"))
    return None


def rounding_slack(F, q, eps: float):
    """σ = 2a·√(F·F̄) + a²·F̄ with a = c·(T + 1)·eps, c = ROUNDING_C·(d + 1): how far a loss F of the unrolled GD
    (T steps from X_0 = 0), computed in precision ``eps``, can lie from its exact value (DERIVATIONS §2b, under
    assumption R). F̄ = ½Σ_i β_i‖x_{i,0} − x_i*‖² ≥ F(X_0). ``F``: a float or an array; None without T, d or the data."""
    Fbar = _fbar(q)
    if Fbar is None or optional(q, "T") is None or optional(q, "d") is None:
        return None
    with np.errstate(all="ignore"):
        a = ROUNDING_C * (scalar(q, "d") + 1.0) * (scalar(q, "T") + 1.0) * np.float64(eps)
        return 2.0 * a * np.sqrt(np.abs(np.asarray(F, dtype=float)) * Fbar) + a * a * Fbar


def _weighted_dist(q) -> tuple[float, str]:
    """Σ_i β_i‖x_{i,0} − x_i*‖² when per-instance values are given, else β‖X_0 − X*‖² (larger)."""
    beta_i, dist_i = optional(q, "beta_i"), optional(q, "dist_sq_i")
    if beta_i is not None and dist_i is not None and beta_i.shape == dist_i.shape:
        return float((beta_i * dist_i).sum()), "per instance, Σ_i β_i‖x_i,0 − x_i*‖²"
    return scalar(q, "beta") * scalar(q, "dist_sq"), "β‖X_0 − X*‖² with β = max_i β_i"


def _bound_note(bound, *parts) -> str:
    """The parts, and a note when the bound left float64 although its inputs are finite."""
    extra = [f"the bound {OVERFLOW}"] if math.isinf(bound) else []
    return "; ".join([p for p in parts if p] + extra)


def _gd_rate(q, c) -> Outcome:
    T, s = scalar(q, "T"), float(q.get("step_scale", 1.0))
    weighted, how = _weighted_dist(q)
    bound = weighted / (2 * T)
    F = scalar(q, "F_gd_T")
    note = f"{how}; GD is {bound / F:.3g}× below the bound" if F > 0 else how
    if gd_rate_factor(s, T) > 1 / T:
        note += f"; step {s:g}/β_i is outside the range where this form is guaranteed (see gd.rate_s)"
    return Outcome(F, bound, at_most(F, bound), _bound_note(bound, note))


GD_RATE = Condition(
    key="gd.rate", title="GD rate (the bound the paper compares with)", source="GD, standard; paper §4.5",
    latex=r"F(X_T) \le \frac{\beta\,\|X_0 - X^\star\|^2}{2T}",
    text="F_GD(X_T) ≤ β‖X_0 − X*‖²/(2T)", status="stated",
    confidence="exact (textbook, step 1/β)",
    needs=("F_gd_T", "T", "beta", "dist_sq"), required=True, relation="<=", rule=_gd_rate)


def _gd_rate_s(q, c) -> Outcome:
    T, s = scalar(q, "T"), scalar(q, "step_scale")
    weighted, how = _weighted_dist(q)
    m = gd_rate_factor(s, T)
    bound = 0.5 * m * weighted
    F = scalar(q, "F_gd_T")
    return Outcome(F, bound, at_most(F, bound),
                   _bound_note(bound, f"m(s={s:g}, T={T:g}) = {m:.4g} (the paper's form uses 1/T = {1 / T:.4g}); {how}"))


GD_RATE_S = Condition(
    key="gd.rate_s", title="GD rate for the step s/β_i, s ∈ (0, 2), exact worst case on quadratics",
    source="derived (DERIVATIONS §1)",
    latex=r"F(X_T) \le \tfrac12\, m(s,T) \sum_i \beta_i \|x_{i,0}-x_i^\star\|^2,\quad "
          r"m(s,T)=\max_{u\in[0,1]} u(1-su)^{2T}",
    text="F_GD(X_T) ≤ ½·m(s,T)·Σ_i β_i‖x_i,0 − x_i*‖², m = max_{u∈[0,1]} u(1−su)^{2T}", status="derived",
    confidence="proved; attained",
    needs=("F_gd_T", "T", "step_scale", "beta", "dist_sq"), required=False, relation="<=", rule=_gd_rate_s)


def _init_equality(q, c) -> Outcome:
    """|F0 − F_GD|/F_GD against the rounding bound of DERIVATIONS §2b: F0 computed in precision eps (the run's
    dtype), F_GD in float64. Without eps: a relative 1e-9 (float64 arithmetic on both sides)."""
    F0, F_gd = scalar(q, "F0"), scalar(q, "F_gd_T")
    scale = max(abs(F_gd), np.finfo(float).tiny)
    rel = abs(F0 - F_gd) / scale
    shown = f"F0 = {F0:.10g}, F_GD(X_T) = {F_gd:.10g}"
    eps = optional(q, "eps")
    slack = None if eps is None else rounding_slack(F_gd, q, float(eps))
    if slack is not None:
        tol = (slack + rounding_slack(F_gd, q, EPS64)) / scale
        return Outcome(rel, tol, rel <= tol, f"{shown}; rounding bound 2a√(F·F̄) + a²F̄, a = (d+1)(T+1)·eps, at "
                                             f"eps = {float(eps):.3g} (the run) and float64 (GD), DERIVATIONS §2b")
    if eps is not None and float(eps) > EPS64:
        return Outcome(rel, math.nan, None, f"{shown}; the rounding bound at eps = {float(eps):.3g} needs T, d and "
                                            "β_i, ‖x_i*‖² (beta_i, dist_sq_i)")
    tol = 1e-9
    return Outcome(rel, tol, rel <= tol, f"{shown} (relative tolerance {tol:g} for float64 on both sides; "
                                         "eps, T and the data give the rounding bound instead)")


INIT_GD_EQUALITY = Condition(
    key="init.gd_equality", title="At W_0 (W_L = 0) the model is GD: P ≡ 2σ(0) = 1",
    source="derived (DERIVATIONS §2, rounding §2b); paper §4 'alignment'", latex=r"F(X_T^0) = F_{GD}(X_T)",
    text="F(X_T^0) = F_GD(X_T)  [deterministic init; up to rounding]", status="derived",
    confidence="exact; rounding slack under assumption R",
    needs=("F0", "F_gd_T"), required=False, relation="<=", rule=_init_equality)


def _step_range(q, c) -> Outcome:
    lo, hi = scalar(q, "P_min"), scalar(q, "P_max")
    ok = 0.0 < lo and hi < 2.0
    note = f"P ∈ [{lo:.6g}, {hi:.6g}]; per-coordinate steps in (0, 2s/β_i)"
    if not ok:
        note += ": 2σ saturated to its bound in floating point"
    return Outcome(hi, 2.0, ok, note)


STEP_RANGE = Condition(
    key="step.range", title="Step multipliers P = 2σ(φ) lie in (0, 2)", source="paper §2 (2-sigmoid); code",
    latex=r"P_t = 2\sigma(\varphi_W(z_t)) \in (0,2)", text="0 < P_min, P_max < 2", status="stated",
    confidence="exact (by construction)",
    needs=("P_min", "P_max"), required=True, relation="in", rule=_step_range,
    setting=Setting(None, None, "P = 2σ(φ) for every objective and backbone the learned step drives"))


def _descent(q, c) -> Outcome:
    s, hi = scalar(q, "step_scale"), scalar(q, "P_max")
    ok = s * hi <= 2.0
    note = (f"every step lowers each f_i by ≥ (s/β_i)(1 − s·P_max/2)Σ_j P_j g_j², factor {1 - s * hi / 2:.3g}"
            if ok else "s·P_max > 2: monotone descent is not guaranteed (a step can raise F)")
    return Outcome(s * hi, 2.0, ok, note)


STEP_DESCENT = Condition(
    key="step.descent", title="Coordinate-wise steps s·P_j/β_i decrease F at every step",
    source="derived (DERIVATIONS §2)",
    latex=r"s\,P_{\max} \le 2 \;\Rightarrow\; f_i(x^+) \le f_i(x) - \frac{s}{\beta_i}"
          r"\Big(1-\frac{s P_{\max}}{2}\Big)\sum_j P_j g_j^2",
    text="s·P_max ≤ 2 ⇒ f_i(x⁺) ≤ f_i(x) − (s/β_i)(1 − s·P_max/2)Σ_j P_j g_j²", status="derived",
    confidence="proved; sharp",
    needs=("step_scale", "P_max"), required=False, relation="<=", rule=_descent)

CONDITIONS = (GD_RATE, GD_RATE_S, INIT_GD_EQUALITY, STEP_RANGE, STEP_DESCENT)


def gd_quantities(M: np.ndarray, Y: np.ndarray, T: int, step_scale: float = 1.0) -> dict:
    """The data's quantities for :mod:`bounds`, from M (N, b, d) and Y (N, b), by plain GD from X_0 = 0.

    Returns beta_i, beta, sigma_min_sq_i, dist_sq_i, dist_sq, F_gd_T, grad_T_min, gd_gz (N, T) and beta0 (names: :mod:`bounds.quantities`).
    """
    M, Y = np.asarray(M, dtype=float), np.asarray(Y, dtype=float)
    sv = np.linalg.svd(M, compute_uv=False)  # (N, min(b, d)), descending
    beta_i, smin_sq = sv[:, 0] ** 2, sv[:, -1] ** 2
    x_star = np.stack([np.linalg.lstsq(Mi, yi, rcond=None)[0] for Mi, yi in zip(M, Y)])  # minimum norm
    X = np.zeros_like(x_star)
    gz = np.empty((M.shape[0], T))
    for t in range(T):
        G = np.einsum("nbd,nb->nd", M, np.einsum("nbd,nd->nb", M, X) - Y)  # ∇f_i(x_{i,t})
        gz[:, t] = np.sqrt((G ** 2 * (G ** 2 + X ** 2)).sum(1))
        if t == T - 1:
            grad_T_min = float(np.abs(G).min())
        X = X - (step_scale / beta_i)[:, None] * G
    F_T = float(0.5 * ((np.einsum("nbd,nd->nb", M, X) - Y) ** 2).sum())
    dist_i = (x_star ** 2).sum(1)
    beta0 = step_scale * math.sqrt(float(smin_sq.min())) * grad_T_min
    return {"beta_i": beta_i, "beta": float(beta_i.max()), "sigma_min_sq_i": smin_sq, "dist_sq_i": dist_i,
            "dist_sq": float(dist_i.sum()), "F_gd_T": F_T, "grad_T_min": grad_T_min,
            "gd_gz": gz, "beta0": beta0}
