"""The NTK of a configuration at its initial weights, or of a finished run at its first and last weights.

:func:`kernel_report` measures every probe quantity (:func:`ntkcheck.instruments.probes.measure`, dense, float64) at each
point and the drift ‖K_end − K_0‖_F/‖K_0‖_F between them; :func:`write` stores ``ntk.json`` and
``spectra.npz``. What ``ntkcheck ntk`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ntkcheck import resources
from ntkcheck.build.experiment import (
    build_model,
    initial_weights,
    make_problem,
    resolve_device,
)
from ntkcheck.config import JACOBIANS, ConfigError, ProbeConfig, TrainConfig
from ntkcheck.engine.training import load_run
from ntkcheck.instruments.linalg import KernelDrift, kernel_drift
from ntkcheck.instruments.probes import NonFiniteKernel, ProbeResult, measure
from ntkcheck.results import io, runfolder


@dataclass(frozen=True)
class KernelReport:
    """``points``: name (``init``, ``end``) → (iteration, :class:`~ntkcheck.instruments.probes.ProbeResult`); ``drift`` of
    K from ``init`` to ``end`` when both were measured; ``notes`` on what the numbers do not cover."""

    config: TrainConfig
    source: str
    method: str
    t: int
    points: dict[str, tuple[int, ProbeResult]] = field(repr=False)
    drift: KernelDrift | None
    notes: tuple[str, ...]

    def as_dict(self) -> dict:
        """What ntk.json holds."""
        out = {"config": self.config.to_dict(), "source": self.source, "method": self.method, "T": self.config.T,
               "lr": self.config.lr, "alpha_step": self.t, "dtype": "float64", "notes": list(self.notes),
               "points": {name: {"iteration": k, **p.as_dict()} for name, (k, p) in self.points.items()},
               "versions": runfolder.versions()}
        return out if self.drift is None else out | {"drift": self.drift.as_dict()}

    def arrays(self) -> dict[str, np.ndarray]:
        """``<point>_<array>`` for every point's spectra (:meth:`~ntkcheck.instruments.probes.ProbeResult.arrays`)."""
        return {f"{name}_{key}": v for name, (_, p) in self.points.items() for key, v in p.arrays().items()}


def kernel_report(cfg: TrainConfig | None = None, *, run: str | Path | None = None, method: str = "auto",
                  t: int | None = None, device: str | None = None) -> KernelReport:
    """The NTK at ``cfg``'s initial weights, or at a finished ``run``'s W_0 and final weights (its own config;
    a diverged run's non-finite final weights are left out, with a note). ``method``: the Jacobian
    (:func:`ntkcheck.instruments.ntk.jacobian`); ``t``: the step of α (default T); ``device``: default the config's."""
    if method not in JACOBIANS:
        raise ConfigError("method", f"must be one of {', '.join(JACOBIANS)} (got {method!r})")
    if (cfg is None) == (run is None):
        raise ConfigError("run", "give either a configuration or a finished run folder")
    probes = ProbeConfig(ntk_method="dense", jacobian=method)
    if run is not None:
        cfg, weights, notes = _run_points(Path(run))
        resources.check(cfg, probes)
    else:
        resources.check(cfg, probes)  # before anything is allocated
        weights, notes = {"init": (0, initial_weights(cfg))}, []
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= cfg.T):
        raise ConfigError("t", f"must be an integer in [1, T = {cfg.T}] (got {t!r})")
    dev = resolve_device(device or cfg.device)
    problem = make_problem(cfg).to(device=dev)
    notes += _scope_notes(cfg)
    points, kernels = {}, {}
    for name, (k, W) in weights.items():
        model = build_model(cfg, W, device=dev)
        try:
            p = measure(model, problem, cfg.T, lr=cfg.lr, method="dense", jacobian_method=method, t=t, kernels=True)
        except NonFiniteKernel as err:
            notes.append(f"{name} (k = {k}) not measured: {err}")
            continue
        except NotImplementedError as err:
            raise ConfigError("method", str(err)) from None
        except ValueError as err:  # the structured path's own limits (e.g. it needs the angular wide layer)
            if method != "structured":
                raise
            raise ConfigError("method", f"structured: {err}; use func") from None
        kernels[name] = p.kernels[0]
        points[name] = (k, p.replace(kernels=None))
    drift = kernel_drift(kernels["init"], kernels["end"]) if len(kernels) == 2 and np.linalg.norm(kernels["init"]) > 0 else None
    return KernelReport(cfg, "config" if run is None else str(run), method, t or cfg.T, points, drift, tuple(notes))


def write(report: KernelReport, folder: str | Path) -> Path:
    """``ntk.json`` and ``spectra.npz`` in ``folder`` (created)."""
    folder = Path(folder)
    if not folder.name or folder.name in (".", ".."):
        raise ConfigError("out", f"must name a folder to write into (got {str(folder)!r})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("out", f"cannot create {folder}: {err.strerror}") from None
    io.write_json(folder / "ntk.json", report.as_dict())
    io.write_npz(folder / "spectra.npz", report.arrays())
    return folder


def _run_points(run: Path) -> tuple[TrainConfig, dict, list[str]]:
    result = load_run(run)
    k = int(result.metrics.index[-1])
    if not all(bool(torch.isfinite(v).all()) for v in result.weights.values()):
        return result.config, {"init": (0, result.W0)}, [
            f"the final weights (k = {k}) are not finite: the run diverged; only W_0 is measured"]
    return result.config, {"init": (0, result.W0), "end": (k, result.weights)}, []


def _scope_notes(cfg: TrainConfig) -> list[str]:
    notes = []
    if cfg.model != "mlp":
        notes.append(f"the learner is the LSTM (model {cfg.model}): α = σ_min(G_{{L−1,t}}) and δ₃ are quantities of "
                     "Math-L2O's MLP (its wide layer) and do not apply; K and K̃ are the LSTM's own (torch.func)")
    if cfg.loss != "last":
        notes.append(f"the run's loss is {cfg.loss!r}: K describes r = M X_T − Y, i.e. the loss 'last' only")
    if cfg.optimizer != "sgd":
        notes.append(f"the run's optimizer is {cfg.optimizer!r}: 2/λ_max and 1 − ηλ_min assume plain SGD")
    return notes
