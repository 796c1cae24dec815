"""``verify``: train the real model, measure what the proof uses, evaluate every condition of :mod:`bounds`, and
compare the theory's predictions with the measured loss.

The run, in order:

1. the problem's constants (:func:`ntkcheck.theory.problem_constants`);
2. training (:func:`ntkcheck.engine.training.train`) with a :class:`Prober` as its probe hook: at k = 0, ``ntk_every``,
   2·``ntk_every``, …, K, each at W_k before update k, :func:`ntkcheck.instruments.probes.measure` in float64, and the
   kernel drift ‖K_k − K_0‖_F/‖K_0‖_F;
3. the quantities → :func:`bounds.registry` → verdicts, and the comparisons (:mod:`ntkcheck.theory`), with beside the
   eigen-projection prediction the one prediction that holds in every setting: linearised training
   (:func:`linearised_training`, the first-order Taylor model at W_0 trained with the run's loss, optimiser, η and K);
4. with a folder: report.md, report.json, metrics, spectra, figures (:mod:`ntkcheck.report.run`).

In memory when ``out`` is None. With a folder, everything lands in ``<out>.partial`` until the end, so an
interrupted verify resumes: the training from its checkpoint, the probes from their files.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ntkcheck import resources
from ntkcheck.build.experiment import setup
from ntkcheck.config import FORMATS, ConfigError, ProbeConfig, TrainConfig, command_line
from ntkcheck.engine.linearised import curve_gap, train_linearised
from ntkcheck.engine.prober import Prober as EngineProber
from ntkcheck.engine.training import RunResult, load_run, train
from ntkcheck.instruments.probes import ProbeFailure, ProbeResult
from ntkcheck.models.base import Learner
from ntkcheck.problems import qp as problems
from ntkcheck.report import run as reports
from ntkcheck.results import io, runfolder, schema
from ntkcheck.results.runfolder import Interrupted
from ntkcheck.theory import (
    PREDICTION_RTOL,
    comparisons,
    evaluate_conditions,
    learner_notes,
    not_applicable,
    notes,
    problem_constants,
    quantities,
)

TRAIN = "train"  # the training run's own folder inside the verify folder
PROBES = "probes"
DIAGNOSTICS = "diagnostics.json"  # in the probes folder: the diagnostics at W_0
SETTINGS = "verify.json"  # the configuration and probe options, written first: the mark of a verify folder


@dataclass(frozen=True)
class VerifyResult:
    """A finished verification.

    ``report``: what report.json holds (conditions with verdicts, comparisons, probes, summary, config; the probes'
    metrics columns of :mod:`ntkcheck.results.schema` as ``probe_quantities``, defined in ``probe_columns``);
    ``metrics``: training metrics and probe quantities (``ntk/…``, ``alpha/…``), one row per iteration;
    ``probes``: iteration → :class:`~ntkcheck.instruments.probes.ProbeResult` (or :class:`~ntkcheck.instruments.probes.ProbeFailure`);
    ``curves``: the predicted loss curves; ``training``: the training run; ``folder``: None in memory."""

    config: TrainConfig
    probe_config: ProbeConfig
    status: str
    report: dict = field(repr=False)
    metrics: pd.DataFrame = field(repr=False)
    probes: dict = field(repr=False)
    curves: dict = field(repr=False)
    training: RunResult = field(repr=False)
    folder: Path | None = None

    def failed_required(self) -> list[str]:
        """Keys of the conditions the theorem needs that FAIL on this run."""
        return [c["key"] for c in self.report["conditions"] if c["required"] and c["holds"] is False]


class Prober:
    """The ``probe`` hook of :func:`ntkcheck.engine.training.train`: the engine's
    :class:`~ntkcheck.engine.prober.Prober` (measure at W_k, the drift against K_0, the diagnostics at W_0) at the
    steps of ``probes``, keeping what it measured and how long each part took. With a ``folder``, one JSON/NPZ pair
    per k, K_0 and the diagnostics are written as they come, so that a resumed verify skips what an interrupted one
    measured."""

    def __init__(self, cfg: TrainConfig, probes: ProbeConfig, problem: problems.Problem, folder: Path | None = None,
                 phase=None):
        self.probes, self.folder = probes, folder
        self.phase = phase or (lambda text: None)
        self.steps = set(probes.steps(cfg.iters))
        self.points: dict[int, ProbeResult | ProbeFailure] = {}
        self.seconds: dict[str, float] = {}  # wall time of "diagnostics" and of each probe ("k=…"), kept on disk
        self.diagnostics = None
        K0 = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.points = self._load()
            K0 = np.load(folder / "K0.npy") if (folder / "K0.npy").exists() else None
            if (folder / DIAGNOSTICS).exists():
                self.diagnostics = json.loads((folder / DIAGNOSTICS).read_text())
                self.seconds["diagnostics"] = self.diagnostics.pop("seconds", math.nan)
        self.engine = EngineProber(cfg, problem, method=probes.ntk_method, jacobian=probes.jacobian,
                                   alpha_steps=probes.alpha_steps == "all", K0=K0)

    def __call__(self, k: int, model: Learner) -> None:
        if k == 0 and self.diagnostics is None:
            self.phase("diagnostics at W_0 (freeze, dead cone, best gains)")
            self._diagnose(model)
        if k not in self.steps or k in self.points:
            self.phase("training")
            return
        self.phase(f"probe k={k}: K, K̃, α ({self.probes.ntk_method})")
        started = time.perf_counter()
        probe = self.engine(k, model)
        if k == 0 and probe.K is not None and self.folder is not None:
            io.write_npy(self.folder / "K0.npy", probe.K)
        self.points[k] = result = probe.result
        seconds = self.seconds[f"k={k}"] = time.perf_counter() - started
        if self.folder is not None:
            io.write_npz(self._path(k, "npz"), result.arrays())
            io.write_json(self._path(k, "json"), {"iteration": k, "seconds": seconds, **result.as_dict()})

    def _diagnose(self, model: Learner) -> None:
        """The diagnostics at W_0 (:meth:`ntkcheck.engine.prober.Prober.diagnose`) as report.json holds them: {} where
        they do not apply (away from the deterministic initialisation, a learner other than the MLP), ``error`` where
        the features overflow."""
        started = time.perf_counter()
        found = self.engine.diagnose(model)
        self.diagnostics = {"error": found.error} if found.error else found.found
        self.seconds["diagnostics"] = time.perf_counter() - started
        if self.folder is not None:
            io.write_json(self.folder / DIAGNOSTICS, self.diagnostics | {"seconds": self.seconds["diagnostics"]})

    def _path(self, k: int, suffix: str) -> Path:
        return self.folder / f"k{k:06d}.{suffix}"

    def _load(self) -> dict:
        points = {}
        for path in sorted(self.folder.glob("k*.json")):
            k, numbers = int(path.stem[1:]), json.loads(path.read_text())
            self.seconds[f"k={k}"] = numbers.get("seconds", math.nan)
            points[k] = (ProbeFailure(numbers["error"]) if "error" in numbers
                         else ProbeResult.from_dict(numbers, dict(np.load(self._path(k, "npz")))))
        return points


def probe_method(points: dict, probes: ProbeConfig) -> str:
    """The kernel method(s) the probes ran (each probe's ``method_reason`` says why), or the one asked for."""
    ran = sorted({p.method for p in points.values() if isinstance(p, ProbeResult)})
    return ", ".join(ran) or probes.ntk_method


def probe_quantities(points: dict) -> dict[int, dict[str, float]]:
    """Iteration → the metrics columns of :mod:`ntkcheck.results.schema` at that probe (failed probes left out)."""
    return {k: schema.metrics_row(p.as_dict()) for k, p in sorted(points.items()) if isinstance(p, ProbeResult)}


def probe_frame(points: dict) -> pd.DataFrame:
    """The probe quantities, one row per probed iteration, one column per metrics column of
    :mod:`ntkcheck.results.schema` measured at some probe (``ntk/K/lambda_max``, ``alpha/alpha``, …), in its order."""
    frame = pd.DataFrame.from_dict(probe_quantities(points), orient="index").rename_axis("iteration")
    return frame[[c.key for c in schema.metrics_columns() if c.key in frame]]


def verify(cfg: TrainConfig, probes: ProbeConfig | None = None, out: str | Path | None = None, *,
           problem: problems.Problem | None = None, model: Learner | None = None, resume: bool = False,
           callback=None, figures: bool | str = True, max_memory: float | None = None, phase=None,
           threads: int | None = None) -> VerifyResult:
    """The whole verification (module docstring) of ``cfg`` with the probes ``probes`` (default
    :class:`~ntkcheck.config.ProbeConfig`). ``problem``/``model`` replace the config's (as in ``train``). In
    memory when ``out`` is None; else the run folder ``out`` (with ``figures``: True or a format, png, pdf or svg;
    False for none), resumable with ``resume``
    (:func:`resume_verify` needs only the folder). The memory training and probes need is checked first
    against ``max_memory`` bytes (as in ``train``). ``phase(text)`` is called as each slow phase starts (a probe,
    the diagnostics, the report), for a progress display. ``threads``: CPU threads for the call (default: the command
    line's, the idle cores; :func:`ntkcheck.resources.threads`)."""
    with resources.threads(threads):
        return _verify_all(cfg, probes, out, problem, model, resume, callback, figures, max_memory, phase)


def _verify_all(cfg, probes, out, problem, model, resume, callback, figures, max_memory, phase) -> VerifyResult:
    probes = ProbeConfig() if probes is None else probes
    if resume and out is None:
        raise ConfigError("resume", "needs out, the folder of the interrupted verify")
    figures = "png" if figures is True else figures
    if figures and figures not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {figures!r})")
    if probes.jacobian == "structured" and cfg.model != "mlp":
        raise ConfigError("jacobian", f"structured is the MLP's Jacobian (its angular wide layer), not model "
                                      f"{cfg.model}'s; use auto or func")
    resources.check(cfg, probes, limit=max_memory)
    exp = setup(cfg, problem=problem, model=model)
    if probes.jacobian == "structured" and not exp.model.angular:
        raise ConfigError("jacobian", "structured needs the angular wide layer (bias-free, wide_layer auto or angular); "
                                      "use auto or func")
    command = rerun_command(cfg, probes, out, figures, given=[n for n, v in (("problem", problem), ("model", model))
                                                               if v is not None])
    if out is None:
        return _verify(exp, probes, None, "memory", callback, figures, phase, command)
    with runfolder.open_run(out, resume, marker=SETTINGS) as work:
        _settings(work, resume, exp.config, probes)
        return _verify(exp, probes, work, Path(out).name, callback, figures, phase, command)


def rerun_command(cfg: TrainConfig, probes: ProbeConfig, out, figures, given=()) -> str:
    """The ``ntkcheck verify`` line that reruns this verification (:func:`ntkcheck.config.command_line`); a problem
    or model passed in Python has no flag, which the line then says."""
    line = command_line("verify", cfg, probes, out=out, format=None if figures in ("png", False) else figures,
                        figures=None if figures else False)
    return line + (f"  # {' and '.join(given)} given in Python, not by this line" if given else "")


def resume_settings(out: str | Path, **changes) -> tuple[TrainConfig, ProbeConfig]:
    """The configuration and probes the interrupted verify in ``out`` was started with, with ``changes`` to the
    training fields a resume can change (:data:`ntkcheck.results.runfolder.RESUMABLE`); probe options cannot change."""
    stored = runfolder.stored_settings(Path(out), SETTINGS)
    probe_fields = set(ProbeConfig.__dataclass_fields__)
    runfolder.check_same_config(stored["probes"], {k: v for k, v in changes.items() if k in probe_fields},
                                "the interrupted verify used")
    cfg = runfolder.resumed_config(stored["config"], {k: v for k, v in changes.items() if k not in probe_fields})
    return cfg, ProbeConfig(**stored["probes"])


def resume_verify(out: str | Path, *, callback=None, figures: bool | str = True, max_memory: float | None = None,
                  **changes) -> VerifyResult:
    """Continue the interrupted verify in ``out`` (:func:`resume_settings`): only the folder is needed."""
    cfg, probes = resume_settings(out, **changes)
    return verify(cfg, probes, out, resume=True, callback=callback, figures=figures, max_memory=max_memory)


def _verify(exp, probes: ProbeConfig, work: Path | None, run_id: str, callback, figures, phase, command: str
            ) -> VerifyResult:
    cfg = exp.config
    constants = problem_constants(exp.problem, cfg.T, cfg.step_scale)
    prober = Prober(cfg, probes, exp.problem, None if work is None else work / PROBES, phase)
    training = _train(cfg, exp, work, prober, callback)
    if phase is not None:
        phase("report and figures")

    points = prober.points
    verdicts = evaluate_conditions(quantities(cfg, constants, points, training.metrics, training.W0),
                                   not_applicable(cfg))
    rows, curves = comparisons(cfg, probes.early, points, training.metrics, verdicts)
    skip = linearised_skip(cfg, probes, points)
    if skip is None:
        lin, curves["linearised_training"] = linearised_training(cfg, exp.model, training.W0, exp.problem,
                                                                 training.metrics["loss"].to_numpy())
        rows = with_linearised_row(rows, linearised_row(lin, float(training.metrics["loss"].iloc[-1]), cfg.iters))
    else:
        lin = {"skipped": skip, "seconds": 0.0}
    probed = probe_frame(points)
    report = {
        "status": training.status, "run_id": run_id, "command": command, "config": cfg.to_dict(),
        "probes": probes.to_dict(), "probe_method": probe_method(points, probes), "dtype_probes": "float64",
        "versions": runfolder.versions(), "summary": training.summary,
        "problem": {"beta": constants["beta"], "beta_i": constants["beta_i"].tolist(),
                    "sigma_min_sq_i": constants["sigma_min_sq_i"].tolist(), "dist_sq": constants["dist_sq"],
                    "F_gd": constants["F_gd"].tolist()},
        "notes": learner_notes(cfg) + notes(training.summary, points), "conditions": verdicts, "comparisons": rows,
        "probe_points": {str(k): {"iteration": k, **p.as_dict()} for k, p in sorted(points.items())},
        "probe_columns": schema.definitions(schema.metrics_columns()),
        "probe_quantities": {str(k): row for k, row in probe_quantities(points).items()},
        "diagnostics": prober.diagnostics or {}, "figure_format": figures or None, "linearised_training": lin,
        "seconds": {"training": training.summary["seconds_training"], **prober.seconds,
                    "linearised_training": lin["seconds"]},
    }
    metrics = training.metrics.join(probed, how="left")
    folder = None
    if work is not None:
        long = pd.concat([runfolder.to_long(training.metrics, run_id),
                          runfolder.to_long(probed, run_id, dropna=True)], ignore_index=True)
        runfolder.write_metrics(work, long)
        io.write_npz(work / "spectra.npz", spectra(points) | {f"curve_{k}": v for k, v in curves.items()})
        io.write_json(work / "report.json", report)
        io.write_text(work / "report.md", reports.markdown(report))
        if figures:
            reports.figures(report, metrics, points, curves, work / "figures", figures)
        folder = runfolder.finish(work)
    return VerifyResult(cfg, probes, training.status, report, metrics, points, curves, training, folder)


def linearised_skip(cfg: TrainConfig, probes: ProbeConfig, points: dict) -> str | None:
    """Why linearised training is not run (None: run it). ``probes.linearised``: ``on`` always runs it, ``off``
    never; ``auto`` skips it exactly where it would repeat the eigen-projection rows: least squares with the gd
    backbone, SGD on the loss "last", the MLP at a deterministic initialisation (W_L = 0, so K̃_0 = K_0) and a dense
    K_0 at k = 0. There linearised training *is* the residual recursion r_{k+1} = (I − ηK_0)r_k whose loss the
    eigen-projection gives in closed form (tests/test_linearised.py pins the two equal to 1e-10)."""
    if probes.linearised != "auto":
        return None if probes.linearised == "on" else "--linearised off"
    init = points.get(0)
    closed_form = (cfg.problem, cfg.update, cfg.optimizer, cfg.loss, cfg.model) == ("qp", "gd", "sgd", "last", "mlp")
    if closed_form and cfg.init.startswith("deterministic") and isinstance(init, ProbeResult) and \
            init.linearised is not None:
        return ("the eigen-projection rows are linearised training here (least squares, gd, SGD, loss last, "
                "K̃_0 = K_0 at the deterministic init); --linearised on runs it anyway")
    return None


def linearised_training(cfg: TrainConfig, model: Learner, W0: dict, problem, real: np.ndarray
                        ) -> tuple[dict, np.ndarray]:
    """The Taylor model X(W_0) + J(W − W_0) of ``model`` at its initial weights ``W0`` trained on ``problem`` with the
    run's loss, optimiser, η and K (:func:`ntkcheck.engine.linearised.train_linearised`, the learner's own gradient),
    against the run's training loss ``real`` (L_0..L_K): report.json's numbers (``loss_final`` L^lin_K, the gap
    |L_k − L^lin_k| and its ratio to |L_k|, largest and last, :func:`~ntkcheck.engine.linearised.curve_gap`;
    ``error`` where the curves share no finite iteration) and the curve L^lin_0..L^lin_K."""
    started = time.perf_counter()
    m = copy.deepcopy(model)
    m.load_state_dict(W0)
    w = next(m.parameters())
    curve = train_linearised(m, problem.to(device=w.device, dtype=w.dtype), cfg.T, lr=cfg.lr, iters=cfg.iters,
                             loss=cfg.loss, optimizer=cfg.optimizer)
    out = {"loss_final": float(curve.loss[-1]), "diverged_at": curve.diverged_at}
    try:
        out |= curve_gap(curve, real).as_dict()
    except ValueError as err:
        out["error"] = str(err)
    return out | {"seconds": time.perf_counter() - started}, curve.loss


def linearised_row(lin: dict, real_final: float, K: int) -> dict:
    """The comparison of the run's training loss L_K with linearised training's L^lin_K (a prediction: **agrees**
    within :data:`~ntkcheck.theory.PREDICTION_RTOL` of it), the largest gap along training named in ``what``."""
    predicted = lin["loss_final"]
    finite = math.isfinite(predicted) and math.isfinite(real_final)
    holds = abs(real_final - predicted) <= PREDICTION_RTOL * abs(predicted) if finite else None
    largest = (f"; largest gap |L_k − L^lin_k|/|L_k| {lin['max_relative']:.3g} at k = {lin['argmax_relative']}"
               if "max_relative" in lin else f"; {lin.get('error', '')}")
    return {"what": f"training loss at k = {K} by linearised training{largest}",
            "theory": "Taylor model X(W_0) + J(W − W_0) trained with the run's loss, optimiser and η",
            "kind": "prediction", "predicted": predicted, "measured": real_final,
            "ratio": real_final / predicted if predicted != 0 and math.isfinite(predicted) else math.nan,
            "holds": holds, "verdict": {True: "agrees", False: "differs"}.get(holds, "undecided")}


def with_linearised_row(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` right after the eigen-projection's (at the end where there are none)."""
    at = max((i + 1 for i, r in enumerate(rows) if "eigen-projection" in r["theory"]), default=len(rows))
    return [*rows[:at], row, *rows[at:]]


def _settings(work: Path, resume: bool, cfg: TrainConfig, probes: ProbeConfig) -> None:
    """Write the settings a resume must match, or check them on a resume."""
    settings = {"config": cfg.to_dict(), "probes": probes.to_dict()}
    if not resume:
        io.write_json(work / SETTINGS, settings)
        return
    saved = json.loads((work / SETTINGS).read_text())
    if saved["probes"] != settings["probes"]:
        raise ConfigError("resume", f"the interrupted verify probed with {saved['probes']}; resume with the same "
                                    "probe options")
    runfolder.check_same_config(saved["config"], settings["config"], "the interrupted verify used")


def _train(cfg: TrainConfig, exp, work: Path | None, prober: Prober, callback) -> RunResult:
    """Train with the probes (in ``work/train`` with a folder: resumed when interrupted, read back when done)."""
    if work is None:
        return train(cfg, problem=exp.problem, model=exp.model, callback=callback, probe=prober, max_memory=math.inf)
    run_dir = work / TRAIN
    if run_dir.exists():
        return load_run(run_dir)
    resume = (runfolder.partial_folder(run_dir) / runfolder.CHECKPOINT).exists()
    try:
        return train(cfg, run_dir, problem=exp.problem, model=exp.model, resume=resume, callback=callback,
                     probe=prober, max_memory=math.inf)  # checked with the probes by verify
    except Interrupted as err:
        raise Interrupted(runfolder.final_folder(work), err.iteration) from None


def spectra(points: dict) -> dict[str, np.ndarray]:
    """Eigenvalues of K and ½(K̃ + K̃ᵀ), and singular values of G_{L−1,T}, at every probe."""
    out = {}
    for k, p in points.items():
        out |= {f"k{k}_{name}": v for name, v in p.arrays().items()}
    return out
