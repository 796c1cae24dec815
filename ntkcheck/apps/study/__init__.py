"""Studies: the paper's open questions, each answered by declared sweeps over seeds and an analysis of their cells.

``ntkcheck study NAME`` and :func:`study` run one (:data:`STUDIES`) into a study folder::

    study.toml        name, size, seeds, grid overrides, versions (written first: it makes the folder resumable)
    sweeps/<name>/    the study's sweeps, each a sweep folder (resumable, readable by ntkcheck.load_sweep)
    <table>.parquet   the analysis' tables
    figures/          the analysis' figures, each drawn from one table
    answer.json       the paragraph, the tables' and figures' names, the time it took
    report.md         question, command, time, answer, tables and figures

As every run folder (:mod:`ntkcheck.results.runfolder`) it is ``<out>.partial`` until the answer is written; the same
command on the same ``--out`` (or ``--resume --out DIR``) continues it, keeping every finished cell; a finished study
is read back, never rerun, and a rerun of it with other seeds, axes or size is refused.
"""

from __future__ import annotations

import importlib
import json
import math
import shlex
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ntkcheck.apps.study.base import (
    SIZES,
    Answer,
    Study,
    StudyPlan,
    check_engine,
    run_specs,
    study_spec,
)
from ntkcheck.config import FORMATS, ConfigError

STUDIES = ("init", "stability", "width", "objectives", "momentum")
MODULES = {"init": ("init", "STUDY"), "stability": ("stability", "STUDY"), "width": ("width", "STUDY"),
           "objectives": ("objectives", "OBJECTIVES"), "momentum": ("objectives", "MOMENTUM")}
MARKER = "study.toml"
ANSWER = "answer.json"
REPORT_ROWS = 100  # rows of a table shown in report.md (all of them are in its parquet file)

__all__ = ["STUDIES", "Answer", "Study", "StudyPlan", "StudyResult", "get_study", "load_study", "make_plan",
           "run_specs", "study", "study_spec"]


@dataclass(frozen=True)
class StudyResult:
    """A finished study: its ``name`` and ``plan``, its ``sweeps`` (name → :class:`~ntkcheck.apps.sweep.SweepResult`),
    its :class:`Answer` and its ``folder``."""

    name: str
    plan: StudyPlan
    sweeps: dict
    answer: Answer
    folder: Path

    def __repr__(self) -> str:
        return (f"StudyResult({self.name}, size {self.plan.size}, {len(self.plan.seeds)} seeds, sweeps: "
                f"{', '.join(self.sweeps)}; {self.folder})")

    def _repr_markdown_(self) -> str:  # a notebook shows the answer
        return f"**{self.name}** ({self.folder})\n\n{self.answer.paragraph}"


def get_study(name: str) -> Study:
    """The study ``name`` (one of :data:`STUDIES`), its module imported now."""
    if name not in STUDIES:
        what = "missing" if name is None else f"unknown study {name!r}"
        raise ConfigError("study", f"{what}; choose one of {', '.join(STUDIES)}")
    module, attribute = MODULES[name]
    return getattr(importlib.import_module(f"ntkcheck.apps.study.{module}"), attribute)


def make_plan(name: str, *, size: str = "small", seeds=None, grid=None, engine: str = "embedded",
              address: str | None = None, workers: int | None = None) -> StudyPlan:
    """The checked :class:`StudyPlan` of study ``name``: ``size`` small or paper; ``seeds`` ("0-19", "0,3,7" or a
    list; default the seeds of the study's spec file at that size); ``grid``: overrides of the study's axes
    (``["T=5,10"]`` or ``{"T": (5, 10)}``), each one of :attr:`Study.axes`; the engine options as a sweep's."""
    from ntkcheck.apps.sweep.spec import SweepSpec, load_spec, parse_seeds

    study_ = get_study(name)
    if size not in SIZES:
        raise ConfigError("size", f"must be one of {', '.join(SIZES)} (got {size!r})")
    axes = grid.items() if isinstance(grid, dict) else (_axis(a, study_) if isinstance(a, str) else a for a in grid or ())
    overrides = {}
    for field, values in axes:
        _check_axis(field, study_)
        overrides[field] = tuple(values)
    seeds = load_spec(study_spec(name, size)).seeds if seeds is None else parse_seeds(seeds)
    SweepSpec(seeds=tuple(seeds), grid=tuple(overrides.items()))  # the seeds' and the axes' own checks
    check_engine(engine, address, workers)
    return StudyPlan(name, size, tuple(seeds), overrides, engine, address, workers)


def _axis(text: str, study_: Study) -> tuple[str, tuple]:
    """``"T=5,10"`` → ("T", (5, 10)), its field checked against the study's axes before its values are read."""
    from ntkcheck.apps.sweep.spec import AXIS_ALIASES, parse_axis

    field = text.partition("=")[0].strip()
    _check_axis(AXIS_ALIASES.get(field, field), study_)
    return parse_axis(text)


def _check_axis(field: str, study_: Study) -> None:
    if field not in study_.axes:
        raise ConfigError("grid", f"{field or '(nothing)'} is not an axis of the {study_.name} study; its axes are "
                                  f"{', '.join(study_.axes)} (written FIELD=V1,V2,…)")


def study(name: str | None, out: str | Path | None = None, *, size: str | None = None, seeds=None, grid=None,
          engine: str = "embedded", address: str | None = None, workers: int | None = None, resume: bool = False,
          callback=None, figures: str = "png", threads: int | None = None) -> StudyResult:
    """Run study ``name`` (:data:`STUDIES`) into ``out`` (default: a new temporary folder) and analyse it.

    ``size`` (default small), ``seeds``, ``grid``, ``engine``, ``address``, ``workers``: :func:`make_plan`.
    ``resume``: continue the interrupted study in ``<out>.partial`` (the same call without it continues it too, as a
    sweep does); its name, size, seeds and grid are the stored plan's where not given (``study(None, out,
    resume=True)`` is ``ntkcheck study --resume --out DIR``).
    ``callback(event, **info)``: each sweep's progress (:func:`ntkcheck.apps.sweep.sweep`). ``figures``: png, pdf or
    svg. ``threads``: CPU threads (default: the idle cores). Refused before any folder exists (ConfigError naming the
    option): an unknown study, size or axis, bad seeds or engine options, a finished ``out`` of another plan."""
    from ntkcheck import resources

    stored = _stored_plan(Path(out)) if resume and out is not None else {}
    if resume and name is None and not stored:
        from ntkcheck.results import runfolder

        runfolder.check_owner(runfolder.partial_folder(Path(out)), Path(out), MARKER)  # another command's run
        raise ConfigError("resume", f"no interrupted study in {out}.partial to resume; start one with ntkcheck study "
                                    f"NAME --out {out}")
    if stored and name in (None, stored.get("name")):
        name, size = stored.get("name"), stored.get("size") if size is None else size
        seeds, grid = stored.get("seeds") if seeds is None else seeds, grid or stored.get("grid")
    plan = make_plan(name, size=size or "small", seeds=seeds, grid=grid, engine=engine, address=address,
                     workers=workers)
    if figures not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {figures!r})")
    study_ = get_study(name)
    if study_.specs is not None:
        _check_specs(study_.specs(plan))
    with resources.threads(threads):
        return _study(study_, plan, Path(out) if out is not None else Path(tempfile.mkdtemp()) / name, resume,
                      callback, figures)


def _check_specs(specs: dict) -> None:
    """Every sweep of a grid study has a cell that can run (checked before any folder exists, as a sweep does)."""
    for spec in specs.values():
        cells = spec.cells()
        if all(c.config is None for c in cells):
            raise ConfigError("grid", f"every one of its {len(cells)} cells is an invalid configuration (the first: "
                                      f"{cells[0].error}); nothing to run")


def _study(study_: Study, plan: StudyPlan, out: Path, resume: bool, callback, fmt: str) -> StudyResult:
    from ntkcheck.results import runfolder

    work = runfolder.partial_folder(out)
    if (out / MARKER).is_file():
        _check_same(out, plan)
        return load_study(out)
    runfolder.check_owner(work, out, MARKER)
    resumable = (work / MARKER).is_file()
    if resume and not resumable:
        raise ConfigError("resume", f"no interrupted study to resume: {work / MARKER} does not exist")
    created = not work.exists()
    start = time.perf_counter()
    with runfolder.open_run(out, resumable, marker=MARKER) as work:
        if resumable:
            _check_same(work, plan)
        else:
            _write_plan(work, plan)
        try:
            sweeps = study_.run(plan, work, callback)
        except ConfigError:
            if created and not any((work / "sweeps").glob("*")):  # refused before any cell: leave nothing behind
                shutil.rmtree(work, ignore_errors=True)
            raise
        answer = study_.analyse(sweeps, work, fmt)
        _write_answer(work, study_, plan, answer, time.perf_counter() - start, resumable)
        runfolder.finish(work)
    return load_study(out)


def _write_plan(work: Path, plan: StudyPlan) -> None:
    import tomli_w

    from ntkcheck.results import io, runfolder

    io.write_text(work / MARKER, tomli_w.dumps(_plan_dict(plan) | {"versions": runfolder.versions()}))


def _plan_dict(plan: StudyPlan) -> dict:
    return {"name": plan.name, "size": plan.size, "seeds": list(plan.seeds),
            "grid": {k: list(v) for k, v in plan.grid.items()}}


def _stored_plan(out: Path) -> dict:
    """The plan recorded in the interrupted ``<out>.partial`` (or the finished ``out``); {} where there is none."""
    from ntkcheck.results import runfolder

    folder = next((f for f in (runfolder.partial_folder(out), out) if (f / MARKER).is_file()), None)
    return {} if folder is None else _read_plan(folder)


def _read_plan(folder: Path) -> dict:
    try:
        return tomllib.loads((folder / MARKER).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("out", f"{folder / MARKER} is damaged ({type(err).__name__}); it records the study's plan: "
                                 "restore it, or choose another output folder") from None


def _check_same(folder: Path, plan: StudyPlan) -> None:
    """A study folder is continued or read back only with its own plan; the refusal names the first option that
    differs and says how to start a new study."""
    stored, given = _read_plan(folder), _plan_dict(plan)
    for key, option in (("name", "study"), ("size", "size"), ("seeds", "seeds"), ("grid", "grid")):
        if stored.get(key) != given[key]:
            raise ConfigError(option, f"{folder} holds the {stored.get('name')} study with {key} "
                                      f"{_words(stored.get(key))}, not {_words(given[key])}; a study folder keeps its "
                                      f"plan: rerun it with its own ({_command(stored)}), or give a new --out to start "
                                      "a new study (nothing was changed)")


def _words(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={','.join(map(str, v))}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return _seeds_text(value)
    return str(value)


def _seeds_text(seeds) -> str:
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _command(plan: dict, out: Path | None = None) -> str:
    """The ``ntkcheck study`` command of a plan (as study.toml records it)."""
    words = ["ntkcheck", "study", plan["name"], "--size", plan["size"], "--seeds", _seeds_text(plan["seeds"])]
    for field, values in plan.get("grid", {}).items():
        words += ["--grid", f"{field}={','.join(map(str, values))}"]
    return shlex.join(words + (["--out", str(out)] if out is not None else []))


def _write_answer(work: Path, study_: Study, plan: StudyPlan, answer: Answer, seconds: float, resumed: bool) -> None:
    from ntkcheck.results import io

    for key, table in answer.tables.items():
        io.write_frame(work / f"{key}.parquet", table, "parquet")
    io.write_json(work / ANSWER, {"paragraph": answer.paragraph, "tables": list(answer.tables),
                                  "figures": list(answer.figures), "seconds": seconds, "resumed": resumed})
    ran = sorted(p.name for p in (work / "sweeps").iterdir()) if (work / "sweeps").is_dir() else []
    io.write_text(work / "report.md", report(study_, plan, answer, seconds, resumed, ran))


def report(study_: Study, plan: StudyPlan, answer: Answer, seconds: float, resumed: bool = False,
           sweeps: list[str] = ()) -> str:
    """report.md of a study: the question, the command, the time, the answer, its tables, its figures and the sweeps
    that ran (``sweeps``: their folder names; a bisection's rounds are only known once they ran)."""
    from ntkcheck.report.run import md_table

    took = f"{seconds:.0f} s" + (" (this last invocation; the study was resumed)" if resumed else "")
    parts = [f"# ntkcheck study {study_.name}", "", f"**Question.** {study_.question}", "",
             f"**Command.** `{_command(_plan_dict(plan))}` (engine {plan.engine})", "", f"**Time.** {took}", "",
             "## Answer", "", answer.paragraph, ""]
    for key, table in answer.tables.items():
        shown = table.head(REPORT_ROWS)
        more = f"; the first {REPORT_ROWS} of its {len(table)} rows" if len(table) > REPORT_ROWS else ""
        parts += [f"## Table `{key}` ({key}.parquet{more})", "",
                  md_table(list(map(str, shown.columns)), [[_cell(v) for v in row] for row in shown.itertuples(
                      index=False)]), ""]
    if answer.figures:
        parts += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in answer.figures] + [""]
    parts += ["## Sweeps", "", "Each under `sweeps/<name>/` (cells.parquet, curves.parquet, probes.parquet, its own "
              "report.md): " + ", ".join(f"`{name}`" for name in sweeps), ""]
    return "\n".join(parts)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def load_study(folder: str | Path) -> StudyResult:
    """A finished study folder as a :class:`StudyResult` (its sweeps, tables and figures read back, nothing rerun)."""
    from ntkcheck.apps.sweep import load_sweep

    folder = Path(folder)
    if not (folder / ANSWER).is_file():
        raise ConfigError("out", f"{folder} is not a finished study folder: {folder / ANSWER} does not exist")
    stored = _read_plan(folder)
    plan = StudyPlan(stored["name"], stored["size"], tuple(stored["seeds"]),
                     {k: tuple(v) for k, v in stored.get("grid", {}).items()})
    saved = json.loads((folder / ANSWER).read_text())
    tables = {key: pd.read_parquet(folder / f"{key}.parquet") for key in saved["tables"]}
    sweeps = {p.name: load_sweep(p) for p in sorted((folder / "sweeps").iterdir()) if (p / "cells.parquet").is_file()}
    return StudyResult(plan.name, plan, sweeps, Answer(saved["paragraph"], tables, tuple(saved["figures"])), folder)
