"""The one trainer: C ≥ 1 runs ("cells") trained together, one meta-iteration at a time.

A cell's state is a :class:`TrainState`: its weights W_k (leaf tensors by name), its torch optimiser at its own η,
W_0, its last iteration K, its divergence policy and status. :func:`iteration` takes every cell from W_k to W_{k+1}:

    unroll     X_0..X_T(W_k) of every cell at once (:func:`unroll`): one cell through the learner's own call, several
               with their weights stacked on a leading cell axis (the learners of :data:`BATCHED`)
    loss       the training loss per cell (:func:`ntkcheck.problems.meta.training_loss`)
    backward   of the finite losses' sum, with the finite check per cell (:func:`~ntkcheck.problems.meta.backward`);
               the cells do not interact, so each gets its own gradient
    measure    the metrics of the cells asked for, at W_k with the gradients attached (:func:`measure`)
    step       each finite cell's optimiser step, on every iteration but its last (:func:`~ntkcheck.problems.meta.updates`)
    status     the divergence policy (:func:`~ntkcheck.problems.meta.run_status`)

With ``truncation`` S < T (Liu et al.'s truncated BPTT, one cell) the unroll is cut into segments of S steps, each
with its own loss, backward and step, the iterate and the learner's state detached between segments; the recorded
loss is the mean of the segments' losses, and the other metrics are measured on the whole path before the last
segment's step.

Every training loop of ntkcheck is this function in a ``for`` loop: the single run
(:func:`ntkcheck.engine.training.train`: one cell, with checkpoints, probes and callbacks around it), a sweep's
batches (:mod:`ntkcheck.apps.sweep.batched`), the learned baselines (:func:`ntkcheck.engine.learned.fit`) and
:func:`ntkcheck.engine.learned.sgd_snapshots`. One cell's numbers are its single run's bit for bit; in a batch of
several, the stacked products round otherwise (1e-12 relative in float64, 1e-4 in float32 on tiny cells: tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from ntkcheck.models.math_l2o import MathL2O, Trajectory
from ntkcheck.problems.meta import backward, meta_optimizer, run_status, step_metric_tensors, training_loss, updates

BATCHED = ("mlp",)  # the learners (TrainConfig.model) whose unroll takes a leading cell axis


@dataclass
class TrainState:
    """One cell's training state. ``weights``: W_k, leaf tensors by name (for a single run, the model's own
    parameters), which its ``optimizer`` updates in place; ``W0``: W_0 (CPU copies); ``K``: its last iteration;
    ``status``: running, completed or diverged; ``skipped``: the iterations that took no step (not finite)."""

    weights: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    W0: dict[str, torch.Tensor]
    K: int
    on_divergence: str = "stop"
    status: str = "running"
    skipped: int = 0


def new_state(weights: dict[str, torch.Tensor], *, optimizer: str, lr: float, K: int,
              on_divergence: str = "stop") -> TrainState:
    """The state at k = 0 of a cell starting from ``weights`` (leaf tensors, trained in place): a fresh
    :func:`~ntkcheck.problems.meta.meta_optimizer` and W_0 copied to the CPU."""
    return TrainState(weights, meta_optimizer(optimizer, list(weights.values()), lr),
                      {k: v.detach().cpu().clone() for k, v in weights.items()}, K, on_divergence)


@dataclass(frozen=True)
class Outcome:
    """What iteration k gave one cell: its training loss, whether it and every gradient were finite, and the metrics
    measured at W_k (None where none were asked for)."""

    loss: float
    finite: bool
    metrics: dict | None


def unroll(model, weights: list[dict[str, torch.Tensor]], problem, T: int, *, X0=None, state=None,
           record: bool = False):
    """X_0..X_T of every cell: ``model`` called (:func:`torch.func.functional_call`) with one cell's weights, or with
    the cells' weights stacked on a leading axis (C, …) on ``problem``'s instances (shared, or stacked per cell). The
    MLP records its wide layer's active share when ``record``; another learner continues from ``state``."""
    params = weights[0] if len(weights) == 1 else {n: torch.stack([w[n] for w in weights]) for n in weights[0]}
    kwargs = {"record_active": record} if isinstance(model, MathL2O) else {"state": state}
    if X0 is not None:
        kwargs["X0"] = X0
    return functional_call(model, params, (problem, T), kwargs)


def weight_metrics(params: dict[str, torch.Tensor], W0: dict) -> dict[str, float]:
    """Per layer of the weights ``params`` (by name, gradients attached): ‖∇W_ℓ‖_F, ‖W_ℓ − W_ℓ⁰‖_F and, where
    ‖W_ℓ⁰‖ > 0, ‖W_ℓ − W_ℓ⁰‖_F / ‖W_ℓ⁰‖_F."""
    out = {}
    with torch.no_grad():
        for name, p in params.items():
            out[f"grad_norm/{name}"] = float(p.grad.norm()) if p.grad is not None else 0.0
            drift = float((p - W0[name].to(p)).norm())
            out[f"drift/{name}"] = drift
            norm0 = float(W0[name].norm())
            if norm0 > 0:
                out[f"drift_rel/{name}"] = drift / norm0
    return out


def measure(states: list[TrainState], which: list[int], problem, traj, losses: list[float], finite: list[bool],
            F_gd: torch.Tensor, tol: float) -> dict[int, dict]:
    """The metrics at W_k of the cells ``which`` (indices into ``states``): the training loss,
    :func:`~ntkcheck.problems.meta.step_metric_tensors` (against ``F_gd``, saturation tolerance ``tol``),
    :func:`weight_metrics` and ``diverged`` (1 where the loss or a gradient was not finite)."""
    if not which:
        return {}
    tensors = step_metric_tensors(problem, traj, F_gd, tol)
    rows = torch.stack(list(tensors.values()), dim=-1).reshape(len(states), -1).tolist()
    return {j: {"loss": losses[j], **dict(zip(tensors, rows[j])), **weight_metrics(states[j].weights, states[j].W0),
                "diverged": 0.0 if finite[j] else 1.0} for j in which}


def iteration(k: int, states: list[TrainState], model, problem, F_gd: torch.Tensor, *, T: int, loss: str,
              record: list[bool], saturation_tol: float, truncation: int | None = None) -> list[Outcome]:
    """Iteration k of the running cells ``states`` (module docstring) on ``problem`` (their instances: shared, or
    stacked per cell in their order) against GD's F_GD(X_1..X_T) ``F_gd``. ``record[j]``: whether cell j's metrics
    are measured (a cell whose loss or gradient is not finite is measured anyway). Updates each state (weights,
    optimiser, status, skipped) and returns one :class:`Outcome` per cell."""
    if truncation is not None and truncation < T:
        return [_truncated(k, states[0], model, problem, F_gd, T=T, loss=loss, S=truncation, tol=saturation_tol)]
    for s in states:
        s.optimizer.zero_grad(set_to_none=False)
    weights = [s.weights for s in states]
    traj = unroll(model, weights, problem, T, record=any(record))
    value = training_loss(problem, traj, loss)
    finite = backward(value, [w.values() for w in weights])
    losses = value.detach().reshape(-1).tolist()
    which = [j for j in range(len(states)) if record[j] or not finite[j]]
    if which and not any(record) and isinstance(model, MathL2O):  # a divergence to record: unroll again with the share
        with torch.no_grad():
            traj = unroll(model, weights, problem, T, record=True)
    metrics = measure(states, which, problem, traj, losses, finite, F_gd, saturation_tol)
    for j, s in enumerate(states):
        _step(k, s, losses[j], finite[j])
    return [Outcome(losses[j], finite[j], metrics.get(j)) for j in range(len(states))]


def _step(k: int, s: TrainState, loss: float, finite: bool, *, step: bool = True) -> None:
    """Cell ``s`` after iteration k: its optimiser step (if finite, not its last iteration and ``step``), the skipped
    count and the status by the divergence policy."""
    if step and finite and updates(k, s.K):
        s.optimizer.step()
    s.skipped += int(not finite)
    s.status = run_status(k, s.K, loss, finite, s.on_divergence)


def _truncated(k: int, s: TrainState, model, problem, F_gd, *, T: int, loss: str, S: int, tol: float) -> Outcome:
    """Iteration k of one cell with truncated BPTT (module docstring): segments of S steps, each stepped at once."""
    path, X0, state, losses, finite = Trajectory(X=[problem.X0()], P=[]), None, None, [], True
    for start in range(0, T, S):
        s.optimizer.zero_grad(set_to_none=False)
        traj = unroll(model, [s.weights], problem, min(S, T - start), X0=X0, state=state)
        value = training_loss(problem, traj, loss)
        finite = backward(value, [s.weights.values()])[0]
        losses.append(float(value.detach()))
        path.X += [x.detach() for x in traj.X[1:]]
        path.P += [p.detach() for p in traj.P]
        last = start + S >= T or not finite
        if last:
            break
        if updates(k, s.K):
            s.optimizer.step()
        X0, state = traj.X[-1].detach(), _detached(getattr(traj, "state", None))
    path.X += [path.X[-1]] * (T + 1 - len(path.X))  # a non-finite segment ends the path where it stopped
    mean = sum(losses) / len(losses)
    metrics = measure([s], [0], problem, path, [mean], [finite], F_gd, tol)[0]
    _step(k, s, mean, finite)
    return Outcome(mean, finite, metrics)


def _detached(state):
    return state.detach() if hasattr(state, "detach") else state
