"""Training Math-L2O: full-batch meta-gradient descent on a fixed set of N instances.

Iteration k (k = 0..K) unrolls T steps with the weights W_k, evaluates the training loss, backpropagates
through all T steps (BPTT) and, for k < K, updates W_{k+1} = W_k − η ∇̃F(W_k) (SGD) or takes an Adam
step. ∇̃ is the true gradient when ``detach=False`` and the detached-input gradient otherwise. Every
metric recorded at iteration k is measured at W_k, before its update, so iteration 0 is the untrained
model (GD under the deterministic initialisation).

Training losses, all summed over instances (:func:`ntkcheck.problems.meta.training_loss`, where they and the
recorded metrics are defined):
    last      F(X_T)
    mean      (1/T) Σ_{t=1..T} F(X_t)
    weighted  Σ_t t·F(X_t) / Σ_t t

:func:`train` runs in memory when ``out`` is None; with a folder it checkpoints, resumes and writes the run
folder (:mod:`ntkcheck.results.runfolder`).

Any :class:`~ntkcheck.models.base.Learner` trains here (``cfg.model``: the MLP, or Liu et al.'s LSTM): the weights
are its named parameters, checkpointed as its ``state_dict``. ``active_share`` (the wide layer's active ReLUs) exists
for the MLP only: the LSTM's runs have no such column, and ``drift``/``grad_norm`` are per named parameter
(``lstm.weight_ih_l0``, …).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ntkcheck import resources
from ntkcheck.build.experiment import build_model, setup
from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.engine.trainer import TrainState, iteration
from ntkcheck.models.base import Learner
from ntkcheck.problems import qp as problems
from ntkcheck.problems.meta import meta_optimizer, reference_objective
from ntkcheck.problems.solvers import optimum_value
from ntkcheck.problems.meta import training_loss  # noqa: F401 - re-exported: tests import it from here
from ntkcheck.results import io, runfolder
from ntkcheck.results.runfolder import CHECKPOINT, Interrupted

STATE = ("k", "params", "optimizer", "W0", "status", "skipped", "seconds", "files")  # a checkpoint's keys


@dataclass(frozen=True)
class RunResult:
    """A finished training run.

    ``metrics``: one row per iteration k = 0..K (index ``iteration``), one column per quantity measured at W_k
    before its update (module docstring); ``weights``: the final W (CPU tensors by name), ``W0`` the initial
    ones; ``summary``: status and headline numbers (:func:`summarize`); ``folder``: the run folder, or None for
    a run in memory."""

    config: TrainConfig
    status: str  # "completed" or "diverged"
    metrics: pd.DataFrame
    summary: dict
    weights: dict[str, torch.Tensor] = field(repr=False)
    W0: dict[str, torch.Tensor] = field(repr=False)
    folder: Path | None = None

    def __repr__(self) -> str:
        s = self.summary
        return (f"RunResult(status={self.status!r}, iterations={len(self.metrics) - 1}, "
                f"F_T {s.get('F_T_initial', float('nan')):.6g} → {s.get('F_T_final', float('nan')):.6g}, "
                f"gain={s.get('gain_final', float('nan')):.4g}, "
                f"folder={None if self.folder is None else str(self.folder)!r})")

    def _repr_html_(self) -> str:
        """The summary, then the first and last iterations of the metrics: a table, not arrays."""
        head = pd.DataFrame({"value": {k: v for k, v in self.summary.items() if not isinstance(v, (list, dict))}})
        return head.to_html() + pd.concat([self.metrics.head(3), self.metrics.tail(3)]).to_html()

    def model(self, *, device=None, dtype=None) -> Learner:
        """The trained model (:func:`ntkcheck.build.experiment.build_model` with the final weights)."""
        return build_model(self.config, self.weights, device=device, dtype=dtype)


# -- one iteration: :func:`ntkcheck.engine.trainer.iteration` with one cell ----------------------------------------


def cell_state(cfg: TrainConfig, model: Learner, optimizer, W0: dict, status: str = "running",
               skipped: int = 0) -> TrainState:
    """The single run as the trainer's one cell: the model's own parameters, trained in place by ``optimizer``."""
    return TrainState(dict(model.named_parameters()), optimizer, W0, cfg.iters, cfg.on_divergence, status, skipped)


def run_iteration(cfg: TrainConfig, model: Learner, cell: TrainState, problem, F_gd, k: int) -> dict[str, float]:
    """Iteration k of the single run (:func:`ntkcheck.engine.trainer.iteration`, every metric recorded): the loss,
    :func:`~ntkcheck.problems.meta.step_metrics` and :func:`~ntkcheck.engine.trainer.weight_metrics` at W_k."""
    return iteration(k, [cell], model, problem, F_gd, T=cfg.T, loss=cfg.loss, record=[True],
                     saturation_tol=cfg.saturation_tol)[0].metrics


# -- the run ----------------------------------------------------------------------------------------


def train(cfg: TrainConfig, out: str | Path | None = None, *, problem: problems.Problem | None = None,
          model: Learner | None = None, resume: bool = False, callback=None, probe=None,
          max_memory: float | None = None) -> RunResult:
    """Train the learner of ``cfg`` (Math-L2O's MLP, or the LSTM: ``cfg.model``) for K = ``cfg.iters`` iterations.

    ``problem`` and ``model`` replace the ones the config describes (:func:`ntkcheck.build.experiment.setup`; a
    copy of the model is trained, the caller's keeps W_0). With ``out`` None the run stays in memory; with a folder it is written there
    (``<out>.partial`` until it ends, then renamed), checkpointed at k = 0 and every ``checkpoint_every``
    iterations, and on SIGINT/SIGTERM the last completed iteration is checkpointed and :class:`Interrupted`
    raised; ``resume=True`` continues it (:func:`resume_run` needs only the folder) and ends with the numbers an
    uninterrupted run would have. ``callback(k, metrics)`` is called after iteration k is recorded;
    ``probe(k, model)`` before it runs, with the model at W_k (it must not change the model). Before anything is
    allocated, the memory the run needs is estimated and refused beyond ``max_memory`` bytes (default: the memory
    available now; ``math.inf`` to insist; :func:`ntkcheck.resources.check`).
    """
    if resume and out is None:
        raise ConfigError("resume", "needs out, the folder of the interrupted run")
    resources.check(cfg, limit=max_memory)
    exp = setup(cfg, problem=problem, model=model)
    if out is None:
        return _run(exp, None, False, callback, probe)
    with runfolder.open_run(out, resume) as work:
        return _run(exp, work, resume, callback, probe)


def resume_config(out: str | Path, **changes) -> TrainConfig:
    """The configuration the interrupted run in ``out`` was started with, with ``changes`` to the fields a resume
    can change (:data:`ntkcheck.results.runfolder.RESUMABLE`: ``iters``, ``device``, …); other fields must keep their value."""
    return runfolder.resumed_config(runfolder.stored_settings(Path(out), CHECKPOINT)["config"], changes)


def resume_run(out: str | Path, *, callback=None, probe=None, max_memory: float | None = None,
               **changes) -> RunResult:
    """Continue the interrupted run in ``out`` (:func:`resume_config`): only the folder is needed."""
    return train(resume_config(out, **changes), out, resume=True, callback=callback, probe=probe,
                 max_memory=max_memory)


def continue_config(finished: str | Path, **changes) -> TrainConfig:
    """The configuration of the completed run in ``finished`` with ``changes``: ``iters`` (more than the run's K) and
    the other fields a resume can change (:data:`ntkcheck.results.runfolder.RESUMABLE`); any other field must keep its value."""
    return _continued(finished, changes)[0]


def continue_run(finished: str | Path, out: str | Path, *, problem: problems.Problem | None = None, callback=None,
                 probe=None, max_memory: float | None = None, **changes) -> RunResult:
    """Continue the completed run in ``finished`` to ``iters`` iterations (:func:`continue_config`), in the new folder
    ``out``; ``finished`` is only read. The result equals the run started with those iterations: the new folder
    starts with the finished run's records and checkpoint (under the new configuration), and iteration K, which
    ended the run without a step, is measured again and takes its step (:func:`reopen`). ``problem``: the one the
    run was trained on, when it was passed in Python (as to :func:`train`). Interrupted, it resumes like any run
    (``resume=True`` with ``out``)."""
    cfg, run = _continued(finished, changes)
    resources.check(cfg, limit=max_memory)
    exp = setup(cfg, problem=problem)
    state = torch.load(Path(finished) / CHECKPOINT, map_location="cpu", weights_only=True)
    with runfolder.open_run(out, resume=False) as work:
        runfolder.append_records(work, run.metrics.to_dict("records"))  # records first: the checkpoint marks it resumable
        runfolder.save_checkpoint(work, cfg, {k: v for k, v in state.items() if k != "config"})
        return _run(exp, work, True, callback, probe)


def _continued(finished: str | Path, changes: dict) -> tuple[TrainConfig, RunResult]:
    """The continued configuration and the completed run in ``finished`` (ConfigErrors on ``continue_from``,
    ``iters`` and the fields that must not change)."""
    try:
        run = load_run(finished)
    except ConfigError as err:
        raise ConfigError("continue_from", err.message) from None
    if run.status != "completed":
        raise ConfigError("continue_from", f"{finished} ended {run.status}; only a completed run can be continued")
    cfg = runfolder.resumed_config(run.config.to_dict(), changes, "the finished run used")
    K = int(run.metrics.index[-1])
    if cfg.iters <= K:
        raise ConfigError("iters", f"{finished} already has iterations 0..{K}; continue it with iters > {K}")
    return cfg, run


def _run(exp, work: Path | None, resume: bool, callback, probe) -> RunResult:
    cfg, model, problem = exp.config, exp.model, exp.problem
    optimizer = meta_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    state = {"k": 0, "records": [], "saved": 0, "status": "running", "skipped": 0, "seconds": 0.0,
             "W0": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             "files": {} if work is None else runfolder.file_hashes(cfg)}
    with StopRequest(enabled=work is not None) as stop:  # a signal from here on stops at an iteration's end
        if resume:
            state = restore(work, cfg, model, optimizer)
        elif work is not None:
            save_checkpoint(work, cfg, model, optimizer, state)  # from here on the folder is resumable
        if state["status"] == "running":
            F_gd = reference_objective(problem, cfg.T, cfg.step_scale, cfg.update)
            try:
                loop(cfg, model, optimizer, problem, F_gd, state, work, stop, callback, probe)
            except KeyboardInterrupt:  # raised between iterations only, so the state is consistent
                if work is None:
                    raise
                save_checkpoint(work, cfg, model, optimizer, state)
                raise Interrupted(runfolder.final_folder(work), state["k"] - 1) from None
        return finish(cfg, work, model, optimizer, state, optimum_value(problem))


def restore(work: Path, cfg: TrainConfig, model: Learner, optimizer) -> dict:
    """The state of the interrupted run in ``work`` (weights and optimizer loaded into ``model``/``optimizer``),
    after checking that it was made with ``cfg``, the same input files, and no more iterations than ``cfg.iters``."""
    saved = runfolder.load_checkpoint(work / CHECKPOINT, cfg, set(STATE))
    runfolder.check_same_files(saved["files"], cfg)
    if saved["k"] - 1 > cfg.iters:
        raise ConfigError("iters", f"the interrupted run already recorded iterations 0..{saved['k'] - 1}; resume "
                                   f"with iters ≥ {saved['k'] - 1}")
    model.load_state_dict(saved["params"])
    optimizer.load_state_dict(saved["optimizer"])
    state = {k: saved[k] for k in STATE if k not in ("params", "optimizer")}
    state["records"] = runfolder.read_records(work, saved["k"])
    state["saved"] = saved["k"]
    if state["status"] == "completed" and saved["k"] - 1 < cfg.iters:  # finished, now asked for more
        reopen(work, state)
    return state


def reopen(work: Path, state: dict) -> None:
    """Continue a completed run of K iterations as if it had been started with more. Its iteration K was measured
    without a step (the last iteration never steps): drop K's record, here and in the records file, so that the
    loop measures K again and takes its step."""
    last = state["records"].pop()
    runfolder.read_records(work, len(state["records"]))  # cuts K's line from the file
    state.update(status="running", k=state["k"] - 1, saved=len(state["records"]),
                 skipped=state["skipped"] - int(last["diverged"]))


def loop(cfg, model, optimizer, problem, F_gd, state: dict, work, stop, callback, probe) -> None:
    """Iterations k = state["k"]..K of the trainer's one cell (:func:`run_iteration`): probe, step (all but the last),
    record; the status after each by the divergence policy (:func:`ntkcheck.problems.meta.run_status`): stop at a
    divergence (``on_divergence="stop"``), and end ``completed`` only when the last loss is finite (with
    ``on_divergence="skip"`` it may not be); stop on a stop request; with a run folder ``work``, checkpoint every
    ``checkpoint_every`` iterations."""
    cell = cell_state(cfg, model, optimizer, state["W0"], state["status"], state["skipped"])
    while state["k"] <= cfg.iters:
        k = state["k"]
        if probe is not None:
            probe(k, model)
        started = time.perf_counter()
        metrics = run_iteration(cfg, model, cell, problem, F_gd, k)
        state["seconds"] += time.perf_counter() - started
        state["records"].append(metrics)
        state.update(k=k + 1, status=cell.status, skipped=cell.skipped)
        if callback is not None:
            callback(k, metrics)
        if state["status"] != "running":
            return
        if stop.requested:
            raise KeyboardInterrupt
        if work is not None and state["k"] % cfg.checkpoint_every == 0:
            save_checkpoint(work, cfg, model, optimizer, state)


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current iteration, checkpoint it, then stop.

    A second signal exits at once; the last periodic checkpoint is then what a resume starts from. Only for
    runs with a folder (``enabled``), in the main thread; a run in memory gets Python's KeyboardInterrupt.
    """

    def __init__(self, enabled: bool = True):
        self.enabled, self.requested = enabled, False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum, frame) -> None:
        if self.requested:
            raise SystemExit(128 + signum)
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_checkpoint(work: Path, cfg: TrainConfig, model: Learner, optimizer, state: dict) -> None:
    """Append the new iterations' metrics to the records file, then write the checkpoint (weights, optimizer, W_0,
    counters): a kill between the two leaves records past the checkpoint, which a resume drops."""
    runfolder.append_records(work, state["records"][state["saved"]:])
    state["saved"] = len(state["records"])
    runfolder.save_checkpoint(work, cfg, {
        **{k: v for k, v in state.items() if k not in ("records", "saved")},
        "params": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    })


def finish(cfg: TrainConfig, work: Path | None, model: Learner, optimizer, state: dict,
           F_star: float = 0.0) -> RunResult:
    """The result; with a folder, write checkpoint, config, metrics and summary, then rename it to ``out``."""
    metrics = pd.DataFrame(state["records"], index=pd.RangeIndex(len(state["records"]), name="iteration"))
    summary = summarize(metrics, state, F_star, cfg.update)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    folder = None
    if work is not None:
        save_checkpoint(work, cfg, model, optimizer, state)
        run_id = runfolder.final_folder(work).name
        runfolder.write_metrics(work, runfolder.to_long(metrics, run_id))
        io.write_json(work / "config.json", {"config": cfg.to_dict(), "versions": runfolder.versions(), "run_id": run_id})
        io.write_json(work / "report.json", summary)
        folder = runfolder.finish(work)
    return RunResult(cfg, state["status"], metrics, summary, weights, state["W0"], folder)


def summarize(metrics: pd.DataFrame, state: dict, F_star: float = 0.0, update: str = "gd") -> dict:
    """Status and headline numbers of a run: F(X_T) and gain (against the backbone's classical method) at the first and
    last iteration, and the gap F(X_T) − F* to the optimum F* = Σ_i F_i* (:func:`~ntkcheck.problems.solvers.optimum_value`)."""
    first, last = metrics.iloc[0], metrics.iloc[-1]
    return {
        "status": state["status"],
        "iterations": int(metrics.index[-1]),
        "diverged_iterations": [int(k) for k in metrics.index[metrics["diverged"] > 0]],
        "F_T_initial": float(first["F_T"]),
        "F_T_final": float(last["F_T"]),
        "gain_final": float(last["gain"]),
        "reference": update,  # the gains are over this backbone's classical method
        "F_star": F_star,
        "gap_final": float(last["F_T"]) - F_star,
        "seconds_training": state["seconds"],
        "seconds_per_iteration": state["seconds"] / max(len(metrics), 1),
    }


def load_run(folder: str | Path) -> RunResult:
    """A finished run folder as a :class:`RunResult` (config, status, metrics, summary, final weights and W_0)."""
    folder = Path(folder)
    path = folder / CHECKPOINT
    if not path.is_file():
        raise ConfigError("run", f"{folder} is not a finished run folder: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TrainConfig.from_dict(state["config"])
        summary = json.loads((folder / "report.json").read_text())
        metrics = runfolder.read_metrics(folder)
    except ConfigError:
        raise
    except Exception as err:  # any failure to read it back means the folder is not a usable run
        raise ConfigError("run", f"{folder} is corrupt or unreadable ({type(err).__name__})") from None
    return RunResult(cfg, state["status"], metrics, summary, state["params"], state["W0"], folder)
