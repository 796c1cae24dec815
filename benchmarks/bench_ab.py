"""A/B: this checkout's training and sweep speed against an older commit's, in one run.

Each side runs its own copy of the benchmark children, so that the old code is timed by the script it shipped with:
``<tree>/benchmarks/bench_train.py --one CONFIG --path angular`` (one training iteration: unroll, BPTT, the optimiser's
step; the user CPU seconds of each timed iteration come from ``getrusage`` inside the child) and
``<tree>/benchmarks/bench_sweep.py`` (the Fig. 5 grid's 25 cells trained in one batch, cell-iterations per second).
The older commit is checked out with ``git worktree add --detach`` into a temporary folder, removed at the end.

The sides alternate A B B A … over ``--rounds`` so that a drift in the machine's load falls on both, and the table
gives, per benchmark, the best of each side (min user s/iter, max cell-it/s: the least disturbed measurement) and the
ratio new/old of the time per unit of work (target ≤ 1.05, "within 5 %"). Nothing is asserted.

    python benchmarks/bench_ab.py --old 08c5526^                       # the commit before the one trainer
    python benchmarks/bench_ab.py --old v0.1 --train paper-T10 small-f64 --rounds 4 --threads 1 --json ab.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "BENCH_RESULT "  # bench_train's child prints its one result line with this prefix
TARGET = 1.05


def train_child(tree: Path, config: str, threads: int, repeats: int) -> float:
    """The smallest user CPU seconds of one training iteration of ``config`` by ``tree``'s code."""
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_train.py"), "--one", config, "--path",
                          "angular", "--threads", str(threads), "--repeats", str(repeats)],
                         cwd=tree, env=_env(tree), capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line[len(TAG):] for line in out.splitlines() if line.startswith(TAG)))
    return min(result["usage"]["user_seconds"])


def sweep_child(tree: Path, threads: int, iters: int) -> float:
    """Cell-iterations per second of ``tree``'s batched sweep of the Fig. 5 grid (25 cells, ``iters`` iterations)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.json"
        subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_sweep.py"), "--iters", str(iters),
                        "--sample", "1", "--threads", str(threads), "--json", str(path)],
                       cwd=tree, env=_env(tree), capture_output=True, text=True, check=True)
        return json.loads(path.read_text())["batched_cell_iters_per_s"]


def _env(tree: Path) -> dict:
    import os

    return os.environ | {"PYTHONPATH": str(tree)}  # that tree's ntkcheck before any installed one


def measure(old: Path, args) -> dict:
    """Every benchmark on both sides, alternating A B B A per round."""
    sides = {"old": old, "new": ROOT}
    found = {(kind, name, side): [] for kind, names in (("train", args.train), ("sweep", ["fig5"] if args.sweep_iters
                                                                                 else []))
             for name in names for side in sides}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for side in order:
            for config in args.train:
                found["train", config, side].append(train_child(sides[side], config, args.threads, args.repeats))
            if args.sweep_iters:
                found["sweep", "fig5", side].append(sweep_child(sides[side], args.threads, args.sweep_iters))
            print(f"round {r + 1}/{args.rounds} {side} done", file=sys.stderr, flush=True)
    return found


def table(found: dict) -> list[dict]:
    """Per benchmark: each side's best, and new/old of the time per unit of work."""
    rows = []
    for kind, name in dict.fromkeys((k, n) for k, n, _ in found):
        old, new = found[kind, name, "old"], found[kind, name, "new"]
        if kind == "train":
            best_old, best_new, ratio, unit = min(old), min(new), min(new) / min(old), "user s/iter"
        else:
            best_old, best_new, ratio, unit = max(old), max(new), max(old) / max(new), "cell-it/s"
        rows.append({"benchmark": f"{kind} {name}", "unit": unit, "old": best_old, "new": best_new,
                     "new/old time": ratio, "within 5 %": ratio <= TARGET, "old all": old, "new all": new})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the commit to compare with (anything git rev-parse takes)")
    p.add_argument("--train", nargs="*", default=["small-f64", "paper-T10"], help="bench_train configurations")
    p.add_argument("--sweep-iters", type=int, default=50, help="iterations of the sweep benchmark (0: skip it)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per bench_train child")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = table(measure(old, args))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    print(f"| benchmark | unit | old ({args.old}) | new | new/old time | within 5 % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['benchmark']} | {r['unit']} | {r['old']:.4g} | {r['new']:.4g} | {r['new/old time']:.3f} | "
              f"{'yes' if r['within 5 %'] else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps({"old": args.old, "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
