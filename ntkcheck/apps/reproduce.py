"""The paper's comparisons, rerun: one function per figure, each returning a tidy DataFrame.

    fig2    baselines trained by SGD over (η, T): which runs explode (Fig. 2a Math-L2O-P, 2b LISTA-CPSS)
    fig4a   our model's training curve F(X_T^k) against GD (Fig. 4a)
    fig4b   our model over (η, T) against GD (Fig. 4b)
    fig5    the e–η ablation: gain over GD for every (e, η) (Figs. 5, 9, 10)
    fig8    inference far past the training horizon on held-out instances: ours, GD, NAG, tuned Adam (Fig. 8)

Conventions (the paper's): F summed over instances, X_0 = 0, a fixed training set, GD with the same
step s/β_i, gain "last" = (F_GD(X_T) − F(X_T))/F_GD(X_T) and "mean" = that ratio averaged over t = 1..T,
both measured at the last training iteration. ``small`` presets finish in about a minute each on one
CPU thread; ``paper`` presets are the published sizes (shared/research/paper_math.md §6.1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkcheck.config import PRESETS, ConfigError, hidden_widths
from ntkcheck.engine.learned import evaluate, fit
from ntkcheck.models import init as inits
from ntkcheck.models.lista import LISTACPSS, shared_dictionary, weight_only
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems
from ntkcheck.problems.solvers import (
    ADAM_BETA1,
    ADAM_BETA2,
    adam_grid,
    gd,
    grid_summary,
    nag,
)
from ntkcheck.results import io

PAPER_LRS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
# The two configurations of ntkcheck.config.PRESETS (problem sizes, width, horizon, e, η); each figure adds its grid.
SMALL = {k: PRESETS["small"][k] for k in ("N", "d", "b", "width", "T", "e", "lr")}
PAPER = {k: PRESETS["paper"][k] for k in ("N", "d", "b", "width", "T", "e", "lr")}
SIZES = ("N", "d", "b", "width", "T")
PRESET_GRIDS = {
    "fig2": {
        "small": dict(N=8, d=32, b=25, Ts=(5, 10, 20), lrs=(1e-5, 1e-4, 1e-3), iters=100),
        "paper": dict(N=10, d=512, b=400, Ts=tuple(range(5, 101, 5)),
                      lrs=tuple(round(1e-5 * i, 10) for i in range(1, 11)), iters=400),
    },
    "fig4a": {
        "small": dict(SMALL, iters=300, seeds=(0, 1, 2)),
        "paper": dict(PAPER, iters=5000, seeds=(0,)),
    },
    "fig4b": {
        "small": dict({k: SMALL[k] for k in ("N", "d", "b", "width")}, Ts=(5, 10, 15, 20), e=100.0,
                      lrs=(1e-3, 1e-5, 1e-7), iters=100),
        "paper": dict({k: PAPER[k] for k in ("N", "d", "b", "width")}, Ts=(5, 10, 20, 50, 100), e=100.0,
                      lrs=PAPER_LRS, iters=400),
    },
    "fig5": {  # the paper's e–η ablation runs at the small sizes in both presets
        "small": dict({k: SMALL[k] for k in SIZES}, es=(1.0, 5.0, 25.0, 50.0, 100.0), lrs=PAPER_LRS, iters=200),
        "paper": dict({k: SMALL[k] for k in SIZES}, es=(1.0, 5.0, 25.0, 50.0, 100.0), lrs=PAPER_LRS, iters=5000),
    },
    "fig8": {
        "small": dict({k: SMALL[k] for k in SIZES}, e=SMALL["e"], lrs=(1e-5, 1e-7), iters=300, N_test=32,
                      T_test=2000, beta1s=(0.1, 0.5, 0.9), beta2s=(0.95, 0.97, 0.99)),
        "paper": dict({k: PAPER[k] for k in SIZES}, e=PAPER["e"], lrs=PAPER_LRS, iters=5000, N_test=32,
                      T_test=5000, beta1s=ADAM_BETA1, beta2s=ADAM_BETA2),
    },
}


def ours(width: int, e: float, seed: int):
    """Our model (Song et al.) under the deterministic initialisation: GD at k = 0."""
    widths = hidden_widths(width, 3)
    return build(widths, inits.deterministic(widths, e, seed))


def _row(result, **keys) -> dict:
    """The final iteration of a :class:`~ntkcheck.engine.learned.Fit`, with where it diverged (NaN: never)."""
    last = {q: result.last(q) for q in ("F_T", "gain", "gain_mean")}
    if result.status == "diverged":
        last = dict.fromkeys(last, np.nan)
    return {**keys, **last, "status": result.status,
            "diverged_at": np.nan if result.diverged_at is None else result.diverged_at}


# -- the figures ------------------------------------------------------------------------------------


class Steps:
    """The sub-runs of one figure, each computed once: with a folder, every finished sub-run is written to
    ``steps/<key>.parquet`` (a row or a frame, columns in order) and read back by a resumed run instead of run
    again."""

    def __init__(self, folder: Path | None = None):
        self.folder = None if folder is None else Path(folder) / "steps"

    def row(self, key: str, compute) -> dict:
        return self.frame(key, lambda: pd.DataFrame([compute()])).iloc[0].to_dict()

    def frame(self, key: str, compute) -> pd.DataFrame:
        path = None if self.folder is None else self.folder / f"{key}.parquet"
        if path is not None and path.is_file():
            return pd.read_parquet(path)
        frame = compute()
        if path is not None:
            io.write_frame(path, frame, "parquet")
        return frame


def fig2(p: dict, seed: int, log=print, steps: Steps | None = None) -> pd.DataFrame:
    """F(X_T) at the last iteration for every (η, T), per baseline; a run that produced a non-finite
    loss or gradient stops there (status, diverged_at). LISTA-CPSS as Chen et al. define it runs on the
    shared-dictionary QP, the others on the paper's per-instance QP."""
    per_instance = problems.generate(p["N"], p["d"], p["b"], seed)
    shared = shared_dictionary(p["N"], p["d"], p["b"], seed)
    models = {
        "Math-L2O-P (Liu et al. 2023)": (per_instance, lambda T: MathL2OLSTM("P", seed=seed)),
        "Math-L2O-P + B terms (NeurIPS code)": (per_instance, lambda T: MathL2OLSTM("P", b_terms=True, seed=seed)),
        "LISTA-CPSS W-only (NeurIPS QP variant)": (per_instance, lambda T: weight_only(p["d"], p["b"], T, seed)),
        "LISTA-CPSS (Chen et al. 2018), shared M": (shared, lambda T: LISTACPSS.from_problem(shared, T)),
    }
    rows, steps = [], steps or Steps()
    for i, (name, (problem, make)) in enumerate(models.items()):
        for T in p["Ts"]:
            F_gd = float(gd(problem, T).F[-1])
            for lr in p["lrs"]:
                rows.append(steps.row(f"model{i}-T{T}-lr{lr:g}", lambda: _row(
                    fit(make(T), problem, T, lr=lr, iters=p["iters"]), model=name, T=T, lr=lr, F_GD=F_gd)))
                log(f"fig2 {name} T={T} η={lr:g}: {rows[-1]['status']}")
    return pd.DataFrame(rows)


def fig4a(p: dict, seed: int, log=print, steps: Steps | None = None) -> pd.DataFrame:
    """F(X_T^k), gain and gain_mean at every training iteration k, per seed (seed + offset)."""
    def run(s: int) -> pd.DataFrame:
        problem = problems.generate(p["N"], p["d"], p["b"], s)
        wide = fit(ours(p["width"], p["e"], s), problem, p["T"], lr=p["lr"], iters=p["iters"]).metrics.reset_index()
        wide["seed"], wide["F_GD"] = s, float(gd(problem, p["T"]).F[-1])
        return wide[["seed", "iteration", "F_T", "F_GD", "gain", "gain_mean", "diverged"]]

    frames, steps = [], steps or Steps()
    for s in p["seeds"]:
        frames.append(steps.frame(f"seed{seed + s}", lambda: run(seed + s)))
        log(f"fig4a seed={seed + s}: gain {frames[-1]['gain'].iloc[-1]:.3f}")
    return pd.concat(frames, ignore_index=True)


def fig4b(p: dict, seed: int, log=print, steps: Steps | None = None) -> pd.DataFrame:
    """Our model's F(X_T) at the last iteration for every (η, T), with GD's."""
    problem = problems.generate(p["N"], p["d"], p["b"], seed)
    rows, steps = [], steps or Steps()
    for T in p["Ts"]:
        F_gd = float(gd(problem, T).F[-1])
        for lr in p["lrs"]:
            rows.append(steps.row(f"T{T}-lr{lr:g}", lambda: _row(
                fit(ours(p["width"], p["e"], seed), problem, T, lr=lr, iters=p["iters"]),
                model="ours (Song et al. 2025)", T=T, lr=lr, F_GD=F_gd)))
            log(f"fig4b T={T} η={lr:g}: gain {rows[-1]['gain']:.3f}")
    return pd.DataFrame(rows)


def fig5(p: dict, seed: int, log=print, steps: Steps | None = None) -> pd.DataFrame:
    """Gain (last and mean) at the last iteration for every (e, η) at one T."""
    problem = problems.generate(p["N"], p["d"], p["b"], seed)
    rows, steps = [], steps or Steps()
    for e in p["es"]:
        for lr in p["lrs"]:
            rows.append(steps.row(f"e{e:g}-lr{lr:g}", lambda: _row(
                fit(ours(p["width"], e, seed), problem, p["T"], lr=lr, iters=p["iters"]), e=e, lr=lr, T=p["T"])))
            log(f"fig5 e={e:g} η={lr:g}: gain {rows[-1]['gain']:.3f}")
    return pd.DataFrame(rows)


def fig8(p: dict, seed: int, log=print, steps: Steps | None = None) -> pd.DataFrame:
    """F(X_t), t = 0..T_test, on held-out instances: ours trained at each η (T steps, then run for
    T_test), GD, NAG, and Adam over the (β₁, β₂) grid at step s/β_i (best by final F, and min/max)."""
    train_set = problems.generate(p["N"], p["d"], p["b"], seed)
    test_set = problems.generate(p["N_test"], p["d"], p["b"], seed, split="test")
    t = np.arange(p["T_test"] + 1)
    curves = {"GD": gd(test_set, p["T_test"]), "NAG": nag(test_set, p["T_test"])}
    rows = [pd.DataFrame({"method": name, "t": t, "F": c.F.numpy()}) for name, c in curves.items()]
    steps = steps or Steps()

    def trained(lr: float) -> pd.DataFrame:
        model = ours(p["width"], p["e"], seed)
        gain = fit(model, train_set, p["T"], lr=lr, iters=p["iters"]).last("gain")
        return pd.DataFrame({"method": f"ours η={lr:g}", "t": t, "F": evaluate(model, test_set, p["T_test"]).F.numpy(),
                             "train_gain": gain})

    for lr in p["lrs"]:
        curve = steps.frame(f"ours-lr{lr:g}", lambda: trained(lr))
        rows.append(curve.drop(columns="train_gain"))
        log(f"fig8 ours η={lr:g}: train gain {curve['train_gain'].iloc[0]:.3f}, test F(X_T_test) "
            f"{curve['F'].iloc[-1]:.3g}")
    grid = grid_summary(adam_grid(test_set, p["T_test"], beta1s=p["beta1s"], beta2s=p["beta2s"]))
    best = f"Adam best (β₁={grid['best_beta1'].iloc[0]}, β₂={grid['best_beta2'].iloc[0]})"
    for name, column in ((best, "F_best"), ("Adam grid min", "F_min"), ("Adam grid median", "F_median"),
                         ("Adam grid max", "F_max")):
        rows.append(pd.DataFrame({"method": name, "t": t, "F": grid[column].to_numpy()}))
    log(f"fig8 Adam grid of {len(p['beta1s']) * len(p['beta2s'])}: best F(X_T_test) {grid['F_best'].iloc[-1]:.3g}")
    return pd.concat(rows, ignore_index=True)


FIGURES = {"fig2": fig2, "fig4a": fig4a, "fig4b": fig4b, "fig5": fig5, "fig8": fig8}


# -- entry point ------------------------------------------------------------------------------------


MARKER = "reproduce.json"  # written first: the figure, preset and seed a resume must match


def run(figure: str, out: str | Path, *, preset: str = "small", seed: int = 0, resume: bool = False,
        log=print) -> pd.DataFrame:
    """Reproduce ``figure`` into the new folder ``out``: ``<figure>.csv``, ``<figure>.png``, ``config.json``.

    The folder is ``<out>.partial`` until the figure is done; every finished sub-run (one training run, one curve)
    is kept in its ``steps/``, so ``resume=True`` after an interruption runs only the sub-runs that are missing and
    ends with the numbers an uninterrupted run gives."""
    if figure not in FIGURES:
        raise ConfigError("figure", f"must be one of {', '.join(FIGURES)} (got {figure!r})")
    if preset not in PRESET_GRIDS[figure]:
        raise ConfigError("preset", f"must be one of {', '.join(PRESET_GRIDS[figure])} (got {preset!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", f"must be an integer ≥ 0 (got {seed!r})")
    from ntkcheck.report import reproduce_figures  # matplotlib only where figures are drawn
    from ntkcheck.results.runfolder import finish, open_run, versions

    settings = {"figure": figure, "preset": preset, "seed": seed}
    with open_run(out, resume, marker=MARKER) as work:
        if resume:
            stored = json.loads((work / MARKER).read_text())
            if stored != settings:
                differ = ", ".join(f"{k} ({stored.get(k)!r} there)" for k in settings if stored.get(k) != settings[k])
                raise ConfigError("resume", f"{work} reproduces another figure or setting: {differ}")
        else:
            io.write_json(work / MARKER, settings)
        params = PRESET_GRIDS[figure][preset]
        started = time.perf_counter()
        frame = FIGURES[figure](params, seed, log=log, steps=Steps(work))
        seconds = time.perf_counter() - started
        io.write_frame(work / f"{figure}.csv", frame, "csv")
        reproduce_figures.write(figure, frame, work / f"{figure}.png", params)
        io.write_json(work / "config.json", {**settings, "params": params, "seconds": round(seconds, 1),
                                             "threads": torch.get_num_threads(), "versions": versions()})
        finish(work)
    return frame
