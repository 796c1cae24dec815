"""The pieces every study is made of: its plan (size, seeds, axis overrides, engine), its answer (a paragraph, tables,
figures), the study itself (a question, the axes a user may override, how to run it and how to analyse it), and the
default run of a grid study (:func:`run_specs`: its declared sweeps, each into ``<folder>/sweeps/<name>``).

A study's sweeps are declared in TOML spec files in the package (``specs/<name>-<size>.toml``, :func:`study_spec`),
in the layout of ``ntkcheck sweep --spec``: copy one, edit it, and run it as a sweep of your own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ntkcheck.config import ConfigError

if TYPE_CHECKING:
    from ntkcheck.apps.sweep import SweepResult, SweepSpec

SIZES = ("small", "paper")
SPECS = Path(__file__).parent / "specs"
ENGINES = ("embedded", "ray")  # as ntkcheck.apps.sweep.run.ENGINES (not imported here: that needs torch)


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: its ``name`` and ``size`` (small or paper), the ``seeds`` every point runs over,
    ``grid``: the user's overrides of the study's axes (field → values, already checked against
    :attr:`Study.axes`), and the engine (``embedded`` or ``ray``, with a Ray ``address`` or ``workers``)."""

    name: str
    size: str
    seeds: tuple[int, ...]
    grid: dict[str, tuple] = field(default_factory=dict)
    engine: str = "embedded"
    address: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class Answer:
    """A study's answer: ``paragraph`` (markdown, the answer with its numbers and their spread over seeds),
    ``tables`` (name → frame, written to ``<folder>/<name>.parquet`` and shown in report.md) and ``figures`` (paths
    relative to the study folder, ``figures/<name>.<fmt>``, each drawn from one of the tables)."""

    paragraph: str
    tables: dict[str, pd.DataFrame]
    figures: tuple[str, ...] = ()

    def __repr__(self) -> str:
        tables = ", ".join(f"{k} ({len(v)} rows)" for k, v in self.tables.items())
        return f"Answer(tables: {tables}; figures: {', '.join(self.figures) or 'none'})"


@dataclass(frozen=True)
class Study:
    """One of the paper's open questions, answered by measurement.

    ``run(plan, folder, callback)`` → the finished sweeps by name (each in ``<folder>/sweeps/<name>/``, resumable
    as every sweep is; on a finished folder it only loads them); ``analyse(sweeps, folder, fmt)`` → its
    :class:`Answer`, writing its figures under ``<folder>/figures/`` in format ``fmt``. ``axes``: the configuration
    fields a user may override with ``--grid FIELD=V1,V2``. ``specs(plan)`` (optional): the sweeps a grid study runs,
    built before any folder exists so that a bad override is refused with nothing left behind."""

    name: str
    question: str
    axes: tuple[str, ...]
    run: Callable[[StudyPlan, Path, Callable | None], dict[str, SweepResult]]
    analyse: Callable[[dict[str, SweepResult], Path, str], Answer]
    specs: Callable[[StudyPlan], dict[str, SweepSpec]] | None = None


def study_spec(name: str, size: str) -> Path:
    """The package's sweep spec of study ``name`` at ``size``: ``specs/<name>-<size>.toml`` (a ``ntkcheck sweep
    --spec`` file)."""
    if size not in SIZES:
        raise ConfigError("size", f"must be one of {', '.join(SIZES)} (got {size!r})")
    path = SPECS / f"{name}-{size}.toml"
    if not path.is_file():
        raise ConfigError("study", f"study {name!r} declares no {size} spec ({path} does not exist)")
    return path


def plan_spec(spec: SweepSpec, plan: StudyPlan) -> SweepSpec:
    """``spec`` with the plan's seeds and axis overrides: an axis the spec has takes the plan's values, an axis it
    lacks is added (after its own axes)."""
    grid = dict(spec.grid)
    axes = tuple((name, tuple(plan.grid.get(name, values))) for name, values in grid.items())
    axes += tuple((name, tuple(values)) for name, values in plan.grid.items() if name not in grid)
    return replace(spec, seeds=tuple(plan.seeds), grid=axes)


def grid_specs(files: dict[str, str | Path]) -> Callable[[StudyPlan], dict[str, SweepSpec]]:
    """``specs(plan)`` of a grid study whose sweeps are the spec files ``files`` (sweep name → a path, or a file
    name in the package's specs folder where ``{size}`` stands for the plan's size), each under the plan
    (:func:`plan_spec`)."""
    def specs(plan: StudyPlan) -> dict[str, SweepSpec]:
        from ntkcheck.apps.sweep import load_spec

        return {name: plan_spec(load_spec(_spec_path(path, plan.size)), plan) for name, path in files.items()}
    return specs


def _spec_path(path: str | Path, size: str) -> Path:
    path = Path(str(path).format(size=size))
    return path if path.is_absolute() else SPECS / path


def run_specs(specs: dict[str, SweepSpec], plan: StudyPlan, folder: Path, callback=None) -> dict[str, SweepResult]:
    """Run each spec (already under the plan: :func:`plan_spec`) by :func:`ntkcheck.apps.sweep.sweep` into
    ``folder/sweeps/<name>`` with the plan's engine, address and workers, without the sweep's own figures (the study
    draws its own; each sweep still writes its report.md); a sweep already finished there is only read back. Returns
    the sweeps by name."""
    from ntkcheck.apps.sweep import sweep

    folder = Path(folder)
    return {name: sweep(spec, folder / "sweeps" / name, engine=plan.engine, address=plan.address,
                        workers=plan.workers, callback=callback, figures=None)
            for name, spec in specs.items()}


def grid_study(name: str, question: str, axes: tuple[str, ...], files: dict[str, str | Path],
               analyse: Callable[[dict[str, SweepResult], Path, str], Answer]) -> Study:
    """A :class:`Study` whose sweeps are the spec files ``files`` (:func:`grid_specs`), run by :func:`run_specs`."""
    specs = grid_specs(files)
    return Study(name, question, axes, lambda plan, folder, callback=None: run_specs(specs(plan), plan, folder,
                                                                                      callback),
                 analyse, specs)


def check_engine(engine: str, address: str | None, workers: int | None) -> None:
    """The engine options as :func:`ntkcheck.apps.sweep.sweep` checks them, and a Ray address that answers, before any
    folder exists."""
    from ntkcheck.apps.sweep.run import check_engine as check_options

    check_options(engine, address, workers)
    if engine == "ray" and address is not None:
        from ntkcheck.apps.sweep.ray_engine import check_address

        check_address(address)


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (figure names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
