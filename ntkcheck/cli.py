"""The ``ntkcheck`` command line: a thin layer over :mod:`ntkcheck.train`.

Bad input exits with code 2 and one line naming the parameter; an interrupted run exits with 130 and
says how to resume it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.train import Interrupted, train as run_training

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Check the NTK convergence theory of Math-L2O against real training runs.")
console = Console(stderr=True)
DEFAULT = TrainConfig.__dataclass_fields__


def _default(name):
    return DEFAULT[name].default


@app.callback()
def _root():
    """Check the NTK convergence theory of Math-L2O against real training runs."""


@app.command()
def train(
    width: int = typer.Option(_default("width"), help="n, width of the wide layer L−1."),
    T: int = typer.Option(_default("T"), "--T", help="Unrolled optimisation steps."),
    N: int = typer.Option(_default("N"), "--N", help="Training instances (one fixed set)."),
    d: int = typer.Option(_default("d"), help="Variable dimension of each instance."),
    b: int = typer.Option(_default("b"), help="Rows of each M_i (0 < b ≤ d)."),
    L: int = typer.Option(_default("L"), "--L", help="Layers of the step-size network (2 → 2 → … → n → 1)."),
    e: float = typer.Option(_default("e"), help="Expansion coefficient of the deterministic initialisation."),
    lr: float = typer.Option(_default("lr"), help="η, the meta learning rate."),
    iters: int = typer.Option(_default("iters"), help="K, training iterations."),
    optimizer: str = typer.Option(_default("optimizer"), help="Meta optimizer: sgd or adam."),
    loss: str = typer.Option(_default("loss"), help="Training loss over the unroll: last, mean or weighted."),
    init: str = typer.Option(_default("init"), help="deterministic, deterministic-abs or random."),
    bias: bool = typer.Option(_default("bias"), "--bias/--no-bias", help="Biases in every layer."),
    detach: bool = typer.Option(_default("detach"), "--detach/--no-detach",
                                help="Detach the network inputs (the paper's code); --no-detach trains on the true gradient."),
    wide_layer: str = typer.Option(_default("wide_layer"),
                                   help="Wide layer: auto, dense (R×n matrix) or angular (exact prefix sums; bias-free only)."),
    step_scale: float = typer.Option(_default("step_scale"), help="s in the step s/β_i (the paper's code uses 0.9999)."),
    seed: int = typer.Option(_default("seed"), help="Seed of the data and of the initialisation."),
    device: str = typer.Option(_default("device"), help="auto, cpu or cuda."),
    dtype: str = typer.Option(_default("dtype"), help="float32 or float64."),
    on_divergence: str = typer.Option(_default("on_divergence"),
                                      help="NaN/Inf loss or gradient: stop the run, or skip the update (the paper's code)."),
    checkpoint_every: int = typer.Option(_default("checkpoint_every"), help="Checkpoint every this many iterations."),
    saturation_tol: float = typer.Option(_default("saturation_tol"), help="P within this of 0 or 2 counts as saturated."),
    problem_file: Optional[Path] = typer.Option(None, help=".npz/.pt with arrays M (N,b,d) and Y (N,b); overrides N, d, b."),
    init_file: Optional[Path] = typer.Option(None, help=".npz/.pt with initial weights W1..WL (and b1..bL)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/train-<time>). Never overwritten."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice). "
                                          "1 is often faster on a busy machine."),
):
    """Train Math-L2O and record every iteration (defaults: the paper's small configuration)."""
    if resume and out is None:
        raise ConfigError("--resume", "needs --out, the folder of the interrupted run")
    values = dict(locals())
    out = values.pop("out") or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    values.pop("resume")
    _set_threads(values.pop("threads"))
    for key in ("problem_file", "init_file"):
        values[key] = None if values[key] is None else str(values[key])
    cfg = TrainConfig(**values)
    progress = _progress()
    task = progress.add_task("training", total=cfg.iters + 1, loss=float("nan"), gain=float("nan"))

    def show(k, metrics):
        progress.start()  # only once training runs, so set-up errors print alone
        progress.update(task, completed=k + 1, loss=metrics["F_T"], gain=metrics["gain"])

    try:
        result = run_training(cfg, out, resume=resume, callback=show)
    finally:
        progress.stop()
    _print_summary(result)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ConfigError("--threads", f"must be an integer ≥ 1 (got {threads})")
    torch.set_num_threads(threads)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("F(X_T) {task.fields[loss]:.4g}  gain {task.fields[gain]:.3f}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _print_summary(result) -> None:
    s = result.summary
    table = Table(title=f"run {result.folder}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("status", s["status"])
    table.add_row("iterations", str(s["iterations"]))
    table.add_row("F(X_T) at k=0", f"{s['F_T_initial']:.6g}")
    table.add_row("F(X_T) at the end", f"{s['F_T_final']:.6g}")
    table.add_row("gain (F_GD − F)/F_GD", f"{s['gain_final']:.4f}")
    table.add_row("seconds per iteration", f"{s['seconds_per_iteration']:.3g}")
    if s["diverged_iterations"]:
        table.add_row("diverged at", ", ".join(map(str, s["diverged_iterations"][:10])))
    Console().print(table)


def _usage_error(err: Exception) -> bool:
    """Click's UsageError family (typer vendors click in recent versions, so match by name)."""
    return any(cls.__name__ == "UsageError" for cls in type(err).__mro__)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as err:
        console.print(f"[red]error[/red] {err}", highlight=False, soft_wrap=True)
        return 2
    except Interrupted as err:
        console.print(f"[yellow]{err}[/yellow]", highlight=False, soft_wrap=True)
        return 130
    except Exception as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            console.print(err.ctx.get_help(), highlight=False)
            return 0
        if _usage_error(err):
            console.print(f"[red]error[/red] {err.format_message()}", highlight=False, soft_wrap=True)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
