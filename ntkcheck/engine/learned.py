"""Training and running any learned optimiser on the QP family, in memory.

A learned optimiser here is an ``nn.Module`` with ``unroll(problem, T, X0=…)`` returning the iterates
X_0..X_T: ours (:class:`ntkcheck.models.math_l2o.MathL2O`), Liu et al.'s LSTM (:mod:`.math_l2o`) and LISTA-CPSS
(:mod:`.lista`); the last two also take and return a ``state`` to continue from.

:func:`fit` is the in-memory sibling of :func:`ntkcheck.engine.training.train`, which is the trainer of record for
single runs (run folder, checkpoints, resume): both are the one trainer (:func:`ntkcheck.engine.trainer.iteration`)
with one cell, so they record the same metrics by the same definitions (:mod:`ntkcheck.problems.meta`). Metrics of
iteration k are measured at W_k before its update, so k = 0 is the untrained model. A non-finite loss or gradient ends the run: it is recorded (``diverged_at``), not
raised, since which (η, T) runs explode is what the paper's Fig. 2 is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ntkcheck.engine.trainer import iteration, new_state, unroll
from ntkcheck.instruments.dynamics import _positive
from ntkcheck.instruments.ntk import with_mode
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.meta import gd_objective, reference_objective
from ntkcheck.problems.qp import Problem
from ntkcheck.problems.solvers import Curve, iterate


@dataclass
class Fit:
    """Metrics (one row per iteration, index ``iteration``), status, first diverged iteration."""

    metrics: pd.DataFrame
    status: str  # "completed" or "diverged"
    diverged_at: int | None

    def last(self, quantity: str) -> float:
        """The quantity at the last recorded iteration."""
        return float(self.metrics[quantity].iloc[-1])


def fit(model: nn.Module, problem: Problem, T: int, *, lr: float, iters: int, optimizer: str = "sgd",
        loss: str = "last", truncation: int | None = None, step_scale: float = 1.0,
        saturation_tol: float = 1e-2, update: str = "gd") -> Fit:
    """K = ``iters`` meta-iterations of ``model`` (trained in place) on the fixed training set ``problem``: the one
    trainer (:func:`ntkcheck.engine.trainer.iteration`) with one cell.

    Full BPTT through all T steps, or, with ``truncation`` = S, truncated BPTT as Liu et al. train: the unroll is cut
    into segments of S steps, each with its own loss and optimiser step, and the iterate and the LSTM state are
    detached between segments. ``loss`` is the mean of the segments' losses; F_T, gain and gain_mean
    (:func:`ntkcheck.problems.meta.gain_metrics`) are measured on the whole unroll against the classical method of
    ``update`` (GD for the paper's ``gd``) with step s/β_i, with the
    trainer's other metrics (P saturated within ``saturation_tol``). A non-finite loss or gradient ends the run.
    """
    cell = new_state(dict(model.named_parameters()), optimizer=optimizer, lr=lr, K=iters)
    F_gd = reference_objective(problem, T, step_scale, update)
    rows, k = [], 0
    while cell.status == "running":
        rows.append(iteration(k, [cell], model, problem, F_gd, T=T, loss=loss, record=[True], saturation_tol=saturation_tol,
                              truncation=truncation)[0].metrics)
        k += 1
    frame = pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="iteration"))
    return Fit(frame, cell.status, k - 1 if cell.status == "diverged" else None)


def recorded_unroll(model: nn.Module, problem: Problem, T: int, X0: torch.Tensor | None = None, state=None):
    """The unroll of ``model`` from ``X0`` (default X_0): the MLP's records its wide layer's active share; another
    learner continues from its ``state`` (default: a fresh one)."""
    return unroll(model, [dict(model.named_parameters())], problem, T, X0=X0, state=state, record=True)


@torch.no_grad()
def evaluate(model: nn.Module, problem: Problem, T_test: int) -> Curve:
    """Run the (trained) model for T_test steps on ``problem`` (e.g. held-out instances), far past its
    training horizon; the curve stops where an iterate stops being finite."""

    def step(t, carry):
        traj = recorded_unroll(model, problem, 1, *carry)
        return traj.X[-1], (traj.X[-1], getattr(traj, "state", None))

    return iterate(problem, T_test, step, (problem.X0(), None))


def sgd_snapshots(model: MathL2O, problem: Problem, T: int, lr: float, iters: int, *,
                  keep=None) -> tuple[np.ndarray, dict[int, dict]]:
    """Plain full-batch SGD on L(W) = F(X_T(W)) (loss "last"): W_{k+1} = W_k − η∇̃L(W_k), ∇̃ the gradient of the
    model's mode (detached BPTT when ``model.detach``), by the one trainer (:func:`ntkcheck.engine.trainer.iteration`,
    ``on_divergence="skip"``: a non-finite loss or gradient leaves W unchanged and the iterations go on).

    Returns the losses L_0..L_iters and the weights at the iterations in ``keep`` (default: all), each a
    dict name → tensor. The model is not modified."""
    lr = _positive("lr", lr)
    m = with_mode(model, "detached" if model.detach else "true")
    keep = set(range(iters + 1)) if keep is None else set(keep)
    cell = new_state(dict(m.named_parameters()), optimizer="sgd", lr=lr, K=iters, on_divergence="skip")
    F_gd = gd_objective(problem, T)
    losses, snaps = [], {}
    for k in range(iters + 1):
        if k in keep:
            snaps[k] = {name: p.detach().clone() for name, p in m.named_parameters()}
        losses.append(iteration(k, [cell], m, problem, F_gd, T=T, loss="last", record=[False], saturation_tol=0.0)[0].loss)
    return np.array(losses), snaps
