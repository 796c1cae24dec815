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

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ntkcheck")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_WHERE = {  # public name → the module that defines it; imported on first use, so `import ntkcheck` is fast
    "thresholds": "ntkcheck.compare",
    "PRESETS": "ntkcheck.config",
    "ConfigError": "ntkcheck.config",
    "ProbeConfig": "ntkcheck.config",
    "TrainConfig": "ntkcheck.config",
    "preset": "ntkcheck.config",
    "probe_preset": "ntkcheck.config",
    "LinearPrediction": "ntkcheck.dynamics",
    "fit_contraction": "ntkcheck.dynamics",
    "predict": "ntkcheck.dynamics",
    "Experiment": "ntkcheck.experiment",
    "build_model": "ntkcheck.experiment",
    "initial_weights": "ntkcheck.experiment",
    "make_problem": "ntkcheck.experiment",
    "setup": "ntkcheck.experiment",
    "BestGain": "ntkcheck.diagnostics",
    "DeadCone": "ntkcheck.diagnostics",
    "Freeze": "ntkcheck.diagnostics",
    "best_gain_free": "ntkcheck.diagnostics",
    "best_gain_live": "ntkcheck.diagnostics",
    "dead_cone": "ntkcheck.diagnostics",
    "freeze": "ntkcheck.diagnostics",
    "alpha": "ntkcheck.features",
    "KernelReport": "ntkcheck.ntk_report",
    "kernel_report": "ntkcheck.ntk_report",
    "KernelDrift": "ntkcheck.linalg",
    "Rank": "ntkcheck.linalg",
    "extreme_eigenvalues": "ntkcheck.linalg",
    "kernel_drift": "ntkcheck.linalg",
    "kernel_spectrum": "ntkcheck.linalg",
    "MathL2O": "ntkcheck.model",
    "Gram": "ntkcheck.ntk",
    "empirical_ntk": "ntkcheck.ntk",
    "jacobian": "ntkcheck.ntk",
    "ntk_operator": "ntkcheck.ntk",
    "ProbeResult": "ntkcheck.probes",
    "measure": "ntkcheck.probes",
    "Problem": "ntkcheck.problems",
    "Interrupted": "ntkcheck.runfolder",
    "SweepResult": "ntkcheck.sweeps",
    "SweepSpec": "ntkcheck.sweeps",
    "load_spec": "ntkcheck.sweeps",
    "load_sweep": "ntkcheck.sweeps",
    "make_spec": "ntkcheck.sweeps",
    "sweep": "ntkcheck.sweeps",
    "RunResult": "ntkcheck.training",
    "load_run": "ntkcheck.training",
    "resume_run": "ntkcheck.training",
    "continue_run": "ntkcheck.training",
    "train": "ntkcheck.training",
    "VerifyResult": "ntkcheck.verification",
    "resume_verify": "ntkcheck.verification",
    "verify": "ntkcheck.verification",
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
