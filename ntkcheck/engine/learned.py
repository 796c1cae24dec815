"""Training and running any learned optimiser on the QP family, in memory.

A learned optimiser here is an ``nn.Module`` with ``unroll(problem, T, X0=…)`` returning the iterates
X_0..X_T: ours (:class:`ntkcheck.models.math_l2o.MathL2O`), Liu et al.'s LSTM (:mod:`.math_l2o`) and LISTA-CPSS
(:mod:`.lista`); the last two also take and return a ``state`` to continue from.

:func:`fit` is the sweep-sized sibling of :func:`ntkcheck.engine.training.train`, which stays the trainer of
record for single runs (run folder, checkpoints, resume). Both run the same meta-iteration
(:func:`ntkcheck.problems.meta.meta_step`: unroll, training loss, backward, finite check, optimiser step) with the
same unroll (:func:`ntkcheck.engine.training.recorded_unroll`) and record F_T, gain and gain_mean by the same
definition (:mod:`ntkcheck.problems.meta`). Metrics of iteration k are measured at W_k before its update, so k = 0
is the untrained model. A non-finite loss or gradient ends the run: it is recorded (``diverged_at``), not
raised, since which (η, T) runs explode is what the paper's Fig. 2 is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ntkcheck.engine.training import recorded_unroll
from ntkcheck.problems.meta import gain_metrics, gd_objective, meta_optimizer, meta_step
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
        loss: str = "last", truncation: int | None = None, step_scale: float = 1.0) -> Fit:
    """K = ``iters`` meta-iterations of ``model`` on the fixed training set ``problem``.

    Full BPTT through all T steps, or, with ``truncation`` = S, truncated BPTT as Liu et al. train:
    the unroll is cut into segments of S steps, each with its own loss and optimiser step
    (:func:`ntkcheck.problems.meta.meta_step`), and the iterate and the LSTM state are detached between segments.
    ``loss`` is the mean of the segments' losses; F_T, gain and gain_mean (:func:`ntkcheck.problems.meta.gain_metrics`)
    are measured on the whole unroll against GD with step s/β_i.
    """
    opt = meta_optimizer(optimizer, model.parameters(), lr)
    F_gd = gd_objective(problem, T, step_scale)
    rows, diverged_at = [], None
    for k in range(iters + 1):
        X, finite, losses = _iteration(model, opt, problem, T, loss, truncation or T, update=k < iters)
        metrics = {"loss": sum(losses) / len(losses)}
        metrics |= {name: float(v) for name, v in gain_metrics(problem, X, F_gd).items()}
        metrics["diverged"] = 0.0 if finite else 1.0
        rows.append(metrics)
        if not finite:
            diverged_at = k
            break
    frame = pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="iteration"))
    return Fit(frame, "completed" if diverged_at is None else "diverged", diverged_at)


def _iteration(model, opt, problem, T, loss, S, *, update):
    """One meta-iteration in segments of S steps: ([X_0..X_T] detached, all finite?, segment losses)."""
    X_all, X0, state, losses = [problem.X0()], None, None, []
    for start in range(0, T, S):
        step = meta_step(opt, problem, loss, lambda: recorded_unroll(model, problem, min(S, T - start), X0, state),
                         update=update)
        losses.append(step.loss)
        X_all += [x.detach() for x in step.traj.X[1:]]
        if not step.finite:
            return X_all + [X_all[-1]] * (T + 1 - len(X_all)), False, losses
        X0, state = step.traj.X[-1].detach(), _detach(getattr(step.traj, "state", None))
    return X_all, True, losses


def _detach(state):
    return state.detach() if hasattr(state, "detach") else state


@torch.no_grad()
def evaluate(model: nn.Module, problem: Problem, T_test: int) -> Curve:
    """Run the (trained) model for T_test steps on ``problem`` (e.g. held-out instances), far past its
    training horizon; the curve stops where an iterate stops being finite."""

    def step(t, carry):
        traj = recorded_unroll(model, problem, 1, *carry)
        return traj.X[-1], (traj.X[-1], getattr(traj, "state", None))

    return iterate(problem, T_test, step, (problem.X0(), None))
