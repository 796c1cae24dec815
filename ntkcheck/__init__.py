"""ntkcheck: measure the quantities of the Math-L2O NTK convergence proof on real training runs.

The public API (docs/ARCHITECTURE.md describes the layers behind it)::

    import ntkcheck

    cfg = ntkcheck.preset("small", iters=50)            # or ntkcheck.TrainConfig(...)
    problem, model = ntkcheck.make_problem(cfg), ntkcheck.build_model(cfg)
    run = ntkcheck.train(cfg)                               # in memory; train(cfg, "runs/x") writes a run folder
                                                            # train, verify, sweep take threads= (default: idle cores)
    probe = ntkcheck.measure(run.model(), problem, cfg.T, lr=cfg.lr)   # K, K̃, α, δ₃, … at the final W
    report = ntkcheck.verify(cfg)                           # train + probes + every condition of bounds/
    grid = ntkcheck.make_spec("small", grid={"e": [5, 50], "lr": [1e-3, 1e-7]}, seeds="0-4")
    cells = ntkcheck.sweep(grid).cells                      # one row per (e, η, seed), trained in one batch
    answer = ntkcheck.study("init", "runs/init").answer     # a study: its sweeps, tables, figures, paragraph

Symbols follow the paper: N instances of b×d, width n of layer L−1 (``width``), L layers, expansion e,
horizon T, meta learning rate η (``lr``), K iterations (``iters``). Kernels are sums over parameters, never
averages; everything the proof needs is measured in float64.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("ntkcheck")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_WHERE = {  # public name → the module that defines it; imported on first use, so `import ntkcheck` is fast
    "thresholds": "ntkcheck.theory",
    "PRESETS": "ntkcheck.config",
    "ConfigError": "ntkcheck.config",
    "ProbeConfig": "ntkcheck.config",
    "TrainConfig": "ntkcheck.config",
    "preset": "ntkcheck.config",
    "probe_preset": "ntkcheck.config",
    "LinearPrediction": "ntkcheck.instruments.dynamics",
    "fit_contraction": "ntkcheck.instruments.dynamics",
    "predict": "ntkcheck.instruments.dynamics",
    "Experiment": "ntkcheck.build.experiment",
    "build_model": "ntkcheck.build.experiment",
    "initial_weights": "ntkcheck.build.experiment",
    "make_problem": "ntkcheck.build.experiment",
    "setup": "ntkcheck.build.experiment",
    "BestGain": "ntkcheck.instruments.diagnostics",
    "DeadCone": "ntkcheck.instruments.diagnostics",
    "Freeze": "ntkcheck.instruments.diagnostics",
    "best_gain_free": "ntkcheck.instruments.diagnostics",
    "best_gain_live": "ntkcheck.instruments.diagnostics",
    "dead_cone": "ntkcheck.instruments.diagnostics",
    "freeze": "ntkcheck.instruments.diagnostics",
    "alpha": "ntkcheck.instruments.features",
    "KernelReport": "ntkcheck.apps.ntk",
    "kernel_report": "ntkcheck.apps.ntk",
    "KernelDrift": "ntkcheck.instruments.linalg",
    "Rank": "ntkcheck.instruments.linalg",
    "extreme_eigenvalues": "ntkcheck.instruments.linalg",
    "kernel_drift": "ntkcheck.instruments.linalg",
    "kernel_spectrum": "ntkcheck.instruments.linalg",
    "MathL2O": "ntkcheck.models.math_l2o",
    "Gram": "ntkcheck.instruments.ntk",
    "empirical_ntk": "ntkcheck.instruments.ntk",
    "jacobian": "ntkcheck.instruments.ntk",
    "ntk_operator": "ntkcheck.instruments.ntk",
    "ProbeResult": "ntkcheck.instruments.probes",
    "measure": "ntkcheck.instruments.probes",
    "Problem": "ntkcheck.problems.qp",
    "Interrupted": "ntkcheck.results.runfolder",
    "SweepResult": "ntkcheck.apps.sweep",
    "SweepSpec": "ntkcheck.apps.sweep",
    "load_spec": "ntkcheck.apps.sweep",
    "load_sweep": "ntkcheck.apps.sweep",
    "make_spec": "ntkcheck.apps.sweep",
    "sweep": "ntkcheck.apps.sweep",
    "study": "ntkcheck.apps.study",
    "StudyResult": "ntkcheck.apps.study",
    "load_study": "ntkcheck.apps.study",
    "RunResult": "ntkcheck.engine.training",
    "load_run": "ntkcheck.engine.training",
    "resume_run": "ntkcheck.engine.training",
    "continue_run": "ntkcheck.engine.training",
    "train": "ntkcheck.apps.train",
    "VerifyResult": "ntkcheck.apps.verify",
    "resume_verify": "ntkcheck.apps.verify",
    "verify": "ntkcheck.apps.verify",
}

__all__ = [
    # configurations
    "TrainConfig", "ProbeConfig", "preset", "probe_preset", "ConfigError",
    # the objects
    "Problem", "MathL2O", "Experiment", "setup", "make_problem", "build_model", "initial_weights",
    # runs
    "train", "resume_run", "continue_run", "RunResult", "load_run", "Interrupted", "verify", "resume_verify", "VerifyResult",
    # sweeps: grids of configurations over seeds
    "SweepSpec", "make_spec", "load_spec", "sweep", "SweepResult", "load_sweep",
    # studies: the paper's open questions, each a declared sweep and its analysis
    "study", "StudyResult", "load_study",
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


def __getattr__(name: str):
    """Import the module behind a public name on first use (PEP 562): the command line's --help needs no torch."""
    if name not in _WHERE:
        raise AttributeError(f"module 'ntkcheck' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
