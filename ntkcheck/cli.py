"""The ``ntkcheck`` command line: options → config → one library call → print.

Every option is declared once (:data:`OPTIONS`, grouped in help panels) and a command lists the ones it takes.
A library error names a config field (``width``); :func:`main` prints it as the flag (``--width``) in one line,
exit 2. An interrupted run exits 130 and says how to resume it."""

from __future__ import annotations

import inspect
import sys
import time
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ntkcheck.config import (
    ALPHA_STEPS,
    DEVICES,
    DRAWS,
    DTYPES,
    FORMATS,
    INITS,
    JACOBIANS,
    LOSSES,
    NTK_METHODS,
    ON_DIVERGENCE,
    OPTIMIZERS,
    PRESETS,
    WIDE_LAYERS,
    ConfigError,
    ProbeConfig,
    TrainConfig,
    preset,
    probe_preset,
)
from ntkcheck.config import flag as config_flag

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Check the NTK convergence theory of Math-L2O against real training runs.")
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ntkcheck")
        except PackageNotFoundError:  # a source tree that was never installed
            found = "unknown (not installed)"
        typer.echo(f"ntkcheck {found}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version of ntkcheck and exit.",
                                                callback=_print_version, is_eager=True)] = False):
    """Check the NTK convergence theory of Math-L2O against real training runs."""
FLAGS = {"figure": "FIGURE", "t": "--alpha-step"}  # arguments whose name is not a flag (config fields: config.flag)


def _o(kind, panel: str, help: str, *flags: str, default=None, choices: tuple[str, ...] = ()) -> tuple:
    """(type, typer option, default); a config field's default is the config's. The help shows ``choices`` as
    [a|b|c] and a flag without a type; the values are checked by the library (errors name the field)."""
    metavar = f"[{'|'.join(choices)}]" if choices else "" if kind is bool else None
    if metavar and len(metavar) > 20:  # a long list stays in the help text, which names every choice
        metavar = "<choice>"
    return kind, typer.Option(*flags, help=help, rich_help_panel=panel, metavar=metavar), default


P, M, TR, PR, OUT, MACH, SW = "Problem", "Model", "Training", "Probes", "Output", "Machine", "Sweep"
OPTIONS = {
    "N": _o(int, P, "Training instances (one fixed set).", "--N"),
    "d": _o(int, P, "Variable dimension of each instance."),
    "b": _o(int, P, "Rows of each M_i (0 < b ≤ d)."),
    "seed": _o(int, P, "Seed of the data (and of the initialisation unless --init-seed)."),
    "init_seed": _o(Optional[int], M, "Seed of the initial weights (default: --seed)."),
    "problem_file": _o(Optional[Path], P, ".npz/.pt with arrays M (N,b,d) and Y (N,b); overrides N, d, b."),
    "draw": _o(str, P, "ntkcheck (its own seeded draws) or paper: a compatibility mode that draws the instances and "
                       "W_0 as the authors' code does (--seed is their --seed, 118 in their runs and the *-official "
                       "presets; data from seed + 777).", choices=DRAWS),
    "width": _o(int, M, "n, width of the wide layer L−1."),
    "L": _o(int, M, "Layers of the step-size network (2 → 2 → … → n → 1).", "--L"),
    "T": _o(int, M, "Unrolled optimisation steps.", "--T"),
    "e": _o(float, M, "Expansion coefficient of the deterministic initialisation."),
    "init": _o(str, M, "deterministic, deterministic-abs or random.", choices=INITS),
    "bias": _o(bool, M, "Biases in every layer.", "--bias/--no-bias"),
    "detach": _o(bool, M, "Detach the network inputs (the paper's code); --no-detach trains on the true gradient.",
                 "--detach/--no-detach"),
    "wide_layer": _o(str, M, "Wide layer: auto, dense (R×n matrix) or angular (exact prefix sums; bias-free only).", choices=WIDE_LAYERS),
    "step_scale": _o(float, M, "s in the step s/β_i (the paper's code uses 0.9999)."),
    "init_file": _o(Optional[Path], M, ".npz/.pt with initial weights W1..WL (and b1..bL)."),
    "lr": _o(float, TR, "η, the meta learning rate.", "--lr", "--eta"),
    "iters": _o(int, TR, "K, training iterations."),
    "optimizer": _o(str, TR, "Meta optimizer: sgd or adam.", choices=OPTIMIZERS),
    "loss": _o(str, TR, "Training loss over the unroll: last, mean or weighted.", choices=LOSSES),
    "on_divergence": _o(str, TR, "NaN/Inf loss or gradient: stop the run, or skip the update (the paper's code).", choices=ON_DIVERGENCE),
    "checkpoint_every": _o(int, TR, "Checkpoint every this many iterations."),
    "saturation_tol": _o(float, TR, "P within this of 0 or 2 counts as saturated."),
    "dtype": _o(str, TR, "float32 or float64 (training; probes are float64).", choices=DTYPES),
    "ntk_every": _o(int, PR, "Probe the NTK and α every this many iterations (0: only at k = 0 and K)."),
    "ntk_method": _o(str, PR, "auto (dense where the kernels fit in memory), dense (K formed) or lanczos (λ_max, λ_min).", choices=NTK_METHODS),
    "jacobian": _o(str, PR, "Jacobian for the dense kernel: auto, func or structured.", choices=JACOBIANS),
    "alpha_steps": _o(str, PR, "T (α at step T) or all (also α over every step t at k = 0).", choices=ALPHA_STEPS),
    "early": _o(int, PR, "Early window [0, this) of the measured contraction fit.", "--fit-early"),
    "preset": _o(str, OUT, f"{' or '.join(PRESETS)}: the configuration; options given explicitly override it.",
                 default="small", choices=tuple(PRESETS)),
    "out": _o(Optional[Path], OUT, "Output folder (default runs/<command>-<time>; ntk: the --run folder)."),
    "resume": _o(bool, OUT, "Continue the interrupted run in --out.", "--resume", default=False),
    "continue_from": _o(Optional[Path], OUT, "A completed run folder to continue to --iters iterations, into --out "
                        "(a new folder; the finished one is only read).", "--continue-from"),
    "device": _o(str, MACH, "auto, cpu or cuda.", choices=DEVICES),
    "threads": _o(Optional[int], MACH, "CPU threads for torch and numpy/scipy BLAS (default: theirs); 1 is often faster on a busy machine."),
    "max_memory": _o(Optional[float], MACH, "Refuse runs estimated to need more bytes, e.g. 8e9 (default: available; inf)."),
    "strict": _o(bool, OUT, "Exit 1 when a condition the theorem needs FAILS.", "--strict", default=False),
    "figures": _o(bool, OUT, "Write the figures.", "--figures/--no-figures", default=True),
    "json": _o(bool, OUT, "Print the table as JSON on stdout instead (NaN and ∞ as null).", "--json", default=False),
    "csv": _o(bool, OUT, "Print the table as CSV on stdout instead.", "--csv", default=False),
    "format": _o(str, OUT, "The figures' file format.", default="png", choices=FORMATS),
    "run": _o(Optional[Path], OUT, "A finished run folder: measure at its W_0 and final weights (its own config)."),
    "method": _o(str, PR, "Jacobian: auto (structured where it applies), func or structured.", default="auto", choices=JACOBIANS),
    "alpha_step": _o(Optional[int], PR, "Step t of α = σ_min(G_{L−1,t}) (default T).", "--alpha-step"),
    "C": _o(Optional[float], PR, "Constant of the Ω(·) laws of Lemmas 5.1–5.4 (unset: C = 1, verdict undecided).", "--C"),
    "data": _o(bool, PR, "Also draw the instances (--seed) and evaluate what needs them.", "--data/--no-data", default=True),
    "grid": _o(Optional[list[str]], SW, "An axis FIELD=V1,V2,… over any configuration field (repeat for more axes).",
               "--grid"),
    "seeds": _o(Optional[str], SW, "Seeds of every grid point: a range 0-4 or a list 0,3,7 (default: --seed)."),
    "vary": _o(str, SW, "What a seed draws: both (data and weights), data, or init (the weights).", default="both", choices=("both", "data", "init")),
    "spec": _o(Optional[Path], SW, "A TOML sweep spec (base, grid, seeds, …); options given here override it."),
    "record_every": _o(int, SW, "Curves every this many iterations (0: about 200 points per curve).", default=0),
    "probe_at": _o(str, SW, "Probe every cell at these iterations (K: its last), e.g. 0,K.", default="0,K"),
    "probe_method": _o(str, SW, "auto, dense, lanczos, or none (no probes).", default="auto", choices=(*NTK_METHODS, "none")),
    "batch_size": _o(int, SW, "Most cells trained together in one batch.", default=32),
    "engine": _o(str, SW, "embedded (this process) or ray (batches as Ray tasks).", default="embedded", choices=("embedded", "ray")),
    "address": _o(Optional[str], SW, "Ray cluster address (default: a local Ray started for the sweep)."),
    "workers": _o(Optional[int], SW, "CPUs of the local Ray (default: all)."),
}
DEFAULTS = {n: o[2] for n, o in OPTIONS.items()} | TrainConfig().to_dict() | ProbeConfig().to_dict()
RUN = ["preset", "N", "d", "b", "seed", "init_seed", "problem_file", "draw", "width", "L", "T", "e", "init", "bias",
       "detach", "wide_layer", "step_scale", "init_file", "lr", "iters", "optimizer", "loss", "on_divergence",
       "checkpoint_every", "saturation_tol", "dtype", "out", "resume", "device", "threads", "max_memory"]


def options(*names: str):
    """Append the declared options ``names`` to a command's own parameters (typer reads ``__signature__``)."""
    def wrap(fn):
        hints = typing.get_type_hints(fn, include_extras=True)  # the command's own annotations, resolved
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(fn).parameters.values()]
        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=DEFAULTS[n],
                                   annotation=Annotated[OPTIONS[n][0], OPTIONS[n][1]]) for n in names]
        fn.__signature__ = inspect.Signature([p for p in own if p.kind != p.VAR_KEYWORD] + extra)
        return fn
    return wrap


def _given(ctx: typer.Context, values: dict) -> dict:
    """The config fields given explicitly on the command line (paths as strings)."""
    fields = set(TrainConfig.__dataclass_fields__) | set(ProbeConfig.__dataclass_fields__)
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()
            if k in fields and ctx.get_parameter_source(k).name != "DEFAULT"}


def _configs(ctx: typer.Context, values: dict) -> tuple[TrainConfig, ProbeConfig]:
    """The preset's configs with the options given explicitly on the command line applied."""
    given, train_fields = _given(ctx, values), set(TrainConfig.__dataclass_fields__)
    cfg = preset(values["preset"], **{k: v for k, v in given.items() if k in train_fields})
    return cfg, probe_preset(values["preset"], **{k: v for k, v in given.items() if k not in train_fields})


def _machine(values: dict, command: str) -> Path:
    """Apply --threads; check --resume, --format, --json/--csv; the output folder."""
    if values.get("json") and values.get("csv"):
        raise ConfigError("json", "cannot be combined with --csv; choose one")
    if values.get("format", "png") not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {values['format']!r})")
    if (threads := values.get("threads")) is not None:
        if not 1 <= threads <= 4096:
            raise ConfigError("threads", f"must be an integer in [1, 4096] (got {threads})")
        from ntkcheck.resources import set_threads

        set_threads(threads)
    if values.get("resume") and values.get("out") is None:
        raise ConfigError("resume", "needs --out, the folder of the interrupted run")
    return values.get("out") or Path("runs") / time.strftime(f"{command}-%Y%m%d-%H%M%S")


def _tracked(label: str, total: int, call):
    """``call(callback)`` with a progress bar driven by ``callback(k, metrics)`` (set-up errors print alone)."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("F(X_T) {task.fields[loss]:.4g}  gain {task.fields[gain]:.3f}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = bar.add_task(label, total=total, loss=float("nan"), gain=float("nan"))

    def show(k, metrics):
        bar.start()
        bar.update(task, completed=k + 1, loss=metrics["F_T"], gain=metrics["gain"])

    def phase(text: str) -> None:  # the slow phase running now, in the bar's label
        bar.start()
        bar.update(task, description=f"{label}: {text}")

    show.phase = phase
    try:
        return call(show)
    finally:
        bar.stop()


@app.command()
@options(*RUN, "continue_from")
def train(ctx: typer.Context, **values):
    """Train Math-L2O and record every iteration (default: the paper's small configuration)."""
    from ntkcheck.engine.training import continue_config, continue_run, resume_config
    from ntkcheck.engine.training import train as run_training
    from ntkcheck.report.run import run_table

    out = _machine(values, "train")  # a resume needs only --out: the stored config is the truth
    finished = values["continue_from"]
    if finished is not None:
        if values["resume"]:
            raise ConfigError("continue_from", "cannot be combined with --resume: --continue-from starts a new folder "
                                               "from a finished run, --resume continues an interrupted one")
        if "iters" not in _given(ctx, values):
            raise ConfigError("iters", "give the new number of iterations with --continue-from (more than the run's)")
        cfg = continue_config(finished, **_given(ctx, values))
        result = _tracked("training", cfg.iters + 1, lambda show: continue_run(
            finished, out, callback=show, max_memory=values["max_memory"], **_given(ctx, values)))
    else:
        cfg = resume_config(out, **_given(ctx, values)) if values["resume"] else _configs(ctx, values)[0]
        result = _tracked("training", cfg.iters + 1, lambda show: run_training(
            cfg, out, resume=values["resume"], callback=show, max_memory=values["max_memory"]))
    Console().print(run_table(result.summary, result.folder))


@app.command()
@options(*RUN, "ntk_every", "ntk_method", "jacobian", "alpha_steps", "early", "strict", "figures", "format", "json",
         "csv")
def verify(ctx: typer.Context, **values):
    """Train, measure every quantity of the proof, evaluate every condition, compare theory and measurement."""
    from ntkcheck.apps.verify import resume_settings
    from ntkcheck.apps.verify import verify as run_verify
    from ntkcheck.report.run import rich_tables, verdict_frame

    out = _machine(values, "verify")
    cfg, probes = resume_settings(out, **_given(ctx, values)) if values["resume"] else _configs(ctx, values)
    figures = values["format"] if values["figures"] else False
    result = _tracked("verify", cfg.iters + 1, lambda show: run_verify(
        cfg, probes, out, callback=show, figures=figures, phase=show.phase,
        **{k: values[k] for k in ("resume", "max_memory")}))
    report = result.report
    if not _machine_readable(values, lambda: {k: report[k] for k in ("status", "run_id", "command", "summary",
                                                                     "conditions", "comparisons", "notes",
                                                                     "diagnostics")}
                             | {"folder": str(result.folder)}, lambda: verdict_frame(report["conditions"])):
        Console(width=None if sys.stdout.isatty() else 160).print(*rich_tables(report))  # a log gets whole tables
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)
    if values["strict"] and (failed := result.failed_required()):
        console.print(f"[red]--strict[/red]: conditions the theorem needs fail: {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


@app.command()
@options("run", "method", "alpha_step", "json", "csv", "preset", "N", "d", "b", "seed", "init_seed", "problem_file", "draw", "width", "L", "T",
         "e", "init", "bias", "wide_layer", "step_scale", "init_file", "lr", "out", "device", "threads")
def ntk(ctx: typer.Context, **values):
    """Empirical NTK (K = J Jᵀ, K̃ = J J̃ᵀ), α = σ_min(G_{L−1,t}), ranks with their tolerances, and the
    linearised rate and stability threshold, in float64, for a configuration's initial weights or a run."""
    from ntkcheck.apps import ntk as kr
    from ntkcheck.report.run import ntk_frame, ntk_table

    run = values["run"]
    folder = run if values["out"] is None and run is not None else _machine(values, "ntk")
    cfg = None if run is not None else _configs(ctx, values)[0]
    with console.status("measuring the Jacobians, K, K̃ and α in float64 (minutes at paper scale)…"):
        report = kr.kernel_report(cfg, run=run, method=values["method"], t=values["alpha_step"],
                                  device=values["device"] if run else None)
    kr.write(report, folder)
    numbers = report.as_dict()
    if not _machine_readable(values, lambda: numbers | {"folder": str(folder)}, lambda: ntk_frame(numbers)):
        Console().print(ntk_table(numbers, folder))


FIGURES = {"fig2": "baselines trained by SGD over (η, T): which runs explode", "fig4a": "our training curve against GD",
           "fig4b": "ours over (η, T) against GD", "fig5": "the e–η ablation (Figs. 5, 9, 10)",
           "fig8": "inference past the training horizon: ours, GD, NAG, tuned Adam"}
FIGURE_HELP = "; ".join(f"{k}: {v}" for k, v in FIGURES.items())


@app.command()
@options("seed", "out", "resume", "threads")
def reproduce(figure: Annotated[Optional[str], typer.Argument(help=FIGURE_HELP, show_default=False)] = None,
              preset: Annotated[str, typer.Option(help="small (minutes on one CPU thread) or paper (published sizes).",
                                                  rich_help_panel=OUT)] = "small", **values):
    """Rerun one of the paper's comparisons (baselines, GD, Adam) and write its CSV and PNG into a new folder;
    an interrupted one continues with --resume --out DIR, keeping every finished sub-run."""
    from ntkcheck.apps.reproduce import run

    if figure is None:
        raise ConfigError("figure", "missing; choose one of " + "; ".join(f"{k} ({v})" for k, v in FIGURES.items()))
    folder = _machine(values, f"reproduce-{figure}-{preset}")
    run(figure, folder, preset=preset, seed=values["seed"], resume=values["resume"],
        log=lambda line: console.print(line, highlight=False))
    console.print(f"wrote {folder}", highlight=False)


SWEEP = ("record_every", "probe_at", "probe_method", "batch_size", "vary")


@app.command()
@options(*[n for n in RUN if n not in ("checkpoint_every",)], "grid", "seeds", "vary", "spec", "record_every",
         "probe_at", "probe_method", "batch_size", "engine", "address", "workers", "format")
def sweep(ctx: typer.Context, **values):
    """Train a grid of configurations over seeds (batched, or on Ray), probe every cell, and write cells.parquet,
    curves.parquet, figures and report.md. Rerunning the same command on the same --out finishes what is missing."""
    from ntkcheck.apps.sweep import load_spec, make_spec, sweep_spec
    from ntkcheck.apps.sweep import sweep as run_sweep

    out = _machine(values, "sweep")
    given = {k: v for k, v in _given(ctx, values).items() if k in TrainConfig.__dataclass_fields__}
    settings = {k: values[k] for k in SWEEP if ctx.get_parameter_source(k).name != "DEFAULT"}
    axes = values["grid"] or ()
    from ntkcheck.results.runfolder import partial_folder

    partial = partial_folder(out)
    if values["resume"] and not (partial / "sweep.toml").is_file():
        raise ConfigError("resume", f"no interrupted sweep to resume: {partial / 'sweep.toml'} does not exist")
    if values["resume"] and not (values["spec"] or axes or given):
        spec = sweep_spec(partial)
    elif values["spec"]:
        overrides = {"preset": values["preset"]} if ctx.get_parameter_source("preset").name != "DEFAULT" else {}
        if values["seeds"] is not None:
            overrides["seeds"] = values["seeds"]
        spec = load_spec(values["spec"], base=given, grid=dict(_axes(axes)), **overrides, **settings)
    else:
        spec = make_spec(values["preset"], base=given, grid=axes, seeds=values["seeds"], **settings)
    result = _swept(lambda callback: run_sweep(spec, out, engine=values["engine"], address=values["address"],
                                               workers=values["workers"], callback=callback,
                                               max_memory=values["max_memory"], figures=values["format"]), out)
    console.print(", ".join(f"{n} {status}" for status, n in result.cells.status.value_counts().items()),
                  highlight=False)
    Console().print(_gain_table(result))
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)


def _gain_table(result):
    """The final gain per grid cell over its seeds (:func:`ntkcheck.report.sweep.summary_table`)."""
    from rich import box
    from rich.table import Table

    from ntkcheck.report.sweep import gain_rows, heading, summary_table

    axes = list(result.spec.axes)
    table = Table(title="final gain over GD, per grid cell over its seeds", title_justify="left", box=box.SIMPLE_HEAD)
    for head in map(heading, axes):
        table.add_column(head, no_wrap=True)
    table.add_column("n")
    for head in ("median [IQR]", "min", "worse than GD", "div.", "failed"):
        table.add_column(head, min_width=12 if head == "median [IQR]" else 10 if head == "min" else None)
    for row in gain_rows(summary_table(result.cells, axes), axes):
        table.add_row(*row)
    return table


def _axes(axes) -> list:
    from ntkcheck.apps.sweep.spec import parse_axis

    return [parse_axis(a) for a in axes]


def _swept(call, out: Path):
    """``call(callback)`` with a progress bar over cell-iterations that counts the cells written."""
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), TextColumn("cells {task.fields[cells]}"),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=console)
    task = bar.add_task("sweep", total=None, cells="")
    counts = {"done": 0, "total": 0}

    def callback(event, **info):
        if event == "start":
            counts.update(done=info["done"], total=info["cells"])
            bar.update(task, total=max(info["cell_iterations"], 1), cells=f"{counts['done']}/{counts['total']}")
            bar.start()
        elif event == "advance":
            bar.advance(task, info["cell_iterations"])
        elif event == "cell":
            counts["done"] += 1
            bar.update(task, cells=f"{counts['done']}/{counts['total']}")
            if not console.is_terminal:  # a log file gets one line per cell instead of a bar
                run = info["run"]
                gain = run.curve["gain"].iloc[-1] if len(run.curve) else float("nan")
                console.print(f"cell {counts['done']}/{counts['total']} {run.cell.id} {run.status}, final gain "
                              f"{gain:.4g}" + (f": {run.error}" if run.error else ""), highlight=False, soft_wrap=True)
    try:
        return call(callback)
    except KeyboardInterrupt:
        bar.stop()
        console.print(f"[yellow]interrupted: {counts['done']} of {counts['total']} cells are written in "
                      f"{out}.partial; rerun the same command to finish the others[/yellow]", highlight=False)
        raise typer.Exit(130)
    finally:
        bar.stop()


@app.command("bounds")
@options("T", "L", "e", "width", "N", "d", "b", "lr", "step_scale", "seed", "C", "data", "json", "csv")
def bounds_table(**values):
    """The theory's thresholds for a configuration: each condition with its source, status (stated / scaling /
    derived), confidence, threshold, the configuration's value and the verdict."""
    from ntkcheck.report.run import bounds_table as table
    from ntkcheck.report.run import verdict_frame
    from ntkcheck.theory import thresholds

    C, data, as_json, as_csv = (values.pop(k) for k in ("C", "data", "json", "csv"))
    cfg = TrainConfig(**values)
    rows = thresholds(cfg, C=C, data=data)
    if _machine_readable({"json": as_json, "csv": as_csv}, lambda: rows, lambda: verdict_frame(rows)):
        return
    Console().print(table(rows, cfg, data))
    notes = [] if C is not None else ["scaling laws: the constant C of Ω(·) is unknown; thresholds at C = 1 (set --C)"]
    for note in notes + [f"[dim]{r['key']}[/dim] {r['note']}" for r in rows]:
        console.print(note, highlight=False, soft_wrap=True)


def _machine_readable(values: dict, as_json, as_frame) -> bool:
    """With --json or --csv, print ``as_json()`` (JSON, NaN and ∞ as null) or ``as_frame()`` (CSV) on stdout and say
    so; the human table is then not printed."""
    if values.get("json") and values.get("csv"):
        raise ConfigError("json", "cannot be combined with --csv; choose one")
    if values.get("json"):
        import json

        from ntkcheck.report.run import plain

        typer.echo(json.dumps(plain(as_json()), indent=2, default=str))
    elif values.get("csv"):
        typer.echo(as_frame().to_csv(index=False), nl=False)
    return bool(values.get("json") or values.get("csv"))


def flag(field: str) -> str:
    """The command-line flag of an option or config field: ``step_scale`` → ``--step-scale``."""
    return FLAGS.get(field) or config_flag(field)


_SIGNATURES: dict = {}  # each command's signature with the declared defaults, before any preset's help changed it


def _preset_help(argv: list[str]) -> None:
    """With ``--help`` and ``--preset NAME``, the help shows NAME's values as the defaults (not the small preset's);
    otherwise every command keeps its declared defaults."""
    for command in app.registered_commands:
        _SIGNATURES.setdefault(command.callback, inspect.signature(command.callback))
        command.callback.__signature__ = _SIGNATURES[command.callback]
    if not {"--help", "-h"} & set(argv):
        return
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--preset"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--preset=")]
    if not given or given[-1] not in PRESETS:
        return
    values = preset(given[-1]).to_dict() | probe_preset(given[-1]).to_dict() | {"preset": given[-1]}
    for command in app.registered_commands:
        sig = inspect.signature(command.callback)
        command.callback.__signature__ = sig.replace(parameters=[
            p.replace(default=values[p.name]) if p.name in values and p.default is not inspect.Parameter.empty else p
            for p in sig.parameters.values()])


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _preset_help(argv)
    try:
        code = app(args=argv, standalone_mode=False)  # a typer.Exit comes back as its exit code
    except ConfigError as err:
        console.print(f"[red]error[/red] {flag(err.field)}: {err.message}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:  # outside the training loop
        console.print("[yellow]interrupted outside training; a run with a checkpoint resumes with --resume --out"
                      "[/yellow]", highlight=False, soft_wrap=True)
        return 130
    except Exception as err:
        from ntkcheck.results.runfolder import (
            Interrupted,  # imported only now: --help and errors need no torch
        )

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
