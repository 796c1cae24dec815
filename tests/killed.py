"""A sweep killed in-process, for the resume tests: ``Killed`` stands for a SIGKILL (nothing in the sweep catches a
BaseException that is not KeyboardInterrupt), raised as the sweep is about to write a given cell."""

from __future__ import annotations

import pytest

from ntkcheck.apps.sweep import run as sweep_run
from ntkcheck.apps.sweep import sweep


class Killed(BaseException):
    """A kill: nothing in the sweep catches it, as nothing can catch a SIGKILL."""


def interrupt(spec, out, after: int, monkeypatch) -> list[str]:
    """Run ``spec`` into ``out`` and kill it as it is about to write its (after + 1)-th cell; the cells written."""
    written, write = [], sweep_run._write_cell

    def write_then_die(work, run):
        if len(written) == after:
            raise Killed
        write(work, run)
        written.append(run.cell.id)

    with monkeypatch.context() as patch:
        patch.setattr(sweep_run, "_write_cell", write_then_die)
        with pytest.raises(Killed):
            sweep(spec, out)
    return written
