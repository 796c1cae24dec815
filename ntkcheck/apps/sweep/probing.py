"""A sweep cell's probes: :func:`ntkcheck.measure` at W_k, flattened to one row of numbers, the sweep columns of
:mod:`ntkcheck.results.schema`.

Per probed iteration k: λ_max(K_k) and λ_min(K_k) (dense: every eigenvalue; Lanczos: the two extremes), the
stability threshold 2/λ_max(K_k), the rank of K_k with its tolerance (dense), α_k = σ_min(G_{L−1,T}) with its rank
and tolerance, the null-space plateau ½‖P_null r‖² (dense), and, against the cell's K_0, the drift
‖K_k − K_0‖_F/‖K_0‖_F and the kernel distance 1 − ⟨K_0, K_k⟩/(‖K_0‖‖K_k‖) (dense). At k = 0 from the MLP's
deterministic initialisation, also the diagnostics of :mod:`ntkcheck.instruments.diagnostics`: the one-step freeze
predictor (max|φ'|, the share of P' it saturates, the gain of the state the first SGD step lands in,
c = max|φ'|/(η e^{2(L−1)})) and the dead-cone share.
"""

from __future__ import annotations

import math

import numpy as np

from ntkcheck.build.experiment import build_model
from ntkcheck.config import TrainConfig
from ntkcheck.instruments.diagnostics import at_initialisation
from ntkcheck.instruments.linalg import kernel_drift
from ntkcheck.instruments.probes import NonFiniteKernel, measure
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.results import schema

NAN = math.nan


def probe_cell(cfg: TrainConfig, problem, weights: dict, k: int, method: str,
               K0: np.ndarray | None) -> tuple[dict, np.ndarray | None]:
    """The row of numbers at the weights ``weights`` (iteration ``k``): the sweep columns of
    :mod:`ntkcheck.results.schema` (None for a count and NaN for a number not measured: Lanczos has no rank, the
    LSTM no α), and the dense K_k (None for Lanczos or a failed probe). A probe that cannot be measured (a diverged
    cell's overflowing kernel) gives a row with ``error`` set and NaN numbers."""
    model = build_model(cfg, weights)
    try:
        r = measure(model, problem, cfg.T, lr=cfg.lr, method=method, kernels=True)
    except NonFiniteKernel as err:
        return {"iteration": k, "method": None, "error": str(err)}, None
    K = r.kernels[0] if r.method == "dense" else None
    drift = kernel_drift(K0, K) if K is not None and K0 is not None and np.any(K0) else None
    row = {"iteration": k, "method": r.method, "error": None, **schema.sweep_row(r.replace(drift=drift).as_dict())}
    if k == 0:
        row |= initial_diagnostics(cfg, model, problem)
    return row, K


def initial_diagnostics(cfg: TrainConfig, model, problem) -> dict:
    """The freeze predictor and the dead-cone share at W_0 as ``freeze_*``/``dead_share`` columns (NaN where the
    model is not at a deterministic initialisation or is not the MLP, whose wide layer and W_L = 0 they read; the
    freeze predicts plain SGD's step only)."""
    try:
        found = at_initialisation(model, problem, cfg.T, lr=cfg.lr, loss=cfg.loss, tol=cfg.saturation_tol,
                                  best=False) if isinstance(model, MathL2O) else None
    except (ValueError, RuntimeError) as err:  # overflowing features at W_0: the kernel probe says so too
        return {"diagnostics_error": f"{type(err).__name__}: {err}"}
    if found is None or cfg.optimizer != "sgd":
        found = {"freeze": {}, "dead_cone": {}} if found is None else {"freeze": {}, "dead_cone": found["dead_cone"]}
    f, cone = found["freeze"], found["dead_cone"]
    return {"freeze_phi_max": f.get("phi_max", NAN), "freeze_saturated": f.get("saturated", NAN),
            "freeze_gain_landing": f.get("gain_landing", NAN), "freeze_c": f.get("c", NAN),
            "freeze_scale": f.get("scale", NAN), "dead_share": cone.get("share", NAN)}
