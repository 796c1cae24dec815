"""Memory a run will need, estimated from its configuration before anything is allocated.

:func:`estimate` turns a :class:`~ntkcheck.config.TrainConfig` (and, for ``verify``, a
:class:`~ntkcheck.config.ProbeConfig`) into an :class:`Estimate` of peak bytes; :func:`check` compares it with
a limit (default: the memory available now) and raises a :class:`MemoryLimitError` (a
:class:`~ntkcheck.config.ConfigError` naming the field that drives the size) instead of letting numpy or torch
die half-way with an allocation traceback. Both first check that every array the run forms can be indexed at
all (:func:`check_sizes`: no dimension product beyond 2^62).

Symbols: N instances, b×d matrices M_i, R = N·d rows (one per coordinate), n = ``width``, L layers (L − 2 early
2×2 layers), T steps, K = ``iters``, Q = N·b outputs, P parameters (P = 4(L − 2) + 3n, plus 2(L − 2) + n + 1
biases), s = bytes of the training dtype (8 float64, 4 float32). All arithmetic is on Python integers (exact,
no overflow); the constants c_· below were fitted to measurements (table at the end) and rounded up.

Training: the peak of one iteration (unroll, loss, backpropagation through all T steps, metrics, update):

    problem    8·(N·b·d + 3·N·b² + 2·R·(T + 8)) + [d < 2b]·4·8·N·d² + [s = 4]·4·(N·b·d + [d < 2b]·N·d²)
               M, Y, β (eigvalsh of M_i M_iᵀ), x*, the GD curve; H_i = M_iᵀM_i (kept when d < 2b) and its
               symmetrisation temporaries; the float32 copy of M and H
    model      8·P·(6 + 2·[adam]) + [angular]·c_prefix·8·n
               weights, gradients, W_0, state copies (Adam: two moments); the angular layer's sorted prefix sums
    steps      T·(c_step + c_row·8·R + c_early·s·2·R·(L − 2) + [dense]·c_dense·s·R·n)
               the autograd graph of the unroll: per step a fixed overhead (graph nodes, Python objects), the
               per-coordinate tensors (∇F, z_t, P_t, X_t, the arcs), the early layers' R×2 activations, and on
               the dense wide layer the R×n feature matrix
    backward   [dense]·c_back·R·n·(s + 1) + c_row·8·R
               the cotangent of the R×n features and the active-share mask of the last step
    records    (K + 1)·(c_record + c_weight·L)
               one dict of metrics per iteration (kept for the run's table), and its long format at the end

Probes (``probes`` given, i.e. ``verify``; in float64 whatever the training dtype):

    features   c_feat·8·R·n                  G_{L−1,t} (R×n) and its SVD for α; the row norms for δ₃
    constants  2·8·N·b·d                      σ(M_i) and the minimum-norm X* of the problem's constants
    dense      (K, K̃ formed; ``ntk_method`` dense, or auto with Q ≤ 4000):
      kernels  c_kernel(L)·8·Q², c_kernel(L) = 2·(L + 1)·(1 + [bias]) + c_eig
               K and K̃ with one block per parameter tensor, the symmetric parts, eigh with eigenvectors and
               its workspace, the drift, and K_0 kept for the drift along training
      jacobian 2·8·Q·P + structured: c_struct·8·Q·n + c_row·8·R·T + 8·8·Q·d
                         func:       c_func·(graph of the unroll in float64) + 8·8·Q·d
               J and J̃; the structured path's difference arrays over the sorted columns (Q×(2n+1)×2, its
               cumulative sum, Ā) and per-step records; torch.func's vmapped graph and row cotangents
      curves   c_curve·8·(K + 1)·Q            the eigen-projection curve over k = 0..K (compare.py)
    lanczos    c_lanczos·(graph of the unroll in float64) + 40·8·Q
               the VJP graphs of the true and the detached map and one JVP; ARPACK's Lanczos vectors

``total_bytes`` = training + probes: the probes run between training iterations, so the true peak is nearer the
larger of the two; the sum is the upper bound. ``driver``: the largest term's factor whose value is furthest
above the small preset's (``PRESETS["small"]``, measured as (value/preset)^exponent), e.g. ``width`` for the
dense wide layer, ``T`` for a long unroll, ``N`` or ``b`` for the dense kernel.

Calibration (``python benchmarks/bench_memory.py``; peak RSS added by the run, VmHWM after a reset minus VmRSS
before, in a fresh process after a tiny warm-up, torch 2.13 CPU, 1 thread):

CALIBRATION_TABLE
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ntkcheck.config import DENSE_MAX, PRESETS, ConfigError, ProbeConfig, TrainConfig

INDEX_MAX = 2**62  # the largest array (in elements) this module lets numpy and torch form
GB = 1e9

# fitted constants (module docstring)
C_PREFIX = 72
C_STEP = 36_000
C_ROW = 32
C_EARLY = 3
C_DENSE = 1.5
C_DENSE_HEAP = 3.5
HEAP_BLOCK = 32 * 2**20  # glibc serves blocks below this from its heap, where freed blocks fragment
C_BACK = 3
C_RECORD = 2_000
C_WEIGHT = 250
C_FEAT = 4
C_EIG = 10
C_STRUCT = 16
C_FUNC = 2
C_CURVE = 4
C_LANCZOS = 3

_REFERENCE = PRESETS["small"]


@dataclass(frozen=True)
class Term:
    """One part of an estimate: its bytes and the config fields it grows with (field → exponent)."""

    name: str
    bytes: int
    factors: dict = field(default_factory=dict)
    hint: str = ""


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of one training iteration (``training_bytes``) and of the probes (``probe_bytes``, 0 without
    them); ``total_bytes`` is their sum; ``driver`` the config field that dominates; ``terms`` every part,
    largest first (module docstring)."""

    training_bytes: int
    probe_bytes: int
    total_bytes: int
    driver: str
    terms: tuple[Term, ...] = field(default=(), repr=False)

    @property
    def hint(self) -> str:
        return self.terms[0].hint if self.terms else ""


class MemoryLimitError(ConfigError):
    """A run that needs more memory than the limit: ``field`` is the estimate's driver; ``estimate``, ``limit``
    (bytes) and ``source`` (``"the available memory"`` or ``"max_memory"``) let a caller word it otherwise."""

    def __init__(self, estimate: Estimate, limit: float, source: str):
        self.estimate, self.limit, self.source = estimate, limit, source
        hint = f", {estimate.hint}" if estimate.hint else ""
        super().__init__(estimate.driver, f"needs about {gb(estimate.total_bytes)} of memory (limit {gb(limit)}: "
                                          f"{source}); lower {estimate.driver}{hint} or pass max_memory=inf to insist")


def gb(n: float) -> str:
    """Bytes as ``12.3 GB`` (3 significant digits)."""
    return f"{n / GB:.3g} GB"


# -- shapes -------------------------------------------------------------------------------------------------


def problem_shape(cfg: TrainConfig) -> tuple[int, int, int]:
    """(N, b, d) of the run: the header of ``problem_file`` when it can be read without loading the data, else
    the config's (a file that cannot be read is reported by the loader, not here)."""
    if cfg.problem_file:
        shape = _file_shape(Path(cfg.problem_file))
        if shape is not None:
            return shape
    return cfg.N, cfg.b, cfg.d


def _file_shape(path: Path) -> tuple[int, int, int] | None:
    try:
        if path.suffix == ".npz":
            import numpy as np

            with zipfile.ZipFile(path) as z, z.open("M.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape = read(f)[0]
        elif path.suffix in (".pt", ".pth"):
            import torch

            shape = tuple(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["M"].shape)
        else:
            return None
    except Exception:  # unreadable here: the loader will say why
        return None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or not all(isinstance(k, int) and k > 0 for k in shape):
        return None
    return tuple(int(k) for k in shape)


def _ratio(name: str, value: int) -> float:
    """How far ``value`` is above the small preset's value of the field (≥ 1 counts as large)."""
    return value / _REFERENCE.get(name, 1)


def _largest(factors: dict, values: dict) -> str:
    """The factor whose (value/preset)^exponent is largest (log scale: exact for huge integers)."""
    def weight(name):
        return factors[name] * (math.log(values[name]) - math.log(_REFERENCE.get(name, 1)))
    return max(factors, key=weight)


def check_sizes(cfg: TrainConfig, probes: ProbeConfig | None = None) -> None:
    """Raise ConfigError when an array of the run would have more than 2^62 elements (numpy and torch index with
    64-bit integers: such sizes fail with a cryptic error or wrap around). Named after the largest factor."""
    N, b, d = problem_shape(cfg)
    values = {"N": N, "b": b, "d": d, "width": cfg.width, "T": cfg.T, "L": cfg.L, "iters": cfg.iters}
    Q = N * b
    arrays = [
        ("the wide layer's features", "N·d·width", N * d * cfg.width, {"N": 1, "d": 1, "width": 1}),
        ("the matrices M", "N·b·d", N * b * d, {"N": 1, "b": 1, "d": 1}),
        ("the step sizes of an unroll", "T·N·d", cfg.T * N * d, {"T": 1, "N": 1, "d": 1}),
        ("the layers", "L", cfg.L, {"L": 1}),
        ("the metrics", "iters", cfg.iters + 1, {"iters": 1}),
    ]
    if d < 2 * b:
        arrays.append(("the Gram matrices M_iᵀM_i", "N·d²", N * d * d, {"N": 1, "d": 2}))
    if probes is not None:
        arrays.append(("the metrics' curves", "iters·N·b", (cfg.iters + 1) * Q, {"iters": 1, "N": 1, "b": 1}))
        if probes.method_for(Q) == "dense":
            arrays.append(("the NTK", "(N·b)²", Q * Q, {"N": 2, "b": 2}))
            arrays.append(("the Jacobian", "N·b·width", Q * 3 * cfg.width, {"N": 1, "b": 1, "width": 1}))
    for what, expr, size, factors in arrays:
        if size > INDEX_MAX:
            name = _largest(factors, values)
            raise ConfigError(name, f"is too large: {what} would have {expr} ≈ {float(size):.3g} entries, beyond "
                                    "2^62, the most numpy and torch can index")


# -- the estimate ------------------------------------------------------------------------------------------


def estimate(cfg: TrainConfig, probes: ProbeConfig | None = None) -> Estimate:
    """Peak memory of one training iteration of ``cfg`` and, with ``probes``, of its probes (module docstring for
    every formula). Raises ConfigError when a size cannot be indexed at all (:func:`check_sizes`)."""
    check_sizes(cfg, probes)
    N, b, d = problem_shape(cfg)
    n, T, L, K = cfg.width, cfg.T, cfg.L, cfg.iters
    values = {"N": N, "b": b, "d": d, "width": n, "T": T, "L": L, "iters": K}
    R, Q, E = N * d, N * b, L - 2
    s = 4 if cfg.dtype == "float32" else 8
    gram = d < 2 * b
    P = 4 * E + 3 * n + (2 * E + n + 1 if cfg.bias else 0)
    angular = not cfg.bias and cfg.wide_layer != "dense"
    dense_hint = "use wide_layer=angular" if not cfg.bias and cfg.wide_layer == "dense" else ""
    c_dense = C_DENSE_HEAP if R * n * s < HEAP_BLOCK else C_DENSE

    training = [
        Term("problem M", 8 * (N * b * d + 3 * N * b * b) + (4 * N * b * d if s == 4 else 0), {"N": 1, "b": 1, "d": 1}),
        Term("problem GD curve", 8 * 2 * R * (T + 8), {"N": 1, "d": 1, "T": 1}),
        Term("problem H", (4 * 8 + (4 if s == 4 else 0)) * N * d * d if gram else 0, {"N": 1, "d": 2}),
        Term("model", 8 * P * (6 + (2 if cfg.optimizer == "adam" else 0)) + (C_PREFIX * 8 * n if angular else 0),
             {"width": 1, "L": 1}),
        Term("unroll overhead", T * C_STEP, {"T": 1}),
        Term("unroll rows", T * C_ROW * 8 * R, {"T": 1, "N": 1, "d": 1}),
        Term("unroll early layers", T * C_EARLY * s * 2 * R * E, {"T": 1, "L": 1, "N": 1, "d": 1}),
        Term("unroll wide layer", 0 if angular else int(T * c_dense * s * R * n), {"T": 1, "N": 1, "d": 1, "width": 1},
             dense_hint),
        Term("backward", (0 if angular else C_BACK * R * n * (s + 1)) + C_ROW * 8 * R, {"N": 1, "d": 1, "width": 1},
             dense_hint),
        Term("records", (K + 1) * (C_RECORD + C_WEIGHT * L), {"iters": 1, "L": 1}),
    ]
    probe = []
    if probes is not None:
        graph64 = T * (C_STEP + C_ROW * 8 * R + C_EARLY * 8 * 2 * R * E + (0 if angular else (C_DENSE_HEAP if R * n * 8 < HEAP_BLOCK else C_DENSE) * 8 * R * n))
        probe += [
            Term("features", C_FEAT * 8 * R * n, {"N": 1, "d": 1, "width": 1}),
            Term("constants", 2 * 8 * N * b * d, {"N": 1, "b": 1, "d": 1}),
        ]
        if probes.method_for(Q) == "dense":
            structured = angular and probes.jacobian != "func"
            kernels = 2 * (L + 1) * (2 if cfg.bias else 1) + C_EIG
            lanczos_hint = "use ntk_method=lanczos"
            probe += [
                Term("kernels", kernels * 8 * Q * Q, {"N": 2, "b": 2}, lanczos_hint),
                Term("jacobian", 2 * 8 * Q * P, {"N": 1, "b": 1, "width": 1}, lanczos_hint),
                Term("jacobian work", (C_STRUCT * 8 * Q * n + C_ROW * 8 * R * T if structured else int(C_FUNC * graph64))
                     + 8 * 8 * Q * d, {"N": 1, "b": 1, "width": 1} if structured else {"T": 1, "N": 1, "d": 1, "width": 1},
                     lanczos_hint),
                Term("curves", C_CURVE * 8 * (K + 1) * Q, {"iters": 1, "N": 1, "b": 1}),
            ]
        else:
            probe += [Term("lanczos", int(C_LANCZOS * graph64) + 40 * 8 * Q,
                           {"T": 1, "N": 1, "d": 1} | ({} if angular else {"width": 1}))]

    train_bytes = int(sum(t.bytes for t in training))
    probe_bytes = int(sum(t.bytes for t in probe))
    terms = tuple(sorted(training + probe, key=lambda t: t.bytes, reverse=True))
    driver = _largest(terms[0].factors, values) if terms[0].factors else "width"
    return Estimate(train_bytes, probe_bytes, train_bytes + probe_bytes, driver, terms)


# -- the limit ---------------------------------------------------------------------------------------------


def available_memory() -> int:
    """Bytes this process can still allocate: the least of MemAvailable (``/proc/meminfo``; else the free physical
    pages from ``os.sysconf``), the cgroup's limit minus its usage, and the address-space limit (RLIMIT_AS) minus
    the process's current virtual size."""
    found = []
    try:
        found.append(_meminfo("MemAvailable", "/proc/meminfo"))
    except (OSError, KeyError, ValueError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap != "max" and int(cap) < 2**60:
                found.append(int(cap) - int(Path(usage).read_text()))
        except (OSError, ValueError):
            pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            found.append(soft - _meminfo("VmSize", "/proc/self/status"))
    except (ImportError, OSError, KeyError, ValueError):
        pass
    return max(min(found), 0) if found else 2**63


def _meminfo(key: str, path: str) -> int:
    text = Path(path).read_text()
    match = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.MULTILINE)
    if match is None:
        raise KeyError(key)
    return int(match.group(1)) * 1024


def check(cfg: TrainConfig, probes: ProbeConfig | None = None, *, limit: float | None = None) -> Estimate:
    """The :func:`estimate` of ``cfg`` (and ``probes``), after checking that it fits in ``limit`` bytes.

    ``limit=None``: the memory available now (:func:`available_memory`); ``math.inf``: no limit (the sizes must
    still be indexable). Raises :class:`MemoryLimitError` (a ConfigError on the driving field) when the estimate
    exceeds the limit, and ConfigError on ``max_memory`` for a limit that is not a number > 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or math.isnan(limit)
                              or limit <= 0):
        raise ConfigError("max_memory", f"must be a number of bytes > 0, or inf for no limit (got {limit!r})")
    est = estimate(cfg, probes)
    if limit is not None and math.isinf(limit):
        return est
    cap, source = (available_memory(), "the available memory") if limit is None else (limit, "max_memory")
    if est.total_bytes > cap:
        raise MemoryLimitError(est, cap, source)
    return est
