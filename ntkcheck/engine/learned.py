"""Training and running any learned optimiser on the QP family, in memory.

A learned optimiser here is an ``nn.Module`` with ``unroll(problem, T, X0=…)`` returning the iterates
X_0..X_T: ours (:class:`ntkcheck.models.math_l2o.MathL2O`), Liu et al.'s LSTM (:mod:`.math_l2o`) and LISTA-CPSS
(:mod:`.lista`); the last two also take and return a ``state`` to continue from.

:func:`fit` is the sweep-sized sibling of :func:`ntkcheck.engine.training.train`, which stays the trainer of
record for single runs (run folder, checkpoints, resume). It shares its pieces: the meta optimiser,
the training loss (last / mean / weighted, summed over instances), the finiteness check and the long
metrics format. Metrics of iteration k are measured at W_k before its update, so k = 0 is the
untrained model. A non-finite loss or gradient ends the run: it is recorded (``diverged_at``), not
raised, since which (η, T) runs explode is what the paper's Fig. 2 is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ntkcheck.engine.training import grads_finite, meta_optimizer, training_loss
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.qp import Problem, objective
from ntkcheck.problems.solvers import Curve, gd, iterate


@dataclass
class Fit:
    """Metrics (one row per iteration, index ``iteration``), status, first diverged iteration."""

    metrics: pd.DataFrame
    status: str  # "completed" or "diverged"
    diverged_at: int | None

    def last(self, quantity: str) -> float:
        """The quantity at the last recorded iteration."""
        return float(self.metrics[quantity].iloc[-1])


def unroll(model: nn.Module, problem: Problem, T: int, X0=None, state=None):
    """(iterates X_0..X_T, state to continue from); ours carries no state beyond X."""
    if isinstance(model, MathL2O):
        return model.unroll(problem, T, X0=X0).X, None
    traj = model.unroll(problem, T, X0=X0, state=state)
    return traj.X, traj.state


def curve_metrics(problem: Problem, X: list[torch.Tensor], F_gd: torch.Tensor) -> dict[str, float]:
    """F(X_T), gain = (F_GD(X_T) − F(X_T))/F_GD(X_T), gain_mean = the same ratio averaged over t = 1..T."""
    with torch.no_grad():
        F_t = torch.stack([objective(problem, x) for x in X[1:]])
        return {"F_T": float(F_t[-1]), "gain": float((F_gd[-1] - F_t[-1]) / F_gd[-1]),
                "gain_mean": float(((F_gd - F_t) / F_gd).mean())}


def fit(model: nn.Module, problem: Problem, T: int, *, lr: float, iters: int, optimizer: str = "sgd",
        loss: str = "last", truncation: int | None = None, step_scale: float = 1.0) -> Fit:
    """K = ``iters`` meta-iterations of ``model`` on the fixed training set ``problem``.

    Full BPTT through all T steps, or, with ``truncation`` = S, truncated BPTT as Liu et al. train:
    the unroll is cut into segments of S steps, each with its own loss and optimiser step, and the
    iterate and the LSTM state are detached between segments. F_GD comes from GD with step s/β_i.
    """
    opt = meta_optimizer(optimizer, model.parameters(), lr)
    F_gd = gd(problem, T, step_scale=step_scale).F[1:]
    rows, diverged_at = [], None
    for k in range(iters + 1):
        X, finite, losses = _iteration(model, opt, problem, T, loss, truncation or T, update=k < iters)
        metrics = {"loss": sum(losses) / len(losses), **curve_metrics(problem, X, F_gd)}
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
        opt.zero_grad(set_to_none=False)
        X, state = unroll(model, problem, min(S, T - start), X0, state)
        seg_loss = training_loss(problem, _Path(X), loss)
        losses.append(float(seg_loss.detach()))
        X_all += [x.detach() for x in X[1:]]
        if not torch.isfinite(seg_loss):
            return X_all + [X_all[-1]] * (T + 1 - len(X_all)), False, losses
        seg_loss.backward()
        if not grads_finite(model):
            return X_all + [X_all[-1]] * (T + 1 - len(X_all)), False, losses
        if update:
            opt.step()
        X0, state = X[-1].detach(), None if state is None else _detach(state)
    return X_all, True, losses


@dataclass
class _Path:
    """The one field of a trajectory that :func:`ntkcheck.engine.training.training_loss` reads."""

    X: list[torch.Tensor]


def _detach(state):
    return state.detach() if hasattr(state, "detach") else state


@torch.no_grad()
def evaluate(model: nn.Module, problem: Problem, T_test: int) -> Curve:
    """Run the (trained) model for T_test steps on ``problem`` (e.g. held-out instances), far past its
    training horizon; the curve stops where an iterate stops being finite."""

    def step(t, carry):
        X, state = unroll(model, problem, 1, carry[0], carry[1])
        return X[-1], (X[-1], state)

    return iterate(problem, T_test, step, (problem.X0(), None))
