"""The Ray engine: each batch of cells is one Ray task; the driver writes every cell as its task returns.

A local Ray is started for the sweep (``workers`` CPUs, default all) and shut down after it; with ``address`` the
tasks go to an existing cluster (``ray.init(address=...)``), whose workers need ntkcheck installed. A task runs
:func:`~ntkcheck.apps.sweep.batched.run_batch` with one thread (torch and BLAS) per CPU it holds, and is retried when
its worker is lost (``max_retries``); a cell's own error is recorded in its result, not raised, so it is never
retried. The batches are the sweep's plan (:mod:`ntkcheck.apps.sweep.run`), as for the embedded engine.
"""

from __future__ import annotations

import os

from ntkcheck.apps.sweep.batched import CellRun, run_batch
from ntkcheck.apps.sweep.spec import Cell, SweepSpec

RETRIES = 3  # a task whose worker dies is run again this many times


def _batch_task(cells: list[Cell], spec: SweepSpec) -> list[CellRun]:
    from ntkcheck.resources import set_threads

    set_threads(1)
    runs: list[CellRun] = []
    run_batch(cells, spec, runs.append)
    return runs


def run_on_ray(batches: list[list[Cell]], spec: SweepSpec, on_done, progress, address: str | None,
               workers: int | None) -> None:
    """Run ``batches`` as Ray tasks; ``on_done(CellRun)`` for every cell as its task returns, ``progress(n)`` with
    the cell-iterations it finished."""
    import ray

    started = not ray.is_initialized()
    if started:
        if address is None:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(_batch_task)
        pending = {task.remote(batch, spec): batch for batch in batches}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                batch = pending.pop(ref)
                for run in ray.get(ref):
                    on_done(run)
                progress(sum(c.config.iters + 1 for c in batch))
    finally:
        if started:
            ray.shutdown()
