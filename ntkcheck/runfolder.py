"""Run folders on disk: the partial folder and its rename, checkpoints, resume checks, metrics, versions.

A run writes into ``<out>.partial/`` and renames it to ``<out>`` when it ends, so a folder named ``<out>`` is
always a finished run and is never overwritten. An interrupted run is recognised by a marker file in the
partial folder (its checkpoint, or a verify's settings) and resumed from there.

Metrics are wide in memory (one row per iteration, one column per quantity, index ``iteration``) and long on
disk (``run_id, iteration, quantity, value``, in ``metrics.parquet`` and ``metrics.csv``).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkcheck import io
from ntkcheck.config import ConfigError, TrainConfig

CHECKPOINT = "checkpoint.pt"
# Fields that may change between an interrupted run and its resume; every other field must stay the same.
RESUMABLE = ("iters", "device", "checkpoint_every", "wide_layer")
LONG_COLUMNS = ["run_id", "iteration", "quantity", "value"]


class Interrupted(Exception):
    """Training stopped by the user after ``iteration``; the checkpoint in ``<folder>.partial`` holds every
    completed iteration, and ``resume=True`` with the same ``out`` continues it."""

    def __init__(self, folder: Path, iteration: int):
        super().__init__(f"interrupted after iteration {iteration}; the run in {partial_folder(folder)} resumes "
                         f"with resume=True and out={folder}")
        self.folder, self.iteration = folder, iteration


def partial_folder(out: Path) -> Path:
    """``<out>.partial``: where a run lives until it ends."""
    return out.with_name(out.name + ".partial")


def prepare(out: str | Path, resume: bool, marker: str = CHECKPOINT) -> Path:
    """The working folder ``<out>.partial`` (created, writable). An interrupted run is recognised by its
    ``marker`` file; a finished ``out`` is never touched."""
    out = Path(out)
    work = partial_folder(out)
    if out.exists():
        raise ConfigError("out", f"{out} already holds a finished run; runs are never overwritten, choose another "
                                 "output folder")
    if resume and not (work / marker).is_file():
        raise ConfigError("resume", f"no interrupted run to resume: {work / marker} does not exist")
    if not resume and work.exists():
        raise ConfigError("out", f"an interrupted run is in {work}; resume it, or choose another output folder")
    try:
        work.mkdir(parents=True, exist_ok=True)
        probe = work / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError("out", f"cannot write to {out.parent}: {err.strerror}") from None
    return work


def final_folder(work: Path) -> Path:
    """``<out>`` of the partial folder ``<out>.partial``."""
    return work.with_name(work.name.removesuffix(".partial"))


def finish(work: Path) -> Path:
    """Rename ``<out>.partial`` to ``<out>``: the run is finished."""
    out = final_folder(work)
    work.rename(out)
    return out


# -- checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(work: Path, cfg: TrainConfig, state: dict) -> None:
    """``checkpoint.pt``: the config and the trainer's state (weights, optimizer, W_0, metrics so far, …)."""
    io.write_torch(work / CHECKPOINT, {"config": cfg.to_dict(), **state})


def load_checkpoint(path: Path, cfg: TrainConfig, keys: set[str]) -> dict:
    """The checkpoint at ``path``, after checking that it holds ``keys`` and was made with ``cfg`` (up to
    :data:`RESUMABLE` fields)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = TrainConfig.from_dict(state["config"])
        missing = keys - state.keys()
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except Exception as err:  # any failure to read it back means the file is not a usable checkpoint
        raise ConfigError("resume", f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    check_same_config(saved.to_dict(), cfg.to_dict(), "the checkpoint was made with")
    return state


def check_same_config(saved: dict, given: dict, made_with: str) -> None:
    """Every field outside :data:`RESUMABLE` must equal the interrupted run's."""
    for name, value in given.items():
        if name not in RESUMABLE and saved.get(name) != value:
            raise ConfigError(name, f"{made_with} {saved.get(name)!r}, not {value!r}; resume with the same value")


# -- metrics ------------------------------------------------------------------------------------------------


def to_long(wide: pd.DataFrame, run_id: str, *, dropna: bool = False) -> pd.DataFrame:
    """Long format ``run_id, iteration, quantity, value``, iteration by iteration in column order. ``dropna``
    leaves out missing cells (quantities not measured at an iteration); a measured NaN is kept otherwise."""
    long = wide.rename_axis(index="iteration", columns="quantity").reset_index().melt(
        id_vars="iteration", var_name="quantity", value_name="value")
    long = long.sort_values("iteration", kind="stable", ignore_index=True)
    if dropna:
        long = long.dropna(subset=["value"], ignore_index=True)
    long.insert(0, "run_id", run_id)
    return long[LONG_COLUMNS].astype({"iteration": "int64", "value": "float64"})


def to_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`to_long`: index ``iteration``, one column per quantity (first-seen order)."""
    order = list(dict.fromkeys(long["quantity"]))
    return long.pivot(index="iteration", columns="quantity", values="value")[order].rename_axis(columns=None)


def write_metrics(folder: Path, long: pd.DataFrame) -> None:
    io.write_frame(folder / "metrics.parquet", long, "parquet")
    io.write_frame(folder / "metrics.csv", long, "csv")


def read_metrics(folder: Path) -> pd.DataFrame:
    """A finished run's metrics, wide."""
    return to_wide(pd.read_parquet(Path(folder) / "metrics.parquet"))


def versions() -> dict:
    """Python, torch, numpy, pandas and ntkcheck versions, for config.json and report.json."""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "ntkcheck": _package_version()}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ntkcheck")
    except PackageNotFoundError:
        return "unknown"
