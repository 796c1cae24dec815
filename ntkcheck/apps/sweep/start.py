"""Which sweep a command runs: the interrupted one in its folder, a TOML spec file, or a preset with axes
(:func:`start_spec`), and the run of it (:func:`start_sweep`, what ``ntkcheck sweep`` calls)."""

from __future__ import annotations

from pathlib import Path

from ntkcheck.apps.sweep.run import MARKER, SweepResult, sweep, sweep_spec
from ntkcheck.apps.sweep.spec import SweepSpec, load_spec, make_spec, parse_axis
from ntkcheck.config import ConfigError
from ntkcheck.results.runfolder import check_owner, partial_folder


def start_spec(out: str | Path, *, resume: bool = False, spec: str | Path | None = None, preset: str | None = None,
               base: dict | None = None, grid=(), seeds=None, **settings) -> SweepSpec:
    """The spec of the sweep to run into ``out``, by the first rule that applies:

    1. ``resume`` with no ``spec``, ``grid`` or ``base`` given: the interrupted sweep's own spec
       (``<out>.partial/sweep.toml``) with ``settings``; ``resume`` always needs that file;
    2. ``spec`` (a TOML file): its spec, overridden by ``base`` (TrainConfig fields), ``grid`` (``"FIELD=V1,V2"``
       axes), ``preset`` and ``seeds`` when given, and ``settings`` (the other fields of :class:`SweepSpec`);
    3. otherwise :func:`~ntkcheck.apps.sweep.spec.make_spec` of ``preset`` (default small) with ``base``, ``grid``,
       ``seeds`` and ``settings``.

    A resume given a spec (rules 2, 3) continues only if it is the interrupted one's (checked by the sweep)."""
    base, grid = dict(base or {}), tuple(grid or ())
    partial = partial_folder(Path(out))
    check_owner(partial, Path(out), MARKER)  # another command's interrupted run: refused, left as it is
    if resume and not (partial / MARKER).is_file():
        raise ConfigError("resume", f"no interrupted sweep to resume: {partial / MARKER} does not exist")
    if resume and not (spec or grid or base):
        return sweep_spec(partial, **settings)  # checked by the sweep (batch_size against its plan)
    if spec:
        overrides = {"preset": preset} if preset is not None else {}
        if seeds is not None:
            overrides["seeds"] = seeds
        return load_spec(spec, base=base, grid=dict(parse_axis(a) for a in grid), **overrides, **settings)
    return make_spec(preset or "small", base=base, grid=grid, seeds=seeds, **settings)


def start_sweep(out: str | Path, *, engine: str = "embedded", address: str | None = None, workers: int | None = None,
                progress=None, max_memory: float | None = None, figures: str = "png", **choice) -> SweepResult:
    """:func:`~ntkcheck.apps.sweep.sweep` into ``out`` of the spec :func:`start_spec` chooses from ``choice`` (its
    keywords); ``progress(event, **info)``: :mod:`ntkcheck.report.progress` (``"start"``, ``"advance"``, ``"cell"``)."""
    return sweep(start_spec(out, **choice), out, engine=engine, address=address, workers=workers, callback=progress,
                 max_memory=max_memory, figures=figures)
