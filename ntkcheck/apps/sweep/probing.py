"""A sweep cell's probes: the engine's prober (:mod:`ntkcheck.engine.prober`, as ``verify``'s) at W_k, flattened to
one row of numbers, the sweep columns of :mod:`ntkcheck.results.schema`.

Per probed iteration k: λ_max(K_k) and λ_min(K_k) (dense: every eigenvalue; Lanczos: the two extremes), the
stability threshold 2/λ_max(K_k), the rank of K_k with its tolerance (dense), α_k = σ_min(G_{L−1,T}) with its rank
and tolerance, the null-space plateau ½‖P_null r‖² (dense), and, against the cell's K_0, the drift
‖K_k − K_0‖_F/‖K_0‖_F and the kernel distance 1 − ⟨K_0, K_k⟩/(‖K_0‖‖K_k‖) (dense; 0 at k = 0); against the cell's
G_0 (:func:`wide_features` at W_0), the features' drift ‖G_k − G_0‖_F/‖G_0‖_F of the wide layer (the MLP), beside α's
σ_min⁺, the smallest singular value of G_k above its rank tolerance. At k = 0 from the MLP's
deterministic initialisation, also the diagnostics of :mod:`ntkcheck.instruments.diagnostics`: the one-step freeze
predictor (max|φ'|, the share of P' it saturates, the gain of the state the first SGD step lands in,
c = max|φ'|/(η e^{2(L−1)})) and the dead-cone share.
"""

from __future__ import annotations

import math

import numpy as np

from ntkcheck.build.experiment import build_model
from ntkcheck.config import TrainConfig
from ntkcheck.engine.prober import Diagnostics, Prober
from ntkcheck.instruments.features import alpha_features, features_drift
from ntkcheck.instruments.probes import ProbeFailure
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.results import schema

NAN = math.nan


def probe_cell(cfg: TrainConfig, problem, weights: dict, k: int, method: str,
               K0: np.ndarray | None, G0: np.ndarray | None = None) -> tuple[dict, np.ndarray | None]:
    """The row of numbers at the weights ``weights`` (iteration ``k``), from the engine's
    :class:`~ntkcheck.engine.prober.Prober` with the cell's K_0 ``K0`` and the features' drift against its G_0 ``G0``
    (:func:`wide_features` at W_0; NaN without it): the sweep columns of
    :mod:`ntkcheck.results.schema` (None for a count and NaN for a number not measured: Lanczos has no rank, the
    LSTM no α), and the dense K_k (None for Lanczos or a failed probe). A probe that cannot be measured (a diverged
    cell's overflowing kernel) gives a row with ``error`` set and NaN numbers."""
    model = build_model(cfg, weights)
    prober = Prober(cfg, problem, method=method, K0=K0)
    probe = prober(k, model)
    if isinstance(probe.result, ProbeFailure):
        return {"iteration": k, "method": None, "error": probe.result.error}, None
    probed = probe.result.as_dict() | {"features_drift": _features_drift(model, problem, cfg.T, G0)}
    row = {"iteration": k, "method": probe.result.method, "error": None, **schema.sweep_row(probed)}
    if k == 0:
        row |= initial_diagnostics(cfg, prober.diagnose(model, best=False))
    return row, probe.K


def wide_features(cfg: TrainConfig, problem, weights: dict) -> np.ndarray | None:
    """G_{L−1,T} at ``weights`` (float64, :func:`~ntkcheck.instruments.features.alpha_features`, the matrix of α's
    probe); None for a learner without a wide layer (the LSTM)."""
    model = build_model(cfg, weights)
    return alpha_features(model, problem, cfg.T).cpu().numpy() if isinstance(model, MathL2O) else None


def _features_drift(model, problem, T: int, G0: np.ndarray | None) -> dict | None:
    """{rel_change: ‖G_k − G_0‖_F/‖G_0‖_F} at the model's weights, None without G_0 or a wide layer."""
    if G0 is None or not isinstance(model, MathL2O):
        return None
    return {"rel_change": features_drift(G0, alpha_features(model, problem, T))}


def initial_diagnostics(cfg: TrainConfig, found: Diagnostics) -> dict:
    """The freeze predictor and the dead-cone share at W_0 as ``freeze_*``/``dead_share`` columns (NaN where they do
    not apply: the model is not at a deterministic initialisation or is not the MLP, whose wide layer and W_L = 0
    they read; the freeze columns also where the cell trains with Adam, as the freeze predicts plain SGD's step);
    ``diagnostics_error`` alone where they failed."""
    if found.error:  # overflowing features at W_0: the kernel probe says so too
        return {"diagnostics_error": found.error}
    freeze = found.found.get("freeze", {}) if cfg.optimizer == "sgd" else {}
    cone = found.found.get("dead_cone", {})
    return {"freeze_phi_max": freeze.get("phi_max", NAN), "freeze_saturated": freeze.get("saturated", NAN),
            "freeze_gain_landing": freeze.get("gain_landing", NAN), "freeze_c": freeze.get("c", NAN),
            "freeze_scale": freeze.get("scale", NAN), "dead_share": cone.get("share", NAN)}
