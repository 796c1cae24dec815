"""Benchmark: the full empirical NTK K = J Jᵀ (float64) and its extreme eigenvalues, per method.

Methods for the full K, all in one process on the same model, problem and weights:

    func        ntkcheck.instruments.ntk.empirical_ntk(method="func"): vmap over instances of jacrev over the b rows of one
                instance (chunked), then K = Σ_p J_p J_pᵀ                                   (the reference)
    tutorial    the torch.func NTK tutorial's "Jacobian contraction", written out here as in the tutorial:
                vmap(jacrev(f_single), in_dims=(None, 0)) over instances, then
                einsum('Naf,Mbf->NaMb') summed over the parameters
    structured  ntkcheck.instruments.ntk.empirical_ntk(method="structured")  ── SLOT FOR THE LEAD: see STRUCTURED below

Extreme eigenvalues λ_max, λ_min:

    dense-eig   eigvalsh of the K made by each method (time of eigvalsh alone; add the K time)
    lanczos     ntkcheck.instruments.linalg.extreme_eigenvalues on ntkcheck.instruments.ntk.ntk_operator (VJP + JVP per product, J
                never formed; λ_min by the shifted operator, absolute accuracy ≈ 1e-12·λ_max)

Timing: ``time.perf_counter``; the first call is reported separately (it includes one-time set-up such as
torch.func's decomposition tables), then the minimum and median over ``--repeats`` calls, taken
round-robin over the methods (a change of machine load during the run hits every method alike).
Memory: peak resident set size *during* the call minus the RSS just before it, sampled every millisecond
from /proc/self/statm by a background thread (so it is per method although everything runs in one process),
plus the process's ru_maxrss at the end.
Agreement: max|K − K_func| / max|K_func|, and λ_max/λ_min differences.

Weights: the deterministic init with W_L ~ N(0, 1/n)/e^{L−1} instead of 0 (as in
shared/research/ntk_perf_anchors.md), so that every block of J is non-zero and of order 1 and the
agreement check means something; ``--weights init`` keeps W_L = 0.

Threads: on a shared, busy 2-core machine, tiny per-row operations with 2 threads are 10–70× slower than
with 1 (OpenMP barriers waiting for a descheduled thread; measured J at S: 0.5 s with 1 thread, 37 s with 2),
so the default is ``--threads 1``; pass ``--threads 2`` on an idle machine.

Usage (from the repository root):

    python benchmarks/bench_ntk.py                       # small configuration (N=32, 32×25, n=1024, T=20)
    python benchmarks/bench_ntk.py --repeats 5 --json /tmp/ntk.json
    python benchmarks/bench_ntk.py --methods func structured --skip-lanczos
    python benchmarks/bench_ntk.py --config paper --methods structured   # N=10, 512×400, n=5120, T=100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, jacrev, vmap  # noqa: E402

from ntkcheck.config import hidden_widths  # noqa: E402
from ntkcheck.instruments import linalg, ntk
from ntkcheck.models import init as inits  # noqa: E402
from ntkcheck.models.math_l2o import build  # noqa: E402
from ntkcheck.problems import qp as problems  # noqa: E402
from ntkcheck.resources import set_threads  # noqa: E402

CONFIGS = {
    "small": dict(N=32, d=32, b=25, width=1024, T=20, e=50.0),
    "medium": dict(N=10, d=128, b=100, width=1280, T=50, e=50.0),
    "paper": dict(N=10, d=512, b=400, width=5120, T=100, e=100.0),
}
PAGE = os.sysconf("SC_PAGE_SIZE")
GB = 1e9


# -- measuring -------------------------------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak RSS increase over the baseline at entry, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 1e-3):
        self.interval, self.peak, self.base = interval, 0, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def increase_gb(self) -> float:
        return (self.peak - self.base) / GB


def timed(fn, repeats: int):
    """(result of the last call, first-call seconds, [later seconds], peak RSS increase in GB)."""
    times, peak = [], 0.0
    result = None
    for _ in range(1 + repeats):
        with PeakRSS() as mem:
            started = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - started)
        peak = max(peak, mem.increase_gb)
    return result, times[0], times[1:], peak


# -- the set-up ------------------------------------------------------------------------------------------------


def setup(name: str, weights: str, wide_layer: str):
    c = CONFIGS[name]
    p = problems.generate(c["N"], c["d"], c["b"], seed=0)
    widths = hidden_widths(c["width"], 3)
    params = inits.deterministic(widths, c["e"], seed=0)
    if weights == "perturbed":
        rng = np.random.default_rng(1)
        params["W3"] = torch.from_numpy(rng.standard_normal((c["width"], 1)) / np.sqrt(c["width"]) / c["e"] ** 2)
    return p, build(widths, params, wide_layer=wide_layer), c["T"]


# -- the methods -----------------------------------------------------------------------------------------------


def K_func(model, p, T):
    return ntk.empirical_ntk(model, p, T, method="func").K


class _Single(nn.Module):
    """fnet_single of the tutorial: one instance in, its b residuals out."""

    def __init__(self, model, T):
        super().__init__()
        self.model, self.T = model, T

    def forward(self, M, Y, beta, H, c):
        prob = problems.Problem(M[None], Y[None], beta[None], None, H[None], c[None])
        return problems.residual(prob, self.model.unroll(prob, self.T).X[-1])[0]


def K_tutorial(model, p, T):
    """The torch.func tutorial's Jacobian contraction, on the same model (its wide-layer path), in the true
    mode (inputs not detached) as K = J Jᵀ requires."""
    net = _Single(ntk.with_mode(model, "true"), T)
    params = {f"model.{k}": v.detach() for k, v in net.model.named_parameters()}

    def fnet_single(params, M, Y, beta, H, c):
        return functional_call(net, params, (M, Y, beta, H, c))

    jac = vmap(jacrev(fnet_single), (None, 0, 0, 0, 0, 0))(params, p.M, p.Y, p.beta, p.H, p.c)
    jac = [j.flatten(2) for j in jac.values()]  # (N, b, numel) per parameter
    K = sum(torch.einsum("Naf,Mbf->NaMb", j, j) for j in jac)
    n = p.N * p.b
    return K.reshape(n, n)


# ===== STRUCTURED: slot for the lead's fast path ===============================================================
# ntkcheck.instruments.ntk dispatches method="structured" to ntkcheck.instruments.structured.structured_jacobian(model, problem, T,
# mode=...). This function is what the benchmark times for it; change it here if the fast path wants a
# different entry point (e.g. a K computed without forming J, or float32).
def K_structured(model, p, T):
    return ntk.empirical_ntk(model, p, T, method="structured").K
# ===== end of the STRUCTURED slot ==============================================================================


METHODS = {"func": K_func, "tutorial": K_tutorial, "structured": K_structured}


# -- the run ---------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the first one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", choices=["perturbed", "init"], default="perturbed")
    ap.add_argument("--wide-layer", choices=["auto", "dense", "angular"], default="auto")
    ap.add_argument("--skip-lanczos", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    set_threads(args.threads)  # torch and the BLAS pools of numpy/scipy
    p, model, T = setup(args.config, args.weights, args.wide_layer)
    n = p.N * p.b
    n_params = sum(v.numel() for v in model.parameters())
    print(f"config {args.config}: N={p.N} d={p.d} b={p.b} n={model.widths[-1]} T={T}  K {n}×{n}  P={n_params}  "
          f"float64  threads={torch.get_num_threads()}  wide layer: {'angular' if model.angular else 'dense'}  "
          f"weights: {args.weights}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  cpu count {os.cpu_count()}  "
          f"load {os.getloadavg()[0]:.2f}")
    rows, kernels, calls = [], {}, {}
    for name in args.methods:  # first calls, one method after the other
        try:
            K, first, _, peak = timed(lambda: METHODS[name](model, p, T), 0)
        except NotImplementedError as err:
            rows.append({"what": f"K  {name}", "status": f"not available: {err}"})
            continue
        kernels[name], calls[name] = K, {"first": first, "later": [], "peak": peak}
    for _ in range(args.repeats):  # then round-robin, so that a change of machine load hits every method alike
        for name in kernels:
            _, t, _, peak = timed(lambda: METHODS[name](model, p, T), 0)
            calls[name]["later"].append(t)
            calls[name]["peak"] = max(calls[name]["peak"], peak)
    for name, c in calls.items():
        later = c["later"] or [c["first"]]
        rows.append({"what": f"K  {name}", "first_s": c["first"], "min_s": min(later),
                     "median_s": statistics.median(later), "peak_rss_gb": c["peak"]})
    ref = kernels.get("func", next(iter(kernels.values()), None))
    for name, K in kernels.items():
        row = next(r for r in rows if r["what"] == f"K  {name}")
        row["agreement"] = float((K - ref).abs().max() / ref.abs().max()) if ref is not None else None
        lam, first, later, peak = timed(lambda: np.linalg.eigvalsh(K.numpy()), args.repeats)
        rows.append({"what": f"λ dense-eig ({name} K)", "first_s": first, "min_s": min(later or [first]),
                     "median_s": statistics.median(later or [first]), "peak_rss_gb": peak,
                     "lambda_max": float(lam[-1]), "lambda_min": float(lam[0])})
    if not args.skip_lanczos:
        def lanczos():
            return linalg.extreme_eigenvalues(ntk.ntk_operator(model, p, T), k=1, method="lanczos")

        ext, first, later, peak = timed(lanczos, max(args.repeats - 2, 0))
        rows.append({"what": "λ lanczos (func operator)", "first_s": first, "min_s": min(later or [first]),
                     "median_s": statistics.median(later or [first]), "peak_rss_gb": peak,
                     "lambda_max": ext.lambda_max, "lambda_min": ext.lambda_min,
                     "abs_accuracy_min": ext.extra.get("abs_accuracy_min"), "method": ext.method})
    print(f"\n{'what':34s} {'first s':>9s} {'min s':>9s} {'median s':>9s} {'peak ΔRSS GB':>13s}  notes")
    for r in rows:
        if "status" in r:
            print(f"{r['what']:34s} {r['status']}")
            continue
        notes = []
        if r.get("agreement") is not None:
            notes.append(f"max|K−K_func|/max|K_func| = {r['agreement']:.1e}")
        if "lambda_max" in r:
            notes.append(f"λ_max {r['lambda_max']:.10g}  λ_min {r['lambda_min']:.3g}")
        if r.get("abs_accuracy_min") is not None:
            notes.append(f"(λ_min ± {r['abs_accuracy_min']:.1g}, {r['method']})")
        print(f"{r['what']:34s} {r['first_s']:9.3f} {r['min_s']:9.3f} {r['median_s']:9.3f} {r['peak_rss_gb']:13.3f}  "
              + "  ".join(notes))
    base = {r["what"]: r for r in rows if "min_s" in r}
    if "K  func" in base and "K  tutorial" in base:
        print(f"\nfunc vs tutorial (min): {base['K  tutorial']['min_s'] / base['K  func']['min_s']:.1f}× faster")
    if "K  structured" in base and "K  tutorial" in base:
        print(f"structured vs tutorial (min): {base['K  tutorial']['min_s'] / base['K  structured']['min_s']:.1f}× "
              f"faster (target ≥ 10× at the small configuration)")
    print(f"process ru_maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB:.2f} GB")
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
