"""Training a batch of cells as one: the one trainer (:func:`ntkcheck.engine.trainer.iteration`) with C cells.

Cells that agree on every field but the per-cell ones (:func:`batch_key`) run together: each cell is a
:class:`~ntkcheck.engine.trainer.TrainState` (its own W_0, optimiser at its own η, K and divergence policy), and every
iteration unrolls them at once, their weights stacked on a leading cell axis (the learners of
:data:`~ntkcheck.engine.trainer.BATCHED`, the MLP). Cells drawn from the same data seed share one problem: ∇F is then
one matrix product per instance over all their iterates.

A cell leaves the batch when it ends: at its K, or at a non-finite loss or gradient with ``on_divergence="stop"``. A
batch of one cell is its single run bit for bit (the trainer calls the learner as the single run does; tested for the
MLP and the LSTM, whose cells are always batches of one). In a batch of several, the stacked products round
otherwise, so a cell's last bits depend on the batch it ran in (tested: 1e-12 relative in float64 and 1e-4 in float32
on tiny cells; a cell at an unstable step amplifies the difference). The same batch gives the same bits, so a sweep
fixes its batches once (:func:`plan`, recorded by :mod:`ntkcheck.apps.sweep.run`).

With the spec's ``linearised``, each cell that ends also trains its first-order Taylor model X(W_0) + J(W − W_0)
alone (:func:`ntkcheck.engine.linearised.train_linearised`: the one trainer, the cell's loss, optimiser, η and K, from
its W_0 on its problem, the gradient's Jacobian the learner's own mode): its loss L^lin_k joins the curve as
``loss_linearised`` at the recorded iterations, and the cell's row gets :func:`linearised_summary`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ntkcheck.apps.sweep.probing import probe_cell, wide_features
from ntkcheck.apps.sweep.spec import Cell, SweepSpec
from ntkcheck.build.experiment import build_model, initial_weights, make_problem, resolve_device
from ntkcheck.config import TrainConfig
from ntkcheck.engine.linearised import train_linearised
from ntkcheck.engine.trainer import BATCHED, iteration, new_state
from ntkcheck.problems.base import Problem, stack
from ntkcheck.problems.meta import reference_objective

# The fields a batch handles per cell: each cell draws its own W_0 (e, init, init_seed, init_file, draw) and data
# (seed, draw), steps with its own optimizer at its own η, ends at its own K and by its own on_divergence; a sweep
# writes no checkpoints (checkpoint_every). Cells batched together agree on every other field (:func:`batch_key`).
PER_CELL_FIELDS = ("e", "lr", "iters", "seed", "init_seed", "init", "init_file", "draw", "on_divergence",
                   "checkpoint_every")


@dataclass
class CellRun:
    """One cell's outcome: ``status`` completed, diverged or failed (``error`` says why); ``curve``: the training
    metrics at the recorded iterations (index ``iteration``, the columns of :func:`ntkcheck.train`'s metrics);
    ``probes``: one dict per probed iteration; ``seconds``: its share of the batch's training time; ``summary``: more
    columns of its cells.parquet row (the linearised run's, :func:`linearised_summary`)."""

    cell: Cell
    status: str
    curve: pd.DataFrame
    probes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    summary: dict = field(default_factory=dict)


def batch_key(cfg: TrainConfig) -> tuple:
    """What cells batched together share: every field of ``cfg`` but :data:`PER_CELL_FIELDS`, so that a field added
    to the config splits batches by default instead of being taken from a batch's first cell."""
    return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in PER_CELL_FIELDS)


def data_key(cfg: TrainConfig) -> tuple:
    """Cells with the same data key train on the same instances; cells drawn differently (``draw``) never share."""
    return cfg.seed, cfg.problem_file, cfg.N, cfg.d, cfg.b, cfg.draw


def plan(cells: list[Cell], batch_size: int) -> list[list[Cell]]:
    """The batches, at most ``batch_size`` cells each, of equal :func:`batch_key`: the cells of one data seed together
    (they share their problem), and the groups smaller than half a batch merged (a problem per cell); then every cell
    of a learner not in :data:`BATCHED` as a batch of one. A function of the cells in their order and ``batch_size``
    alone."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in (c for c in cells if c.config.model in BATCHED):
        groups.setdefault((batch_key(cell.config), str(data_key(cell.config))), []).append(cell)
    out, small = [], {}
    for (key, _), group in groups.items():
        chunks = [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
        for chunk in chunks:
            (small.setdefault(key, []).extend(chunk) if 2 * len(chunk) < batch_size else out.append(chunk))
    for group in small.values():
        out += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return out + [[c] for c in cells if c.config.model not in BATCHED]


def failed(cell: Cell, error: str) -> CellRun:
    return CellRun(cell, "failed", pd.DataFrame(index=pd.RangeIndex(0, name="iteration")), error=error)


class _Problems:
    """The batch's training instances: one shared :class:`~ntkcheck.problems.base.Problem`, or one per cell stacked on a
    leading cell axis (:func:`~ntkcheck.problems.base.stack`); :meth:`select` gives those of the active cells, :meth:`of`
    one cell's."""

    def __init__(self, configs: list[TrainConfig], device, dtype):
        keys = [data_key(c) for c in configs]
        made = {key: make_problem(c).to(device=device, dtype=dtype) for key, c in zip(keys, configs)}
        self.shared = made[keys[0]] if len(made) == 1 else None
        self.each = [made[key] for key in keys]
        self.stacked = stack(self.each) if self.shared is None else None
        c0 = configs[0]
        F_gd = {key: reference_objective(made[key], c0.T, c0.step_scale, c0.update) for key in made}
        self.F_gd = torch.stack([F_gd[key] for key in keys])  # (C, T)

    def select(self, index: torch.Tensor) -> Problem:
        return self.shared if self.shared is not None else self.stacked.select(index)

    def of(self, i: int) -> Problem:
        return self.each[i]


def run_batch(cells: list[Cell], spec: SweepSpec, on_done, progress=None) -> None:
    """Train ``cells`` (one :func:`batch_key`) together; ``on_done(CellRun)`` as each ends, ``progress(n)`` after
    every iteration with the number of cells it advanced. An error fails the cells still running, not the sweep.
    Cells of a learner not in :data:`~ntkcheck.engine.trainer.BATCHED` run one after another, each a batch of one."""
    cfg0 = cells[0].config
    if cfg0.model not in BATCHED and len(cells) > 1:
        for cell in cells:
            run_batch([cell], spec, on_done, progress)
        return
    device, dtype = resolve_device(cfg0.device), getattr(torch, cfg0.dtype)
    model = build_model(cfg0, device=device, dtype=dtype)  # the architecture; the weights come per call
    state = [_CellState(cell, device, dtype, spec) for cell in cells]
    active = list(range(len(cells)))
    try:
        data = _Problems([c.config for c in cells], device, dtype)
        k = 0
        while active:
            started = time.perf_counter()
            for i in active:
                state[i].probe(k, data.of(i))
            index = torch.tensor(active)
            F_gd = data.F_gd[index] if data.shared is None else data.F_gd[0]
            outcomes = iteration(k, [state[i].train for i in active], model, data.select(index), F_gd, T=cfg0.T,
                                 loss=cfg0.loss, record=[state[i].records(k) for i in active],
                                 saturation_tol=cfg0.saturation_tol)
            share = (time.perf_counter() - started) / len(active)
            for i, outcome in zip(active, outcomes):
                state[i].seconds += share
                state[i].keep(k, outcome)
            if progress is not None:
                progress(len(active))
            ended = [i for i in active if state[i].train.status != "running"]
            for i in ended:
                on_done(state[i].result(problem=data.of(i)))
            active = [i for i in active if i not in ended]
            k += 1
    except Exception as err:  # noqa: BLE001 (a cell's failure is recorded, not raised: the sweep goes on)
        for i in active:
            on_done(state[i].result(f"{type(err).__name__}: {err}"))


def _records(k: int, every: int, K: int) -> bool:
    """Whether iteration k is on a curve recorded every ``every`` iterations up to K."""
    return k % every == 0 or k == K


def _curve(rows: dict[int, dict]) -> pd.DataFrame:
    """The recorded rows (iteration → metrics) as a curve indexed by ``iteration``."""
    curve = pd.DataFrame.from_dict(rows, orient="index")
    curve.index = pd.Index(curve.index, name="iteration")
    return curve


class _Probes:
    """One cell's probes (:func:`probe_cell`) at the spec's iterations, each at W_k before iteration k (as
    ``verify``'s): ``rows``, one dict per probe; K_0 and G_0 (the wide layer's features at W_0, :func:`wide_features`)
    are kept for the drift of later probes."""

    def __init__(self, cfg: TrainConfig, spec: SweepSpec):
        self.cfg, self.method, self.at = cfg, spec.probe_method, set(spec.probe_iterations(cfg.iters))
        self.rows, self.K0, self.G0 = [], None, None

    def __call__(self, k: int, problem, weights: dict) -> None:
        if k in self.at:
            detached = {name: w.detach() for name, w in weights.items()}
            if k == 0:
                self.G0 = _finite_features(self.cfg, problem, detached)
            row, K = probe_cell(self.cfg, problem, detached, k, self.method, self.K0, self.G0)
            self.rows.append(row)
            if k == 0:
                self.K0 = K


def _finite_features(cfg: TrainConfig, problem, weights: dict):
    """G_0 (:func:`wide_features`), None where it is not finite (then the probe reports the overflow)."""
    G = wide_features(cfg, problem, weights)
    return G if G is not None and np.isfinite(G).all() else None


def linearised_loss(cfg: TrainConfig, W0: dict, problem, device, dtype) -> np.ndarray:
    """L^lin_0..L^lin_K of the cell ``cfg`` (:func:`~ntkcheck.engine.linearised.train_linearised` from ``W0`` on its
    ``problem``, its loss, optimiser, η and K; NaN after a non-finite loss or gradient)."""
    model = build_model(cfg, {k: v.to(device=device, dtype=dtype) for k, v in W0.items()}, device=device, dtype=dtype)
    return train_linearised(model, problem, cfg.T, lr=cfg.lr, iters=cfg.iters, loss=cfg.loss,
                            optimizer=cfg.optimizer).loss


def linearised_summary(curve: pd.DataFrame, lin: np.ndarray, K: int) -> dict:
    """The cell's linearised columns from its curve (``loss`` L_k at the recorded iterations) and L^lin_0..L^lin_K
    ``lin``: ``linearised_loss_final`` = L^lin_K; ``linearised_gap_final`` = |L_K − L^lin_K|/|L_K| (NaN where the
    cell did not reach K finite); ``linearised_gap_max`` = max over the recorded k ≤ K where both are finite of
    |L_k − L^lin_k|/|L_k| (NaN where there is none)."""
    k = curve.index.to_numpy()
    real, ours = curve["loss"].to_numpy(float), lin[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(real - ours) / np.abs(real)
    finite = np.isfinite(gap)
    final = gap[-1] if len(k) and k[-1] == K and finite[-1] else math.nan
    return {"linearised_loss_final": float(lin[K]), "linearised_gap_final": float(final),
            "linearised_gap_max": float(gap[finite].max()) if finite.any() else math.nan}


class _CellState:
    """One cell inside a batch: its training state (:class:`~ntkcheck.engine.trainer.TrainState`), records and probes."""

    def __init__(self, cell: Cell, device, dtype, spec: SweepSpec):
        self.cell, self.cfg = cell, cell.config
        weights = {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in initial_weights(self.cfg).items()}
        self.train = new_state(weights, optimizer=self.cfg.optimizer, lr=self.cfg.lr, K=self.cfg.iters,
                               on_divergence=self.cfg.on_divergence)
        self.every = spec.record_step(self.cfg.iters)
        self.probes = _Probes(self.cfg, spec)
        self.linearised, self.device, self.dtype = spec.linearised, device, dtype
        self.rows = {}
        self.seconds = 0.0

    def records(self, k: int) -> bool:
        return _records(k, self.every, self.cfg.iters)

    def probe(self, k: int, problem) -> None:
        self.probes(k, problem, self.train.weights)

    def keep(self, k: int, outcome) -> None:
        """Iteration k's metrics, where they were measured (a recorded iteration, or one that was not finite)."""
        if outcome.metrics is not None:
            self.rows[k] = outcome.metrics

    def result(self, error: str | None = None, problem=None) -> CellRun:
        """The cell's run; with the spec's ``linearised`` (and ``problem``, its instances), its Taylor model trained
        (:func:`linearised_loss`): an error there fails the cell alone."""
        status = "failed" if error else self.train.status
        curve = _curve(self.rows)
        if len(curve) and "active_share" not in curve:  # no wide layer: NaN, so the cells row's final value is NaN
            curve = curve.assign(active_share=math.nan)
        summary = {}
        if self.linearised and not error and len(curve):
            started = time.perf_counter()
            try:
                lin = linearised_loss(self.cfg, self.train.W0, problem, self.device, self.dtype)
            except Exception as err:  # noqa: BLE001 (this cell fails, the batch goes on)
                return CellRun(self.cell, "failed", curve, self.probes.rows, self.seconds,
                               f"linearised training: {type(err).__name__}: {err}")
            curve = curve.assign(loss_linearised=lin[curve.index.to_numpy()])
            summary = linearised_summary(curve, lin, self.cfg.iters) | {
                "linearised_seconds": time.perf_counter() - started}
        return CellRun(self.cell, status, curve, self.probes.rows, self.seconds, error, summary)
