"""Benchmark: seconds per training iteration and peak memory of the Math-L2O trainer.

One training iteration is what :func:`ntkcheck.engine.training.run_iteration` does: unroll T steps, evaluate
F(X_T), backpropagate through all T steps (BPTT), record the iteration's metrics, take one SGD step.
The script calls the library (``ntkcheck.engine.training``, ``ntkcheck.models.math_l2o``, ``ntkcheck.problems.qp``); it does
not re-implement the model.

Every (configuration, wide-layer path) runs in a fresh subprocess (``bench_train.py --one NAME --path
PATH``), so its peak resident memory (VmHWM, read inside the child) is its own. A child that only imports
torch and ntkcheck gives the baseline, so the increment is visible. Timing: one warm-up iteration, then
``--repeats`` timed iterations with ``time.perf_counter``; median and min are reported.

Paths: ``dense`` forms the N·d × n wide-layer matrix at every step (the reference). ``angular`` is the
exact prefix-sum form (``TrainConfig.wide_layer``), measured when the installed ntkcheck has it. The
targets of the fast-kernel issue are ratios against the dense path measured in the same run, plus bounds
on s/iter and peak RSS; they are printed next to the measurements and never asserted in tests.

Also printed: the GD reference at paper scale (N=10, 512×400, X_0 = 0, step 1/β_i), F(X_T) at
T = 5, 10, 20, 100 for a few seeds, next to the values read from the paper's Fig. 4b.

Usage (from the repository root):

    python benchmarks/bench_train.py                         # everything (dense paper T=100: minutes, 11-14 GB)
    python benchmarks/bench_train.py --only small            # small configuration, float64 and float32
    python benchmarks/bench_train.py --only paper --skip-paper-T100 --repeats 2
    python benchmarks/bench_train.py --only gd --gd-seeds 0 1 2 3 4
    python benchmarks/bench_train.py --paths dense --threads 1 2 --json results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

GB = 1e9  # decimal gigabytes (the dense wide layer's float32 features: 4·N·d·n·T bytes = 10.5 GB at paper scale)
RESULT_TAG = "BENCH_RESULT "  # the child's one machine-readable stdout line starts with this

SMALL = dict(N=32, d=32, b=25, width=1024, T=20, e=50.0, lr=1e-7)
PAPER = dict(N=10, d=512, b=400, width=5120, e=100.0, lr=1e-7)

# name -> (group, TrainConfig fields). Everything not listed keeps the TrainConfig default
# (L=3, SGD, loss "last", deterministic init, detached inputs, step 1/β_i, seed 0).
CONFIGS = {
    "small-f64": ("small", dict(SMALL, dtype="float64")),
    "small-f32": ("small", dict(SMALL, dtype="float32")),
    "paper-T10": ("paper", dict(PAPER, T=10, dtype="float32")),
    "paper-T100": ("paper", dict(PAPER, T=100, dtype="float32")),
}
DEFAULT_REPEATS = {"small": 5, "paper": 2}
PATHS = ("dense", "angular")  # dense first: it is the reference every ratio is taken against

# Targets of the fast-kernel issue (prefix sums over the angle-sorted wide layer; docs/ARCHITECTURE.md §2).
SPEEDUP_TARGET_T10 = 30.0  # paper-T10: at least 30× faster than the dense path, measured in the same run
T100_SECONDS_TARGET = 0.6  # paper-T100: at most 0.6 s per iteration
T100_PEAK_GB_TARGET = 0.5  # paper-T100: at most 0.5 GB peak RSS of the process

# GD reference, paper scale: F(X_T) read from Fig. 4b of Song, Lin & Xu (GD curve),
# see shared/research/paper_math.md. The paper's code uses step 0.9999/β_i.
GD_T = (5, 10, 20, 100)
GD_PAPER = {5: 129.8, 10: 50.6, 20: 18.0, 100: 0.947}

# Environment variables that change the speed of torch's CPU kernels or of the allocator.
PERF_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "KMP_BLOCKTIME", "KMP_AFFINITY",
            "GOMP_SPINCOUNT", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def library_paths() -> tuple[str, ...]:
    """The wide-layer paths the installed ntkcheck offers: ``dense`` always, ``angular`` when
    ``TrainConfig`` has the ``wide_layer`` field (imports only ntkcheck.config, not torch)."""
    from ntkcheck.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return PATHS if "wide_layer" in fields else ("dense",)


# -- memory ----------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmHWM, VmRSS), or None where /proc does not exist."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size: VmHWM, else ru_maxrss (kB on Linux, bytes on macOS)."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def dense_need_bytes(fields: dict) -> int:
    """Rough peak of the dense path: the N·d × n wide-layer features of every one of the T steps (plus
    their ReLU mask) in the run's dtype, plus 0.5 GB for torch itself: 13.6 GB at paper scale, T=100,
    where 11.2-13.7 GB were measured. Used only to refuse to start a child that cannot fit in the memory
    available now."""
    itemsize = 8 if fields["dtype"] == "float64" else 4
    return int(fields["N"] * fields["d"] * fields["width"] * fields["T"] * (itemsize + 1) + 0.5 * GB)


# -- child: one configuration ----------------------------------------------------------------------


def run_one(name: str, path: str, repeats: int, threads: int | None) -> dict:
    """Build the configuration as ``ntkcheck.engine.training.train`` does, then time ``run_iteration``."""
    started = time.perf_counter()
    import torch

    from ntkcheck.build import experiment
    from ntkcheck.config import TrainConfig, hidden_widths
    from ntkcheck.engine import training
    from ntkcheck.models.math_l2o import build
    from ntkcheck.problems import qp as problems

    if threads:
        from ntkcheck.resources import set_threads

        set_threads(threads)  # torch and the BLAS pools of numpy/scipy
    out = {
        "name": name,
        "path": path,
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "import_seconds": time.perf_counter() - started,
        "load_average_start": list(os.getloadavg()),
        "import_peak_rss_bytes": peak_rss_bytes(),
    }
    if name == "import":
        out["peak_rss_bytes"] = out["import_peak_rss_bytes"]
        return out

    group, fields = CONFIGS[name]
    has_paths = "angular" in library_paths()
    if path != "dense" and not has_paths:
        raise SystemExit(f"--path {path}: this ntkcheck has no TrainConfig.wide_layer; only dense can be measured")
    cfg = TrainConfig(**fields, device="cpu", **({"wide_layer": path} if has_paths else {}))
    out |= {"group": group, "config": cfg.to_dict(), "repeats": repeats}

    t0 = time.perf_counter()
    device, dtype = torch.device("cpu"), getattr(torch, cfg.dtype)
    problem = experiment.make_problem(cfg).to(device=device, dtype=dtype)
    model = build(hidden_widths(cfg.width, cfg.L), experiment.initial_weights(cfg), bias=cfg.bias, detach=cfg.detach,
                  step_scale=cfg.step_scale, device=device, dtype=dtype,
                  **({"wide_layer": cfg.wide_layer} if has_paths else {}))
    out["path_used"] = "angular" if getattr(model, "angular", False) else "dense"
    optimizer = training.meta_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    W0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    gd_path = problems.gd_trajectory(problem, cfg.T, cfg.step_scale)[1:]
    F_gd = torch.stack([problems.objective(problem, X) for X in gd_path])
    out["setup_seconds"] = time.perf_counter() - t0
    out["setup_peak_rss_bytes"] = peak_rss_bytes()

    if hasattr(training, "cell_state"):  # the one trainer: the run as one cell (K far away, so every iteration steps)
        cell = training.cell_state(cfg.replace(iters=10**9), model, optimizer, W0)
        run_iteration = lambda: training.run_iteration(cfg, model, cell, problem, F_gd, 0)  # noqa: E731
    else:  # the code before it, for an A/B against an older checkout
        run_iteration = lambda: training.run_iteration(cfg, model, optimizer, problem, F_gd, W0, update=True)  # noqa: E731
    usage = {"user_seconds": [], "system_seconds": [], "minor_faults": []}

    def iteration() -> tuple[float, dict]:
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        metrics = run_iteration()
        seconds, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
        # CPU time and page faults tell a slow machine from a slow iteration: on this VM a first-touch
        # page fault costs microseconds, and the dense path allocates its activations afresh every time.
        usage["user_seconds"].append(r1.ru_utime - r0.ru_utime)
        usage["system_seconds"].append(r1.ru_stime - r0.ru_stime)
        usage["minor_faults"].append(r1.ru_minflt - r0.ru_minflt)
        return seconds, metrics

    label = f"{name} {path}"
    warm, metrics = iteration()
    out["warmup_seconds"] = warm
    # At k = 0 the model is GD (W_L = 0, P ≡ 1): F(X_T) must equal the GD reference.
    out["F_T_iter0"], out["F_T_gd"] = metrics["F_T"], float(F_gd[-1])
    print(f"  [{label}] warm-up {warm:.3f} s", file=sys.stderr, flush=True)
    times = []
    for r in range(repeats):
        seconds, metrics = iteration()
        times.append(seconds)
        print(f"  [{label}] repeat {r + 1}/{repeats}: {seconds:.3f} s (user {usage['user_seconds'][-1]:.2f} s, "
              f"sys {usage['system_seconds'][-1]:.2f} s, {usage['minor_faults'][-1]} page faults)",
              file=sys.stderr, flush=True)
    out["seconds"] = times
    out["median_seconds"] = statistics.median(times) if times else warm
    out["min_seconds"] = min(times) if times else warm
    out["usage_warmup"] = {k: v[0] for k, v in usage.items()}
    out["usage"] = {k: v[1:] for k, v in usage.items()}
    timed = usage if not times else {k: v[1:] for k, v in usage.items()}
    out["median_user_seconds"] = statistics.median(timed["user_seconds"])
    out["median_system_seconds"] = statistics.median(timed["system_seconds"])
    out["median_minor_faults"] = statistics.median(timed["minor_faults"])
    out["F_T_last"] = metrics["F_T"]  # after 1 + repeats updates: the paths must agree on it too
    out["updates"] = 1 + repeats
    out["diverged"] = bool(metrics["diverged"])
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["increment_bytes"] = out["peak_rss_bytes"] - out["import_peak_rss_bytes"]
    # The machine is shared: a 1-minute load average above the torch thread count means other work ran.
    out["load_average_end"] = list(os.getloadavg())
    return out


# -- parent: orchestrate the children --------------------------------------------------------------


def cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot from /proc/stat; busy excludes steal
    (time the hypervisor gave to someone else, or spent on this VM's own memory faults)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]] + [0] * 8
    except (OSError, ValueError):
        return None
    idle, steal = values[3] + values[4], values[7]  # idle + iowait; steal
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle - steal, steal, total


def other_cpu_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy during the next ``seconds`` (this process sleeps meanwhile)."""
    a = cpu_jiffies()
    time.sleep(seconds)
    b = cpu_jiffies()
    if a is None or b is None or b[2] == a[2]:
        return None
    return (b[0] - a[0]) / (b[2] - a[2])


def wait_until_idle(max_wait: float, threshold: float = 0.15) -> float | None:
    """Wait (up to ``max_wait`` s) until under ``threshold`` of the CPUs is busy; return the last share seen."""
    deadline, share = time.monotonic() + max_wait, other_cpu_share()
    while share is not None and share > threshold and time.monotonic() < deadline:
        print(f"  machine busy ({share:.0%} of the CPUs used by other work); waiting …", file=sys.stderr, flush=True)
        time.sleep(10)
        share = other_cpu_share()
    return share


def run_child(name: str, path: str, repeats: int, threads: int | None) -> dict:
    """``python bench_train.py --one NAME --path PATH`` in a fresh process; its result line, parsed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--path", path, "--repeats", str(repeats)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    usage0, jiffies0, wall = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)  # stderr: progress, shown live
    wall = time.perf_counter() - wall
    usage1, jiffies1 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies()
    other = steal = None
    if jiffies0 is not None and jiffies1 is not None and jiffies1[2] > jiffies0[2]:
        # CPU time used on the machine while the child ran, minus the child's own: other processes and
        # kernel threads. Steal is kept apart: it is the hypervisor's, not another process's.
        tick = os.sysconf("SC_CLK_TCK")
        child_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        busy, total = (jiffies1[0] - jiffies0[0]) / tick, (jiffies1[2] - jiffies0[2]) / tick
        other = max(0.0, busy - child_cpu) / total
        steal = (jiffies1[1] - jiffies0[1]) / tick / total
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        # A child killed by the OOM killer shows up here as returncode -9.
        return {"name": name, "path": path, "error": f"child exited with code {proc.returncode}", "wall_seconds": wall}
    result = json.loads(lines[-1][len(RESULT_TAG):])
    result["wall_seconds"] = wall
    result["other_cpu_share"] = other  # share of all CPUs used by other processes during the child's run
    result["steal_share"] = steal  # share of all CPUs stolen by the hypervisor during the child's run
    return result


def machine_facts() -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            mem_total = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "mem_total_bytes": mem_total,
        "mem_available_bytes": mem_available_bytes(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ[k] for k in PERF_ENV if k in os.environ},
        "git": _git_head(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _git_head() -> str | None:
    """The commit measured, with ``+dirty`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "ntkcheck"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def gd_reference(seeds: list[int], step_scale: float) -> dict:
    """F(X_T) of plain GD (step s/β_i, X_0 = 0) on the paper-scale training set, float64."""
    from ntkcheck.problems import qp as problems

    rows = {}
    for seed in seeds:
        problem = problems.generate(PAPER["N"], PAPER["d"], PAPER["b"], seed, "train")
        path = problems.gd_trajectory(problem, max(GD_T), step_scale)
        rows[seed] = {T: float(problems.objective(problem, path[T])) for T in GD_T}
    return {"N": PAPER["N"], "d": PAPER["d"], "b": PAPER["b"], "step_scale": step_scale, "dtype": "float64",
            "split": "train", "paper_fig4b": GD_PAPER, "by_seed": rows}


# -- printing --------------------------------------------------------------------------------------


def _gb(x) -> str:
    return "—" if x is None else f"{x / GB:.2f}"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0%}"


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; otherwise (a pipe, a log file) a Markdown table, ready for the README."""
    rich = sys.stdout.isatty()
    if rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            rich = False
    if not rich:
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
        print(f"\n{title}\n")
        print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
        print()
        return
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i < 2 or c == "dtype" else "right", no_wrap=True)
    for r in rows:
        table.add_row(*r)
    Console(width=max(200, Console().width)).print(table)


def print_machine(m: dict) -> None:
    print(f"date {m['date']}   command: {m['command']}   ntkcheck at {m['git']}")
    print(f"machine: {m['host_cpu']}, cpu_count {m['cpu_count']} (affinity {m['cpu_affinity']}), "
          f"RAM {_gb(m['mem_total_bytes'])} GB (available {_gb(m['mem_available_bytes'])} GB), "
          f"load average {', '.join(f'{x:.2f}' for x in m['load_average'] or [])}")
    print(f"python {m['python']}, torch {m['torch']}, torch threads {m['torch_threads']} "
          f"(interop {m['torch_interop_threads']}), {m['platform']}")
    print("environment: " + (", ".join(f"{k}={v}" for k, v in m["env"].items()) or f"none of {', '.join(PERF_ENV)} set"))


def print_training(results: dict, baseline: dict | None) -> None:
    if baseline is not None:
        if "error" in baseline:
            print(f"\nimport baseline: {baseline['error']}")
        else:
            print(f"\nimport baseline (torch + ntkcheck.engine.training, fresh process): peak RSS "
                  f"{_gb(baseline['peak_rss_bytes'])} GB, import {baseline['import_seconds']:.2f} s")
    columns = ["config", "path", "dtype", "thr", "N", "d×b", "n", "T", "e", "reps", "median s/iter", "min s/iter",
               "warm-up s", "sys s/iter", "faults/iter", "setup s", "peak RSS GB", "Δ import GB", "others' CPU", "steal",
               "F(X_T) k=0 / GD"]
    rows = []
    for key, r in results.items():
        if "error" in r:
            rows.append([r["name"], r["path"], r["error"], *[""] * (len(columns) - 3)])
            continue
        c = r["config"]
        rows.append([r["name"], r["path_used"], c["dtype"], str(r["torch_threads"]), str(c["N"]), f"{c['d']}×{c['b']}",
                     str(c["width"]), str(c["T"]), f"{c['e']:g}", str(r["repeats"]), f"{r['median_seconds']:.3f}",
                     f"{r['min_seconds']:.3f}", f"{r['warmup_seconds']:.3f}", f"{r['median_system_seconds']:.2f}",
                     f"{r['median_minor_faults'] / 1000:.0f}k", f"{r['setup_seconds']:.2f}", _gb(r["peak_rss_bytes"]),
                     _gb(r["increment_bytes"]), _pct(r.get("other_cpu_share")), _pct(r.get("steal_share")),
                     f"{r['F_T_iter0']:.4g} / {r['F_T_gd']:.4g}"])
    _table("Training iteration (unroll + BPTT + SGD step: ntkcheck.engine.training.run_iteration)", columns, rows)
    print("sys s/iter, faults/iter: median system CPU time and minor page faults of one timed iteration; peak RSS: "
          "VmHWM of the child; GB = 1e9 bytes; others' CPU, steal: share of all CPUs used by other processes and kernel "
          "threads, and stolen by the hypervisor, while the child ran. The machine is shared: above a few %, and "
          "with torch's default OpenMP spin-waiting, times are not clean (see benchmarks/README.md).")


def compare_paths(results: dict) -> list[dict]:
    """Each fast-path row against the dense row of the same configuration and thread count, same run."""
    ok = {(r["name"], r["torch_threads"], r["path"]): r for r in results.values() if "error" not in r}
    rows = []
    for (name, threads, path), fast in ok.items():
        dense = ok.get((name, threads, "dense"))
        if path == "dense":
            continue
        row = {"name": name, "threads": threads, "path": path, "seconds": fast["median_seconds"],
               "peak_gb": fast["peak_rss_bytes"] / GB}
        if dense is not None:
            row |= {"dense_seconds": dense["median_seconds"], "dense_peak_gb": dense["peak_rss_bytes"] / GB,
                    "speedup": dense["median_seconds"] / fast["median_seconds"],
                    "memory_ratio": dense["peak_rss_bytes"] / fast["peak_rss_bytes"]}
            if dense["updates"] == fast["updates"]:
                row["F_T_rel_diff"] = abs(fast["F_T_last"] - dense["F_T_last"]) / abs(dense["F_T_last"])
                row["updates"] = fast["updates"]
        row["target"], row["met"] = _target(name, row)
        rows.append(row)
    return rows


def _target(name: str, row: dict) -> tuple[str, bool | None]:
    if name == "paper-T10":
        if "speedup" not in row:
            return f"≥{SPEEDUP_TARGET_T10:.0f}× vs dense, same run (dense not measured)", None
        return f"≥{SPEEDUP_TARGET_T10:.0f}× vs dense, same run", row["speedup"] >= SPEEDUP_TARGET_T10
    if name == "paper-T100":
        return (f"≤{T100_SECONDS_TARGET} s/iter, ≤{T100_PEAK_GB_TARGET} GB peak",
                row["seconds"] <= T100_SECONDS_TARGET and row["peak_gb"] <= T100_PEAK_GB_TARGET)
    return "—", None


def print_comparison(rows: list[dict], results: dict) -> None:
    if rows:
        columns = ["config", "path", "thr", "dense s/iter", "s/iter", "speedup", "dense peak GB", "peak GB",
                   "memory ÷", "rel. diff. F(X_T) after k updates", "target", "met"]
        table = []
        for r in rows:
            sp = lambda k, f: f.format(r[k]) if k in r else "—"  # noqa: E731
            table.append([r["name"], r["path"], str(r["threads"]), sp("dense_seconds", "{:.3f}"), f"{r['seconds']:.3f}",
                          sp("speedup", "{:.1f}×"), sp("dense_peak_gb", "{:.2f}"), f"{r['peak_gb']:.2f}",
                          sp("memory_ratio", "{:.1f}×"),
                          f"{r['F_T_rel_diff']:.1e} (k={r['updates']})" if "F_T_rel_diff" in r else "—",
                          r["target"], {True: "yes", False: "NO", None: "—"}[r["met"]]])
        _table("Fast path against the dense path (medians, same run)", columns, table)
        return
    # Dense only: print what the fast path has to reach against this baseline.
    for r in results.values():
        if "error" in r or r["path"] != "dense":
            continue
        med, peak = r["median_seconds"], r["peak_rss_bytes"] / GB
        if r["name"] == "paper-T10":
            print(f"target paper-T10: fast path ≥{SPEEDUP_TARGET_T10:.0f}× faster than dense in the same run "
                  f"(dense here {med:.2f} s/iter → ≤{med / SPEEDUP_TARGET_T10:.3f} s/iter)")
        if r["name"] == "paper-T100":
            print(f"target paper-T100: ≤{T100_SECONDS_TARGET} s/iter and ≤{T100_PEAK_GB_TARGET} GB peak RSS "
                  f"(dense here {med:.1f} s/iter, {peak:.2f} GB: {med / T100_SECONDS_TARGET:.0f}× and "
                  f"{peak / T100_PEAK_GB_TARGET:.0f}× away)")


def print_gd(gd: dict) -> None:
    seeds = list(gd["by_seed"])
    columns = ["T", "paper Fig. 4b", *[f"seed {s}" for s in seeds], "mean", "mean / paper"]
    rows = []
    for T in GD_T:
        vals = [gd["by_seed"][s][T] for s in seeds]
        mean = statistics.fmean(vals)
        rows.append([str(T), f"{GD_PAPER[T]:g}", *[f"{v:#.4g}" for v in vals], f"{mean:#.4g}",
                     f"{mean / GD_PAPER[T]:.3f}"])
    _table(f"GD reference, paper scale (N={gd['N']}, {gd['d']}×{gd['b']}, X_0 = 0, step {gd['step_scale']:g}/β_i, "
           f"float64): F(X_T) = Σ_i ½‖M_i x_i − y_i‖²", columns, rows)


# -- entry point -----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=("small", "paper", "gd"),
                   help="run only this part (repeatable); default: all")
    p.add_argument("--skip-paper-T100", action="store_true",
                   help="skip paper scale at T=100 (dense: minutes and 11-14 GB peak)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed iterations after one warm-up (default: {DEFAULT_REPEATS['small']} small, "
                        f"{DEFAULT_REPEATS['paper']} paper scale)")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=None,
                   help="wide-layer paths to measure (default: every path the installed ntkcheck has)")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch.set_num_threads in the children; several values measure each configuration at each "
                        "(default: torch's own choice)")
    p.add_argument("--gd-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the GD reference")
    p.add_argument("--gd-step-scale", type=float, default=1.0,
                   help="GD step s/β_i of the reference (1 as in the paper's analysis; the paper's code uses 0.9999)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each child, wait up to this long for other work on the machine to stop (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    p.add_argument("--one", default=None, choices=("import", *CONFIGS),
                   help="internal: measure one configuration in this process and print its result line")
    p.add_argument("--path", default="dense", choices=PATHS, help="internal, with --one: the wide-layer path")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 0:
        p.error(f"--repeats must be an integer ≥ 0 (got {args.repeats})")
    if args.threads is not None and min(args.threads) < 1:
        p.error(f"--threads must be integers ≥ 1 (got {args.threads})")
    if args.one is not None and args.threads is not None and len(args.threads) > 1:
        p.error(f"--one measures at one thread count (got --threads {' '.join(map(str, args.threads))})")
    if args.paths is not None:
        missing = sorted(set(args.paths) - set(library_paths()))
        if missing:
            p.error(f"--paths {' '.join(missing)}: not offered by this ntkcheck (it has: {', '.join(library_paths())})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        group = CONFIGS[args.one][0] if args.one in CONFIGS else "small"
        repeats = DEFAULT_REPEATS[group] if args.repeats is None else args.repeats
        threads = args.threads[0] if args.threads else None
        print(RESULT_TAG + json.dumps(run_one(args.one, args.path, repeats, threads)), flush=True)
        return 0

    parts = set(args.only or ("small", "paper", "gd"))
    paths = [p for p in PATHS if p in (args.paths or library_paths())]
    machine = machine_facts()
    print_machine(machine)
    report = {"machine": machine, "paths": paths, "import_baseline": None, "training": {}, "comparison": [],
              "gd_reference": None,
              "targets": {"paper-T10": {"speedup_vs_dense_same_run": SPEEDUP_TARGET_T10},
                          "paper-T100": {"seconds_per_iteration": T100_SECONDS_TARGET,
                                         "peak_rss_gb": T100_PEAK_GB_TARGET}}}

    names = [n for n, (group, _) in CONFIGS.items() if group in parts
             and not (n == "paper-T100" and args.skip_paper_T100)]
    thread_counts = args.threads or [None]
    if names:
        print("\nimport baseline …", file=sys.stderr, flush=True)
        report["import_baseline"] = run_child("import", "dense", 0, thread_counts[0])
    for name in names:
        group, fields = CONFIGS[name]
        repeats = DEFAULT_REPEATS[group] if args.repeats is None else args.repeats
        for threads in thread_counts:
            for path in paths:
                key = f"{name} {path}" + ("" if len(thread_counts) == 1 else f" ×{threads}")
                need, avail = dense_need_bytes(fields), mem_available_bytes()
                if path == "dense" and avail is not None and need > avail:
                    report["training"][key] = {"name": name, "path": path, "error":
                                               f"skipped: needs ~{need / GB:.1f} GB, {avail / GB:.1f} GB available"}
                    continue
                if args.wait_idle > 0:
                    wait_until_idle(args.wait_idle)
                print(f"{key}: {repeats} timed iteration(s) after 1 warm-up …", file=sys.stderr, flush=True)
                report["training"][key] = run_child(name, path, repeats, threads)
    if names:
        print_training(report["training"], report["import_baseline"])
        report["comparison"] = compare_paths(report["training"])
        print_comparison(report["comparison"], report["training"])

    if "gd" in parts:
        if args.threads:
            from ntkcheck.resources import set_threads

            set_threads(args.threads[0])
        report["gd_reference"] = gd_reference(args.gd_seeds, args.gd_step_scale)
        print_gd(report["gd_reference"])

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in report["training"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
