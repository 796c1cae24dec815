"""The Ray engine: each batch of cells is one Ray task; the driver writes every cell as its task returns.

A local Ray is started for the sweep (``workers`` CPUs, default all) and shut down after it; with ``address`` the
tasks go to an existing cluster (``ray.init(address=...)``), whose workers need ntkcheck installed. A task runs a
batch (:func:`~ntkcheck.apps.sweep.run.run_guarded`) with one thread (torch and BLAS) per CPU it holds, and is
retried when its worker is lost (``max_retries``); a cell's own error is recorded in its result, not raised, so it is
never retried, and a task lost for good fails its cells. The batches are the sweep's plan
(:mod:`ntkcheck.apps.sweep.run`), as for the embedded engine.

An ``address`` is checked before the sweep opens its folder (:func:`check_address`): its form, a TCP connection to
host:port within :data:`CONNECT_S` seconds, and a Ray driver connecting to it in a child process within
:data:`PROBE_S` seconds (``ray.init`` alone retries for more than 10 minutes). A local Ray dies with the sweep even
when the driver is killed (kill -9 leaves Ray's agents alive for a minute or more): a watchdog process started with it
kills the driver's Ray processes the moment the driver is gone (:data:`WATCHDOG`).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from contextlib import contextmanager

from ntkcheck.apps.sweep.batched import CellRun, failed, run_batch
from ntkcheck.apps.sweep.spec import Cell, SweepSpec
from ntkcheck.config import ConfigError

RETRIES = 3  # a task whose worker dies is run again this many times
CONNECT_S = 10  # seconds for a TCP connection to the address
PROBE_S = 40  # seconds for a Ray driver to connect to it (a child process; Ray's import takes 2-5 of them)
ADDRESS = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:.]+\]|[\w.-]+):(?P<port>\d{1,5})$")

# Polls the driver (argv[1]) every 0.2 s and records its descendants (pid → start time, from /proc) but those there
# at its start; once the driver is gone, kills every recorded one still alive with the same start time.
WATCHDOG = r"""
import os, signal, sys, time
driver, me = int(sys.argv[1]), os.getpid()
def table():
    out = {}
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(name)] = (int(fields[1]), fields[19])
        except (OSError, ValueError, IndexError):
            pass
    return out
def family(procs):
    found, todo = {}, [driver]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in procs.items():
            if ppid == parent and pid != me and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found
before, seen = family(table()), {}
while os.getppid() == driver:
    seen.update({p: s for p, s in family(table()).items() if p not in before})
    time.sleep(0.2)
procs = table()
for pid, start in seen.items():
    if procs.get(pid, (0, None))[1] == start:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def _batch_task(cells: list[Cell], spec: SweepSpec, run) -> list[CellRun]:
    from ntkcheck.resources import set_threads

    set_threads(1)
    runs: list[CellRun] = []
    run(cells, spec, runs.append)
    return runs


def check_address(address: str) -> None:
    """Refuse (ConfigError on ``address``) an address that is not ``host:port``, ``ray://host:port`` or ``auto``, or
    where no Ray cluster answers within :data:`CONNECT_S` + :data:`PROBE_S` seconds."""
    match = ADDRESS.match(address)
    if address != "auto" and (match is None or not 0 < int(match["port"]) < 65536):
        raise ConfigError("address", f"must be host:port, ray://host:port or auto (got {address!r}); leave it out "
                                     "for a local Ray started for the sweep")
    if match is not None:
        host = match["host"].strip("[]")
        try:
            socket.create_connection((host, int(match["port"])), timeout=CONNECT_S).close()
        except OSError as err:
            why = err.strerror or f"no answer within {CONNECT_S} s"
            raise ConfigError("address", f"nothing answers at {address} ({why}); start the cluster (ray start "
                                         "--head) or leave `address` out for a local Ray") from None
    probe = "import ray; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); ray.shutdown()"
    try:
        done = subprocess.run([sys.executable, "-c", "import sys; " + probe, address], check=False, timeout=PROBE_S,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired:
        raise ConfigError("address", f"no Ray cluster answered at {address} within {PROBE_S} s; check the address "
                                     "(ray status on the head node), or leave `address` out for a local Ray") from None
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no message")
        raise ConfigError("address", f"Ray could not connect to {address} ({last.strip()[:200]}); check the address, "
                                     "or leave `address` out for a local Ray")


@contextmanager
def _ray(address: str | None, workers: int | None):
    """Ray for the sweep: the one already connected in this process, the cluster at ``address``, or a local one
    started now (with a watchdog) and shut down after the ``with`` block."""
    import ray

    if ray.is_initialized():
        yield
        return
    watchdog = None
    if address is None and os.path.isdir("/proc"):
        watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid())], start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if address is None:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ConfigError("address", f"Ray could not connect to {address} ({err})") from None
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()


def run_on_ray(batches: list[list[Cell]], spec: SweepSpec, on_done, progress, address: str | None,
               workers: int | None, run=run_batch) -> None:
    """Run ``batches`` as Ray tasks, each through ``run(cells, spec, on_done)``; ``on_done(CellRun)`` for every cell
    as its task returns (a task lost for good: its cells failed), ``progress(n)`` with the cell-iterations it
    finished."""
    import ray

    with _ray(address, workers):
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(_batch_task)
        pending = {task.remote(batch, spec, run): batch for batch in batches}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                batch = pending.pop(ref)
                try:
                    runs = ray.get(ref)
                except ray.exceptions.RayError as err:
                    runs = [failed(cell, f"{type(err).__name__}: {str(err).splitlines()[0]}") for cell in batch]
                for cell_run in runs:
                    on_done(cell_run)
                progress(sum(c.config.iters + 1 for c in batch))
