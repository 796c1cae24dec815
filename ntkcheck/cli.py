"""The ``ntkcheck`` command line: a thin layer over :mod:`ntkcheck.train`.

Bad input exits with code 2 and one line naming the parameter; an interrupted run exits with 130 and
says how to resume it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

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

# Options shared by the commands (type, flag and help written once).
OptWidth = Annotated[int, typer.Option(help="n, width of the wide layer L−1.")]
OptT = Annotated[int, typer.Option("--T", help="Unrolled optimisation steps.")]
OptN = Annotated[int, typer.Option("--N", help="Training instances (one fixed set).")]
OptD = Annotated[int, typer.Option(help="Variable dimension of each instance.")]
OptB = Annotated[int, typer.Option(help="Rows of each M_i (0 < b ≤ d).")]
OptL = Annotated[int, typer.Option("--L", help="Layers of the step-size network (2 → 2 → … → n → 1).")]
OptE = Annotated[float, typer.Option(help="Expansion coefficient of the deterministic initialisation.")]
OptInit = Annotated[str, typer.Option(help="deterministic, deterministic-abs or random.")]
OptBias = Annotated[bool, typer.Option("--bias/--no-bias", help="Biases in every layer.")]
OptSeed = Annotated[int, typer.Option(help="Seed of the data and of the initialisation.")]
OptDevice = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
OptWideLayer = Annotated[str, typer.Option(
    help="Wide layer: auto, dense (R×n matrix) or angular (exact prefix sums; bias-free only).")]
OptStepScale = Annotated[float, typer.Option(help="s in the step s/β_i (the paper's code uses 0.9999).")]
OptProblemFile = Annotated[Optional[Path], typer.Option(
    help=".npz/.pt with arrays M (N,b,d) and Y (N,b); overrides N, d, b.")]
OptInitFile = Annotated[Optional[Path], typer.Option(help=".npz/.pt with initial weights W1..WL (and b1..bL).")]
OptThreads = Annotated[Optional[int], typer.Option(
    help="CPU threads for torch (default: torch's choice); 1 is often much faster on a busy machine.")]


def _default(name):
    return DEFAULT[name].default


@app.callback()
def _root():
    """Check the NTK convergence theory of Math-L2O against real training runs."""


@app.command()
def train(
    width: OptWidth = _default("width"),
    T: OptT = _default("T"),
    N: OptN = _default("N"),
    d: OptD = _default("d"),
    b: OptB = _default("b"),
    L: OptL = _default("L"),
    e: OptE = _default("e"),
    lr: float = typer.Option(_default("lr"), help="η, the meta learning rate."),
    iters: int = typer.Option(_default("iters"), help="K, training iterations."),
    optimizer: str = typer.Option(_default("optimizer"), help="Meta optimizer: sgd or adam."),
    loss: str = typer.Option(_default("loss"), help="Training loss over the unroll: last, mean or weighted."),
    init: OptInit = _default("init"),
    bias: OptBias = _default("bias"),
    detach: bool = typer.Option(_default("detach"), "--detach/--no-detach",
                                help="Detach the network inputs (the paper's code); --no-detach trains on the true gradient."),
    wide_layer: OptWideLayer = _default("wide_layer"),
    step_scale: OptStepScale = _default("step_scale"),
    seed: OptSeed = _default("seed"),
    device: OptDevice = _default("device"),
    dtype: str = typer.Option(_default("dtype"), help="float32 or float64."),
    on_divergence: str = typer.Option(_default("on_divergence"),
                                      help="NaN/Inf loss or gradient: stop the run, or skip the update (the paper's code)."),
    checkpoint_every: int = typer.Option(_default("checkpoint_every"), help="Checkpoint every this many iterations."),
    saturation_tol: float = typer.Option(_default("saturation_tol"), help="P within this of 0 or 2 counts as saturated."),
    problem_file: OptProblemFile = None,
    init_file: OptInitFile = None,
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/train-<time>). Never overwritten."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
    threads: OptThreads = None,
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


@app.command()
def ntk(
    run: Optional[Path] = typer.Option(None, help="A finished run folder: measure at its W_0 and at its final weights "
                                                   "(its config.json/checkpoint.pt; the model options below are then ignored)."),
    width: OptWidth = _default("width"),
    T: OptT = _default("T"),
    N: OptN = _default("N"),
    d: OptD = _default("d"),
    b: OptB = _default("b"),
    L: OptL = _default("L"),
    e: OptE = _default("e"),
    lr: float = typer.Option(_default("lr"), help="η, the meta learning rate (for 2/λ_max and 1 − ηλ_min)."),
    init: OptInit = _default("init"),
    bias: OptBias = _default("bias"),
    wide_layer: OptWideLayer = _default("wide_layer"),
    step_scale: OptStepScale = _default("step_scale"),
    seed: OptSeed = _default("seed"),
    device: OptDevice = _default("device"),
    problem_file: OptProblemFile = None,
    init_file: OptInitFile = None,
    method: str = typer.Option("auto", help="Jacobian: auto (structured where it applies), func (torch.func "
                                            "reference) or structured (fast path)."),
    t: Optional[int] = typer.Option(None, "--t", help="Step t of α = σ_min(G_{L−1,t}) (default T)."),
    threads: OptThreads = None,
    out: Optional[Path] = typer.Option(None, help="Folder for ntk.json and spectra.npz (default: the --run folder, "
                                                   "else runs/ntk-<time>)."),
):
    """Empirical NTK (K = J Jᵀ, K̃ = J J̃ᵀ), α = σ_min(G_{L−1,t}), ranks with their tolerances, and the
    linearised rate and stability threshold, in float64, for a configuration's initial weights or a run."""
    from ntkcheck import io
    from ntkcheck.config import hidden_widths
    from ntkcheck.dynamics import NonFiniteKernel, kernel_drift, ntk_summary
    from ntkcheck.model import build
    from ntkcheck.train import config_from_problem, initial_weights, make_problem, resolve_device, versions

    if method not in ("auto", "func", "structured"):
        raise ConfigError("--method", f"must be one of auto, func, structured (got {method!r})")
    _set_threads(threads)
    if run is not None:
        cfg, points, run_notes = _load_run(run)
    else:
        values = {k: v for k, v in locals().items() if k in DEFAULT}
        for key in ("problem_file", "init_file"):
            values[key] = None if values[key] is None else str(values[key])
        cfg = config_from_problem(TrainConfig(**values))
        points, run_notes = {"init": (0, initial_weights(cfg))}, []
    if t is not None and (t < 1 or t > cfg.T):
        raise ConfigError("--t", f"must be an integer in [1, T = {cfg.T}] (got {t})")
    device = resolve_device(cfg.device if run is None else device)
    problem = make_problem(cfg).to(device=device)
    widths = hidden_widths(cfg.width, cfg.L)
    folder = out or run or Path("runs") / time.strftime("ntk-%Y%m%d-%H%M%S")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("--out", f"cannot create {folder}: {err.strerror}") from None

    results, arrays, kernels, notes = {}, {}, {}, list(run_notes)
    if cfg.loss != "last":
        notes.append(f"the run's loss is {cfg.loss!r}: K describes r = M X_T − Y, i.e. the loss 'last' only")
    if cfg.optimizer != "sgd":
        notes.append(f"the run's optimizer is {cfg.optimizer!r}: 2/λ_max and 1 − ηλ_min assume plain SGD")
    for name, (k, weights) in points.items():
        model = build(widths, weights, bias=cfg.bias, detach=cfg.detach, step_scale=cfg.step_scale,
                      wide_layer=cfg.wide_layer, device=device)
        try:
            numbers, arr = ntk_summary(model, problem, cfg.T, lr=cfg.lr, method=method, t=t, return_kernels=True)
        except NotImplementedError as err:
            raise ConfigError("--method", str(err)) from None
        except NonFiniteKernel as err:
            notes.append(f"{name} (k = {k}) not measured: {err}")
            continue
        except ValueError as err:  # the structured path's own limits (e.g. it needs the angular wide layer)
            if method != "structured":
                raise
            raise ConfigError("--method", f"structured: {err}; use --method func") from None
        results[name] = {"iteration": k, **numbers}
        kernels[name] = arr.pop("K")
        arr.pop("K_training")
        arrays |= {f"{name}_{key}": value for key, value in arr.items()}
    drift = kernel_drift(kernels["init"], kernels["end"]) if len(kernels) == 2 else None
    report = {"config": cfg.to_dict(), "source": str(run) if run else "config", "method": method, "T": cfg.T,
              "lr": cfg.lr, "alpha_step": t or cfg.T, "dtype": "float64", "points": results, "notes": notes,
              "versions": versions()}
    if drift is not None:
        report["drift"] = drift
    io.write_json(folder / "ntk.json", report)
    io.write_npz(folder / "spectra.npz", arrays)
    _print_ntk(report, folder)


PRESETS = {
    "small": {"N": 32, "d": 32, "b": 25, "width": 1024, "L": 3, "T": 20, "e": 50.0, "lr": 1e-7, "iters": 5000,
              "ntk_every": 500},
    "paper": {"N": 10, "d": 512, "b": 400, "width": 5120, "L": 3, "T": 100, "e": 100.0, "lr": 1e-7, "iters": 5000,
              "ntk_every": 1000},
}


@app.command()
def verify(
    ctx: typer.Context,
    preset: str = typer.Option("small", help="small (N=32, 32×25, n=1024, T=20, e=50) or paper (N=10, 512×400, "
                                             "n=5120, T=100, e=100); options given explicitly override it."),
    width: OptWidth = PRESETS["small"]["width"],
    T: OptT = PRESETS["small"]["T"],
    N: OptN = PRESETS["small"]["N"],
    d: OptD = PRESETS["small"]["d"],
    b: OptB = PRESETS["small"]["b"],
    L: OptL = PRESETS["small"]["L"],
    e: OptE = PRESETS["small"]["e"],
    lr: float = typer.Option(PRESETS["small"]["lr"], help="η, the meta learning rate."),
    iters: int = typer.Option(PRESETS["small"]["iters"], help="K, training iterations."),
    optimizer: str = typer.Option(_default("optimizer"), help="Meta optimizer: sgd or adam."),
    loss: str = typer.Option(_default("loss"), help="Training loss over the unroll: last, mean or weighted."),
    init: OptInit = _default("init"),
    bias: OptBias = _default("bias"),
    detach: bool = typer.Option(_default("detach"), "--detach/--no-detach", help="Detach the network inputs."),
    wide_layer: OptWideLayer = _default("wide_layer"),
    step_scale: OptStepScale = _default("step_scale"),
    seed: OptSeed = _default("seed"),
    device: OptDevice = _default("device"),
    dtype: str = typer.Option(_default("dtype"), help="float32 or float64 (training; probes are float64)."),
    on_divergence: str = typer.Option(_default("on_divergence"), help="stop or skip."),
    checkpoint_every: int = typer.Option(_default("checkpoint_every"), help="Checkpoint every this many iterations."),
    problem_file: OptProblemFile = None,
    init_file: OptInitFile = None,
    ntk_every: int = typer.Option(PRESETS["small"]["ntk_every"],
                                  help="Probe the NTK and α every this many iterations (0: only at k = 0 and K)."),
    ntk_method: str = typer.Option("auto", help="auto (dense up to N·b = 4000 outputs), dense (K formed; spectrum, "
                                                "rank, drift, plateau) or lanczos (λ_max, λ_min only)."),
    jacobian: str = typer.Option("auto", help="Jacobian for the dense kernel: auto, func or structured."),
    alpha_steps: str = typer.Option("T", help="T (α at step T) or all (also α over every step t at k = 0)."),
    fit_early: int = typer.Option(50, help="Early window [0, this) of the measured contraction fit."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when a condition the theorem needs FAILS."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write figures/*.png."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/verify-<time>). Never overwritten."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted verify in --out."),
    threads: OptThreads = None,
):
    """Train, measure every quantity of the proof, evaluate every condition, compare theory and measurement."""
    from ntkcheck.report import rich_tables
    from ntkcheck.verify import ProbeConfig, verify as run_verify

    if preset not in PRESETS:
        raise ConfigError("--preset", f"must be one of {', '.join(PRESETS)} (got {preset!r})")
    if resume and out is None:
        raise ConfigError("--resume", "needs --out, the folder of the interrupted verify")
    values = {k: v for k, v in locals().items() if k != "ctx"}
    for key, value in PRESETS[preset].items():
        if ctx.get_parameter_source(key).name == "DEFAULT":
            values[key] = value
    _set_threads(values["threads"])
    out = out or Path("runs") / time.strftime("verify-%Y%m%d-%H%M%S")
    for key in ("problem_file", "init_file"):
        values[key] = None if values[key] is None else str(values[key])
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in DEFAULT})
    probes = ProbeConfig(ntk_every=values["ntk_every"], ntk_method=ntk_method, jacobian=jacobian,
                         alpha_steps=alpha_steps, early=fit_early)
    progress = _progress()
    task = progress.add_task("verify", total=cfg.iters + 1, loss=float("nan"), gain=float("nan"))

    def show(k, metrics):
        progress.start()
        progress.update(task, completed=k + 1, loss=metrics["F_T"], gain=metrics["gain"])

    try:
        result = run_verify(cfg, probes, out, resume=resume, callback=show, figures=figures)
    finally:
        progress.stop()
    wide = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets the whole table
    for table in rich_tables(result.report):
        wide.print(table)
    console.print(f"report: {result.folder / 'report.md'}", highlight=False)
    failed = [c["key"] for c in result.report["conditions"] if c["required"] and c["holds"] is False]
    if strict and failed:
        console.print(f"[red]--strict[/red]: conditions the theorem needs fail: {', '.join(failed)}", highlight=False)
        raise typer.Exit(1)


def _load_run(run: Path):
    """(config, {"init": (0, W_0), "end": (k, W_k)}) of a finished run folder; a diverged run's non-finite
    final weights are left out (with a note), since no kernel can be measured there."""
    path = run / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError("--run", f"{run} is not a run folder: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = TrainConfig.from_dict(state["config"])
        params, W0, k = state["params"], state["W0"], int(state["k"]) - 1
    except ConfigError:
        raise
    except Exception as err:  # any failure to read it back means the file is not a usable checkpoint
        raise ConfigError("--run", f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    if not all(bool(torch.isfinite(v).all()) for v in params.values()):
        return cfg, {"init": (0, W0)}, [f"the final weights (k = {k}) are not finite: the run diverged; only W_0 is measured"]
    return cfg, {"init": (0, W0), "end": (k, params)}, []


def _print_ntk(report: dict, folder: Path) -> None:
    points = report["points"]
    table = Table(title=f"NTK of Math-L2O (float64, {report['method']}) → {folder}")
    table.add_column("quantity")
    for name, p in points.items():
        table.add_column(f"{name} (k={p['iteration']})", justify="right")

    def row(label, get):
        table.add_row(label, *(get(p) for p in points.values()))

    g = lambda x: f"{x:.6g}"  # noqa: E731
    row("loss ½‖r‖² = F(X_T)", lambda p: g(p["loss"]))
    for key, sym in (("K", "K = J Jᵀ"), ("K_training", "½(K̃ + K̃ᵀ), K̃ = J J̃ᵀ")):
        row(f"λ_max {sym}", lambda p: g(p[key]["lambda_max"]))
        row(f"λ_min {sym}", lambda p: g(p[key]["lambda_min"]))
        row(f"rank {sym} (tol)", lambda p: f"{p[key]['rank']}/{p['n_outputs']} ({p[key]['rank_tol']:.2g})")
        for layer in next(iter(points.values()))[key]["layer_traces"]:
            row(f"trace {sym}, {layer}", lambda p: g(p[key]["layer_traces"][layer]))
    row("‖K̃ − K̃ᵀ‖_F/‖K̃‖_F", lambda p: g(p["K_training"]["asymmetry"]))
    a = next(iter(points.values()))["alpha"]
    row(f"α = σ_min(G_{{L−1,{a['t']}}}) ({a['n_rows']}×{a['n_cols']})", lambda p: g(p["alpha"]["alpha"]))
    row("σ_max(G_{L−1,t})", lambda p: g(p["alpha"]["sigma_max"]))
    row("rank G_{L−1,t} (tol)", lambda p: f"{p['alpha']['rank']} ({p['alpha']['tol']:.2g})")
    row(f"η = {report['lr']:.3g} < 2/λ_max(K)", lambda p: f"{g(p['linearised']['threshold'])} "
        f"({'stable' if p['linearised']['stable'] else 'UNSTABLE'})")
    row("2/λ_max(½(K̃ + K̃ᵀ))", lambda p: g(p["threshold_training"]))
    row("1 − ηλ_min(K)", lambda p: f"{p['linearised']['rate']:.17g}")
    row("plateau ½‖P_null r‖² (null dim)", lambda p: f"{g(p['linearised']['plateau'])} ({p['linearised']['null_dim']})")
    if "drift" in report:
        table.add_row("‖K_end − K_0‖_F/‖K_0‖_F", "", g(report["drift"]["rel_change"]))
        table.add_row("1 − ⟨K_0,K_end⟩/(‖K_0‖‖K_end‖)", "", g(report["drift"]["distance"]))
    Console().print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note[/yellow] {note}", highlight=False, soft_wrap=True)


@app.command()
def reproduce(
    figure: str = typer.Argument(..., help="fig2, fig4a, fig4b, fig5 or fig8 (see ntkcheck/reproduce.py)."),
    preset: str = typer.Option("small", help="small (minutes on one CPU thread) or paper (the published sizes)."),
    seed: OptSeed = 0,
    out: Optional[Path] = typer.Option(None, help="New folder for <figure>.csv, <figure>.png and config.json "
                                                   "(default runs/<figure>-<preset>). Never overwritten."),
    threads: OptThreads = None,
):
    """Rerun one of the paper's comparisons (baselines, GD, Adam) and write its CSV and PNG."""
    from ntkcheck.reproduce import run

    _set_threads(threads)
    folder = out or Path("runs") / f"{figure}-{preset}"
    run(figure, folder, preset=preset, seed=seed, log=lambda line: console.print(line, highlight=False))
    console.print(f"wrote {folder}", highlight=False)


@app.command("bounds")
def bounds_table(
    T: OptT = _default("T"),
    L: OptL = _default("L"),
    e: OptE = _default("e"),
    width: OptWidth = _default("width"),
    N: OptN = _default("N"),
    d: OptD = _default("d"),
    b: OptB = _default("b"),
    lr: float = typer.Option(_default("lr"), "--lr", "--eta", help="η, the meta learning rate."),
    step_scale: OptStepScale = _default("step_scale"),
    C: Optional[float] = typer.Option(None, "--C", help="Constant of the Ω(·) laws (Lemmas 5.1–5.4); "
                                                        "unset: thresholds shown at C = 1, verdict undecided."),
    data: bool = typer.Option(True, "--data/--no-data", help="Also draw the training instances (--seed) and "
                                                             "evaluate what needs them (GD bounds, a-priori η bound)."),
    seed: OptSeed = _default("seed"),
):
    """The theory's thresholds for a configuration: each condition with its source, status (stated /
    scaling / derived), confidence, threshold, the configuration's value and the verdict."""
    import bounds

    cfg = TrainConfig(T=T, L=L, e=e, width=width, N=N, d=d, b=b, lr=lr, step_scale=step_scale, seed=seed)
    if C is not None and not (C > 0 and C < float("inf")):
        raise ConfigError("--C", f"must be a finite number > 0 (got {C})")
    quantities = None
    if data:
        from ntkcheck.problems import generate

        problem = generate(N, d, b, seed)
        quantities = bounds.gd_quantities(problem.M.numpy(), problem.Y.numpy(), T, step_scale)
    rows = bounds.thresholds(T, L, e, lr, N=N, d=d, b=b, n=width, step_scale=step_scale, C=C, data=quantities)
    _print_bounds(rows, cfg, C, data)


def _print_bounds(rows: list[dict], cfg: TrainConfig, C: float | None, data: bool) -> None:
    g = lambda x: "—" if x is None or x != x else f"{x:.4g}"  # noqa: E731
    verdict = {True: "[green]holds[/green]", False: "[red]FAILS[/red]", None: "[yellow]undecided[/yellow]"}
    title = (f"Theory of Math-L2O for T={cfg.T}, L={cfg.L}, e={cfg.e:g}, η={cfg.lr:g}, n={cfg.width}, "
             f"N={cfg.N}, d={cfg.d}, b={cfg.b}, s={cfg.step_scale:g}" + (f", data seed {cfg.seed}" if data else ""))
    table = Table(title=title, show_lines=False)
    for name, justify in (("key", "left"), ("source", "left"), ("status", "left"), ("confidence", "left"),
                          ("formula", "left"), ("threshold", "right"), ("value", "right"), ("verdict", "left")):
        table.add_column(name, justify=justify, no_wrap=name in ("key", "verdict"))
    for r in rows:
        constant = f" (C={r['constants']['C']:g})" if r["constants"] else ""
        table.add_row(r["key"], r["source"], r["status"], r["confidence"], r["formula"],
                      f"{r['relation']} {g(r['threshold'])}{constant}", g(r["value"]), verdict[r["holds"]])
    Console().print(table)
    if C is None:
        console.print("scaling laws: the constant C of Ω(·) is unknown; thresholds shown at C = 1 (set it with --C)",
                      highlight=False, soft_wrap=True)
    for r in rows:
        console.print(f"[dim]{r['key']}[/dim] {r['note']}", highlight=False, soft_wrap=True)


def _usage_error(err: Exception) -> bool:
    """Click's UsageError family (typer vendors click in recent versions, so match by name)."""
    return any(cls.__name__ == "UsageError" for cls in type(err).__mro__)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)  # a typer.Exit comes back as its exit code
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
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
