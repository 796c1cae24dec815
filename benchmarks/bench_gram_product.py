"""Benchmark: the per-step product with the Gram matrices H_i = M_iᵀM_i, the floor of a paper-scale iteration.

Every unrolled step computes ∇F(X)_i = H_i x_i − c_i (:func:`ntkcheck.problems.qp.gradient`), and its backward another
product with H_i: 2·T = 200 products per training iteration at the paper's scale (N = 10, d = 512, b = 400, T = 100).
One product reads all of H (N·d² numbers: 21 MB in float64, 10.5 MB in float32) for N·d² multiply-adds, so it runs
at the speed at which memory delivers H. This script times one product for N = 1, 2, 4, 6, 8, 10 instances in both
dtypes and prints the effective bandwidth: when H fits in the part of the last-level cache the process gets, the
bandwidth is several times higher than when it does not. On a shared machine that part shrinks when neighbours are
busy, and a paper-scale iteration slows with it.

    python benchmarks/bench_gram_product.py                 # --threads 1
    python benchmarks/bench_gram_product.py --threads 0     # torch's default

Nothing is asserted: the table prints milliseconds per product, GB/s, and the implied seconds per training
iteration (2·T products) for N = 10.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ntkcheck.problems import qp as problems  # noqa: E402
from ntkcheck.resources import set_threads  # noqa: E402


def per_product(problem: problems.Problem, repeats: int) -> float:
    """Seconds per ∇F(X) at a random X (median of ``repeats`` timed batches of 20, after a warm-up)."""
    X = torch.randn(problem.N, problem.d, dtype=problem.M.dtype)
    problems.gradient(problem, X)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(20):
            problems.gradient(problem, X)
        times.append((time.perf_counter() - started) / 20)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--T", type=int, default=100)
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)  # torch and the BLAS pools of numpy/scipy
    full = problems.generate(10, 512, 400, seed=0)
    print(f"{torch.get_num_threads()} thread(s); H_i is 512×512; a training iteration takes 2·T = {2 * args.T} "
          "products")
    print("| dtype | N | MB of H | ms per product | GB/s | s per iteration (2T products) |")
    print("|---|---|---|---|---|---|")
    for dtype in (torch.float64, torch.float32):
        for N in (1, 2, 4, 6, 8, 10):
            p = problems.from_tensors(full.M[:N], full.Y[:N]).to(dtype=dtype)
            assert p.H is not None  # d < 2b: the gradient goes through H
            seconds = per_product(p, args.repeats)
            size = p.H.numel() * p.H.element_size()
            per_iteration = f"{2 * args.T * seconds:.3f}" if N == 10 else ""
            print(f"| {str(dtype).removeprefix('torch.')} | {N} | {size / 1e6:.1f} | {seconds * 1e3:.3f} | "
                  f"{size / seconds / 1e9:.1f} | {per_iteration} |")


if __name__ == "__main__":
    main()
