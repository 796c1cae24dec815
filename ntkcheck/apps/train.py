"""A training run started one of three ways: new, the resume of an interrupted run, or the continuation of a
finished one (:func:`run_train`, what ``ntkcheck train`` calls)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ntkcheck import resources
from ntkcheck.config import ConfigError, TrainConfig, preset
from ntkcheck.engine import training
from ntkcheck.engine.training import RunResult, continue_config, continue_run, resume_config
from ntkcheck.report.progress import engine_hooks
from ntkcheck.results.runfolder import partial_folder


def train(cfg: TrainConfig, out: str | Path | None = None, *, threads: int | None = None, **options) -> RunResult:
    """``ntkcheck.train``: :func:`ntkcheck.engine.training.train` of ``cfg`` into ``out`` (its keywords:
    ``options``: problem, model, resume, callback, probe, max_memory) on ``threads`` CPU threads (default: the
    command line's, the idle cores; :func:`ntkcheck.resources.threads`), given back when it returns."""
    with resources.threads(threads):
        return training.train(cfg, out, **options)


def run_train(cfg: TrainConfig | str = "small", out: str | Path | None = None, *, resume: bool = False,
              continue_from: str | Path | None = None, progress=None, max_memory: float | None = None,
              **changes) -> RunResult:
    """Train into ``out`` and return the run. The start is chosen by these rules:

    - ``continue_from`` (a completed run folder): that run continued to ``changes["iters"]`` iterations in the new
      folder ``out`` (:func:`~ntkcheck.engine.training.continue_run`; ``changes``: the fields a resume can change).
      It excludes ``resume`` (which continues an interrupted run, not a finished one) and needs ``iters``;
    - ``resume``: the interrupted run in ``out`` with the configuration stored there, ``changes`` applied to the
      fields a resume can change (:func:`~ntkcheck.engine.training.resume_config`); ``cfg`` is not read: the stored
      configuration is the truth;
    - otherwise a new run of ``cfg`` (a :class:`TrainConfig`, or a preset's name) with ``changes`` to its fields.

    ``progress(event, **info)``: :mod:`ntkcheck.report.progress` (``"start"`` with ``iterations`` = K + 1, then
    ``"iteration"``). Errors are :class:`ConfigError` naming the config field."""
    progress = progress or (lambda event, **info: None)
    if continue_from is not None:
        if resume:
            raise ConfigError("continue_from", "cannot be combined with `resume`: `continue_from` starts a new folder "
                                               "from a finished run, `resume` continues an interrupted one")
        if "iters" not in changes:
            raise ConfigError("iters", "give the new number of iterations with `continue_from` (more than the run's)")
        progress("start", iterations=continue_config(continue_from, **changes).iters + 1)
        return _continue(continue_from, out, progress, max_memory, changes)
    if resume:
        if out is None:
            raise ConfigError("resume", "needs `out`, the folder of the interrupted run")
        cfg = resume_config(out, **changes)
    elif isinstance(cfg, str):
        cfg = preset(cfg, **changes)
    elif changes:
        cfg = cfg.replace(**changes)
    progress("start", iterations=cfg.iters + 1)
    return training.train(cfg, out, resume=resume, callback=engine_hooks(progress)["callback"], max_memory=max_memory)


def _continue(finished, out, progress, max_memory, changes: dict) -> RunResult:
    """:func:`~ntkcheck.engine.training.continue_run`; a refusal that comes once the new folder exists (an input file
    changed since the run was trained, found when its checkpoint is read back) removes that folder: it held
    nothing but a copy of the finished run, and no command could resume it."""
    if out is None:
        raise ConfigError("out", "needs a new folder for `continue_from` to continue into")
    work = partial_folder(Path(out))
    fresh = not work.exists()
    try:
        return continue_run(finished, out, callback=engine_hooks(progress)["callback"], max_memory=max_memory,
                            **changes)
    except ConfigError:
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        raise
