"""Peak memory of a training run and of a verify run, measured, next to :func:`ntkcheck.resources.estimate`.

Each configuration runs in a fresh child (``--one JSON``): it imports everything, runs a tiny warm-up (so that
lazy imports and torch's first-use buffers are not counted), resets the peak (``/proc/self/clear_refs``), runs
``train`` (``"probes"`` absent) or ``verify`` (``"probes"`` given) in memory with the configuration, and reports
VmHWM − VmRSS-before: the memory the run itself added. The estimate is what :mod:`ntkcheck.resources` predicts;
it is meant as an upper bound within a factor of about 2. Nothing is asserted here (``tests/test_resources.py``
checks two sizes).

    python benchmarks/bench_memory.py                 # the calibration set of ntkcheck/resources.py's docstring
    python benchmarks/bench_memory.py --only train    # or: --only verify
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

GB = 1e9
TINY = {"N": 2, "d": 6, "b": 4, "width": 8, "T": 3, "e": 3.0, "iters": 1}

CASES = {
    # training, one iteration pair (iters = 1: k = 0 and 1), in memory
    "train-small-angular": {"config": {"iters": 1}},
    "train-angular-R8k-T200": {"config": {"N": 32, "d": 256, "b": 200, "T": 200, "iters": 1}},
    "train-angular-n1e6": {"config": {"width": 1_000_000, "iters": 1}},
    "train-angular-L40": {"config": {"L": 40, "iters": 1}},
    "train-tiny-T20000": {"config": {"N": 1, "d": 2, "b": 1, "width": 8, "T": 20_000, "iters": 1}},
    "train-tiny-iters3000": {"config": {**TINY, "iters": 3000}},
    "train-small-dense-f64": {"config": {"wide_layer": "dense", "iters": 1}},
    "train-dense-f32-R1280-n2048": {"config": {"N": 10, "d": 128, "b": 100, "width": 2048, "wide_layer": "dense",
                                               "dtype": "float32", "iters": 1}},
    "train-problem-d512": {"config": {"N": 64, "d": 512, "b": 400, "width": 64, "T": 2, "iters": 1}},
    # verify (training + probes at k = 0 and k = K), in memory, no figures
    "verify-small-dense": {"config": {"iters": 1}, "probes": {"ntk_every": 0}},
    "verify-Q2048-dense": {"config": {"N": 32, "d": 64, "b": 64, "width": 1024, "T": 10, "iters": 1},
                           "probes": {"ntk_every": 0}},
    "verify-small-lanczos": {"config": {"iters": 1}, "probes": {"ntk_every": 0, "ntk_method": "lanczos"}},
    "verify-denselayer-func": {"config": {"N": 8, "d": 16, "b": 12, "width": 256, "T": 10, "wide_layer": "dense",
                                          "iters": 1}, "probes": {"ntk_every": 0}},
    "verify-func-angular": {"config": {"N": 8, "d": 64, "b": 48, "width": 1024, "T": 10, "iters": 1},
                            "probes": {"ntk_every": 0, "jacobian": "func"}},
    "verify-func-denselayer-b48": {"config": {"N": 8, "d": 64, "b": 48, "width": 1024, "T": 10, "wide_layer": "dense",
                                              "iters": 1}, "probes": {"ntk_every": 0}},
    "verify-lanczos-R8k-T50": {"config": {"N": 32, "d": 256, "b": 200, "width": 64, "T": 50, "iters": 1},
                               "probes": {"ntk_every": 0, "ntk_method": "lanczos"}},
    "verify-small-iters2000": {"config": {"N": 8, "d": 16, "b": 12, "width": 64, "T": 3, "iters": 2000},
                               "probes": {"ntk_every": 0}},
}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def one(spec: dict) -> dict:
    """Run one case in this process (a fresh child) and return its measured and estimated bytes."""
    import gc

    import torch

    torch.set_num_threads(1)
    from ntkcheck import resources
    from ntkcheck.apps.verify import verify
    from ntkcheck.config import ProbeConfig, TrainConfig
    from ntkcheck.engine.training import train

    probes = None if spec.get("probes") is None else ProbeConfig(**spec["probes"])
    cfg = TrainConfig(**spec["config"])
    tiny = TrainConfig(**TINY)
    train(tiny) if probes is None else verify(tiny, ProbeConfig(ntk_every=0), figures=False)  # warm-up
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    train(cfg) if probes is None else verify(cfg, probes, figures=False)
    added = _status("VmHWM") - before
    est = resources.estimate(cfg, probes)
    return {"measured": added, "training": est.training_bytes, "probes": est.probe_bytes, "total": est.total_bytes,
            "driver": est.driver, "baseline": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("train", "verify"))
    parser.add_argument("--cases", nargs="*", help="names of CASES to run (default all)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    names = args.cases or [n for n in CASES if args.only is None or n.startswith(args.only)]
    print("| case | measured GB | estimate GB | estimate/measured | driver |")
    print("|---|---|---|---|---|")
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(CASES[name])], capture_output=True,
                              text=True)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['measured'] / GB:.4f} | {r['total'] / GB:.4f} | {r['total'] / max(r['measured'], 1):.2f}"
              f" | {r['driver']} |", flush=True)


if __name__ == "__main__":
    main()
