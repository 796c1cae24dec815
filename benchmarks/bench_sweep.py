"""Benchmark: a sweep's cells trained in one batch against the same cells trained one by one.

The Fig. 5 grid: e ∈ {1, 5, 25, 50, 100} × η ∈ {1e-3, …, 1e-7}, the small configuration (N = 32, d = 32, b = 25,
n = 1024, T = 20), ``--iters`` iterations (default 200), ``--seeds`` seeds (default 1: 25 cells). In one process,
one after the other:

``batched``     :func:`ntkcheck.apps.sweep.sweep` with the embedded engine (all cells of a seed share their data, so
                a batch holds all 25·seeds cells up to ``--batch-size``), probes off, curves every 25 iterations;
``one by one``  :func:`ntkcheck.train` on each cell in turn, as the cells would run without the sweep engine
                (every iteration recorded, as ``train`` does). ``--sample`` cells are timed (default 5, spread
                over the grid) and the rate taken as the one-by-one rate: every cell costs the same per iteration.

Throughput in cell-iterations per second for both and their ratio (target ≥ 10), and the peak memory of each part
(VmHWM after ``/proc/self/clear_refs``, minus the RSS before it). Torch threads: ``--threads`` (default 1; 0 keeps
torch's default); the README's table gives both.

    python benchmarks/bench_sweep.py                       # 25 cells × 200 iterations, --threads 1
    python benchmarks/bench_sweep.py --threads 0 --seeds 5 --json out.json

Nothing is asserted: the table prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from bench_checkpoint import status  # noqa: E402  (VmRSS/VmHWM from /proc, beside this script)

E = (1.0, 5.0, 25.0, 50.0, 100.0)
ETA = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def measured(call):
    """(seconds, peak bytes above the RSS before) of ``call()``."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    started = time.perf_counter()
    call()
    return time.perf_counter() - started, status("VmHWM") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--sample", type=int, default=5, help="cells timed one by one")
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: the libraries' defaults)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from ntkcheck import preset, train
    from ntkcheck.apps.sweep import make_spec, sweep
    from ntkcheck.resources import set_threads

    if args.threads:
        set_threads(args.threads)  # torch and the BLAS pools of numpy/scipy
    spec = make_spec("small", base={"iters": args.iters}, grid={"e": E, "lr": ETA}, seeds=f"0-{args.seeds - 1}",
                     probe_method="none", record_every=25, batch_size=args.batch_size)
    cells = spec.cells()
    train(preset("small", iters=2))  # warm up the libraries outside the timings
    batched_s, batched_mem = measured(lambda: sweep(spec))
    sample = cells[:: max(1, len(cells) // args.sample)][: args.sample]
    single_s, single_mem = measured(lambda: [train(c.config) for c in sample])

    cell_iters = args.iters + 1
    rate_batched = len(cells) * cell_iters / batched_s
    rate_single = len(sample) * cell_iters / single_s
    result = {
        "cells": len(cells), "iters": args.iters, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "batched_cell_iters_per_s": rate_batched, "one_by_one_cell_iters_per_s": rate_single,
        "ratio": rate_batched / rate_single, "batched_peak_bytes": batched_mem, "one_by_one_peak_bytes": single_mem,
        "batched_seconds": batched_s, "one_by_one_seconds_per_cell": single_s / len(sample),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    print(f"{len(cells)} cells × {cell_iters} iterations, {result['threads']} thread(s)")
    print(f"{'':12} {'cell-it/s':>10} {'peak MB':>9}")
    print(f"{'batched':12} {rate_batched:10.1f} {batched_mem / 1e6:9.0f}")
    print(f"{'one by one':12} {rate_single:10.1f} {single_mem / 1e6:9.0f}")
    print(f"ratio {result['ratio']:.1f} (target ≥ 10)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
