"""Theorem D.1 (our explicit stand-in for the missing Theorem C.1), Eq. 13, Eq. 14 and Corollary C.1.

Theorem D.1 (DERIVATIONS §5). On the ball B = {W : ‖W − W_0‖ ≤ R}, suppose
(A1) λ_min(J Jᵀ) ≥ λ̲ > 0, (A2) ‖J‖₂ ≤ Λ̄, (A3) ∇_W F is 𝓛-Lipschitz. If η ≤ 1/𝓛 and
2Λ̄√(2F(W_0))/λ̲ ≤ R, then plain GD on W stays in B and F(W^k) ≤ (1 − ηλ̲)^k F(W_0).

Eq. 13 is the radius condition with λ̲ = 4δ₄²β₀²α₀²/β² (§3), Eq. 14 is η ≤ 1/𝓛; Corollary C.1 is the
exact homogeneity λ_max(K_0)(e) = e^{2(L−1)} λ_max(K_0)(1), which makes the admissible η fall as e^{−2(L−1)}.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from bounds.core import OVERFLOW, Condition, Outcome, decide_logs, exp_of, log_of, log_product, range_note
from bounds.quantities import log_sigmoid_prime, optional, scalar, sigmoid_prime

__all__ = ["theorem_d1", "best_radius_x", "lambda_max_apriori", "log_lambda_max_apriori", "lambda_max_of_e", "EQ13", "EQ14", "EQ14_APRIORI",
           "COR_C1", "CONDITIONS"]


def theorem_d1(lam_lo: float, Lam_hi: float, F0: float, eta: float) -> tuple[float, float]:
    """(ρ, R_min) of Theorem D.1: ρ = 1 − ηλ̲ and the radius R_min = 2Λ̄√(2F_0)/λ̲ the iterates need
    (float64: inf where a result overflows, R_min = inf for λ̲ = 0; never an exception)."""
    lam_lo, Lam_hi, F0, eta = map(np.float64, (lam_lo, Lam_hi, F0, eta))
    with np.errstate(all="ignore"):
        rho = 1.0 - eta * lam_lo
        R = exp_of(log_product((2.0, 1), (Lam_hi, 1), (2.0 * F0, 0.5), (lam_lo, -1)))
    return float(rho), R


def best_radius_x() -> float:
    """x* = argmax_{x>0} x·σ'(x)², the root of 2x·tanh(x/2) = 1: the radius R = x*/δ₃ is the one that
    makes Eq. 13 weakest when Θ_L = R is free (δ₄ = σ'(δ₃R) shrinks as R grows)."""
    return brentq(lambda x: 2 * x * math.tanh(x / 2) - 1, 0.1, 5.0)


def _eq13(q, c) -> Outcome:
    a, beta, beta0, F0, d3, lam = (scalar(q, n) for n in ("alpha0", "beta", "beta0", "F0", "delta3", "lambda_max"))
    theta = optional(q, "Theta_L")
    R = float(theta) if theta is not None else best_radius_x() / d3  # inf where δ₃ is below 1/float64's max
    x = d3 * R  # δ₃R; inf where it overflows
    d4 = float(sigmoid_prime(x))
    log_d4 = -math.inf if math.isinf(x) else log_sigmoid_prime(x)  # finite also where δ₄ underflows to 0
    how = f"Θ_L = R = {R:.3g}" if theta is not None else f"best radius R = x*/δ₃ = {R:.3g}"
    if beta0 == 0:
        return Outcome(a ** 2, math.inf, False, "β₀ = 0 (a gradient coordinate vanishes at step T): no radius suffices")
    if R == 0:
        return Outcome(a ** 2, math.inf, False, f"{how}: a ball of radius 0 holds no iterate but W_0; no α₀ suffices")
    # λ̲ = α₀²·4δ₄²β₀²/β² ≥ 2Λ̄√(2F0)/R  ⇔  α₀² ≥ β²Λ̄√(2F0)/(2δ₄²β₀²R), Λ̄ = √λ_max; in logarithms
    log_need = (math.log(0.5) + log_product((beta, 2), (lam, 0.5), (2 * F0, 0.5), (beta0, -2), (R, -1))
                - 2 * log_d4)
    log_value = log_product((a, 2))
    holds = decide_logs(log_value, ">=", log_need)
    notes = [how, f"δ₄ = {d4:.3g}", "Λ̄ = √λ_max(K_0) (A2 at W_0 only)", range_note("α₀²", log_value),
             range_note("the threshold", log_need)]
    if d4 == 0:
        notes.insert(2, f"δ₄ = σ'(δ₃R) underflows to 0 (δ₃R = {x:.3g}): the threshold is beyond float64")
    if holds is None:
        notes.append(f"undecided: both sides {OVERFLOW}")
    if a == 0:
        notes.insert(0, "α₀ = 0: no radius works")
    return Outcome(exp_of(log_value), exp_of(log_need), holds, "; ".join(n for n in notes if n))


EQ13 = Condition(
    key="eq13.alpha0", title="Eq. 13: α₀ large enough for the iterates to stay where the kernel is well conditioned",
    source="derived (DERIVATIONS §5); paper Eq. 13 [MISSING]",
    latex=r"\alpha_0^2 \ge \frac{\beta^2\,\bar\Lambda\,\sqrt{2F(W_0)}}{2\,\delta_4^2\,\beta_0^2\,R},"
          r"\quad \delta_4=\sigma'(\delta_3 R)",
    text="α₀² ≥ β²·Λ̄·√(2F_0)/(2δ₄²β₀²R), δ₄ = σ'(δ₃R), Λ̄ = √λ_max(K)", status="derived",
    confidence="proved under A1–A3, A-last",
    needs=("alpha0", "beta", "beta0", "F0", "delta3", "lambda_max"), required=True, relation=">=", rule=_eq13)


def _eq14(q, c) -> Outcome:
    eta, lam = scalar(q, "eta"), scalar(q, "lambda_max")
    smooth = optional(q, "smoothness")
    Lip = float(smooth) if smooth is not None else float(lam)
    how = "𝓛 measured" if smooth is not None else "𝓛 ≈ λ_max(K_0), the Gauss–Newton part at W_0 (A3)"
    log_threshold = -log_of(Lip)  # η ≤ 1/𝓛 ⇔ ln η ≤ −ln 𝓛; 1/𝓛 may overflow (tiny 𝓛) or be inf (𝓛 = 0)
    notes = [how, f"the linearised dynamics are stable up to 2/λ_max = {exp_of(math.log(2.0) - log_of(lam)):.3g}"
             if lam > 0 else "", range_note("1/𝓛", log_threshold)]
    return Outcome(eta, exp_of(log_threshold), decide_logs(log_of(eta), "<=", log_threshold),
                   "; ".join(n for n in notes if n))


EQ14 = Condition(
    key="eq14.eta", title="Eq. 14: the meta learning rate below 1/𝓛", source="derived (DERIVATIONS §5); paper Eq. 14 [MISSING]",
    latex=r"\eta \le 1/\mathcal{L} \approx 1/\lambda_{\max}(J_0 J_0^\top)", text="η ≤ 1/𝓛 ≈ 1/λ_max(K_0)",
    status="derived", confidence="proved; 𝓛 ≈ λ_max proxy",
    needs=("eta", "lambda_max"), required=True, relation="<=", rule=_eq14)


def log_lambda_max_apriori(e, L, step_scale, beta_i, gd_gz) -> float:
    """ln Λ̄₀² (:func:`lambda_max_apriori`), finite where Λ̄₀² itself over- or underflows float64:
    ln Λ̄₀² = 2(L−1)·ln e + ln Σ_i [ (s / (2√β_i)) Σ_t ‖diag(g_{i,t}) Z_{i,t}‖_F ]², the sum scaled by its largest term."""
    with np.errstate(all="ignore"):
        beta_i = np.asarray(beta_i, dtype=float)
        J1 = np.float64(step_scale) / (2 * np.sqrt(beta_i)) * np.asarray(gd_gz, dtype=float).sum(axis=1)  # ‖J_i‖₂ at e = 1
        top = float(np.abs(J1).max()) if J1.size else 0.0
        if top == 0 or not np.isfinite(top):
            return -math.inf if top == 0 else math.inf
        log_sum = 2 * math.log(top) + math.log(float(((J1 / top) ** 2).sum()))
        return 2 * (float(L) - 1) * log_of(e) + log_sum if e != 1 else log_sum


def lambda_max_apriori(e, L, step_scale, beta_i, gd_gz) -> float:
    """Λ̄₀² = Σ_i [ (s e^{L−1} / (2√β_i)) Σ_t ‖diag(g_{i,t}) Z_{i,t}‖_F ]² ≥ λ_max(K_0) (DERIVATIONS §6).

    ``gd_gz``: (N, T), ‖diag(g) Z‖_F = (Σ_j g_j²(g_j² + x_j²))^{1/2} along the GD trajectory (the model's at W_0).
    In float64: inf where it overflows (e^{2(L−1)} for a large e or L), 0 where it underflows; never an exception.
    """
    with np.errstate(all="ignore"):
        beta_i = np.asarray(beta_i, dtype=float)
        J_i = (np.float64(step_scale) * np.power(np.float64(e), float(L) - 1) / (2 * np.sqrt(beta_i))
               * np.asarray(gd_gz, dtype=float).sum(axis=1))  # ≥ ‖J_i‖₂
        plain = float((J_i ** 2).sum())
    if np.isfinite(plain) and plain >= np.finfo(np.float64).tiny:
        return plain
    return exp_of(log_lambda_max_apriori(e, L, step_scale, beta_i, gd_gz))


def lambda_max_of_e(lambda_max_at_1, e, L):
    """λ_max(K_0)(e) = e^{2(L−1)} λ_max(K_0)(1): at W_L = 0, J = ∂r/∂W_L is linear in G_{L−1,t} (exact)."""
    with np.errstate(all="ignore"):
        return np.power(np.asarray(e, dtype=float), 2 * (L - 1)) * lambda_max_at_1


APRIORI_NEEDS = ("eta", "e", "L", "step_scale", "beta_i", "gd_gz")


def _log_apriori(q) -> float:
    """ln Λ̄₀² of the quantities ``q``."""
    return log_lambda_max_apriori(*(q[n] if n.startswith(("beta_i", "gd_")) else scalar(q, n) for n in APRIORI_NEEDS[1:]))


def _eq14_apriori(q, c) -> Outcome:
    eta, log_bound = scalar(q, "eta"), _log_apriori(q)
    notes = [f"Λ̄₀² = {exp_of(log_bound):.3g} ≥ λ_max(K_0) from the GD trajectory alone; ∝ e^{{2(L−1)}}",
             range_note("Λ̄₀²", log_bound), range_note("1/Λ̄₀²", -log_bound)]
    return Outcome(eta, exp_of(-log_bound), decide_logs(log_of(eta), "<=", -log_bound), "; ".join(n for n in notes if n))


EQ14_APRIORI = Condition(
    key="eq14.eta_apriori", title="Eq. 14 a priori: η below 1/Λ̄₀², a bound on λ_max(K_0) from the data and e",
    source="derived (DERIVATIONS §6)",
    latex=r"\eta \le \Big(\sum_i\Big[\frac{s\,e^{L-1}}{2\sqrt{\beta_i}}\sum_{t=1}^T"
          r"\|\mathrm{diag}(\nabla f_i(x_{i,t-1}))\,Z_{i,t}\|_F\Big]^2\Big)^{-1}",
    text="η ≤ 1/Σ_i[(s·e^{L−1}/(2√β_i))·Σ_t ‖diag(g_{i,t})Z_{i,t}‖_F]²", status="derived",
    confidence="proved (loose)", needs=APRIORI_NEEDS, required=False, relation="<=",
    rule=_eq14_apriori)


def _cor_c1(q, c) -> Outcome:
    e, L, eta = scalar(q, "e"), scalar(q, "L"), scalar(q, "eta")
    lam = optional(q, "lambda_max")
    if lam is None and all(optional(q, n) is not None for n in APRIORI_NEEDS):
        log_lam, how, name = _log_apriori(q), "Λ̄₀² (a priori, an upper bound: e_max is sufficient, not sharp)", "Λ̄₀²"
    elif lam is None:
        return Outcome(e, math.nan, None, "not evaluated: needs lambda_max, or beta_i and gd_gz")
    else:
        log_lam, how, name = log_of(float(lam)), "λ_max(K_0)", "λ_max"
    if L < 2:
        return Outcome(e, math.nan, None, f"undefined for L = {L:g} < 2: e enters K_0 through the L − 1 ≥ 1 inner layers")
    # η·λ_max(e_max) = 1: ln e_max = ln e − (ln η + ln λ_max)/(2(L−1)); e ≤ e_max ⇔ ln η + ln λ_max ≤ 0
    log_excess = log_of(eta) + log_lam
    log_e_max = log_of(e) - log_excess / (2 * (L - 1))
    holds = decide_logs(log_excess, "<=", 0.0)
    notes = [f"from {how}: at η = {eta:.3g}, e ≤ {exp_of(log_e_max):.4g}; η_max ∝ e^{{−{2 * (L - 1):g}}}",
             range_note("e_max", log_e_max), range_note(name, log_lam)]
    if holds is None:
        notes.append(f"undecided: η·λ_max {OVERFLOW}")
    return Outcome(e, exp_of(log_e_max), holds, "; ".join(n for n in notes if n))


COR_C1 = Condition(
    key="corC1.e_eta", title="Corollary C.1: the largest e that η admits (inverse e–η relation)",
    source="derived (DERIVATIONS §6); paper Cor. C.1 (relation only, NOTE)",
    latex=r"e \le e_{\max}(\eta) = e\,(\eta\,\lambda_{\max}(K_0))^{-1/(2(L-1))},\quad "
          r"\eta_{\max}(e) = \eta_{\max}(1)\,e^{-2(L-1)}",
    text="e ≤ e·(η·λ_max(K_0))^{−1/(2(L−1))}, i.e. η_max ∝ e^{−2(L−1)}", status="derived",
    confidence="exact scaling in e", needs=("e", "L", "eta"), required=False, relation="<=",
    rule=_cor_c1)

CONDITIONS = (EQ13, EQ14, EQ14_APRIORI, COR_C1)
