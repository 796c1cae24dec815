"""Benchmark: the cost of one checkpoint does not grow with the iteration count k.

A checkpoint (:func:`ntkcheck.engine.training.save_checkpoint`) appends the metrics of the iterations since the last one
to ``metrics.jsonl`` (fsync'd) and writes ``checkpoint.pt`` (weights, optimizer, W_0, counters) through a temporary
file and a rename. Neither part should depend on how many iterations the run has already recorded. Two
measurements, in one process (``--threads 1`` by default):

``train``   real runs, :func:`ntkcheck.train` (library) on a tiny configuration with ``checkpoint_every`` = 25, for
            K = 1000, 4000, 16000 iterations, each in its own run folder. Every call of ``save_checkpoint`` is timed
            (the module attribute is wrapped here; the library is not changed). Seconds per checkpoint over the first
            and the last 40 checkpoints of each run, as ratios against the first 40 of the first run. The final
            ``write_metrics`` (parquet + csv of all K rows, once per run) is shown apart: it grows with K by nature.
``direct``  ``save_checkpoint`` called directly on a real model and optimizer at k = 25 … 64000, with k synthetic
            metric records in memory, k − 25 of them already in ``metrics.jsonl`` (so each call appends 25), median
            of ``--repeats`` calls, as ratios against k = 25. For contrast, the cost of a checkpoint that would hold
            every record so far (``torch.save`` of the records, the design before ``metrics.jsonl``): that one
            grows with k, and shows that this measurement can see growth.

Peak memory: VmHWM of the process, reset before each run (``/proc/self/clear_refs``), minus the RSS before it; the
records of a run are kept in memory (one dict per iteration), so that part grows with K by design.

    python benchmarks/bench_checkpoint.py                     # both, K = 1000 4000 16000
    python benchmarks/bench_checkpoint.py --only direct --ks 25 1000 4000 16000 64000 256000
    python benchmarks/bench_checkpoint.py --iters 1000 4000 --dir /dev/shm --json out.json

Nothing is asserted: the tables print the ratios (target: ≈ 1, flat in k).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

GB = 1e9
TINY = dict(N=2, d=6, b=4, width=8, T=3, e=3.0, init="random", lr=1e-3)  # the interruption tests' configuration
EVERY = 25
EDGE = 40  # checkpoints averaged at each end of a run


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMemory:
    """VmHWM − VmRSS over a block (the peak is reset to the current RSS at entry)."""

    def __enter__(self):
        gc.collect()
        self.before = status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def __exit__(self, *exc):
        self.added = status("VmHWM") - self.before


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(x: float, digits: int = 3) -> str:
    return "—" if x != x else f"{x:.{digits}g}"


# -- train: real runs ---------------------------------------------------------------------------------------------


def bench_train(iters: list[int], folder: Path) -> list[dict]:
    from ntkcheck.config import TrainConfig
    from ntkcheck.engine import training
    from ntkcheck.results import runfolder

    calls: list[tuple[int, float]] = []
    original_save, original_write = training.save_checkpoint, runfolder.write_metrics
    written: list[float] = []

    def timed_save(work, cfg, model, optimizer, state):
        started = time.perf_counter()
        original_save(work, cfg, model, optimizer, state)
        calls.append((state["k"], time.perf_counter() - started))

    def timed_write(work, long):
        started = time.perf_counter()
        original_write(work, long)
        written.append(time.perf_counter() - started)

    training.save_checkpoint, runfolder.write_metrics = timed_save, timed_write
    rows = []
    try:
        training.train(TrainConfig(**TINY, iters=10, checkpoint_every=EVERY), folder / "warm-up")  # first-use costs
        for K in iters:
            calls.clear()
            written.clear()
            cfg = TrainConfig(**TINY, iters=K, checkpoint_every=EVERY)
            started = time.perf_counter()
            with PeakMemory() as mem:
                result = training.train(cfg, folder / f"K{K}")
            wall = time.perf_counter() - started
            periodic = [s for k, s in calls[:-1]]  # k = 0, 25, …; the last call is the one in finish
            ckpt_total = sum(s for _, s in calls)
            rows.append({
                "K": K, "checkpoints": len(calls), "first": median(periodic[:EDGE]), "last": median(periodic[-EDGE:]),
                "max": max(periodic), "final_checkpoint": calls[-1][1], "write_metrics": written[0] if written else None,
                "wall": wall, "s_per_iter": result.summary["seconds_per_iteration"],
                "checkpoint_share": ckpt_total / wall, "peak_added": mem.added, "peak_reset": mem.reset,
            })
            shutil.rmtree(folder / f"K{K}")
    finally:
        training.save_checkpoint, runfolder.write_metrics = original_save, original_write
    return rows


def print_train(rows: list[dict]) -> None:
    ref = rows[0]["first"]
    print(f"\n### train: `ntkcheck.train`, tiny configuration, checkpoint_every = {EVERY} (reference: the first "
          f"{EDGE} checkpoints of K = {rows[0]['K']}, {ref * 1e3:.3f} ms)\n")
    print(f"| K | checkpoints | ms/checkpoint, first {EDGE} | ms/checkpoint, last {EDGE} | last / first | "
          f"last / reference | max ms | s/iter (training) | checkpoints' share of the run | final write_metrics s | "
          f"peak ΔRSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['K']} | {r['checkpoints']} | {r['first'] * 1e3:.3f} | {r['last'] * 1e3:.3f} | "
              f"{r['last'] / r['first']:.2f} | {r['last'] / ref:.2f} | {r['max'] * 1e3:.1f} | {r['s_per_iter']:.4f} | "
              f"{r['checkpoint_share']:.0%} | {fmt(r['write_metrics'])} | {r['peak_added'] / GB:.3f}"
              f"{'' if r['peak_reset'] else ' (not reset)'} |")


# -- direct: save_checkpoint at chosen k --------------------------------------------------------------------------


def bench_direct(ks: list[int], repeats: int, folder: Path) -> list[dict]:
    import torch

    from ntkcheck.build.experiment import setup
    from ntkcheck.config import TrainConfig
    from ntkcheck.engine import training
    from ntkcheck.results import runfolder

    cfg = TrainConfig(**TINY, iters=max(ks), checkpoint_every=EVERY)
    exp = setup(cfg)
    model, optimizer = exp.model, training.meta_optimizer(cfg.optimizer, exp.model.parameters(), cfg.lr)
    record = training.train(TrainConfig(**TINY, iters=1)).metrics.iloc[-1].to_dict()  # one real metrics row
    records = [dict(record, loss=record["loss"] + i * 1e-9) for i in range(max(ks))]
    W0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    rows = []
    for k in ks:
        work = folder / f"k{k}"
        work.mkdir()
        runfolder.append_records(work, records[:k - EVERY])
        state = {"k": k, "records": records[:k], "saved": k - EVERY, "status": "running", "skipped": 0,
                 "seconds": 1.0, "W0": W0, "files": {}}
        times = []
        training.save_checkpoint(work, cfg, model, optimizer, state)  # warm-up
        for _ in range(repeats):
            state["saved"] = k - EVERY
            started = time.perf_counter()
            training.save_checkpoint(work, cfg, model, optimizer, state)
            times.append(time.perf_counter() - started)
        old = []
        for _ in range(max(1, repeats // 4)):  # contrast: every record inside the checkpoint
            started = time.perf_counter()
            torch.save({"records": records[:k], "params": model.state_dict(), "W0": W0}, work / "old.pt")
            old.append(time.perf_counter() - started)
        rows.append({"k": k, "median": median(times), "min": min(times), "max": max(times),
                     "checkpoint_bytes": (work / "checkpoint.pt").stat().st_size,
                     "jsonl_bytes": (work / runfolder.RECORDS).stat().st_size,
                     "old_median": median(old), "old_bytes": (work / "old.pt").stat().st_size})
        shutil.rmtree(work)
    return rows


def print_direct(rows: list[dict], repeats: int) -> None:
    ref, old_ref = rows[0]["median"], rows[0]["old_median"]
    print(f"\n### direct: `ntkcheck.engine.training.save_checkpoint` at k, {repeats} calls each (reference: k = "
          f"{rows[0]['k']}, {ref * 1e3:.3f} ms)\n")
    print("| k | median ms | min ms | max ms | median / reference | checkpoint.pt bytes | metrics.jsonl MB | "
          "contrast: all records in the checkpoint, ms | contrast / its k = 25 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['median'] * 1e3:.3f} | {r['min'] * 1e3:.3f} | {r['max'] * 1e3:.2f} | "
              f"{r['median'] / ref:.2f} | {r['checkpoint_bytes']} | {r['jsonl_bytes'] / 1e6:.2f} | "
              f"{r['old_median'] * 1e3:.2f} | {r['old_median'] / old_ref:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("train", "direct"))
    parser.add_argument("--iters", type=int, nargs="+", default=[1000, 4000, 16000], help="K of the train runs")
    parser.add_argument("--ks", type=int, nargs="+", default=[25, 1000, 4000, 16000, 64000],
                        help="k of the direct measurement (multiples of 25, the first is the reference)")
    parser.add_argument("--repeats", type=int, default=40, help="calls per k in the direct measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--dir", type=Path, default=None, help="where the run folders go (default: the system's "
                                                               "temporary folder); fsync's cost depends on it")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    if any(k < EVERY or k % EVERY for k in args.ks):
        parser.error(f"--ks must be multiples of {EVERY}")

    import torch

    from ntkcheck.resources import set_threads
    from ntkcheck.results.runfolder import versions

    set_threads(args.threads)  # torch and the BLAS pools of numpy/scipy

    folder = Path(tempfile.mkdtemp(prefix="bench_checkpoint-", dir=args.dir))
    print(f"ntkcheck {versions()['ntkcheck']}, torch {torch.__version__}, Python "
          f"{platform.python_version()}, {args.threads} thread(s), folders in {folder} "
          f"({os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    out = {}
    try:
        if args.only in (None, "train"):
            out["train"] = bench_train(args.iters, folder)
            print_train(out["train"])
        if args.only in (None, "direct"):
            out["direct"] = bench_direct(args.ks, args.repeats, folder)
            print_direct(out["direct"], args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nprocess peak RSS (VmHWM): {status('VmHWM') / GB:.2f} GB; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
