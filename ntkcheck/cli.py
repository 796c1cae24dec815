"""The ``ntkcheck`` command line: options (:mod:`ntkcheck.apps.options`) → one library call → print. A library error
names a config field (``width``; others in backticks in its message); :func:`main` prints it with flags (``--width``)
in one line, exit 2. An interrupted run exits 130 and says how to resume it. Only the commands import torch."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ntkcheck import __version__
from ntkcheck.apps import options as opt
from ntkcheck.config import FORMATS, ConfigError, TrainConfig, preset
from ntkcheck.config import flag as config_flag
from ntkcheck.report.progress import ProgressDisplay, SweepsProgress
from ntkcheck.resources import idle_cores, set_threads  # (torch is imported inside it)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Check the NTK convergence theory of Math-L2O against real training runs.")
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:  # __version__ is "unknown" in a source tree that was never installed
        typer.echo(f"ntkcheck {__version__}" + (" (not installed)" if __version__ == "unknown" else ""))
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version of ntkcheck and exit.",
                                                callback=_print_version, is_eager=True)] = False):
    """Check the NTK convergence theory of Math-L2O against real training runs."""


def _given(ctx: typer.Context, values: dict, names=opt.CONFIG_FIELDS) -> dict:
    """The options ``names`` (default: the config fields) given explicitly on the command line (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()
            if k in names and ctx.get_parameter_source(k).name != "DEFAULT"}


def _machine(values: dict, command: str) -> Path:
    """Apply --threads; check --resume, --format, --json/--csv; the output folder."""
    _machine_readable(values)  # checks --json/--csv before the run
    if values.get("format", "png") not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {values['format']!r})")
    if (threads := values.get("threads")) is not None and not 1 <= threads <= 4096:
        raise ConfigError("threads", f"must be an integer in [1, 4096] (got {threads})")
    if "threads" in values:
        set_threads(threads or idle_cores())
    if values.get("resume") and values.get("out") is None:
        raise ConfigError("resume", "needs --out, the folder of the interrupted run")
    return values.get("out") or Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")


@app.command()
@opt.attach(*opt.RUN, "continue_from")
def train(ctx: typer.Context, **values):
    """Train Math-L2O and record every iteration (default: the paper's small configuration)."""
    from ntkcheck.apps.train import run_train
    from ntkcheck.report.run import run_table

    out = _machine(values, "train")  # a resume needs only --out: the stored config is the truth
    with ProgressDisplay("train", console) as progress:
        result = run_train(values["preset"], out, resume=values["resume"], continue_from=values["continue_from"],
                           progress=progress, max_memory=values["max_memory"], **_given(ctx, values))
    Console().print(run_table(result.summary, result.folder))


@app.command()
@opt.attach(*opt.VERIFY)
def verify(ctx: typer.Context, **values):
    """Train, measure every quantity of the proof, evaluate every condition, compare theory and measurement."""
    from ntkcheck.apps.verify_start import run_verify
    from ntkcheck.report.run import rich_tables, verdict_frame
    from ntkcheck.report.tables import verify_json

    out = _machine(values, "verify")
    with ProgressDisplay("verify", console) as progress:
        result = run_verify(values["preset"], out, resume=values["resume"], progress=progress,
                            figures=values["format"] if values["figures"] else False, max_memory=values["max_memory"],
                            **_given(ctx, values))
    if not _machine_readable(values, lambda: verify_json(result), lambda: verdict_frame(result.report["conditions"])):
        Console(width=None if sys.stdout.isatty() else 160).print(*rich_tables(result.report))  # a log: whole tables
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)
    if values["strict"] and (failed := result.failed_required()):
        console.print(f"[red]--strict[/red]: conditions the theorem needs fail: {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


@app.command()
@opt.attach(*opt.NTK)
def ntk(ctx: typer.Context, **values):
    """Empirical NTK (K = J Jᵀ, K̃ = J J̃ᵀ), α = σ_min(G_{L−1,t}), ranks with their tolerances, and the
    linearised rate and stability threshold, in float64, for a configuration's initial weights or a run."""
    from ntkcheck.apps import ntk as kr
    from ntkcheck.report.run import ntk_frame, ntk_table

    run = values["run"]
    folder = run if values["out"] is None and run is not None else _machine(values, "ntk")
    cfg = None if run is not None else preset(values["preset"], **_given(ctx, values))
    with console.status("measuring the Jacobians, K, K̃ and α in float64 (minutes at paper scale)…"):
        report = kr.kernel_report(cfg, run=run, method=values["method"], t=values["alpha_step"],
                                  device=values["device"] if run else None)
    kr.write(report, folder)
    numbers = report.as_dict()
    if not _machine_readable(values, lambda: numbers | {"folder": str(folder)}, lambda: ntk_frame(numbers)):
        Console().print(ntk_table(numbers, folder))


@app.command()
@opt.attach("seed", "out", "resume", "threads")
def reproduce(figure: Annotated[Optional[str], typer.Argument(help=opt.FIGURE_HELP, show_default=False)] = None,
              preset: Annotated[str, typer.Option(help="small (minutes on one CPU thread) or paper (published sizes).",
                                                  rich_help_panel=opt.OUT)] = "small", **values):
    """Rerun one of the paper's comparisons (baselines, GD, Adam) and write its CSV and PNG into a new folder;
    an interrupted one continues with --resume --out DIR, keeping every finished sub-run."""
    from ntkcheck.apps.reproduce import run

    if figure is None:
        raise ConfigError("figure", "missing; choose one of " + "; ".join(f"{k} ({v})" for k, v in opt.FIGURES.items()))
    folder = _machine(values, f"reproduce-{figure}-{preset}")
    run(figure, folder, preset=preset, seed=values["seed"], resume=values["resume"],
        log=lambda line: console.print(line, highlight=False))
    console.print(f"wrote {folder}", highlight=False)


@app.command()
@opt.attach(*opt.SWEEP)
def sweep(ctx: typer.Context, **values):
    """Train a grid of configurations over seeds (batched, or on Ray), probe every cell, and write cells.parquet,
    curves.parquet, figures and report.md. Rerunning the same command on the same --out finishes what is missing."""
    from ntkcheck.apps.sweep.start import start_sweep
    from ntkcheck.report.tables import sweep_gain_table, sweep_status_line

    out = _machine(values, "sweep")
    with ProgressDisplay("sweep", console) as progress:
        try:
            result = start_sweep(out, resume=values["resume"], spec=values["spec"], grid=values["grid"],
                                 seeds=values["seeds"], preset=_given(ctx, values, {"preset"}).get("preset"),
                                 base=_given(ctx, values), **_given(ctx, values, opt.SWEEP_SETTINGS), progress=progress,
                                 **{k: values[k] for k in ("engine", "address", "workers", "max_memory")},
                                 figures=values["format"])
        except KeyboardInterrupt:
            progress.stop()
            console.print(f"[yellow]interrupted: {progress.cells[0]} of {progress.cells[1]} cells are written in "
                          f"{out}.partial; rerun the same command to finish the others[/yellow]", highlight=False)
            raise typer.Exit(130)
    console.print(sweep_status_line(result.cells), highlight=False)
    Console().print(sweep_gain_table(result))
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)
    if result.failed:  # errors, not divergences: exit 1 once everything is written
        console.print(f"[red]failed:[/red] {result.failures()}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@opt.attach(*opt.STUDY)
def study(name: Annotated[Optional[str], typer.Argument(help="init, stability, width, objectives or momentum.",
                                                        show_default=False, metavar="NAME")] = None, **values):
    """Answer one of the paper's open questions by measurement: the study's declared sweeps over seeds (a spec file in
    the package), reduced to an answer, tables, figures and report.md. Rerunning the same command on the same --out
    finishes what is missing; a finished study is read back, never rerun."""
    from ntkcheck.apps.study import study as run_study

    out = _machine(values, f"study-{name}")
    with SweepsProgress(f"study {name}", console) as progress:
        result = run_study(name, out, size=values["size"], seeds=values["study_seeds"], grid=values["study_grid"],
                           engine=values["engine"], address=values["address"], workers=values["workers"],
                           resume=values["resume"], callback=progress, figures=values["format"])
    Console().print(result.answer.paragraph, highlight=False, markup=False)
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)


@app.command("bounds")
@opt.attach(*opt.BOUNDS)
def bounds(ctx: typer.Context, **values):
    """The theory's thresholds for a configuration: each condition with its source, status (stated / scaling /
    derived), confidence, threshold, the configuration's value and the verdict."""
    from ntkcheck.report.run import bounds_table, verdict_frame
    from ntkcheck.report.tables import bounds_notes
    from ntkcheck.theory import thresholds

    C, data, as_json, as_csv = (values.pop(k) for k in ("C", "data", "json", "csv"))
    rows = thresholds(cfg := preset(values["preset"], **_given(ctx, values, TrainConfig.__dataclass_fields__)), C=C,
                      data=data)
    if _machine_readable({"json": as_json, "csv": as_csv}, lambda: rows, lambda: verdict_frame(rows)):
        return
    Console().print(bounds_table(rows, cfg, data))
    console.print("\n".join(bounds_notes(rows, C)), highlight=False, soft_wrap=True)


def _machine_readable(values: dict, as_json=None, as_frame=None) -> bool:
    """With --json or --csv (not both), print ``as_json()`` or ``as_frame()`` on stdout (:func:`ntkcheck.report.tables.
    machine_readable`; with neither given, only check) and say so: the human table is then not printed."""
    if values.get("json") and values.get("csv"):
        raise ConfigError("json", "cannot be combined with --csv; choose one")
    if (kind := "json" if values.get("json") else "csv" if values.get("csv") else None) and as_json is not None:
        from ntkcheck.report.tables import machine_readable

        typer.echo(machine_readable(kind, as_json, as_frame), nl=False)
    return kind is not None


def flag(field: str) -> str:
    """The command-line flag of an option or config field: ``step_scale`` → ``--step-scale``."""
    return opt.FLAGS.get(field) or config_flag(field)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # a typer.Exit comes back as its exit code
        code = app(args=argv, standalone_mode=False, default_map=opt.help_defaults(
            argv, [command.name or command.callback.__name__ for command in app.registered_commands]))
    except ConfigError as err:  # other fields named in backticks, as flags
        message = re.sub(r"`(\w+)`", lambda m: flag(m.group(1)), getattr(err, "flagged", err.message))
        console.print(f"[red]error[/red] {flag(err.field)}: {message}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:  # outside the training loop
        console.print("[yellow]interrupted outside training; a run with a checkpoint resumes with --resume --out"
                      "[/yellow]", highlight=False, soft_wrap=True)
        return 130
    except MemoryError as err:  # a run insisted on (--max-memory inf) that did not fit after all
        console.print(f"[red]error[/red] --max-memory: the run did not fit in memory ({err}); lower the sizes, or "
                      "leave --max-memory out to have such runs refused before they start", highlight=False, soft_wrap=True)
        return 2
    except Exception as err:
        from ntkcheck.results.runfolder import Interrupted  # imported only now: --help and errors need no torch

        if isinstance(err, Interrupted):
            console.print(f"[yellow]interrupted after iteration {err.iteration}; resume with --resume --out "
                          f"{err.folder}[/yellow]", highlight=False, soft_wrap=True)
            return 130
        if type(err).__name__ == "NoArgsIsHelpError":
            console.print(err.ctx.get_help(), highlight=False)
            return 0
        if any(cls.__name__ == "UsageError" for cls in type(err).__mro__):  # click's, vendored by typer
            console.print(f"[red]error[/red] {err.format_message()}", highlight=False, soft_wrap=True)
            return 2
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
