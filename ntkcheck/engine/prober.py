"""Probing a training run along its iterations, for ``verify`` and the sweep alike.

At a probed iteration k, at the weights W_k (before update k):

    result   :func:`ntkcheck.instruments.probes.measure` (float64): K, ½(K̃ + K̃ᵀ), α, the linearised predictions, …
    drift    ‖K_k − K_0‖_F/‖K_0‖_F and 1 − ⟨K_0, K_k⟩/(‖K_0‖_F ‖K_k‖_F) against the run's K_0
             (:func:`~ntkcheck.instruments.linalg.kernel_drift`; 0 at k = 0, where K_0 = K_k; none for a Lanczos
             probe, without K_0, or against K_0 = 0)

and at k = 0 the diagnostics at W_0 (:func:`ntkcheck.instruments.diagnostics.at_initialisation`: the one-step freeze
predictor, the dead cone, the best gains), for the MLP at its deterministic initialisation; any other learner or W_0
skips them, with the reason. A kernel that overflows (a diverged run) gives a
:class:`~ntkcheck.instruments.probes.ProbeFailure` with its reason instead of a result.

:class:`Prober` holds the one piece of state the probes of a run share, K_0, set by the dense probe at k = 0 (or
given, when a run resumes). What a caller keeps of a probe (verify's files, a sweep's row of columns) is its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ntkcheck.config import TrainConfig
from ntkcheck.instruments.diagnostics import at_initialisation
from ntkcheck.instruments.linalg import kernel_drift
from ntkcheck.instruments.probes import NonFiniteKernel, ProbeFailure, ProbeResult, measure
from ntkcheck.models.base import Learner
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.base import Problem

FREEZE_NOTE = "predicts plain SGD's first step; this run trains with Adam"


@dataclass(frozen=True)
class Probe:
    """The probe at W_k: ``result``, the :class:`ProbeResult` with ``drift`` filled in and without the dense kernels
    (or the :class:`ProbeFailure`), and ``K``, the dense K_k (None for a Lanczos probe or a failure)."""

    k: int
    result: ProbeResult | ProbeFailure
    K: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Diagnostics:
    """The diagnostics at W_0: ``found``, :func:`at_initialisation`'s numbers ({} where not measured; with a
    ``note`` on the freeze predictor when the run trains with Adam); ``skipped``, why they do not apply; ``error``,
    why they failed (features that overflow at W_0)."""

    found: dict
    skipped: str | None = None
    error: str | None = None


class Prober:
    """The probes of one run of ``cfg`` on ``problem`` (module docstring), with the kernel ``method`` (auto, dense or
    lanczos), the ``jacobian`` behind a dense kernel, and, with ``alpha_steps``, α over every step t at k = 0.
    ``K0``: the run's K_0 when it was measured before (a resumed run); else the dense probe at k = 0 sets it."""

    def __init__(self, cfg: TrainConfig, problem: Problem, *, method: str = "auto", jacobian: str = "auto",
                 alpha_steps: bool = False, K0: np.ndarray | None = None):
        self.cfg, self.problem = cfg, problem
        self.method, self.jacobian, self.alpha_steps = method, jacobian, alpha_steps
        self.K0 = K0

    def __call__(self, k: int, model: Learner) -> Probe:
        """The probe at iteration k, ``model`` at W_k (unchanged); at k = 0 its dense K becomes K_0."""
        try:
            r = measure(model, self.problem, self.cfg.T, lr=self.cfg.lr, method=self.method,
                        jacobian_method=self.jacobian, alpha_steps=self.alpha_steps and k == 0, kernels=True)
        except NonFiniteKernel as err:
            return Probe(k, ProbeFailure(str(err)))
        K = None if r.kernels is None else r.kernels[0]
        if k == 0 and K is not None:
            self.K0 = K
        return Probe(k, r.replace(drift=self._drift(K), kernels=None), K)

    def _drift(self, K: np.ndarray | None):
        """:func:`kernel_drift` of K_k against K_0, where both are dense and K_0 ≠ 0."""
        if K is None or self.K0 is None or not np.linalg.norm(self.K0) > 0:
            return None
        return kernel_drift(self.K0, K)

    def diagnose(self, model: Learner, *, best: bool = True) -> Diagnostics:
        """The diagnostics at W_0 (``model``), with the best gains (L-BFGS, the slow part) when ``best``."""
        if not isinstance(model, MathL2O):
            return Diagnostics({}, skipped=f"they read the MLP's wide layer and W_L = 0; model {self.cfg.model} "
                                           "has neither")
        cfg = self.cfg
        try:
            found = at_initialisation(model, self.problem, cfg.T, lr=cfg.lr, loss=cfg.loss, tol=cfg.saturation_tol,
                                      best=best)
        except (ValueError, RuntimeError) as err:  # overflowing features at W_0: the kernel probe says so too
            return Diagnostics({}, error=f"{type(err).__name__}: {err}")
        if found is None:
            return Diagnostics({}, skipped="W_0 is not the deterministic initialisation (W_L ≠ 0 or biases)")
        if cfg.optimizer != "sgd":
            found["freeze"]["note"] = FREEZE_NOTE
        return Diagnostics(found)
