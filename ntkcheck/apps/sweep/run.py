"""Running a sweep: cells planned into batches, run by an engine, written as they finish, resumed by rerunning.

Folder ``out`` (``<out>.partial`` until every cell has ended, as a run folder: :mod:`ntkcheck.results.runfolder`):

    plan.json        the batches (cell ids) and the cells that cannot run, fixed when the sweep starts
    sweep.toml       the resolved spec and the versions (written next: it makes the folder resumable)
    cells/<id>.json  one finished cell: its row and its probes      } written atomically the moment the cell
    cells/<id>.parquet  its curve                                    } ends, so nothing finished is lost
    cells.parquet    one row per cell: every config field, seed, status, error, summary and k = 0 probe numbers
    curves.parquet   cell × recorded iteration: the training metrics
    probes.parquet   cell × probed iteration: λ_max, λ_min, 2/λ_max, ranks, α, drift
    figures/, report.md

Rerunning the same sweep on the same folder runs the batches of ``plan.json`` that hold a cell without a
readable ``cells/<id>.json`` and ``cells/<id>.parquet`` (a truncated or garbled pair counts as missing), each whole,
and writes only its missing cells: a cell's last bits depend on the batch it ran in
(:mod:`ntkcheck.apps.sweep.batched`), so every cell runs in the batch of the uninterrupted sweep and comes out bit
for bit the same. A ``batch_size`` other than the recorded one is refused.

A cell that cannot run is a failed cell (status ``failed``, its ``error`` in cells.parquet) and the others go on:
an invalid configuration, one that does not fit the memory, a device that is not there or an ``init_file`` that does
not load (found when the sweep is planned), or any error while its batch runs.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ntkcheck import resources
from ntkcheck.apps.sweep.batched import CellRun, failed, plan, run_batch
from ntkcheck.apps.sweep.spec import Cell, SweepSpec, load_spec
from ntkcheck.build.experiment import initial_weights, resolve_device
from ntkcheck.config import FORMATS, ConfigError
from ntkcheck.results import io, outcomes, runfolder, schema

MARKER = "sweep.toml"
PLAN = "plan.json"
ENGINES = ("embedded", "ray")
SUMMARY = ("F_T", "gain", "gain_mean", "loss", "P_mean", "P_saturated", "active_share")  # final values in cells


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: ``cells`` (one row per cell), ``curves`` (cell × iteration), ``probes`` (cell × probed
    iteration), and the folder (None in memory)."""

    spec: SweepSpec
    cells: pd.DataFrame
    curves: pd.DataFrame
    probes: pd.DataFrame
    folder: Path | None = None

    @property
    def failed(self) -> int:
        """How many cells failed (an error, not a divergence: a diverged cell is a result)."""
        return int((self.cells["status"] == "failed").sum()) if len(self.cells) else 0

    def failures(self) -> str | None:
        """One line on the failed cells (None when none failed): how many, where their errors are, the first."""
        if not self.failed:
            return None
        where = f"{self.folder / 'cells.parquet'}" if self.folder is not None else "cells"
        first = self.cells.loc[self.cells["status"] == "failed"].iloc[0]
        return (f"{self.failed} of {len(self.cells)} cells failed; their errors are in {where}, column error (the "
                f"first, cell {first['cell']}: {first['error']})")


def sweep(spec: SweepSpec, out: str | Path | None = None, *, engine: str = "embedded", address: str | None = None,
          workers: int | None = None, callback=None, max_memory: float | None = None,
          figures: str | None = "png", threads: int | None = None) -> SweepResult:
    """Run every cell of ``spec`` (:class:`~ntkcheck.apps.sweep.spec.SweepSpec`) and gather the results.

    ``engine``: ``embedded`` (this process, batches one after another) or ``ray`` (batches as Ray tasks on a local
    Ray started for the sweep with ``workers`` CPUs, or on the cluster at ``address``). With ``out`` the cells are
    written as they end and a rerun with the same spec continues (module docstring); a finished folder with the same
    spec is read back, not rerun; the batches are fixed when the sweep starts and kept by every rerun, which must
    keep ``spec.batch_size``. ``callback(event, **info)``: ``"start"`` (cells, cell_iterations, done),
    ``"advance"`` (cell_iterations), ``"cell"`` (run: :class:`CellRun`). Batches are sized to fit ``max_memory``
    bytes (default: the memory available now). ``figures``: their format, png, pdf or svg (None: report.md without
    figures, for a study that draws its own). ``threads``: CPU threads of
    the embedded engine (default: the idle cores, as the command line's; :func:`ntkcheck.resources.threads`).

    A cell that fails is recorded with its error and the others go on (module docstring): check
    :attr:`SweepResult.failed`. Refused before any folder exists (ConfigError): a grid with no cell that can run, a
    Ray ``address`` that is malformed or does not answer."""
    check_engine(engine, address, workers)
    if figures is not None and figures not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {figures!r})")
    resources.check(spec.base, limit=max_memory)
    _check_some_cell_runs(spec)
    with resources.threads(threads):
        return _sweep(spec, out, engine, address, workers, callback or (lambda event, **info: None), max_memory,
                      figures)


def check_engine(engine: str, address: str | None, workers: int | None) -> None:
    """The engine options on their own: ``engine`` embedded or ray, ``address`` and ``workers`` only with ray and
    not together, ``workers`` ≥ 1 (whether the address answers is checked where the sweep starts)."""
    if engine not in ENGINES:
        raise ConfigError("engine", f"must be one of {', '.join(ENGINES)} (got {engine!r})")
    if address is not None and engine != "ray":
        raise ConfigError("address", "needs engine ray")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("workers", f"must be an integer ≥ 1 (got {workers!r})")
    if workers is not None and engine != "ray":
        raise ConfigError("workers", "needs engine ray (the embedded engine runs in this process)")
    if workers is not None and address is not None:
        raise ConfigError("workers", "sets the CPUs of a local Ray; a cluster at `address` has its own")


def _sweep(spec: SweepSpec, out, engine, address, workers, callback, max_memory, figures) -> SweepResult:
    how = {"engine": engine, "address": address, "workers": workers, "callback": callback, "max_memory": max_memory}
    if out is None:
        _check_address(engine, address)
        return _gather(spec, _run_plan(spec, _new_plan(spec, max_memory), set(), None, **how), None)
    out = Path(out)
    work = runfolder.partial_folder(out)
    if (out / MARKER).is_file():
        _check_same(out, spec)
        return load_sweep(out)
    runfolder.check_owner(work, out, MARKER)
    resume = (work / MARKER).is_file()
    planned = None if (work / PLAN).is_file() else _new_plan(spec, max_memory)  # refused here: no folder yet
    _check_address(engine, address)
    with runfolder.open_run(out, resume, marker=MARKER) as work:
        if resume:
            _check_same(work, spec)
        recorded = _recorded_plan(work, spec, max_memory, planned)
        if not resume:
            io.write_text(work / MARKER, _toml(spec))
        _run_plan(spec, recorded, _finished(work), lambda run: _write_cell(work, run), **how)
        result = _gather(spec, [_read_cell(work, cid) for cid in _ids(spec)], work)
        return load_sweep(_finish(work, result, figures))


def _check_address(engine: str, address: str | None) -> None:
    """A Ray ``address`` is checked (its form, and that a cluster answers) before any folder exists."""
    if engine == "ray" and address is not None:
        from ntkcheck.apps.sweep.ray_engine import check_address

        check_address(address)


def _check_some_cell_runs(spec: SweepSpec) -> None:
    """A grid whose every cell is an invalid configuration is refused before any folder exists (a sweep with
    some invalid cells records them as failed and runs the others)."""
    cells = spec.cells()
    if all(c.config is None for c in cells):
        raise ConfigError("grid", f"every one of its {len(cells)} cells is an invalid configuration (the first: "
                                  f"{cells[0].error}); nothing to run")


def sweep_spec(folder: str | Path, **overrides) -> SweepSpec:
    """The spec a sweep folder (finished or partial) was made with; ``overrides``: keys of
    :func:`~ntkcheck.apps.sweep.spec.make_spec` that win (a resume checks them against the folder)."""
    return load_spec(Path(folder) / MARKER, **overrides)


def load_sweep(folder: str | Path) -> SweepResult:
    """A finished sweep folder as a :class:`SweepResult`."""
    folder = Path(folder)
    if not (folder / "cells.parquet").is_file():
        raise ConfigError("out", f"{folder} is not a finished sweep folder: {folder / 'cells.parquet'} does not exist")
    read = lambda name: pd.read_parquet(folder / name)  # noqa: E731
    return SweepResult(sweep_spec(folder), read("cells.parquet"), read("curves.parquet"), read("probes.parquet"),
                       folder)


# -- running ---------------------------------------------------------------------------------------------------


def _plan(spec: SweepSpec, max_memory) -> tuple[dict, ConfigError | None]:
    """The fate of every cell, fixed when the sweep starts: ``batches`` (lists of cell ids, :func:`plan` of the cells
    that can run, in spec order) and ``failed`` (cell id → why it cannot run: its axes make no valid configuration,
    it does not fit the memory, or it cannot start here, :func:`_unready`); ``batch_size``: the spec's (the batches
    may be smaller, to fit the memory). Also the first cell's error, when no cell can run."""
    failed, fitting, first = {}, [], None
    for cell in spec.cells():
        error = cell.error if cell.config is None else _misfit(cell, max_memory) or _unready(cell)
        if error is None:
            fitting.append(cell)
        else:
            failed[cell.id] = str(error)
            first = first or error
    batches = plan(fitting, _batch_size(spec, fitting, max_memory))
    planned = {"batch_size": spec.batch_size, "batches": [[c.id for c in batch] for batch in batches],
               "failed": failed}
    return planned, None if fitting else first


def _new_plan(spec: SweepSpec, max_memory) -> dict:
    """:func:`_plan` of a new sweep, refused (before any folder exists) when none of its cells can run: the error of
    the first, on the option the user wrote (``grid`` where the field is an axis)."""
    planned, error = _plan(spec, max_memory)
    if error is None:
        return planned
    field, message = (error.field, error.message) if isinstance(error, ConfigError) else ("grid", error)
    field = "grid" if field in dict(spec.grid) else "points" if field in spec.axes else field
    raise ConfigError(field, f"no cell of the sweep can run (all {len(spec.cells())} fail); the first: {message}")


def _recorded_plan(work: Path, spec: SweepSpec, max_memory, planned: dict | None = None) -> dict:
    """The plan in ``work/plan.json``, written now where there is none (``planned``, a new sweep's, or a folder begun
    before plans were recorded); a ``batch_size`` other than the recorded one is refused, as it would regroup the
    cells, and an unreadable plan too (its batches are lost)."""
    path = work / PLAN
    if not path.is_file():
        io.write_json(path, planned or _plan(spec, max_memory)[0])
    try:
        recorded = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        recorded = None
    if not isinstance(recorded, dict) or {"batches", "failed", "batch_size"} - recorded.keys():
        raise ConfigError("out", f"{path} is damaged, so the batches of the cells still to run are lost; remove it to "
                                 "plan them again (the cells already written are kept, the others may differ in their "
                                 "last bits), or choose another output folder")
    if recorded["batch_size"] != spec.batch_size:
        raise ConfigError("batch_size", f"{work} was planned with batch_size {recorded['batch_size']} (got "
                                        f"{spec.batch_size}); a cell's numbers depend on its batch, so a rerun keeps "
                                        "the recorded batches: leave batch_size out, or choose another output folder")
    return recorded


def _misfit(cell: Cell, max_memory) -> ConfigError | None:
    """Why ``cell`` does not fit the memory (None where it fits)."""
    try:
        resources.check(cell.config, limit=max_memory)
    except ConfigError as err:
        return err
    return None


def _unready(cell: Cell) -> ConfigError | None:
    """Why ``cell`` cannot start on this machine (None where it can): its device is not there, or its ``init_file``
    does not load as its weights. Checked when the sweep is planned, as a bad ``init_file`` (a per-cell field) would
    otherwise fail the batch it shares with good cells."""
    try:
        resolve_device(cell.config.device)
        if cell.config.init_file:
            initial_weights(cell.config)
    except ConfigError as err:
        return err
    return None


def _misfits(batches: list[list[Cell]], max_memory) -> dict[str, str]:
    """Cell id → why not, for every cell of a batch that no longer fits the memory (a resume on a smaller machine)."""
    lost = {}
    for batch in batches:
        error = next(filter(None, (_misfit(c, max_memory) for c in batch)), None)
        lost |= {c.id: str(error) for c in batch} if error else {}
    return lost


def _run_plan(spec: SweepSpec, recorded: dict, done: set[str], write, *, engine, address, workers, callback,
              max_memory) -> list[CellRun]:
    """Run every batch of ``recorded`` (:func:`_plan`) that holds a cell not in ``done``, whole; ``write`` and report
    the cells not in ``done`` as they end. A batch whose cells no longer fit the memory fails its missing cells."""
    cells = {c.id: c for c in spec.cells()}
    runs: list[CellRun] = []

    def finished(run: CellRun) -> None:
        if run.cell.id in done:  # written before: its batch runs again for the others, and gives it the same bits
            return
        if write is not None:
            write(run)
        runs.append(run)
        callback("cell", run=run)

    batches = [[cells[cid] for cid in batch] for batch in recorded["batches"] if not done.issuperset(batch)]
    lost = _misfits(batches, max_memory)
    batches = [batch for batch in batches if batch[0].id not in lost]
    callback("start", cells=len(cells), done=len(done),
             cell_iterations=sum(c.config.iters + 1 for batch in batches for c in batch))
    for cid, error in (recorded["failed"] | lost).items():
        finished(failed(cells[cid], error))
    if engine == "ray":
        from ntkcheck.apps.sweep.ray_engine import run_on_ray

        run_on_ray(batches, spec, finished, lambda n: callback("advance", cell_iterations=n), address, workers,
                   run=run_guarded)
    else:
        for batch in batches:
            run_guarded(batch, spec, finished, lambda n: callback("advance", cell_iterations=n))
    return runs


def run_guarded(batch: list[Cell], spec: SweepSpec, on_done, progress=None) -> None:
    """:func:`~ntkcheck.apps.sweep.batched.run_batch`, where an error that escapes it (the batch's setup: its device,
    model or a cell's weights) fails the cells of the batch that had not ended, so that the sweep goes on."""
    ended = set()

    def done(run: CellRun) -> None:
        ended.add(run.cell.id)
        on_done(run)

    try:
        run_batch(batch, spec, done, progress)
    except Exception as err:  # noqa: BLE001 (recorded in the cells, as run_batch records its own)
        for cell in batch:
            if cell.id not in ended:
                on_done(failed(cell, f"{type(err).__name__}: {err}"))


def _batch_size(spec: SweepSpec, cells: list[Cell], max_memory) -> int:
    """``spec.batch_size``, fewer where that many of the largest cell would not fit in the memory."""
    if not cells:
        return spec.batch_size
    need = max(resources.estimate(c.config).total_bytes for c in cells)
    cap = resources.available_memory(cells[0].config.device) if max_memory is None else max_memory
    return max(1, min(spec.batch_size, int(cap // need) if math.isfinite(cap) else spec.batch_size))


# -- the folder -------------------------------------------------------------------------------------------------


def _toml(spec: SweepSpec) -> str:
    import tomli_w

    return tomli_w.dumps(spec.to_dict() | {"versions": runfolder.versions()})


def _check_same(folder: Path, spec: SweepSpec) -> None:
    try:
        stored = tomllib.loads((folder / MARKER).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("out", f"{folder / MARKER} is damaged ({type(err).__name__}); it records the sweep's spec: "
                                 "restore it, or choose another output folder") from None
    stored.pop("versions", None)
    given = spec.to_dict()
    stored["grid"] = {k: list(v) for k, v in stored.get("grid", {}).items()}
    if not SweepSpec.from_dict(stored).same_cells(spec):
        differ = sorted(k for k in given if k not in ("batch_size", "preset") and stored.get(k) != given[k])
        raise ConfigError("out", f"{folder} holds a sweep of another spec (differs in {', '.join(differ)}); rerun it "
                                 "with its own spec (its sweep.toml), or choose another output folder")


def _ids(spec: SweepSpec) -> list[str]:
    return [c.id for c in spec.cells()]


def _finished(work: Path) -> set[str]:
    """The ids of the cells already written (their JSON is written last) whose two files read back whole: a
    truncated or garbled cell is not finished, and its batch runs again (and rewrites it)."""
    return {p.stem for p in (work / "cells").glob("*.json") if _readable(work, p.stem)}


def _readable(work: Path, cid: str) -> bool:
    try:
        stored = _read_cell(work, cid)
        return stored["row"]["cell"] == cid and isinstance(stored["probes"], list)
    except Exception:  # noqa: BLE001 (whatever a damaged file raises: pyarrow, json, a missing key)
        return False


def _write_cell(work: Path, run: CellRun) -> None:
    row = _row(run)
    io.write_frame(work / "cells" / f"{run.cell.id}.parquet", run.curve.reset_index(), "parquet")
    io.write_json(work / "cells" / f"{run.cell.id}.json", {"row": row, "probes": run.probes})


def _read_cell(work: Path, cid: str) -> dict:
    stored = json.loads((work / "cells" / f"{cid}.json").read_text())
    curve = pd.read_parquet(work / "cells" / f"{cid}.parquet")
    return {"row": stored["row"], "probes": stored["probes"], "curve": curve}


def _row(run: CellRun) -> dict:
    """cells.parquet's row of one cell: its config, seed, status and error, the final metrics, the k = 0 probes, its
    outcome and whole-curve summaries (:func:`ntkcheck.results.outcomes.cell_outcome`)."""
    cell, curve = run.cell, run.curve
    config = cell.config.to_dict() if cell.config is not None else dict(cell.values)
    last = curve.iloc[-1] if len(curve) else {}
    diverged = curve.index[curve["diverged"] > 0] if "diverged" in curve else []
    row = {"cell": cell.id, **config, "sweep_seed": cell.seed, "status": run.status, "error": run.error,
           "iterations": int(curve.index[-1]) if len(curve) else -1,
           "diverged_at": int(diverged[0]) if len(diverged) else None, "seconds": run.seconds,
           "F_T_initial": float(curve["F_T"].iloc[0]) if len(curve) else math.nan,
           **{f"{name}_final": float(last[name]) if len(curve) else math.nan for name in SUMMARY}}
    first = next((p for p in run.probes if p["iteration"] == 0), None)
    row |= schema.initial_row(first)  # the k = 0 probe columns, then the diagnostics at W_0
    for key in ("freeze_phi_max", "freeze_saturated", "freeze_gain_landing", "freeze_c", "freeze_scale", "dead_share"):
        row[f"{key}_0"] = first.get(key) if first else None
    row |= outcomes.cell_outcome(curve, run.status)  # trained/froze/unstable/diverged/failed, min_gain, …
    return row | run.summary  # the linearised run's columns (spec setting linearised)


def _gather(spec: SweepSpec, runs: list, work: Path | None) -> SweepResult:
    """The three frames from the cells' runs (in memory) or their files (``work``)."""
    parts = [r if isinstance(r, dict) else {"row": _row(r), "probes": r.probes, "curve": r.curve.reset_index()}
             for r in runs]
    order = {cid: i for i, cid in enumerate(_ids(spec))}
    parts.sort(key=lambda p: order.get(p["row"]["cell"], len(order)))
    cells = pd.DataFrame([p["row"] for p in parts])
    curves = pd.concat([p["curve"].assign(cell=p["row"]["cell"]) for p in parts if len(p["curve"])],
                       ignore_index=True) if any(len(p["curve"]) for p in parts) else pd.DataFrame()
    probes = pd.DataFrame([{"cell": p["row"]["cell"], **q} for p in parts for q in p["probes"]])
    if len(curves):
        curves = curves[["cell", *[c for c in curves.columns if c != "cell"]]]
    return SweepResult(spec, cells, curves, probes, work)


def _finish(work: Path, result: SweepResult, fmt: str) -> Path:
    """Write the gathered frames, the theory's bounds of every cell (theory.parquet, which the figures draw:
    :func:`ntkcheck.theory.sweep_bounds`), the figures and the report, then rename the folder: the sweep is finished."""
    from ntkcheck.report import sweep_figures  # matplotlib only where figures are drawn
    from ntkcheck.theory import sweep_bounds

    io.write_frame(work / "cells.parquet", result.cells, "parquet")
    io.write_frame(work / "curves.parquet", result.curves, "parquet")
    io.write_frame(work / "probes.parquet", result.probes, "parquet")
    theory = sweep_bounds(result.cells)
    io.write_frame(work / "theory.parquet", theory, "parquet")
    sweep_figures.write(result, theory, work, fmt)
    return runfolder.finish(work)
