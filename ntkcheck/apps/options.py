"""The command line's options as data: each option once (type, help panel, help, flags, default, choices), the
option lists the commands share, and the figures ``reproduce`` knows. :mod:`ntkcheck.cli` turns them into typer
options; the values are checked by the library (its errors name the config field)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, NamedTuple, Optional

import typer

from ntkcheck.config import (
    ALPHA_STEPS,
    DEVICES,
    DRAWS,
    DTYPES,
    FORMATS,
    INITS,
    JACOBIANS,
    LAM_SCALES,
    LINEARISED,
    LOSSES,
    LSTM_VARIANTS,
    MODELS,
    NTK_METHODS,
    ON_DIVERGENCE,
    OPTIMIZERS,
    PENALTIES,
    PRESETS,
    PROBLEMS,
    UPDATES,
    WIDE_LAYERS,
    ProbeConfig,
    TrainConfig,
    preset,
    probe_preset,
)


class Option(NamedTuple):
    """An option: its type, help panel and text, flags (default ``--<name with - for _>``), default (None: the
    config's) and the choices the help lists."""

    kind: object
    panel: str
    help: str
    flags: tuple[str, ...] = ()
    default: object = None
    choices: tuple[str, ...] = ()

    @property
    def metavar(self) -> str | None:
        """The choices as [a|b|c] (a long list as <choice>: the help names them), a flag without a type ("")."""
        metavar = f"[{'|'.join(self.choices)}]" if self.choices else "" if self.kind is bool else None
        return "<choice>" if metavar and len(metavar) > 20 else metavar


def _o(kind, panel: str, help: str, *flags: str, default=None, choices: tuple[str, ...] = ()) -> Option:
    return Option(kind, panel, help, flags, default, tuple(choices))


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
    "problem": _o(str, P, "The objective: qp (the paper's least squares), lasso or logistic (with λ‖x‖₁, or ½λ‖x‖² "
                          "with --penalty l2).", choices=PROBLEMS),
    "lam": _o(Optional[float], P, "λ of lasso/logistic (default 0.1), relative to λ_max,i unless --lam-scale "
                                  "absolute."),
    "lam_scale": _o(str, P, "relative (λ·λ_max,i, where x = 0 becomes optimal) or absolute.", choices=LAM_SCALES),
    "sparsity": _o(Optional[float], P, "Share of non-zeros in the planted x*_i of lasso/logistic (default 0.1)."),
    "penalty": _o(Optional[str], P, "logistic's regulariser: l1 (default; a prox step) or l2 (smooth).",
                  choices=PENALTIES),
    "update": _o(str, M, "The backbone the learned step P drives: gd (the paper's), nag, prox or fista (prox/fista: "
                         "lasso and l1 logistic).", choices=UPDATES),
    "width": _o(int, M, "n, width of the wide layer L−1."),
    "L": _o(int, M, "Layers of the step-size network (2 → 2 → … → n → 1).", "--L"),
    "T": _o(int, M, "Unrolled optimisation steps.", "--T"),
    "e": _o(float, M, "Expansion coefficient of the deterministic initialisation."),
    "init": _o(str, M, "deterministic (the paper's), deterministic-abs, random, or the standard gaussian "
                       "(N(0, 1/fan_in)), xavier, he.", choices=INITS),
    "bias": _o(bool, M, "Biases in every layer.", "--bias/--no-bias"),
    "detach": _o(bool, M, "Detach the network inputs (the paper's code); --no-detach trains on the true gradient.",
                 "--detach/--no-detach"),
    "wide_layer": _o(str, M, "Wide layer: auto, dense (R×n matrix) or angular (exact prefix sums; bias-free only).",
                     choices=WIDE_LAYERS),
    "step_scale": _o(float, M, "s in the step s/β_i (the paper's code uses 0.9999)."),
    "init_file": _o(Optional[Path], M, ".npz/.pt with initial weights W1..WL (and b1..bL)."),
    "model": _o(str, M, "The learner: mlp (Math-L2O's step-size network, the theorem's) or lstm (Liu et al.'s "
                        "coordinate-wise LSTM; --width, --L, --e are not read for it).", choices=MODELS),
    "lstm_variant": _o(str, M, "LSTM heads: P (step multipliers) or PA (and the accelerator A).",
                       choices=LSTM_VARIANTS),
    "lstm_hidden": _o(int, M, "LSTM hidden units per layer."),
    "lstm_layers": _o(int, M, "LSTM layers."),
    "lr": _o(float, TR, "η, the meta learning rate.", "--lr", "--eta"),
    "iters": _o(int, TR, "K, training iterations."),
    "optimizer": _o(str, TR, "Meta optimizer: sgd or adam.", choices=OPTIMIZERS),
    "loss": _o(str, TR, "Training loss over the unroll: last, mean or weighted.", choices=LOSSES),
    "on_divergence": _o(str, TR, "NaN/Inf loss or gradient: stop the run, or skip the update (the paper's code).",
                        choices=ON_DIVERGENCE),
    "checkpoint_every": _o(int, TR, "Checkpoint every this many iterations."),
    "saturation_tol": _o(float, TR, "P within this of 0 or 2 counts as saturated."),
    "dtype": _o(str, TR, "float32 or float64 (training; probes are float64).", choices=DTYPES),
    "ntk_every": _o(int, PR, "Probe the NTK and α every this many iterations (0: only at k = 0 and K)."),
    "ntk_method": _o(str, PR, "auto (dense where the kernels fit in memory), dense (K formed) or lanczos "
                              "(λ_max, λ_min).", choices=NTK_METHODS),
    "jacobian": _o(str, PR, "Jacobian for the dense kernel: auto, func or structured.", choices=JACOBIANS),
    "alpha_steps": _o(str, PR, "T (α at step T) or all (also α over every step t at k = 0).", choices=ALPHA_STEPS),
    "early": _o(int, PR, "Early window [0, this) of the measured contraction fit.", "--fit-early"),
    "linearised": _o(str, PR, "Train the Taylor model at W_0 beside the run: on, off, or auto (on, except where the "
                              "eigen-projection already is it: least squares, gd, SGD, loss last, deterministic init).",
                     choices=LINEARISED),
    "preset": _o(str, OUT, f"{' or '.join(PRESETS)}: the configuration; options given explicitly override it.",
                 default="small", choices=tuple(PRESETS)),
    "out": _o(Optional[Path], OUT, "Output folder (default runs/<command>-<time>; ntk: the --run folder)."),
    "resume": _o(bool, OUT, "Continue the interrupted run in --out.", "--resume", default=False),
    "continue_from": _o(Optional[Path], OUT, "A completed run folder to continue to --iters iterations, into --out "
                        "(a new folder; the finished one is only read).", "--continue-from"),
    "device": _o(str, MACH, "auto, cpu or cuda.", choices=DEVICES),
    "threads": _o(Optional[int], MACH, "CPU threads for torch and numpy/scipy BLAS (default: the cores not busy "
                                       "now, at least 1)."),
    "max_memory": _o(Optional[float], MACH, "Refuse runs estimated to need more bytes, e.g. 8e9 (default: "
                                            "available; inf)."),
    "strict": _o(bool, OUT, "Exit 1 when a condition the theorem needs FAILS.", "--strict", default=False),
    "figures": _o(bool, OUT, "Write the figures.", "--figures/--no-figures", default=True),
    "json": _o(bool, OUT, "Print the table as JSON on stdout instead (NaN and ∞ as null).", "--json", default=False),
    "csv": _o(bool, OUT, "Print the table as CSV on stdout instead.", "--csv", default=False),
    "format": _o(str, OUT, "The figures' file format.", default="png", choices=FORMATS),
    "run": _o(Optional[Path], OUT, "A finished run folder: measure at its W_0 and final weights (its own config)."),
    "method": _o(str, PR, "Jacobian: auto (structured where it applies), func or structured.", default="auto",
                 choices=JACOBIANS),
    "alpha_step": _o(Optional[int], PR, "Step t of α = σ_min(G_{L−1,t}) (default T).", "--alpha-step"),
    "C": _o(Optional[float], PR, "Constant of the Ω(·) laws of Lemmas 5.1–5.4 (unset: C = 1, verdict undecided).",
            "--C"),
    "data": _o(bool, PR, "Also draw the instances (--seed) and evaluate what needs them.", "--data/--no-data",
               default=True),
    "grid": _o(Optional[list[str]], SW, "An axis FIELD=V1,V2,… over any configuration field (repeat for more axes).",
               "--grid"),
    "seeds": _o(Optional[str], SW, "Seeds of every grid point: a range 0-4 or a list 0,3,7 (default: --seed)."),
    "vary": _o(str, SW, "What a seed draws: both (data and weights), data, or init (the weights).", default="both",
               choices=("both", "data", "init")),
    "spec": _o(Optional[Path], SW, "A TOML sweep spec (base, grid, seeds, …); options given here override it."),
    "record_every": _o(int, SW, "Curves every this many iterations (0: about 200 points per curve).", default=0),
    "probe_at": _o(str, SW, "Probe every cell at these iterations (K: its last), e.g. 0,K.", default="0,K"),
    "probe_method": _o(str, SW, "auto, dense, lanczos, or none (no probes).", default="auto",
                       choices=(*NTK_METHODS, "none")),
    "batch_size": _o(int, SW, "Most cells trained together in one batch.", default=32),
    "engine": _o(str, SW, "embedded (this process) or ray (batches as Ray tasks).", default="embedded",
                 choices=("embedded", "ray")),
    "address": _o(Optional[str], SW, "Ray cluster address (default: a local Ray started for the sweep)."),
    "workers": _o(Optional[int], SW, "CPUs of the local Ray (default: all)."),
    "size": _o(Optional[str], SW, "small (the default: minutes on a CPU; what results/studies/ records) or paper (the "
                                  "paper's sizes; declared, hours on a GPU); a --resume keeps the study's own.",
               default=None, choices=("small", "paper")),
    "study_seeds": _o(Optional[str], SW, "Seeds of every point: a range 0-19 or a list 0,3,7 (default: the study's, in "
                                         "its spec file).", "--seeds"),
    "study_grid": _o(Optional[list[str]], SW, "Override one of the study's axes: FIELD=V1,V2,… (repeat for more).",
                     "--grid"),
}
# arguments whose name is not a flag (config fields: config.flag)
FLAGS = {"figure": "FIGURE", "t": "--alpha-step", "study": "NAME"}
DEFAULTS = {n: o.default for n, o in OPTIONS.items()} | TrainConfig().to_dict() | ProbeConfig().to_dict()
CONFIG_FIELDS = set(TrainConfig.__dataclass_fields__) | set(ProbeConfig.__dataclass_fields__)

# The options of the commands that train (train, verify, sweep).
RUN = ("preset", "N", "d", "b", "seed", "init_seed", "problem_file", "draw", "width", "L", "T", "e", "init", "bias",
       "detach", "wide_layer", "step_scale", "init_file", "model", "lstm_variant", "lstm_hidden", "lstm_layers", "problem",
       "lam", "lam_scale", "sparsity", "penalty", "update", "lr", "iters", "optimizer", "loss", "on_divergence",
       "checkpoint_every", "saturation_tol", "dtype", "out", "resume", "device", "threads", "max_memory")
VERIFY = (*RUN, "ntk_every", "ntk_method", "jacobian", "alpha_steps", "early", "linearised", "strict", "figures", "format", "json",
          "csv")
NTK = ("run", "method", "alpha_step", "json", "csv", "preset", "N", "d", "b", "seed", "init_seed", "problem_file",
       "draw", "width", "L", "T", "e", "init", "bias", "wide_layer", "step_scale", "init_file", "model", "lstm_variant",
       "lstm_hidden", "lstm_layers", "problem", "lam", "lam_scale", "sparsity", "penalty", "update", "lr", "out", "device",
       "threads")
SWEEP_SETTINGS = ("record_every", "probe_at", "probe_method", "batch_size", "vary")  # of SweepSpec, when given
SWEEP = (*(n for n in RUN if n != "checkpoint_every"), "grid", "seeds", "vary", "spec", "record_every", "probe_at",
         "probe_method", "batch_size", "engine", "address", "workers", "format")
STUDY = ("size", "study_seeds", "study_grid", "engine", "address", "workers", "out", "resume", "threads", "format")
BOUNDS = ("preset", "T", "L", "e", "width", "N", "d", "b", "lr", "step_scale", "seed", "C", "data", "json", "csv")

FIGURES = {"fig2": "baselines trained by SGD over (η, T): which runs explode", "fig4a": "our training curve against GD",
           "fig4b": "ours over (η, T) against GD", "fig5": "the e–η ablation (Figs. 5, 9, 10)",
           "fig8": "inference past the training horizon: ours, GD, NAG, tuned Adam"}
FIGURE_HELP = "; ".join(f"{k}: {v}" for k, v in FIGURES.items())


def help_defaults(argv: list[str], commands: list[str]) -> dict | None:
    """With ``--help`` and ``--preset NAME``, the help shows NAME's values as the defaults (not the small preset's):
    click's ``default_map`` of every command in ``commands``; None otherwise (every command keeps its declared
    defaults)."""
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--preset"]
    given += [a.split("=", 1)[1] for a in argv if a.startswith("--preset=")]
    if not {"--help", "-h"} & set(argv) or not given or given[-1] not in PRESETS:
        return None
    values = preset(given[-1]).to_dict() | probe_preset(given[-1]).to_dict() | {"preset": given[-1]}
    return {command: values for command in commands}


def attach(*names: str):
    """Append the declared options ``names`` to a command's own parameters (typer reads ``__signature__``)."""
    def wrap(fn):
        hints = typing.get_type_hints(fn, include_extras=True)  # the command's own annotations, resolved
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(fn).parameters.values()]
        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=DEFAULTS[n], annotation=Annotated[
            o.kind, typer.Option(*o.flags, help=o.help, rich_help_panel=o.panel, metavar=o.metavar)])
            for n, o in ((n, OPTIONS[n]) for n in names)]
        fn.__signature__ = inspect.Signature([p for p in own if p.kind != p.VAR_KEYWORD] + extra)
        return fn
    return wrap
