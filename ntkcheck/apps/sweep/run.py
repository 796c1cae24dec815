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
``cells/<id>.json``, each whole, and writes only its missing cells: a cell's last bits depend on the batch it ran
in (:mod:`ntkcheck.apps.sweep.batched`), so every cell runs in the batch of the uninterrupted sweep and comes out
bit for bit the same. A ``batch_size`` other than the recorded one is refused.
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
from ntkcheck.config import FORMATS, ConfigError
from ntkcheck.results import io, runfolder, schema

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


def sweep(spec: SweepSpec, out: str | Path | None = None, *, engine: str = "embedded", address: str | None = None,
          workers: int | None = None, callback=None, max_memory: float | None = None,
          figures: str = "png") -> SweepResult:
    """Run every cell of ``spec`` (:class:`~ntkcheck.apps.sweep.spec.SweepSpec`) and gather the results.

    ``engine``: ``embedded`` (this process, batches one after another) or ``ray`` (batches as Ray tasks on a local
    Ray started for the sweep with ``workers`` CPUs, or on the cluster at ``address``). With ``out`` the cells are
    written as they end and a rerun with the same spec continues (module docstring); a finished folder with the same
    spec is read back, not rerun; the batches are fixed when the sweep starts and kept by every rerun, which must
    keep ``spec.batch_size``. ``callback(event, **info)``: ``"start"`` (cells, cell_iterations, done),
    ``"advance"`` (cell_iterations), ``"cell"`` (run: :class:`CellRun`). Batches are sized to fit ``max_memory``
    bytes (default: the memory available now). ``figures``: their format, png, pdf or svg."""
    if engine not in ENGINES:
        raise ConfigError("engine", f"must be one of {', '.join(ENGINES)} (got {engine!r})")
    if address is not None and engine != "ray":
        raise ConfigError("address", "needs engine ray")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("workers", f"must be an integer ≥ 1 (got {workers!r})")
    if workers is not None and engine != "ray":
        raise ConfigError("workers", "needs engine ray (the embedded engine runs in this process)")
    if figures not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {figures!r})")
    resources.check(spec.base, limit=max_memory)
    _check_some_cell_runs(spec)
    callback = callback or (lambda event, **info: None)
    how = dict(engine=engine, address=address, workers=workers, callback=callback, max_memory=max_memory)
    if out is None:
        return _gather(spec, _run_plan(spec, _plan(spec, max_memory), set(), None, **how), None)
    out = Path(out)
    work = runfolder.partial_folder(out)
    if (out / MARKER).is_file():
        _check_same(out, spec)
        return load_sweep(out)
    runfolder.check_owner(work, out, MARKER)
    resume = (work / MARKER).is_file()
    with runfolder.open_run(out, resume, marker=MARKER) as work:
        if resume:
            _check_same(work, spec)
        recorded = _recorded_plan(work, spec, max_memory)
        if not resume:
            io.write_text(work / MARKER, _toml(spec))
        _run_plan(spec, recorded, _finished(work), lambda run: _write_cell(work, run), **how)
        result = _gather(spec, [_read_cell(work, cid) for cid in _ids(spec)], work)
        return load_sweep(_finish(work, result, figures))


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


def _plan(spec: SweepSpec, max_memory) -> dict:
    """The fate of every cell, fixed when the sweep starts: ``batches`` (lists of cell ids, :func:`plan` of the cells
    that can run, in spec order) and ``failed`` (cell id → why it cannot run: its axes make no valid configuration,
    or it does not fit the memory); ``batch_size``: the spec's (the batches may be smaller, to fit the memory)."""
    failed, fitting = {}, []
    for cell in spec.cells():
        error = cell.error if cell.config is None else _misfit(cell, max_memory)
        if error is None:
            fitting.append(cell)
        else:
            failed[cell.id] = error
    batches = plan(fitting, _batch_size(spec, fitting, max_memory))
    return {"batch_size": spec.batch_size, "batches": [[c.id for c in batch] for batch in batches], "failed": failed}


def _recorded_plan(work: Path, spec: SweepSpec, max_memory) -> dict:
    """The plan in ``work/plan.json``, written now where there is none (a new sweep, or a folder begun before plans
    were recorded); a ``batch_size`` other than the recorded one is refused, as it would regroup the cells."""
    path = work / PLAN
    if not path.is_file():
        io.write_json(path, _plan(spec, max_memory))
    recorded = json.loads(path.read_text())
    if recorded["batch_size"] != spec.batch_size:
        raise ConfigError("batch_size", f"{work} was planned with batch_size {recorded['batch_size']} (got "
                                        f"{spec.batch_size}); a cell's numbers depend on its batch, so a rerun keeps "
                                        "the recorded batches: leave batch_size out, or choose another output folder")
    return recorded


def _misfit(cell: Cell, max_memory) -> str | None:
    """Why ``cell`` does not fit the memory (None where it fits)."""
    try:
        resources.check(cell.config, limit=max_memory)
    except ConfigError as err:
        return str(err)
    return None


def _misfits(batches: list[list[Cell]], max_memory) -> dict[str, str]:
    """Cell id → why not, for every cell of a batch that no longer fits the memory (a resume on a smaller machine)."""
    lost = {}
    for batch in batches:
        error = next(filter(None, (_misfit(c, max_memory) for c in batch)), None)
        lost |= {c.id: error for c in batch} if error else {}
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

        run_on_ray(batches, spec, finished, lambda n: callback("advance", cell_iterations=n), address, workers)
    else:
        for batch in batches:
            run_batch(batch, spec, finished, lambda n: callback("advance", cell_iterations=n))
    return runs


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
    stored = tomllib.loads((folder / MARKER).read_text())
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
    """The ids of the cells already written (their JSON is written last)."""
    return {p.stem for p in (work / "cells").glob("*.json")}


def _write_cell(work: Path, run: CellRun) -> None:
    row = _row(run)
    io.write_frame(work / "cells" / f"{run.cell.id}.parquet", run.curve.reset_index(), "parquet")
    io.write_json(work / "cells" / f"{run.cell.id}.json", {"row": row, "probes": run.probes})


def _read_cell(work: Path, cid: str) -> dict:
    stored = json.loads((work / "cells" / f"{cid}.json").read_text())
    curve = pd.read_parquet(work / "cells" / f"{cid}.parquet")
    return {"row": stored["row"], "probes": stored["probes"], "curve": curve}


def _row(run: CellRun) -> dict:
    """cells.parquet's row of one cell: its config, seed, status and error, the final metrics, the k = 0 probes."""
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
    return row


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
