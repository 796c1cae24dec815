"""Everything the proof needs at one W, measured in float64 and returned as frozen, typed results.

:func:`measure` takes the model at W (any dtype, any device), the problem and T, and returns a
:class:`ProbeResult`:

    loss              ½‖r‖² = F(X_T(W)),   r = vec(M X_T − Y) ∈ R^{N·b}
    K                 K = J Jᵀ (true NTK, symmetric PSD): λ_max, λ_min, trace, rank with tolerance, layer traces
    K_training        ½(K̃ + K̃ᵀ), K̃ = J J̃ᵀ (the kernel detached training follows), and ‖K̃ − K̃ᵀ‖_F/‖K̃‖_F
    K_vs_K_training   :class:`~ntkcheck.instruments.linalg.KernelDrift` from K to K̃
    alpha             σ_min(G_{L−1,t}) (t = T by default) with σ_max, rank and tolerance
    linearised        from K at η: 1 − ηλ_min, 2/λ_max, the null-space plateau ½‖P_null r‖², (u_iᵀ r)²
    threshold_training 2/λ_max(½(K̃ + K̃ᵀ))
    delta3            δ₃ = max_{t ≤ T, j} ‖G_{L−1,t}[j, :]‖₂ along the model's own trajectory
    weights           σ_min and ‖W_ℓ‖₂ of every weight matrix

α, δ₃ and the weights read MathL2O's layers: for any other learner (:class:`ntkcheck.models.base.Learner`, e.g. the
LSTM) they are None (weights empty), ``not_applicable`` says why, and the layer traces are per parameter.

``method="dense"`` forms K and K̃ (all eigenvalues, ranks, the plateau); ``method="lanczos"`` gives λ_max and
λ_min of K and ½(K̃ + K̃ᵀ) from the matrix-free operators only (no rank, no plateau, no drift); ``auto`` is dense
whenever the dense kernels and Jacobians fit in memory (:func:`~ntkcheck.resources.kernel_method`).
Lanczos is stopped after a budget of matrix-free products, by default max(N·b, 120) per kernel (forming K column
by column takes N·b): on a kernel of low rank its bottom can take thousands. It then falls back to the dense probe
when that fits, else it reports what converged (λ_max, and λ_min as NaN). ``method_reason`` says which method
ran and why, with the product counts. The formulas
behind each number live in :mod:`ntkcheck.instruments.ntk`, :mod:`ntkcheck.instruments.linalg`, :mod:`ntkcheck.instruments.features` and
:mod:`ntkcheck.instruments.dynamics`; this module puts them together. ``as_dict()`` is for JSON only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh

from ntkcheck.instruments.dynamics import predict, stability_threshold
from ntkcheck.instruments.features import (
    FeatureSpectrum,
    alpha_table,
    layer_spectrum,
    weight_spectra,
)
from ntkcheck.instruments.linalg import (
    KernelDrift,
    KernelSpectrum,
    Rank,
    extreme_eigenvalues,
    kernel_drift,
    kernel_spectrum,
)
from ntkcheck.instruments.ntk import gram, jacobian, ntk_operator, parameters, with_mode
from ntkcheck.models.angular import row_norms_sq
from ntkcheck.models.base import Learner
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems import qp as problems
from ntkcheck.resources import kernel_method
from ntkcheck.results import schema

PROBE_METHODS = ("auto", "dense", "lanczos")
LANCZOS_TOL = 1e-10
LANCZOS_MIN_BUDGET = 120  # ARPACK's two default 20-vector bases (top and shifted bottom), with two restarts each


class NonFiniteKernel(ValueError):
    """The kernel overflows at these weights: nothing spectral can be measured there."""


# -- typed parts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelStats:
    """Spectral summary of one symmetric kernel.

    Dense: every eigenvalue (ascending, in ``eigenvalues``), the trace, the numerical rank with its tolerance
    (:class:`~ntkcheck.instruments.linalg.Rank`) and trace(K_ℓ) per layer. Lanczos: λ_max and λ_min only, λ_min to an
    absolute accuracy ``abs_accuracy_min`` (:func:`~ntkcheck.instruments.linalg.extreme_eigenvalues`). ``asymmetry`` =
    ‖K̃ − K̃ᵀ‖_F/‖K̃‖_F for the training kernel (dense only)."""

    lambda_max: float
    lambda_min: float
    method: str
    trace: float | None = None
    rank: Rank | None = None
    layer_traces: Mapping[str, float] | None = None
    asymmetry: float | None = None
    abs_accuracy_min: float | None = None
    lanczos_tol: float | None = None
    eigenvalues: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def dense(cls, spectrum: KernelSpectrum, layer_traces: Mapping[int | str, float], asymmetry: float | None = None):
        """``layer_traces``: layer ℓ → trace(K_ℓ) (labelled ``layer<ℓ>``), or parameter name → trace (kept)."""
        labels = {(f"layer{key}" if isinstance(key, int) else key): v for key, v in layer_traces.items()}
        return cls(spectrum.lambda_max, spectrum.lambda_min, "dense", spectrum.trace, spectrum.rank, labels,
                   asymmetry, eigenvalues=spectrum.eigenvalues)

    def as_dict(self) -> dict:
        if self.method == "lanczos":
            return {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min, "method": "lanczos",
                    "abs_accuracy_min": self.abs_accuracy_min, "tol": self.lanczos_tol}
        out = {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min, "trace": self.trace,
               **{"rank" if k == "rank" else f"rank_{k}": v for k, v in self.rank.as_dict().items()},
               "layer_traces": dict(self.layer_traces)}
        return out if self.asymmetry is None else out | {"asymmetry": self.asymmetry}

    @classmethod
    def from_dict(cls, d: dict, eigenvalues: np.ndarray | None = None) -> "KernelStats":
        if d.get("method") == "lanczos":
            return cls(d["lambda_max"], d["lambda_min"], "lanczos", abs_accuracy_min=d["abs_accuracy_min"],
                       lanczos_tol=d["tol"])
        rank = Rank(d["rank"], d["rank_tol"], d["rank_sigma_max"], d["rank_sigma_min"], tuple(d["rank_shape"]),
                    d["rank_eps"])
        return cls(d["lambda_max"], d["lambda_min"], "dense", d["trace"], rank, d["layer_traces"],
                   d.get("asymmetry"), eigenvalues=eigenvalues)


@dataclass(frozen=True)
class Linearised:
    """The linearised predictions of K at residual r and learning rate η (:func:`ntkcheck.instruments.dynamics.predict`).

    ``rate`` = 1 − ηλ_min (per-iteration contraction of ‖r‖; the loss contracts by its square, ``loss_rate``),
    ``threshold`` = 2/λ_max (stable iff η < threshold), ``plateau`` = ½‖P_null r‖² over the ``null_dim``
    eigenvectors with |λ_i| ≤ ``null_tol``, ``projections`` = (u_iᵀ r)² in ascending order of λ_i."""

    lr: float
    lambda_min: float
    lambda_max: float
    rate: float
    threshold: float
    plateau: float
    null_dim: int
    null_tol: float
    loss_0: float
    projections: np.ndarray = field(repr=False, compare=False)

    @property
    def loss_rate(self) -> float:
        return self.rate * self.rate

    @property
    def stable(self) -> bool:
        return self.lr < self.threshold

    def as_dict(self) -> dict:
        return {"lr": self.lr, "lambda_min": self.lambda_min, "lambda_max": self.lambda_max, "rate": self.rate,
                "loss_rate": self.loss_rate, "threshold": self.threshold, "stable": self.stable,
                "plateau": self.plateau, "null_dim": self.null_dim, "null_tol": self.null_tol, "loss_0": self.loss_0}

    @classmethod
    def from_dict(cls, d: dict, projections: np.ndarray) -> "Linearised":
        return cls(d["lr"], d["lambda_min"], d["lambda_max"], d["rate"], d["threshold"], d["plateau"], d["null_dim"],
                   d["null_tol"], d["loss_0"], projections)


@dataclass(frozen=True)
class ProbeResult:
    """Everything measured at one W (module docstring). Fields a method does not measure are None:
    ``lanczos`` leaves out ``linearised``, ``K_vs_K_training``, ``threshold_training``, ranks and traces.
    ``drift`` (K against K_0) is filled in by whoever holds K_0 (``verify``); ``kernels`` = (K, K̃) dense,
    only when asked for. ``alpha``, ``delta3`` (None) and ``weights`` (empty) where the learner has no wide layer,
    with the reason in ``not_applicable`` (quantity → why)."""

    method: str
    loss: float
    K: KernelStats
    K_training: KernelStats
    alpha: FeatureSpectrum | None
    delta3: float | None
    n_outputs: int
    n_params: int
    weights: tuple[dict, ...] = ()
    linearised: Linearised | None = None
    K_vs_K_training: KernelDrift | None = None
    threshold_training: float | None = None
    drift: KernelDrift | None = None
    alpha_over_t: np.ndarray | None = field(default=None, repr=False, compare=False)
    kernels: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    method_reason: str = ""  # which method ran and why: the memory it needs, Lanczos's products, a fallback
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def replace(self, **changes) -> "ProbeResult":
        return dataclasses.replace(self, **changes)

    def table(self) -> "pd.DataFrame":
        """The probe as a table: one row per column of :mod:`ntkcheck.results.schema` (label, formula, value; None
        where not measured), what a notebook shows for it."""
        probe = self.as_dict()
        return pd.DataFrame([{"quantity": c.label, "formula": c.formula, "value": c.read(probe)}
                             for c in schema.metrics_columns()]).set_index("quantity")

    def __repr__(self) -> str:
        alpha = "n/a" if self.alpha is None else f"{self.alpha.alpha:.3g}"
        return (f"ProbeResult(method={self.method!r}, loss={self.loss:.6g}, λ_max(K)={self.K.lambda_max:.4g}, "
                f"λ_min(K)={self.K.lambda_min:.4g}, α={alpha}, outputs={self.n_outputs}, params={self.n_params})")

    def _repr_html_(self) -> str:
        return self.table().to_html()

    def as_dict(self) -> dict:
        """The numbers, for JSON (arrays: :meth:`arrays`)."""
        out = {"method": self.method, "method_reason": self.method_reason, "loss": self.loss,
               "n_outputs": self.n_outputs, "n_params": self.n_params,
               "K": self.K.as_dict(), "K_training": self.K_training.as_dict(),
               "alpha": None if self.alpha is None else self.alpha.as_dict(),
               "delta3": self.delta3, "weights": [dict(w) for w in self.weights],
               "drift": None if self.drift is None else self.drift.as_dict()}
        if self.not_applicable:
            out["not_applicable"] = dict(self.not_applicable)
        if self.method == "dense":
            out |= {"K_vs_K_training": None if self.K_vs_K_training is None else self.K_vs_K_training.as_dict(),
                    "linearised": self.linearised.as_dict(), "threshold_training": self.threshold_training}
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Eigenvalues of K and ½(K̃ + K̃ᵀ) (ascending), (u_iᵀ r)², singular values of G_{L−1,t}, α over t."""
        out = {} if self.alpha is None else {"alpha_singular_values": self.alpha.singular_values}
        if self.method == "dense":
            out |= {"K_eigenvalues": self.K.eigenvalues, "K_training_sym_eigenvalues": self.K_training.eigenvalues,
                    "K_projections": self.linearised.projections}
        if self.alpha_over_t is not None:
            out["alpha_over_t"] = self.alpha_over_t
        return out

    @classmethod
    def from_dict(cls, d: dict, arrays: Mapping[str, np.ndarray]) -> "ProbeResult":
        """The inverse of :meth:`as_dict` and :meth:`arrays` (a probe read back from its files)."""
        drift = lambda x: None if x is None else KernelDrift(**x)  # noqa: E731
        dense = d["method"] == "dense"
        alpha = None if d["alpha"] is None else FeatureSpectrum.from_dict(d["alpha"], arrays["alpha_singular_values"])
        return cls(
            d["method"], d["loss"], KernelStats.from_dict(d["K"], arrays.get("K_eigenvalues")),
            KernelStats.from_dict(d["K_training"], arrays.get("K_training_sym_eigenvalues")),
            alpha, d["delta3"], d["n_outputs"],
            d["n_params"], tuple(d["weights"]),
            Linearised.from_dict(d["linearised"], arrays["K_projections"]) if dense else None,
            drift(d.get("K_vs_K_training")), d.get("threshold_training"), drift(d["drift"]),
            arrays.get("alpha_over_t"), method_reason=d.get("method_reason", ""),
            not_applicable=d.get("not_applicable", {}))


@dataclass(frozen=True)
class ProbeFailure:
    """A probe that could not be measured (e.g. a kernel that overflows after a divergence): its reason."""

    error: str

    def as_dict(self) -> dict:
        return {"error": self.error}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


# -- measuring ----------------------------------------------------------------------------------------------


def measure(model: Learner, problem: problems.Problem, T: int, *, lr: float, method: str = "auto",
            jacobian_method: str = "auto", t: int | None = None, alpha_steps: bool = False,
            kernels: bool = False, lanczos_budget: int | None = None, memory: float | None = None) -> ProbeResult:
    """Everything the proof needs at the weights of ``model`` (module docstring), in float64.

    ``lr`` = η for the linearised predictions; ``method``: ``dense``, ``lanczos`` or ``auto`` (dense whenever the
    dense kernels and Jacobians fit in half of ``memory`` bytes, default the memory available now:
    :func:`~ntkcheck.resources.kernel_method`); ``jacobian_method``: the Jacobian behind the dense kernel
    (:func:`ntkcheck.instruments.ntk.jacobian`); ``t``: the step of α (default T); ``alpha_steps``: also α over every step
    t = 1..T; ``kernels``: keep the dense K and K̃; ``lanczos_budget``: matrix-free products per kernel after which
    Lanczos stops (default max(N·b, 120)). ``method_reason`` of the result says which method ran and why. A learner
    other than MathL2O gets K and K̃ only (α, δ₃, weights: ``not_applicable``; ``t`` and ``alpha_steps`` unused).
    Raises :class:`NonFiniteKernel` where the kernel overflows."""
    if method not in PROBE_METHODS:
        raise ValueError(f"method must be one of {', '.join(PROBE_METHODS)} (got {method!r})")
    m = with_mode(model, "true", dtype=torch.float64)
    p = problem.to(dtype=torch.float64)
    if not all(bool(torch.isfinite(w).all()) for w in parameters(m).values()):
        raise NonFiniteKernel("the weights are not finite (a diverged run?)")
    Q, P = p.N * p.b, sum(v.numel() for v in parameters(m).values())
    auto, auto_reason = kernel_method("auto", Q, P, memory=memory, explain=True)
    if method == "auto":
        method, reason = auto, auto_reason
    else:
        reason = f"{method} as asked ({'auto picks the same' if method == auto else f'auto picks {auto}'}: " \
                  f"{auto_reason.split(': ', 1)[1]})"
    budget = max(Q, LANCZOS_MIN_BUDGET) if lanczos_budget is None else int(lanczos_budget)
    try:
        return _measure(m, p, T, lr, method, jacobian_method, t, alpha_steps, kernels,
                        reason=reason, budget=budget, dense_fits=auto == "dense")
    except torch.linalg.LinAlgError as err:  # an SVD or eigensolver fed with overflowed features or kernels
        raise NonFiniteKernel(f"the features or kernels overflow at these weights ({err})") from None


def _measure(m, p, T, lr, method, jacobian_method, t, alpha_steps, kernels, *, reason: str, budget: int,
             dense_fits: bool) -> ProbeResult:
    common = {"n_params": sum(v.numel() for v in parameters(m).values())} | _layer_parts(m, p, T, t, alpha_steps)
    if method == "dense":
        return _dense(m, p, T, lr, jacobian_method, kernels, common).replace(method_reason=reason)
    result = _lanczos(m, p, T, common, budget=budget, dense_fits=dense_fits)
    if isinstance(result, str):  # Lanczos ran out of products and the dense probe fits: form the kernels
        return _dense(m, p, T, lr, jacobian_method, kernels, common).replace(method_reason=f"{reason}; {result}")
    return result.replace(method_reason=f"{reason}; {result.method_reason}")


def _layer_parts(m: Learner, p: problems.Problem, T: int, t: int | None, alpha_steps: bool) -> dict:
    """α, δ₃, the weight spectra and α over t for a MathL2O; for another learner None (weights empty) and why."""
    if not isinstance(m, MathL2O):
        why = f"{type(m).__name__} has no wide layer G_{{L−1}} nor weight matrices W_ℓ (MathL2O's quantities)"
        return {"alpha": None, "delta3": None, "weights": (), "alpha_over_t": None,
                "not_applicable": {"alpha": why, "delta3": why, "weights": why}}
    alpha, delta3 = _features_along(m, p, T, T if t is None else t)
    return {"alpha": alpha, "delta3": delta3,
            "weights": tuple(weight_spectra(m).assign(shape=lambda f: f["shape"].map(list)).to_dict("records")),
            "alpha_over_t": alpha_table(m, p, T)[["t", "alpha", "rank"]].to_numpy() if alpha_steps else None}


def _traces(G, m: Learner) -> dict:
    """trace(K_ℓ) per layer ℓ of a MathL2O; per parameter name for another learner (its names are not W_ℓ, b_ℓ)."""
    if isinstance(m, MathL2O):
        return G.layer_traces()
    return {name: float(torch.trace(B)) for name, B in G.blocks.items()}


def _dense(m: Learner, p: problems.Problem, T: int, lr: float, jacobian_method: str, kernels: bool,
           common: dict) -> ProbeResult:
    J = jacobian(m, p, T, mode="true", method=jacobian_method)
    Jt = jacobian(m, p, T, mode="detached", method=jacobian_method)
    G, Gt = gram(J, N=p.N), gram(J, Jt, N=p.N)
    if not (torch.isfinite(G.K).all() and torch.isfinite(Gt.K).all()):
        raise NonFiniteKernel("K or K̃ has non-finite entries at these weights (a diverged run?)")
    with torch.no_grad():
        r = problems.residual(p, m.unroll(p, T).X[-1]).reshape(-1)
    pred = predict(G.K, r, lr, 0)  # eigh(K): its eigenvalues are K's spectrum too
    spec, spec_t = kernel_spectrum(G.K, pred.eigenvalues), kernel_spectrum(Gt.symmetric_part())
    norm_t = float(torch.linalg.norm(Gt.K))
    asymmetry = float(torch.linalg.norm(Gt.K - Gt.K.T)) / norm_t if norm_t > 0 else 0.0
    linearised = Linearised(pred.lr, float(pred.eigenvalues[0]), float(pred.eigenvalues[-1]), pred.rate,
                            pred.threshold, pred.plateau.value, pred.plateau.null_dim, pred.plateau.tol,
                            float(pred.loss_eig[0]), pred.projections)
    return ProbeResult(
        "dense", float(0.5 * r @ r), KernelStats.dense(spec, _traces(G, m)),
        KernelStats.dense(spec_t, _traces(Gt, m), asymmetry), n_outputs=int(r.numel()), linearised=linearised,
        K_vs_K_training=kernel_drift(G.K, Gt.K) if spec.lambda_max > 0 and norm_t > 0 else None,
        threshold_training=stability_threshold(spec_t.lambda_max),
        kernels=(G.K.cpu().numpy(), Gt.K.cpu().numpy()) if kernels else None, **common)


class _OutOfProducts(Exception):
    """The Lanczos budget of matrix-free products is spent."""


def _counted(op: LinearOperator, budget: int) -> tuple[LinearOperator, list[int]]:
    """``op`` with a count of its products (matvec and rmatvec), raising :class:`_OutOfProducts` past ``budget``."""
    count = [0]

    def counting(f):
        def apply(v):
            if count[0] >= budget:
                raise _OutOfProducts
            count[0] += 1
            return f(v)
        return apply

    return LinearOperator(op.shape, matvec=counting(op.matvec), rmatvec=counting(op.rmatvec), dtype=np.float64), count


def _top_within(op: LinearOperator, budget: int) -> tuple[float, int]:
    """λ_max alone by Lanczos (eigsh, ``which="LA"``, the start vector of :func:`extreme_eigenvalues`), within
    ``budget`` products; NaN where it does not converge there."""
    counted, count = _counted(op, budget)
    v0 = np.random.default_rng(0).standard_normal(op.shape[0])
    try:
        return float(eigsh(counted, k=1, which="LA", tol=LANCZOS_TOL, v0=v0, return_eigenvectors=False)[0]), count[0]
    except (_OutOfProducts, ArpackError):
        return math.nan, count[0]


def _extremes_within(op: LinearOperator, budget: int):
    """(Extremes or None, products, why it stopped): :func:`extreme_eigenvalues` by Lanczos within ``budget``."""
    counted, count = _counted(op, budget)
    try:
        return extreme_eigenvalues(counted, method="lanczos", tol=LANCZOS_TOL, dense_max=0), count[0], ""
    except _OutOfProducts:
        return None, count[0], "the budget"
    except ArpackError as err:  # e.g. a zero kernel: "starting vector is zero"
        return None, count[0], f"ARPACK ({err})"
    except RuntimeError as err:  # with dense_max=0 a non-converged eigsh is reported as a RuntimeError
        if "did not converge" not in str(err):
            raise
        return None, count[0], "ARPACK's iteration limit"


def _lanczos(m: Learner, p: problems.Problem, T: int, common: dict, *, budget: int,
             dense_fits: bool) -> ProbeResult | str:
    """λ_max, λ_min of K and ½(K̃ + K̃ᵀ) by Lanczos, at most ``budget`` products per kernel. Where a kernel's
    spectrum does not converge within it: the reason to fall back to the dense probe (a str) when ``dense_fits``,
    else λ_max alone (λ_min NaN, its accuracy NaN), as far as that converges within a second ``budget``."""
    stats, used, partial = {}, [], False
    for key, kernel, part in (("K", "true", "full"), ("K_training", "training", "symmetric")):
        name = "K" if key == "K" else "K̃"
        op = ntk_operator(m, p, T, kernel=kernel, part=part)
        ext, count, stopped = _extremes_within(op, budget)
        if ext is not None:
            used.append(f"{name} {count}")
            stats[key] = KernelStats(ext.lambda_max, ext.lambda_min, "lanczos",
                                     abs_accuracy_min=ext.extra["abs_accuracy_min"], lanczos_tol=ext.extra["tol"])
            continue
        if dense_fits:
            return (f"Lanczos stopped by {stopped} before converging on {name} (products: "
                    f"{', '.join(used + [f'{name} {count}'])}; budget {budget} per kernel), and the dense kernels fit: dense")
        top, extra = _top_within(op, budget)
        used.append(f"{name} {count} + {extra} (λ_max only: λ_min stopped by {stopped})")
        stats[key] = KernelStats(top, math.nan, "lanczos", abs_accuracy_min=math.nan, lanczos_tol=LANCZOS_TOL)
        partial = True
    with torch.no_grad():
        X_T = m.unroll(p, T).X[-1]
    reason = f"products: {', '.join(used)} (budget {budget} per kernel)"
    if partial:
        reason += "; the dense kernels do not fit: λ_min is reported as NaN"
    return ProbeResult("lanczos", float(problems.objective(p, X_T)), stats["K"], stats["K_training"],
                       n_outputs=p.N * p.b, method_reason=reason, **common)


@torch.no_grad()
def max_feature_row_norm(model: MathL2O, problem: problems.Problem, T: int) -> float:
    """δ₃ = max_{t ≤ T, j} ‖G_{L−1,t}[j, :]‖₂ along the model's own trajectory (float64)."""
    return _features_along(with_mode(model, "true", dtype=torch.float64), problem.to(dtype=torch.float64), T, T)[1]


@torch.no_grad()
def _features_along(m: MathL2O, p: problems.Problem, T: int, t: int) -> tuple[FeatureSpectrum, float]:
    """From one unroll of the float64 model ``m``: α = σ_min(G_{L−1,t}) (:func:`ntkcheck.instruments.features.alpha`'s
    spectrum) and δ₃ = max over s ≤ T and rows j of ‖G_{L−1,s}[j, :]‖₂; one R×n feature matrix at a time."""
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= T:
        raise ValueError(f"t must be an integer in [1, T = {T}] (got {t!r})")
    X, delta3 = m.unroll(p, T).X, 0.0
    for s in range(1, T + 1):
        delta3 = max(delta3, float(feature_row_norms(m, m.inputs(p, X[s - 1])).max()))
    return layer_spectrum(m, m.inputs(p, X[t - 1]), t=t, N=p.N, d=p.d), delta3


def feature_row_norms(m: MathL2O, Z: torch.Tensor) -> torch.Tensor:
    """‖G_{L−1}[j, :]‖₂ for the input rows Z: by :func:`ntkcheck.models.angular.row_norms_sq` on the angular path (no R×n
    matrix), else from the dense features."""
    if not m.angular:
        return m.features(Z)[-1].norm(dim=1)
    h = m.features(Z, upto=m.L - 2)[-1] if m.L > 2 else Z
    return row_norms_sq(h, m.layer(m.L - 1)[0]).sqrt()
