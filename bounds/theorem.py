"""Theorem 4.3: linear convergence of training, its rate ρ, and the alignment with GD.

Stated (third-party summary, paper_math.md §4.4): F(W^k) ≤ ρ^k F(W^0) with

    ρ = 1 − 4η (β₀²/β²) δ₄ α₀²,    α₀ = σ_min(G_{L−1,T}) at W_0,    δ₄ = σ'(δ₃Θ_L).

β₀, δ₃, Θ_L are not defined in anything we could read; bounds/DERIVATIONS.md §3–§4 derives definitions
under which the rate follows for exactly this model, with δ₄² in place of δ₄ and one assumption
(A-last: the step-T term of the Jacobian is not cancelled by the earlier ones).
"""

from __future__ import annotations

import math

import numpy as np

from bounds.core import OVERFLOW, ROUNDING, Condition, Outcome, Setting, decide_logs, exp_of, log_of, log_product, range_note
from bounds.gd import EPS64, rounding_slack
from bounds.quantities import log_sigmoid_prime, optional, scalar, sigmoid_prime

__all__ = ["rate_stated", "rate_derived", "kernel_lower_bound", "alpha0_of_e", "ALPHA0", "WIDTH", "DELTA4",
           "RATE", "RATE_DERIVED", "RATE_NTK", "LINEAR", "ALIGNMENT", "VS_GD_BOUND", "CONDITIONS"]

RATE_NEEDS = ("eta", "beta0", "beta", "delta4", "alpha0")


def _product(plain, *factors: tuple[float, float]) -> float:
    """``plain``, the product 4·∏ v^p as written in float64, where it is a finite normal number (or an exact 0
    from a zero factor); else exp(ln 4 + Σ p·ln v) over the ``factors`` (v, p): inf where the product overflows,
    never the nan of inf/inf or inf·0, nor a 0 from an intermediate underflow."""
    if np.isfinite(plain) and (abs(plain) >= np.finfo(np.float64).tiny or any(v == 0 and p > 0 for v, p in factors)):
        return float(plain)
    return exp_of(math.log(4.0) + log_product(*factors))


def rate_stated(eta, beta0, beta, delta4, alpha0):
    """ρ = 1 − 4η (β₀²/β²) δ₄ α₀² (Thm 4.3 as summarised); −inf where the product overflows float64."""
    eta, beta0, beta, delta4, alpha0 = map(np.float64, (eta, beta0, beta, delta4, alpha0))
    with np.errstate(all="ignore"):
        plain = 4.0 * eta * beta0 ** 2 / beta ** 2 * delta4 * alpha0 ** 2
    return 1.0 - _product(plain, (eta, 1), (beta0, 2), (beta, -2), (delta4, 1), (alpha0, 2))


def kernel_lower_bound(beta0, beta, delta4, alpha0):
    """λ̲ = 4 δ₄² β₀² α₀² / β² ≤ λ_min(J_T J_Tᵀ), J_T the step-T part of ∂r/∂W_L (DERIVATIONS §3)."""
    beta0, beta, delta4, alpha0 = map(np.float64, (beta0, beta, delta4, alpha0))
    with np.errstate(all="ignore"):
        plain = 4.0 * delta4 ** 2 * beta0 ** 2 * alpha0 ** 2 / beta ** 2
    return _product(plain, (delta4, 2), (beta0, 2), (alpha0, 2), (beta, -2))


def rate_derived(eta, beta0, beta, delta4, alpha0):
    """ρ_D = 1 − η λ̲ = 1 − 4η (β₀²/β²) δ₄² α₀² (Theorem D.1 with the last-step kernel bound)."""
    eta, beta0, beta, delta4, alpha0 = map(np.float64, (eta, beta0, beta, delta4, alpha0))
    with np.errstate(all="ignore"):
        plain = eta * (4.0 * delta4 ** 2 * beta0 ** 2 * alpha0 ** 2 / beta ** 2)
    return 1.0 - _product(plain, (eta, 1), (delta4, 2), (beta0, 2), (alpha0, 2), (beta, -2))


def alpha0_of_e(alpha0_at_1, e, L):
    """α₀(e) = e^{L−1} α₀(1): ReLU is positively homogeneous and W_ℓ = e·Q_ℓ for ℓ < L (exact)."""
    with np.errstate(all="ignore"):
        return np.power(np.asarray(e, dtype=float), L - 1) * alpha0_at_1


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
    bound = optional(q, "alpha0_rank_bound")
    exact = bound is not None and all(optional(q, k) is not None for k in ("N", "d", "n")) and \
        int(bound) < min(int(scalar(q, "N")) * int(scalar(q, "d")), int(scalar(q, "n")))
    how = (f"exactly zero: its activation patterns bound rank G_{{L−1,T}} ≤ {int(bound)}" if exact
           else "zero to working precision")
    note = (f"α₀ = {a:.3g}" + (f" ({extra})" if extra else "") +
            (f": {how}, so the rate of Thm 4.3 is 1 (vacuous)" if zero else ""))
    return Outcome(a, float(tol) if tol is not None else 0.0, not zero, note)


ALPHA0 = Condition(
    key="thm4_3.alpha0", title="The wide layer's features at step T have full row rank",
    source="Thm 4.3 (hypothesis α₀ > 0)", latex=r"\alpha_0 = \sigma_{\min}(G^0_{L-1,T}) > 0",
    text="α₀ = σ_min(G_{L−1,T}) at W_0 > 0", status="stated", confidence="NOTE: third-party summary",
    needs=("alpha0",), required=True, relation=">", rule=_alpha0,
    setting=Setting(None, None, "the rank of the wide layer's features is measured for any objective and backbone"))


def _width(q, c) -> Outcome:
    n, Nd = scalar(q, "n"), scalar(q, "N") * scalar(q, "d")
    return Outcome(n, Nd, n >= Nd, "rank G_{L−1,T} ≤ min(N·d, n): α₀ > 0 needs n ≥ N·d; "
                   "the paper states width O(Nd) (NOTE)")


WIDTH = Condition(
    key="width.nd", title="Width: G_{L−1,T} (N·d × n) can have full row rank only if n ≥ N·d",
    source="derived (DERIVATIONS §3); paper: width O(Nd)", latex=r"n \ge N d",
    text="n ≥ N·d", status="derived", confidence="proved; necessary only",
    needs=("n", "N", "d"), required=True, relation=">=", rule=_width,
    setting=Setting(None, None, "linear algebra of the N·d × n features, whatever the objective and backbone"))


def _delta4(q, c) -> Outcome:
    x = scalar(q, "delta3") * scalar(q, "Theta_L")  # inf where δ₃Θ_L overflows float64
    d4 = float(sigmoid_prime(x))
    sig = np.array([scalar(q, "P_min"), scalar(q, "P_max")]) / 2  # σ(u) = P/2
    measured = float((sig * (1 - sig)).min())  # σ' = σ(1 − σ) is smallest at an end of the range
    notes = [f"min σ'(u) over the run {measured:.4g}; δ₄ = σ'(δ₃Θ_L) = {d4:.4g}"]
    eps = optional(q, "eps")
    resolution = float(eps) if eps is not None else float(np.finfo(np.float64).eps)
    if measured < resolution and (d4 < resolution or math.isinf(x)):
        # σ' = σ(1 − σ) from P = 2σ: below the run's eps, σ has rounded to 0 or 1 and the measured slope reads 0
        overflow = [f"δ₃Θ_L {OVERFLOW}, so δ₄ is 0 in float64"] if math.isinf(x) else []
        return Outcome(measured, d4, None, "; ".join(notes + overflow + [
            f"undecided: both slopes are below what the run's precision resolves (eps = {resolution:.3g}); σ "
            "saturated to 0 or 1 in floating point"]))
    if d4 > 0:
        holds = measured >= d4
    else:  # σ'(x) > 0 for every finite x: it underflowed; decide on ln σ'(x) = −x − 2 ln(1 + e^{−x})
        log_d4 = -math.inf if math.isinf(x) else log_sigmoid_prime(x)
        holds = decide_logs(log_of(measured), ">=", log_d4)
        notes.append(f"δ₃Θ_L {OVERFLOW}, so δ₄ is 0 in float64" if math.isinf(x) else range_note("δ₄", log_d4))
        if holds is None:
            notes.append("undecided: the measured slope is 0 too")
    return Outcome(measured, d4, holds, "; ".join(n for n in notes if n))


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
            note = "ρ < 0: η is outside the theorem's range (ηλ̲ > 1)" + (
                f"; 1 − ρ {OVERFLOW}" if math.isinf(rho) else "")
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
    rho = 1.0 - scalar(q, "eta") * scalar(q, "lambda_min")  # ±inf where η·λ_min overflows float64
    if rho >= 1:
        note = "λ_min(K) = 0 to working precision: the linearised rate is 1 (vacuous)"
    elif rho < 0:
        note = "ρ_K < 0: η·λ_min(K) > 1, beyond the linearised rate's range" + (
            f"; η·λ_min {OVERFLOW}" if math.isinf(rho) else "")
    else:
        note = f"linearised contraction 1 − ρ = {1 - rho:.3g}"
    return Outcome(rho, 1.0, 0 <= rho < 1, note)


RATE_NTK = Condition(
    key="thm4_3.rate_ntk", title="Rate of the linearised dynamics, ρ_K = 1 − ηλ_min(K)",
    source="derived (DERIVATIONS §5, Thm D.1 with λ̲ = λ_min(K))",
    latex=r"\rho_K = 1 - \eta\,\lambda_{\min}(J J^\top)", text="ρ_K = 1 − η·λ_min(K)", status="derived",
    confidence="proved under A1–A3", needs=("eta", "lambda_min"),
    required=False, relation="<", rule=_rate_ntk)


def _geometric(reference, slack, label):
    """F_k ≤ ρ^k·reference(q) at every measured k, up to rounding: ``slack(q, F, eps)`` bounds the rounding of
    the two sides (DERIVATIONS §2b; zero without ``eps``). Value: the ratio F_k/(ρ^k·reference) at the k that
    comes nearest to failing; threshold: the ratio allowed there, 1 + 1e-12 + (rounding slack)/(ρ^k·reference)."""
    def rule(q, c) -> Outcome:
        rho = _rho(q)
        F = np.asarray(q["F_k"], dtype=float)
        if not 0 <= rho <= 1:
            return Outcome(np.nan, 1.0, None, f"ρ = {rho:.3g} is not in [0, 1]: no prediction")
        k = np.arange(F.size)
        ref = float(reference(q, F))
        eps = optional(q, "eps")
        side = None if eps is None else slack(q, F, float(eps))
        power = np.power(rho, k)  # ρ^0 = 1, also for ρ = 0
        pred = power * ref
        allowed = pred * (1 + ROUNDING) + (0.0 if side is None else side[0] + power * side[1])
        ok = F <= allowed
        # a prediction that underflowed to 0 is still positive: decide on logarithms there
        under = (allowed == 0) & (F > 0) & (rho > 0) & (ref > 0)
        if under.any():
            ok[under] = np.log(F[under]) <= math.log(ref) + k[under] * math.log(rho) + math.log1p(ROUNDING)
        unknown = np.isnan(allowed)  # ρ^k underflowed while the reference overflowed: inf·0
        ratio = np.where((F == 0) & (pred == 0), 0.0, F / pred)  # 0/0: a zero loss meets a zero prediction
        excess = np.where((F == 0) & (allowed == 0), 0.0, F / allowed)
        excess = np.where(under, np.where(ok, 0.0, np.inf), excess)
        excess = np.where(unknown, -np.inf, excess)
        worst = int(np.argmax(excess))
        holds = bool(ok[~unknown].all()) and (None if unknown.any() else True)
        if pred[worst] > 0:
            threshold = float(allowed[worst] / pred[worst])
        else:
            threshold = math.inf if allowed[worst] > 0 else 1.0 + ROUNDING
        note = f"worst at k = {worst}: F = {F[worst]:.4g}" + (f" (ρ = 1: the prediction is F_k ≤ {label})" if rho == 1 else "")
        if unknown.any():
            note += f"; ρ^k·reference is inf·0 in float64 at {int(unknown.sum())} k ({OVERFLOW})"
        if side is not None:
            note += f"; rounding slack at eps = {float(eps):.3g} (DERIVATIONS §2b): {threshold - 1:.3g} of the prediction"
        elif eps is not None:
            note += "; no rounding slack: it needs T, d and β_i, ‖x_i*‖² (beta_i, dist_sq_i)"
        if math.isinf(ref):
            note += f"; the reference {OVERFLOW}"
        if under[worst]:
            note += "; the prediction underflows float64 there (decided on logarithms)"
        return Outcome(float(ratio[worst]), threshold, holds, note)
    return rule


def _slack_both_run(q, F, eps):
    """LINEAR: F_k and F_0 both measured in the run's precision."""
    s = rounding_slack(F, q, eps)
    return None if s is None else (s, s[0])


def _slack_vs_gd(q, F, eps):
    """ALIGNMENT: F_k in the run's precision, F_GD(X_T) in float64."""
    s = rounding_slack(F, q, eps)
    return None if s is None else (s, float(rounding_slack(scalar(q, "F_gd_T"), q, EPS64)))


def _slack_run_only(q, F, eps):
    """VS_GD_BOUND: F_k in the run's precision; the bound is a float64 formula of the data (ROUNDING covers it)."""
    s = rounding_slack(F, q, eps)
    return None if s is None else (s, 0.0)


LINEAR = Condition(
    key="thm4_3.linear", title="Thm 4.3's conclusion on the measured losses", source="Thm 4.3",
    latex=r"F(W^k) \le \rho^k F(W^0)", text="F(X_T^k) ≤ ρ^k·F(X_T^0), every measured k (value: worst ratio)",
    status="stated", confidence="NOTE: third-party summary", needs=("F_k", *RATE_NEEDS), required=False,
    relation="<=", rule=_geometric(lambda q, F: F[0], _slack_both_run, "F_0"))

ALIGNMENT = Condition(
    key="thm4_3.alignment", title="L2O after k iterations against GD (alignment at W_0)",
    source="Thm 4.3 + alignment (paper §4.5)", latex=r"F(X_T^k) \le \rho^k F_{GD}(X_T)",
    text="F(X_T^k) ≤ ρ^k·F_GD(X_T) (value: worst ratio)", status="stated", confidence="NOTE + INFER",
    needs=("F_k", "F_gd_T", *RATE_NEEDS), required=False, relation="<=",
    rule=_geometric(lambda q, F: scalar(q, "F_gd_T"), _slack_vs_gd, "F_GD(X_T)"))


def _gd_bound(q, F) -> float:
    beta_i, dist_i = optional(q, "beta_i"), optional(q, "dist_sq_i")
    weighted = (beta_i * dist_i).sum() if beta_i is not None and dist_i is not None else scalar(q, "beta") * scalar(q, "dist_sq")
    return float(weighted) / (2 * scalar(q, "T"))


VS_GD_BOUND = Condition(
    key="sec4_5.vs_gd_bound", title="Learning improves GD's bound: L2O below ρ^k times GD's rate",
    source="paper §4.5 (abstract's claim)", latex=r"F(X_T^k) \le \rho^k\,\frac{\beta\|X_0-X^\star\|^2}{2T}",
    text="F(X_T^k) ≤ ρ^k·β‖X_0 − X*‖²/(2T) (value: worst ratio)", status="stated", confidence="NOTE + INFER",
    needs=("F_k", "T", "dist_sq", *RATE_NEEDS), required=False, relation="<=", rule=_geometric(_gd_bound, _slack_run_only, "β‖X_0 − X*‖²/(2T)"))

CONDITIONS = (ALPHA0, WIDTH, DELTA4, RATE, RATE_DERIVED, RATE_NTK, LINEAR, ALIGNMENT, VS_GD_BOUND)
