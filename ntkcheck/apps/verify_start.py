"""A verification started new or as the resume of an interrupted one (:func:`run_verify`, what ``ntkcheck verify``
calls)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ntkcheck.apps import verify as verification  # (verification.verify: a test replaces it there)
from ntkcheck.config import ConfigError, ProbeConfig, TrainConfig, preset, probe_preset
from ntkcheck.report.progress import engine_hooks


def run_verify(cfg: TrainConfig | str = "small", out: str | Path | None = None, *, probes: ProbeConfig | None = None,
               resume: bool = False, figures: bool | str = True, progress=None, max_memory: float | None = None,
               **changes) -> verification.VerifyResult:
    """Verify into ``out`` (:func:`ntkcheck.apps.verify.verify`) and return the result. The configuration:

    - ``resume``: the configuration and probes stored by the interrupted verify in ``out``, ``changes`` applied to the
      training fields a resume can change (:func:`~ntkcheck.apps.verify.resume_settings`); ``cfg`` and ``probes``
      are not read;
    - otherwise ``cfg`` (a :class:`TrainConfig`, or a preset's name) and ``probes`` (default: the preset's, or
      :class:`ProbeConfig`), ``changes`` applied to the fields of each.

    ``progress(event, **info)``: :mod:`ntkcheck.report.progress` (``"start"`` with ``iterations`` = K + 1, then
    ``"phase"`` and ``"iteration"``). Errors are :class:`ConfigError` naming the config field."""
    if resume:
        if out is None:
            raise ConfigError("resume", "needs `out`, the folder of the interrupted verify")
        cfg, probes = verification.resume_settings(out, **changes)
    else:
        train = {k: v for k, v in changes.items() if k in TrainConfig.__dataclass_fields__}
        probed = {k: v for k, v in changes.items() if k not in train}
        if isinstance(cfg, str):
            cfg, probes = preset(cfg, **train), probes or probe_preset(cfg)
        else:
            cfg = cfg.replace(**train)
        probes = dataclasses.replace(probes or ProbeConfig(), **probed)
    progress = progress or (lambda event, **info: None)
    progress("start", iterations=cfg.iters + 1)
    return verification.verify(cfg, probes, out, resume=resume, figures=figures, max_memory=max_memory,
                               **engine_hooks(progress))
