"""Theorem 4.3: linear convergence of training, its rate ρ, and the alignment with GD.

Stated (third-party summary, paper_math.md §4.4): F(W^k) ≤ ρ^k F(W^0) with

    ρ = 1 − 4η (β₀²/β²) δ₄ α₀²,    α₀ = σ_min(G_{L−1,T}) at W_0,    δ₄ = σ'(δ₃Θ_L).

β₀, δ₃, Θ_L are not defined in anything we could read; bounds/DERIVATIONS.md §3–§4 derives definitions
under which the rate follows for exactly this model, with δ₄² in place of δ₄ and one assumption
(A-last: the step-T term of the Jacobian is not cancelled by the earlier ones).
"""

from __future__ import annotations

import numpy as np

from bounds.core import Condition, Outcome, at_most
from bounds.quantities import optional, scalar, sigmoid_prime

__all__ = ["rate_stated", "rate_derived", "kernel_lower_bound", "alpha0_of_e", "ALPHA0", "WIDTH", "DELTA4",
           "RATE", "RATE_DERIVED", "RATE_NTK", "LINEAR", "ALIGNMENT", "VS_GD_BOUND", "CONDITIONS"]

RATE_NEEDS = ("eta", "beta0", "beta", "delta4", "alpha0")


def rate_stated(eta, beta0, beta, delta4, alpha0):
    """ρ = 1 − 4η (β₀²/β²) δ₄ α₀² (Thm 4.3 as summarised)."""
    return 1.0 - 4.0 * eta * beta0 ** 2 / beta ** 2 * delta4 * alpha0 ** 2


def kernel_lower_bound(beta0, beta, delta4, alpha0):
    """λ̲ = 4 δ₄² β₀² α₀² / β² ≤ λ_min(J_T J_Tᵀ), J_T the step-T part of ∂r/∂W_L (DERIVATIONS §3)."""
    return 4.0 * delta4 ** 2 * beta0 ** 2 * alpha0 ** 2 / beta ** 2


def rate_derived(eta, beta0, beta, delta4, alpha0):
    """ρ_D = 1 − η λ̲ = 1 − 4η (β₀²/β²) δ₄² α₀² (Theorem D.1 with the last-step kernel bound)."""
    return 1.0 - eta * kernel_lower_bound(beta0, beta, delta4, alpha0)


def alpha0_of_e(alpha0_at_1, e, L):
    """α₀(e) = e^{L−1} α₀(1): ReLU is positively homogeneous and W_ℓ = e·Q_ℓ for ℓ < L (exact)."""
    return e ** (L - 1) * alpha0_at_1


def _alpha_note(q) -> str:
    rank, tol = optional(q, "alpha0_rank"), optional(q, "alpha0_tol")
    rows = f" of {int(scalar(q, 'N')) * int(scalar(q, 'd'))}" if optional(q, "N") is not None and optional(q, "d") is not None else ""
    parts = [f"rank {int(rank)}{rows}" if rank is not None else "", f"tol {float(tol):.2g}" if tol is not None else ""]
    return ", ".join(p for p in parts if p)


def _alpha0(q, c) -> Outcome:
    a = scalar(q, "alpha0")
    tol = optional(q, "alpha0_tol")
    zero = a <= (float(tol) if tol is not None else 0.0)
    extra = _alpha_note(q)
    note = (f"α₀ = {a:.3g}" + (f" ({extra})" if extra else "") +
            (": zero to working precision, so the rate of Thm 4.3 is 1 (vacuous)" if zero else ""))
    return Outcome(a, float(tol) if tol is not None else 0.0, not zero, note)


ALPHA0 = Condition(
    key="thm4_3.alpha0", title="The wide layer's features at step T have full row rank",
    source="Thm 4.3 (hypothesis α₀ > 0)", latex=r"\alpha_0 = \sigma_{\min}(G^0_{L-1,T}) > 0",
    text="α₀ = σ_min(G_{L−1,T}) at W_0 > 0", status="stated", confidence="NOTE: third-party summary",
    needs=("alpha0",), required=True, relation=">", rule=_alpha0)


def _width(q, c) -> Outcome:
    n, Nd = scalar(q, "n"), scalar(q, "N") * scalar(q, "d")
    return Outcome(n, Nd, n >= Nd, "rank G_{L−1,T} ≤ min(N·d, n): α₀ > 0 needs n ≥ N·d; "
                   "the paper states width O(Nd) (NOTE)")


WIDTH = Condition(
    key="width.nd", title="Width: G_{L−1,T} (N·d × n) can have full row rank only if n ≥ N·d",
    source="derived (DERIVATIONS §3); paper: width O(Nd)", latex=r"n \ge N d",
    text="n ≥ N·d", status="derived", confidence="proved; necessary only",
    needs=("n", "N", "d"), required=True, relation=">=", rule=_width)


def _delta4(q, c) -> Outcome:
    d4 = float(sigmoid_prime(scalar(q, "delta3") * scalar(q, "Theta_L")))
    sig = np.array([scalar(q, "P_min"), scalar(q, "P_max")]) / 2  # σ(u) = P/2
    measured = float((sig * (1 - sig)).min())  # σ' = σ(1 − σ) is smallest at an end of the range
    return Outcome(measured, d4, measured >= d4, f"min σ'(u) over the run {measured:.4g}; δ₄ = σ'(δ₃Θ_L) = {d4:.4g}")


DELTA4 = Condition(
    key="thm4_3.delta4", title="δ₄ = σ'(δ₃Θ_L) bounds the sigmoid's slope below along training",
    source="derived (DERIVATIONS §4); paper: δ₄ = σ(δ₃Θ_L)(1 − σ(δ₃Θ_L))",
    latex=r"\min_{t,j}\sigma'(u_{t,j}) \ge \delta_4 = \sigma'(\delta_3\Theta_L)",
    text="min σ'(u) ≥ δ₄ = σ'(δ₃Θ_L), |u| ≤ ‖G row‖·‖W_L‖ ≤ δ₃Θ_L", status="derived",
    confidence="proved (definitions §4)", needs=("P_min", "P_max", "delta3", "Theta_L"),
    required=False, relation=">=", rule=_delta4)


def _rho(q, form=rate_stated) -> float:
    return form(*(scalar(q, name) for name in RATE_NEEDS))


def _rate(form):
    def rule(q, c) -> Outcome:
        rho = _rho(q, form)
        if rho >= 1.0:
            note = "ρ = 1: the rate is vacuous" + (" (α₀ = 0)" if scalar(q, "alpha0") == 0 else "")
        elif rho < 0:
            note = "ρ < 0: η is outside the theorem's range (ηλ̲ > 1)"
        else:
            note = f"contraction per iteration 1 − ρ = {1 - rho:.3g}"
        return Outcome(rho, 1.0, 0 <= rho < 1, note)
    return rule


RATE = Condition(
    key="thm4_3.rate", title="Thm 4.3 rate ρ (a contraction only if ρ < 1)", source="Thm 4.3",
    latex=r"\rho = 1 - 4\eta\,\frac{\beta_0^2}{\beta^2}\,\delta_4\,\alpha_0^2",
    text="ρ = 1 − 4η(β₀²/β²)δ₄α₀²", status="stated", confidence="NOTE: third-party summary",
    needs=RATE_NEEDS, required=False, relation="<", rule=_rate(rate_stated))

RATE_DERIVED = Condition(
    key="thm4_3.rate_derived", title="Rate from the last-step kernel bound (δ₄², β₀ derived)",
    source="derived (DERIVATIONS §3, Thm D.1); stated form: thm4_3.rate",
    latex=r"\rho_D = 1 - 4\eta\,\frac{\beta_0^2}{\beta^2}\,\delta_4^2\,\alpha_0^2",
    text="ρ_D = 1 − 4η(β₀²/β²)δ₄²α₀²", status="derived", confidence="proved under A-last, A1–A3",
    needs=RATE_NEEDS, required=False, relation="<", rule=_rate(rate_derived))


def _rate_ntk(q, c) -> Outcome:
    rho = 1.0 - scalar(q, "eta") * scalar(q, "lambda_min")
    note = ("λ_min(K) = 0 to working precision: the linearised rate is 1 (vacuous)" if rho >= 1
            else f"linearised contraction 1 − ρ = {1 - rho:.3g}")
    return Outcome(rho, 1.0, 0 <= rho < 1, note)


RATE_NTK = Condition(
    key="thm4_3.rate_ntk", title="Rate of the linearised dynamics, ρ_K = 1 − ηλ_min(K)",
    source="derived (DERIVATIONS §5, Thm D.1 with λ̲ = λ_min(K))",
    latex=r"\rho_K = 1 - \eta\,\lambda_{\min}(J J^\top)", text="ρ_K = 1 − η·λ_min(K)", status="derived",
    confidence="proved under A1–A3", needs=("eta", "lambda_min"),
    required=False, relation="<", rule=_rate_ntk)


def _geometric(reference):
    """max_k F_k / (ρ^k · reference(q)) ≤ 1, with the k where the ratio is largest."""
    def rule(q, c) -> Outcome:
        rho = _rho(q)
        F = np.asarray(q["F_k"], dtype=float)
        if not 0 <= rho <= 1:
            return Outcome(np.nan, 1.0, None, f"ρ = {rho:.3g} is not in [0, 1]: no prediction")
        with np.errstate(divide="ignore", invalid="ignore"):  # ρ = 0 predicts F_k = 0 for k ≥ 1
            ratio = F / (np.power(rho, np.arange(F.size)) * reference(q, F))
        ratio = np.where(np.isnan(ratio), 0.0, ratio)  # 0/0: a zero loss meets a zero prediction
        worst = int(np.argmax(ratio))
        note = f"worst at k = {worst}: F = {F[worst]:.4g}" + (" (ρ = 1: the prediction is F_k ≤ F_0)" if rho == 1 else "")
        return Outcome(float(ratio[worst]), 1.0, at_most(float(ratio[worst]), 1.0), note)
    return rule


LINEAR = Condition(
    key="thm4_3.linear", title="Thm 4.3's conclusion on the measured losses", source="Thm 4.3",
    latex=r"F(W^k) \le \rho^k F(W^0)", text="F(X_T^k) ≤ ρ^k·F(X_T^0), every measured k (value: worst ratio)",
    status="stated", confidence="NOTE: third-party summary", needs=("F_k", *RATE_NEEDS), required=False,
    relation="<=", rule=_geometric(lambda q, F: F[0]))

ALIGNMENT = Condition(
    key="thm4_3.alignment", title="L2O after k iterations against GD (alignment at W_0)",
    source="Thm 4.3 + alignment (paper §4.5)", latex=r"F(X_T^k) \le \rho^k F_{GD}(X_T)",
    text="F(X_T^k) ≤ ρ^k·F_GD(X_T) (value: worst ratio)", status="stated", confidence="NOTE + INFER",
    needs=("F_k", "F_gd_T", *RATE_NEEDS), required=False, relation="<=",
    rule=_geometric(lambda q, F: scalar(q, "F_gd_T")))


def _gd_bound(q, F) -> float:
    beta_i, dist_i = optional(q, "beta_i"), optional(q, "dist_sq_i")
    weighted = (beta_i * dist_i).sum() if beta_i is not None and dist_i is not None else scalar(q, "beta") * scalar(q, "dist_sq")
    return float(weighted) / (2 * scalar(q, "T"))


VS_GD_BOUND = Condition(
    key="sec4_5.vs_gd_bound", title="Learning improves GD's bound: L2O below ρ^k times GD's rate",
    source="paper §4.5 (abstract's claim)", latex=r"F(X_T^k) \le \rho^k\,\frac{\beta\|X_0-X^\star\|^2}{2T}",
    text="F(X_T^k) ≤ ρ^k·β‖X_0 − X*‖²/(2T) (value: worst ratio)", status="stated", confidence="NOTE + INFER",
    needs=("F_k", "T", "dist_sq", *RATE_NEEDS), required=False, relation="<=", rule=_geometric(_gd_bound))

CONDITIONS = (ALPHA0, WIDTH, DELTA4, RATE, RATE_DERIVED, RATE_NTK, LINEAR, ALIGNMENT, VS_GD_BOUND)
