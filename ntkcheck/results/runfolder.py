"""Run folders on disk: the partial folder and its rename, checkpoints, resume checks, metrics, versions.

A run writes into ``<out>.partial/`` and renames it to ``<out>`` when it ends, so a folder named ``<out>`` is
always a finished run and is never overwritten. An interrupted run is recognised by a marker file in the
partial folder (its checkpoint, or a verify's settings) and resumed from there.

Metrics are wide in memory (one row per iteration, one column per quantity, index ``iteration``) and long on
disk (``run_id, iteration, quantity, value``, in ``metrics.parquet`` and ``metrics.csv``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.results import io

CHECKPOINT = "checkpoint.pt"
RECORDS = "metrics.jsonl"  # the metrics of a run in progress, appended at each checkpoint
LOCK = ".lock"  # held (flock) by the process that works in the folder
# Fields that may change between an interrupted run and its resume; every other field must stay the same.
RESUMABLE = ("iters", "device", "checkpoint_every", "wide_layer")
LONG_COLUMNS = ["run_id", "iteration", "quantity", "value"]
# The marker file of each command's run folder, written before anything else: whose a partial folder is.
MARKERS = {"train": CHECKPOINT, "verify": "verify.json", "sweep": "sweep.toml", "reproduce": "reproduce.json",
           "study": "study.toml"}


class Interrupted(Exception):
    """Training stopped by the user after ``iteration``; the checkpoint in ``<folder>.partial`` holds every
    completed iteration, and ``resume=True`` with the same ``out`` continues it."""

    def __init__(self, folder: Path, iteration: int):
        super().__init__(f"interrupted after iteration {iteration}; the run in {partial_folder(folder)} resumes "
                         f"with resume=True and out={folder}")
        self.folder, self.iteration = folder, iteration


def partial_folder(out: Path) -> Path:
    """``<out>.partial``: where a run lives until it ends (``out`` must name a folder)."""
    out = Path(out)
    if not out.name or out.name in (".", ".."):
        raise ConfigError("out", f"must name a folder to create (got {str(out)!r})")
    return out.with_name(out.name + ".partial")


@contextmanager
def open_run(out: str | Path, resume: bool, marker: str = CHECKPOINT):
    """The working folder ``<out>.partial``, created, writable and locked for this process while the ``with``
    block runs. An interrupted run is recognised by its ``marker`` file; a partial folder without it (a start
    killed before anything resumable was written) is cleared, unless it holds another command's marker
    (:data:`MARKERS`): that run is refused, with the command that resumes it, and left as it is. A finished ``out`` is never touched; an empty
    directory ``out`` is a place to write into. Leftovers of a write cut short by a kill are removed."""
    out, work = Path(out), partial_folder(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ConfigError("out", f"{out} already exists and is not an empty folder; runs are never overwritten, "
                                 "choose another output folder")
    created = not work.exists()
    with _locked(work, out):
        resumable = (work / marker).is_file()
        try:
            check_owner(work, out, marker)
            if resume and not resumable:
                raise ConfigError("resume", f"no interrupted run to resume: {work / marker} does not exist")
            if not resume and resumable:
                raise ConfigError("out", f"an interrupted run is in {work}; resume it ({_resume_command(marker, out)}), "
                                         "or choose another output folder")
            for leftover in work.rglob(io.TEMPORARY) if resumable else _contents(work):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            yield work
        except BaseException:
            if created and not (work / marker).exists():  # nothing resumable was written: leave nothing behind
                shutil.rmtree(work, ignore_errors=True)
            raise


def owner(work: Path) -> str | None:
    """The command whose interrupted run ``work`` holds (its marker file is there), or None."""
    return next((kind for kind, marker in MARKERS.items() if (work / marker).is_file()), None)


def _resume_command(marker: str, out: Path) -> str:
    kind = next((k for k, m in MARKERS.items() if m == marker), "the same command")
    return f"ntkcheck {kind} --resume --out {out}"


def check_owner(work: Path, out: Path, marker: str) -> None:
    """A partial folder that holds another command's interrupted run is refused, never cleared or reused."""
    kind = owner(work)
    if kind is not None and MARKERS[kind] != marker:
        raise ConfigError("out", f"{work} holds an interrupted `ntkcheck {kind}` run; finish it with "
                                 f"{_resume_command(MARKERS[kind], out)}, or choose another output folder (nothing "
                                 "was changed)")


@contextmanager
def _locked(work: Path, out: Path):
    """An exclusive, non-blocking flock on ``work/.lock`` (with the holder's pid in it)."""
    try:
        work.mkdir(parents=True, exist_ok=True)
        lock = open(work / LOCK, "a+")
    except OSError as err:
        raise ConfigError("out", f"cannot write to {out.parent}: {err.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError("out", f"{work} is in use by another process; wait for it, or choose another output "
                                 "folder") from None
    try:
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield
    finally:
        lock.close()


def _contents(work: Path) -> list[Path]:
    return [p for p in work.iterdir() if p.name != LOCK]


def final_folder(work: Path) -> Path:
    """``<out>`` of the partial folder ``<out>.partial``."""
    return work.with_name(work.name.removesuffix(".partial"))


def finish(work: Path) -> Path:
    """Rename ``<out>.partial`` to ``<out>`` (replacing an empty folder): the run is finished. The scratch files go
    after the rename, so that a kill just before it leaves a partial folder a resume can still finish."""
    out = final_folder(work)
    work.rename(out)
    for scratch in (LOCK, RECORDS):
        (out / scratch).unlink(missing_ok=True)
    return out


# -- metrics of a run in progress ------------------------------------------------------------------------------


def append_records(work: Path, records: list[dict]) -> None:
    """Append the metrics of new iterations to ``metrics.jsonl`` (one JSON object per iteration; Python's JSON
    writes floats exactly and NaN as NaN). Each checkpoint only appends, so its cost does not grow with k."""
    with open(work / RECORDS, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())


def read_records(work: Path, n: int) -> list[dict]:
    """The first ``n`` iterations' metrics; lines past them (written before a kill cut the checkpoint) are
    dropped from the file too."""
    path = work / RECORDS
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    if len(lines) < n:
        raise ConfigError("resume", f"{path} holds {len(lines)} iterations, the checkpoint {n}; the run is damaged")
    if len(lines) > n:
        io.write_text(path, "".join(lines[:n]))
    return [json.loads(line) for line in lines[:n]]


def file_hashes(cfg: TrainConfig) -> dict[str, str]:
    """sha256 of the user's problem and init files, so that a resume can refuse a replaced file."""
    hashes = {}
    for name in ("problem_file", "init_file"):
        path = getattr(cfg, name)
        if path:
            with open(path, "rb") as f:
                hashes[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return hashes


def check_same_files(saved: dict[str, str], cfg: TrainConfig) -> None:
    for name, digest in file_hashes(cfg).items():
        if saved.get(name) != digest:
            raise ConfigError(name, f"{getattr(cfg, name)} changed since the interrupted run started (its sha256 "
                                    "differs); restore it, or start a new run")


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


def stored_settings(out: Path, marker: str) -> dict:
    """What an interrupted run in ``out`` was started with: ``{"config": …}`` from its checkpoint, or a verify's
    settings file (``{"config": …, "probes": …}``)."""
    path = partial_folder(Path(out)) / marker
    check_owner(path.parent, Path(out), marker)
    if not path.is_file():
        raise ConfigError("resume", f"no interrupted run to resume: {path} does not exist")
    try:
        if path.suffix == ".pt":
            return {"config": torch.load(path, map_location="cpu", weights_only=True)["config"]}
        return json.loads(path.read_text())
    except Exception as err:  # any failure to read it back means the file is not usable
        raise ConfigError("resume", f"{path} is corrupt or unreadable ({type(err).__name__})") from None


def resumed_config(saved: dict, changes: dict, made_with: str = "the interrupted run used") -> TrainConfig:
    """The stored configuration with ``changes`` to :data:`RESUMABLE` fields; any other field must keep its value."""
    check_same_config(saved, {k: v for k, v in changes.items() if k not in RESUMABLE}, made_with)
    return TrainConfig.from_dict(saved | changes)


def check_same_config(saved: dict, given: dict, made_with: str) -> None:
    """Every field outside :data:`RESUMABLE` must equal the interrupted run's."""
    for name, value in given.items():
        if name not in RESUMABLE and saved.get(name) != value:
            raise ConfigError(name, f"{made_with} {saved.get(name)!r}, not {value!r}; keep the same value")


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
