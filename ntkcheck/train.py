"""Training Math-L2O: full-batch meta-gradient descent on a fixed set of N instances.

Iteration k (k = 0..K) unrolls T steps with the weights W_k, evaluates the training loss, backpropagates
through all T steps (BPTT) and, for k < K, updates W_{k+1} = W_k − η ∇̃F(W_k) (SGD) or takes an Adam
step. ∇̃ is the true gradient when ``detach=False`` and the detached-input gradient otherwise. Every
metric recorded at iteration k is measured at W_k, before its update, so iteration 0 is the untrained
model (GD under the deterministic initialisation).

Training losses, all summed over instances:
    last      F(X_T)
    mean      (1/T) Σ_{t=1..T} F(X_t)
    weighted  Σ_t t·F(X_t) / Σ_t t
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkcheck import init as inits
from ntkcheck import io, problems
from ntkcheck.config import ConfigError, TrainConfig, hidden_widths
from ntkcheck.model import MathL2O, Trajectory, build

CHECKPOINT = "checkpoint.pt"
RESUMABLE = ("iters", "device", "checkpoint_every", "wide_layer")  # may change between an interrupted run and its resume


class Interrupted(Exception):
    """Training stopped by the user; the checkpoint holds every completed iteration."""

    def __init__(self, folder: Path, iteration: int):
        super().__init__(f"interrupted after iteration {iteration}; resume with --resume --out {final_folder(folder)}")
        self.folder, self.iteration = folder, iteration


@dataclass
class RunResult:
    """What a run leaves behind: its folder, its status and its metrics in long format."""

    folder: Path
    status: str  # "completed" or "diverged"
    metrics: pd.DataFrame
    summary: dict = field(default_factory=dict)


# -- set-up -----------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def make_problem(cfg: TrainConfig) -> problems.Problem:
    """The training set: the user's file when given, else the seeded QP family."""
    if cfg.problem_file:
        try:
            return problems.load(cfg.problem_file)
        except ValueError as err:
            raise ConfigError("--problem-file", str(err)) from None
    return problems.generate(cfg.N, cfg.d, cfg.b, cfg.seed, "train")


def initial_weights(cfg: TrainConfig) -> dict:
    widths = hidden_widths(cfg.width, cfg.L)
    if cfg.init_file:
        try:
            return inits.load(cfg.init_file, widths, cfg.bias)
        except ValueError as err:
            raise ConfigError("--init-file", str(err)) from None
    if cfg.init == "random":
        return inits.random(widths, cfg.seed, cfg.bias)
    return inits.deterministic(widths, cfg.e, cfg.seed, cfg.bias, absolute=cfg.init == "deterministic-abs")


def config_from_problem(cfg: TrainConfig) -> TrainConfig:
    """With ``problem_file``, N, d and b are the file's."""
    if not cfg.problem_file:
        return cfg
    problem = make_problem(cfg)
    return cfg.replace(N=problem.N, d=problem.d, b=problem.b)


def make_optimizer(cfg: TrainConfig, model: MathL2O) -> torch.optim.Optimizer:
    return meta_optimizer(cfg.optimizer, model.parameters(), cfg.lr)


def meta_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Plain SGD (the paper) or Adam, with learning rate η = ``lr``, over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


# -- one iteration ----------------------------------------------------------------------------------


def training_loss(problem: problems.Problem, traj: Trajectory, kind: str) -> torch.Tensor:
    """The meta objective of the module docstring, from F(X_1..X_T)."""
    if kind == "last":
        return problems.objective(problem, traj.X[-1])
    F_t = torch.stack([problems.objective(problem, X) for X in traj.X[1:]])
    if kind == "mean":
        return F_t.mean()
    t = torch.arange(1, len(F_t) + 1, dtype=F_t.dtype, device=F_t.device)
    return (t * F_t).sum() / t.sum()


def step_metrics(problem, traj: Trajectory, F_gd: torch.Tensor, tol: float) -> dict[str, float]:
    """Objective, gain over GD and step-size statistics of one unroll.

    gain = (F_GD(X_T) − F(X_T)) / F_GD(X_T) (the paper's "last" gain); gain_mean averages the same
    ratio over t = 1..T. P_saturated is the share of P entries (all t) within ``tol`` of 0 or 2.
    """
    with torch.no_grad():
        F_t = torch.stack([problems.objective(problem, X) for X in traj.X[1:]])
        P = torch.stack(traj.P)
        values = {
            "F_T": F_t[-1],
            "gain": (F_gd[-1] - F_t[-1]) / F_gd[-1],
            "gain_mean": ((F_gd - F_t) / F_gd).mean(),
            "P_min": P.min(),
            "P_mean": P.mean(),
            "P_max": P.max(),
            "P_saturated": ((P <= tol) | (P >= 2 - tol)).double().mean(),
            "active_share": torch.stack(traj.active).mean(),
        }
        return {k: float(v) for k, v in values.items()}


def weight_metrics(model: MathL2O, W0: dict) -> dict[str, float]:
    """Per layer: ‖∇W_ℓ‖_F, ‖W_ℓ − W_ℓ⁰‖_F and, where ‖W_ℓ⁰‖ > 0, ‖W_ℓ − W_ℓ⁰‖_F / ‖W_ℓ⁰‖_F."""
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            out[f"grad_norm/{name}"] = float(p.grad.norm()) if p.grad is not None else 0.0
            drift = float((p - W0[name].to(p)).norm())
            out[f"drift/{name}"] = drift
            norm0 = float(W0[name].norm())
            if norm0 > 0:
                out[f"drift_rel/{name}"] = drift / norm0
    return out


def grads_finite(model: MathL2O) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


# -- the run ----------------------------------------------------------------------------------------


def final_folder(folder: Path) -> Path:
    return folder.with_name(folder.name.removesuffix(".partial"))


def partial_folder(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def prepare_folder(out: Path, resume: bool, marker: str = CHECKPOINT) -> Path:
    """The working folder ``<out>.partial``; renamed to ``out`` when the run ends. An interrupted run is
    recognised by its ``marker`` file."""
    work = partial_folder(out)
    if out.exists():
        raise ConfigError("--out", f"{out} already holds a finished run; runs are never overwritten, choose another --out")
    if resume and not (work / marker).is_file():
        raise ConfigError("--resume", f"no interrupted run to resume: {work / marker} does not exist")
    if not resume and work.exists():
        raise ConfigError("--out", f"an interrupted run is in {work}; pass --resume to continue it, or choose another --out")
    try:
        work.mkdir(parents=True, exist_ok=True)
        probe = work / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError("--out", f"cannot write to {out.parent}: {err.strerror}") from None
    return work


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = TrainConfig.from_dict(state["config"])
        missing = {"k", "params", "optimizer", "W0", "rows", "status", "skipped", "seconds"} - state.keys()
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except Exception as err:  # any failure to read it back means the file is not a usable checkpoint
        raise ConfigError("--resume", f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    for name, value in cfg.to_dict().items():
        if name not in RESUMABLE and getattr(saved, name) != value:
            raise ConfigError(
                f"--{name.replace('_', '-')}",
                f"the checkpoint was made with {getattr(saved, name)!r}, not {value!r}; resume with the same value",
            )
    return state


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "ntkcheck": _package_version()}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ntkcheck")
    except PackageNotFoundError:
        return "unknown"


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, callback=None, probe=None) -> RunResult:
    """Train Math-L2O with ``cfg``, writing the run folder ``out`` (see DESIGN.md §3).

    ``callback(k, metrics)`` is called after each iteration's metrics are recorded (a progress bar,
    a test that interrupts); ``probe(k, model)`` before iteration k runs, with the model at W_k (the
    measurements of ``ntkcheck verify``; it must not change the model). On KeyboardInterrupt the state after the last completed iteration is
    checkpointed and :class:`Interrupted` is raised; ``resume=True`` continues from it and ends with
    the numbers an uninterrupted run would have.
    """
    cfg = config_from_problem(cfg)
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    problem = make_problem(cfg).to(device=device, dtype=dtype)
    out = Path(out)
    work = prepare_folder(out, resume)

    model = build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg), bias=cfg.bias, detach=cfg.detach,
                  step_scale=cfg.step_scale, wide_layer=cfg.wide_layer, device=device, dtype=dtype)
    optimizer = make_optimizer(cfg, model)
    W0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state = {"k": 0, "rows": [], "status": "running", "skipped": 0, "seconds": 0.0}
    if resume:
        saved = load_checkpoint(work / CHECKPOINT, cfg)
        model.load_state_dict(saved["params"])
        optimizer.load_state_dict(saved["optimizer"])
        W0 = saved["W0"]
        state = {k: saved[k] for k in state}
        if state["status"] == "diverged":
            return finish(cfg, out, work, model, optimizer, W0, state)

    F_gd = torch.stack([problems.objective(problem, X) for X in problems.gd_trajectory(problem, cfg.T, cfg.step_scale)[1:]])
    k = state["k"]
    with StopRequest() as stop:
        try:
            while k <= cfg.iters:
                if probe is not None:
                    probe(k, model)
                started = time.perf_counter()
                metrics = run_iteration(cfg, model, optimizer, problem, F_gd, W0, update=k < cfg.iters)
                state["seconds"] += time.perf_counter() - started
                state["rows"] += [(k, name, value) for name, value in metrics.items()]
                if metrics["diverged"]:
                    state["skipped"] += 1
                    if cfg.on_divergence == "stop":
                        state["status"] = "diverged"
                k += 1
                state["k"] = k
                if callback is not None:
                    callback(k - 1, metrics)
                if state["status"] == "diverged":
                    break
                if stop.requested:
                    raise KeyboardInterrupt
                if k % cfg.checkpoint_every == 0 and k <= cfg.iters:
                    save_checkpoint(work, cfg, model, optimizer, W0, state)
        except KeyboardInterrupt:  # raised between iterations only, so the state is consistent
            save_checkpoint(work, cfg, model, optimizer, W0, state)
            raise Interrupted(work, k - 1) from None
    if state["status"] == "running":
        state["status"] = "completed"
    return finish(cfg, out, work, model, optimizer, W0, state)


class StopRequest:
    """SIGINT/SIGTERM during training: finish the current iteration, checkpoint it, then stop.

    A second signal exits at once; the last periodic checkpoint is then what a resume starts from.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
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


def run_iteration(cfg, model, optimizer, problem, F_gd, W0, *, update: bool) -> dict[str, float]:
    """Unroll, backpropagate, measure, and (if ``update`` and everything is finite) step."""
    optimizer.zero_grad(set_to_none=False)
    traj = model.unroll(problem, cfg.T, record_active=True)
    loss = training_loss(problem, traj, cfg.loss)
    finite = bool(torch.isfinite(loss))
    if finite:
        loss.backward()
        finite = grads_finite(model)
    metrics = {"loss": float(loss.detach())}
    metrics |= step_metrics(problem, traj, F_gd, cfg.saturation_tol)
    metrics |= weight_metrics(model, W0)
    metrics["diverged"] = 0.0 if finite else 1.0
    if update and finite:
        optimizer.step()
    return metrics


def save_checkpoint(work: Path, cfg, model, optimizer, W0, state) -> None:
    io.write_torch(work / CHECKPOINT, {
        "config": cfg.to_dict(),
        "params": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "W0": W0,
        **state,
    })


def metrics_frame(rows, run_id: str) -> pd.DataFrame:
    """Long format: run_id, iteration, quantity, value."""
    frame = pd.DataFrame(rows, columns=["iteration", "quantity", "value"])
    frame.insert(0, "run_id", run_id)
    return frame


def finish(cfg, out: Path, work: Path, model, optimizer, W0, state) -> RunResult:
    """Write config, metrics, checkpoint and summary, then rename ``<out>.partial`` to ``out``."""
    save_checkpoint(work, cfg, model, optimizer, W0, state)
    frame = metrics_frame(state["rows"], out.name)
    io.write_frame(work / "metrics.parquet", frame, "parquet")
    io.write_frame(work / "metrics.csv", frame, "csv")
    summary = summarize(frame, state)
    io.write_json(work / "config.json", {"config": cfg.to_dict(), "versions": versions(), "run_id": out.name})
    io.write_json(work / "report.json", summary)
    work.rename(out)
    return RunResult(out, state["status"], frame, summary)


def summarize(frame: pd.DataFrame, state: dict) -> dict:
    """Status and headline numbers of a run: F(X_T) and gain at the first and last iteration."""
    wide = frame.pivot(index="iteration", columns="quantity", values="value")
    first, last = wide.iloc[0], wide.iloc[-1]
    return {
        "status": state["status"],
        "iterations": int(wide.index[-1]),
        "diverged_iterations": [int(k) for k in wide.index[wide["diverged"] > 0]],
        "F_T_initial": float(first["F_T"]),
        "F_T_final": float(last["F_T"]),
        "gain_final": float(last["gain"]),
        "seconds_training": state["seconds"],
        "seconds_per_iteration": state["seconds"] / max(len(wide), 1),
    }
