"""One progress protocol for the long runs (train, verify, sweep), and its display.

The protocol is one callback, ``progress(event, **info)``, called as the work advances:

- ``"start"``: the work ahead: ``iterations`` (K + 1; train, verify), or ``cell_iterations`` with ``cells`` and
  ``done`` (the cells already finished; sweep);
- ``"iteration"``: iteration ``k`` is recorded, with its ``metrics`` (``F_T``, ``gain``, …);
- ``"advance"``: ``cell_iterations`` more cell-iterations of a sweep are done;
- ``"cell"``: a sweep cell ended (``run``: its :class:`~ntkcheck.apps.sweep.run.CellRun`);
- ``"phase"``: a slow phase starts (``text``: a probe, the diagnostics, the report).

A sweep calls it as it is (:func:`ntkcheck.apps.sweep.sweep`'s ``callback``); :func:`engine_hooks` turns it into the
``callback(k, metrics)`` and ``phase(text)`` of training and verify. :class:`ProgressDisplay` shows it.
"""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column


def engine_hooks(progress) -> dict:
    """``callback(k, metrics)`` and ``phase(text)``, the keywords of :func:`ntkcheck.engine.training.train` and
    :func:`ntkcheck.apps.verify.verify`, as the events ``"iteration"`` and ``"phase"`` of ``progress``."""
    return {"callback": lambda k, metrics: progress("iteration", k=k, metrics=metrics),
            "phase": lambda text: progress("phase", text=text)}


def duration(seconds: float) -> str:
    """A time left, rounded for a log: ``45 s``, ``7 min``, ``2.1 h`` (``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def _column(**kwargs) -> Column:
    return Column(no_wrap=True, overflow="ellipsis", **kwargs)  # one line per bar: cut, never wrapped


class ProgressDisplay:
    """``progress(event, **info)`` shown on ``console`` under ``label``; a context manager that stops it at the end.

    On a terminal: a rich bar whose columns fit 80 (label and phase, bar, k/K, F(X_T) and gain, or the cells of a
    sweep, and the time left). Not on a terminal (a log file): plain lines, one each time another 1/``steps`` of the
    work is done or ``every`` seconds have passed since the last, e.g.
    ``train  k=1200/5000  F(X_T)=1.35  gain=0.611  0.11 s/it  eta 7 min``; and one line per phase (the first time it
    starts) and per sweep cell. The time left is t̄ (total − done), t̄ the mean seconds per unit of work (iteration,
    or cell-iteration) since ``"start"``, counted from the units this display saw done (a resumed run's earlier
    iterations are not). Nothing is shown before the first event after ``"start"`` (a set-up error prints alone),
    but a sweep's bar, which shows its cells from ``"start"`` (sent after the sweep's checks)."""

    def __init__(self, label: str, console: Console, *, steps: int = 20, every: float = 30.0, clock=time.monotonic):
        self.label, self.console, self.steps, self.every, self.clock = label, console, steps, every, clock
        self.plain = not console.is_terminal
        self.total, self.completed, self.base = 1, 0, None  # units of work: in all, done, done before this display
        self.k, self.loss, self.gain = None, math.nan, math.nan
        self.cells = [0, 0]  # a sweep's cells: written, in all
        self.sweep, self.phases = False, set()
        self.started = self.shown = clock()
        self.shown_step = 0
        self.bar, self.task = None, None

    def __call__(self, event: str, **info) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:  # an event this display does not show is ignored
            handler(**info)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    # -- events ---------------------------------------------------------------------------------------------------

    def _on_start(self, iterations: int | None = None, cell_iterations: int | None = None, cells: int | None = None,
                  done: int = 0) -> None:
        self.sweep = cells is not None
        self.total = max(iterations if iterations is not None else cell_iterations or 0, 1)
        self.cells = [done, cells or 0]
        self.started = self.shown = self.clock()
        if self.sweep and not self.plain:
            self._bar_update()  # a sweep shows its cells from the start

    def _on_iteration(self, k: int, metrics: dict) -> None:
        self.base = k if self.base is None else self.base
        self.k, self.completed, self.loss, self.gain = k, k + 1, metrics["F_T"], metrics["gain"]
        self._show()

    def _on_advance(self, cell_iterations: int) -> None:
        self.base = 0 if self.base is None else self.base
        self.completed += cell_iterations
        self._show()

    def _on_cell(self, run) -> None:
        self.cells[0] += 1
        if not self.plain:
            return self._bar_update()
        gain = run.curve["gain"].iloc[-1] if len(run.curve) else math.nan
        self._print(f"cell {self.cells[0]}/{self.cells[1]} {run.cell.id} {run.status}, final gain {gain:.4g}"
                    + (f": {run.error}" if run.error else ""))

    def _on_phase(self, text: str) -> None:
        if not self.plain:
            return self._bar_update(description=f"{self.label}: {text}")
        if text not in self.phases:
            self.phases.add(text)
            self._print(f"{self.label}  {text}")

    # -- showing --------------------------------------------------------------------------------------------------

    def seconds_left(self) -> float:
        """t̄ (total − done), t̄ = seconds since start / units done since (NaN before any)."""
        done = self.completed - (self.base or 0)
        return (self.clock() - self.started) / done * (self.total - self.completed) if done > 0 else math.nan

    def line(self) -> str:
        """The plain progress line."""
        eta = duration(self.seconds_left())
        if self.sweep:
            return (f"{self.label}  {100 * self.completed / self.total:.0f}%  cells {self.cells[0]}/{self.cells[1]}  "
                    f"{self.completed}/{self.total} cell-iterations  eta {eta}")
        per = (self.clock() - self.started) / (self.completed - self.base)
        return (f"{self.label}  k={self.k}/{self.total - 1}  F(X_T)={self.loss:.4g}  gain={self.gain:.3g}  "
                f"{per:.3g} s/it  eta {eta}")

    def _show(self) -> None:
        if not self.plain:
            return self._bar_update()
        step, now = self.completed * self.steps // self.total, self.clock()
        if step > self.shown_step or now - self.shown >= self.every or self.completed >= self.total:
            self.shown_step, self.shown = step, now
            self._print(self.line())

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _bar_update(self, **fields) -> None:
        numbers = {"loss": self.loss, "gain": self.gain, "cells": f"{self.cells[0]}/{self.cells[1]}"}
        if self.bar is None:
            self.bar = Progress(*self._columns(), console=self.console, expand=True)
            self.task = self.bar.add_task(self.label, total=self.total, **numbers)
            self.bar.start()
        self.bar.update(self.task, total=self.total, completed=self.completed, **numbers, **fields)

    def _columns(self) -> list:
        """Label (the phase, cut to fit), a 12-cell bar, then k/K with F(X_T) and gain, or the cells and % done of a
        sweep, then the time left: ≤ 80 columns at up to 10⁶ iterations."""
        numbers = ([TextColumn("cells {task.fields[cells]}", table_column=_column()),
                    TextColumn("{task.percentage:>3.0f}%", table_column=_column())] if self.sweep else
                   [MofNCompleteColumn(table_column=_column()),
                    TextColumn("F(X_T) {task.fields[loss]:.4g}  gain {task.fields[gain]:.3g}", table_column=_column())])
        return [TextColumn("{task.description}", style="bold", markup=False, table_column=_column(ratio=1)),
                BarColumn(bar_width=12), *numbers, TextColumn("eta", table_column=_column()),
                TimeRemainingColumn(compact=True, table_column=_column())]


class SweepsProgress:
    """The progress of sweeps run one after another (a study's): a new :class:`ProgressDisplay` under ``label`` at
    each sweep's ``"start"``; a context manager that stops the last one."""

    def __init__(self, label: str, console: Console):
        self.label, self.console, self.display = label, console, None

    def __call__(self, event: str, **info) -> None:
        if event == "start":
            self.stop()
            self.display = ProgressDisplay(self.label, self.console)
        if self.display is not None:
            self.display(event, **info)

    def __enter__(self) -> SweepsProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.display is not None:
            self.display.stop()
