"""ntkcheck: measure the quantities of the Math-L2O NTK convergence proof on real training runs.

The public API (docs/ARCHITECTURE.md describes the layers behind it)::

    import ntkcheck

    cfg = ntkcheck.preset("small", iters=50)            # or ntkcheck.TrainConfig(...)
    problem, model = ntkcheck.make_problem(cfg), ntkcheck.build_model(cfg)
    run = ntkcheck.train(cfg)                               # in memory; train(cfg, "runs/x") writes a run folder
    probe = ntkcheck.measure(run.model(), problem, cfg.T, lr=cfg.lr)   # K, K̃, α, δ₃, … at the final W
    report = ntkcheck.verify(cfg)                           # train + probes + every condition of bounds/
    grid = ntkcheck.make_spec("small", grid={"e": [5, 50], "lr": [1e-3, 1e-7]}, seeds="0-4")
    cells = ntkcheck.sweep(grid).cells                      # one row per (e, η, seed), trained in one batch

Symbols follow the paper: N instances of b×d, width n of layer L−1 (``width``), L layers, expansion e,
horizon T, meta learning rate η (``lr``), K iterations (``iters``). Kernels are sums over parameters, never
averages; everything the proof needs is measured in float64.
"""

from ntkcheck.compare import thresholds
from ntkcheck.config import PRESETS, ConfigError, ProbeConfig, TrainConfig, preset, probe_preset
from ntkcheck.dynamics import LinearPrediction, fit_contraction, predict
from ntkcheck.experiment import Experiment, build_model, initial_weights, make_problem, setup
from ntkcheck.diagnostics import BestGain, DeadCone, Freeze, best_gain_free, best_gain_live, dead_cone, freeze
from ntkcheck.features import alpha
from ntkcheck.ntk_report import KernelReport, kernel_report
from ntkcheck.linalg import KernelDrift, Rank, extreme_eigenvalues, kernel_drift, kernel_spectrum
from ntkcheck.model import MathL2O
from ntkcheck.ntk import Gram, empirical_ntk, jacobian, ntk_operator
from ntkcheck.probes import ProbeResult, measure
from ntkcheck.problems import Problem
from ntkcheck.runfolder import Interrupted
from ntkcheck.sweeps import SweepResult, SweepSpec, load_spec, load_sweep, make_spec, sweep
from ntkcheck.training import RunResult, load_run, resume_run, train
from ntkcheck.verification import VerifyResult, resume_verify, verify

__all__ = [
    # configurations
    "TrainConfig", "ProbeConfig", "preset", "probe_preset", "ConfigError",
    # the objects
    "Problem", "MathL2O", "Experiment", "setup", "make_problem", "build_model", "initial_weights",
    # runs
    "train", "resume_run", "RunResult", "load_run", "Interrupted", "verify", "resume_verify", "VerifyResult",
    # sweeps: grids of configurations over seeds
    "SweepSpec", "make_spec", "load_spec", "sweep", "SweepResult", "load_sweep",
    # instruments
    "jacobian", "empirical_ntk", "Gram", "ntk_operator", "alpha", "measure", "ProbeResult", "kernel_report",
    "KernelReport", "kernel_spectrum", "extreme_eigenvalues", "kernel_drift", "KernelDrift", "Rank",
    # diagnostics at the initialisation: the one-step freeze, the dead cone
    "freeze", "Freeze", "dead_cone", "DeadCone", "best_gain_live", "best_gain_free", "BestGain",
    # linearised dynamics and the measured rate
    "predict", "LinearPrediction", "fit_contraction",
    # theory
    "thresholds",
]
