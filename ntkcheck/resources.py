"""Memory a run will need, estimated from its configuration before anything is allocated.

:func:`estimate` turns a :class:`~ntkcheck.config.TrainConfig` (and, for ``verify``, a
:class:`~ntkcheck.config.ProbeConfig`) into an :class:`Estimate` of peak bytes; :func:`check` compares it with a
limit (default: the memory available now, :func:`available_memory`) and raises :class:`MemoryLimitError` (a
:class:`~ntkcheck.config.ConfigError` on the field that drives the size) instead of letting numpy or torch die
half-way with an allocation traceback. Both first refuse any array of more than 2^62 entries
(:func:`check_sizes`), before any arithmetic that could overflow.

Symbols: N instances of b×d (the ``problem_file``'s header when one is given), R = N·d rows (one per coordinate),
n = ``width``, L layers (L − 2 early 2×2 layers), T steps, K = ``iters``, Q = N·b outputs, P = 4(L − 2) + 3n
parameters (plus 2(L − 2) + n + 1 biases), s = bytes of the training dtype (8 or 4). Arithmetic is on Python
integers. The constants C_* were fitted to the measurements below and rounded up. glibc serves blocks below
HEAP_BLOCK = 32 MiB from its heap, where the blocks freed between steps fragment: a term made of such blocks
costs blocks(c, c_heap, size) = max(c·size, c_heap·min(size, HEAP_BLOCK)) (monotone in the size, so a larger run
never gets a smaller estimate; just above 32 MiB this over-estimates by up to c_heap/c), and heaped(c, size) =
blocks(c, 1.5·c, size).

Training, held for the whole run (``FIXED``):

    problem M         8·(N·b·d + 3·N·b²) + [s = 4]·4·N·b·d        M, Y, β_i (eigvalsh of M_i M_iᵀ), f32 copy
    problem H         [d < 2b]·(32 + [s = 4]·4)·N·d²               H_i = M_iᵀM_i, its symmetrisation temporaries
    problem GD curve  16·R·(T + 8)                                 x*, X_0..X_T of GD and F_GD
    model             8·P·(6 + 2·[adam]) + [angular]·C_PREFIX·8·n  weights, gradients, W_0, copies, Adam's state;
                                                                    the angular layer's sorted angles, prefix sums
    records           (K + 1)·(C_RECORD + C_WEIGHT·L)              one dict of metrics per iteration, long format

and per iteration (freed when it ends):

    unroll overhead   T·C_STEP                                     graph nodes and small tensors of each step
    unroll rows       T·C_ROW·8·R                                  ∇F, z_t, P_t, X_t, the arcs: R-long tensors
    unroll early      T·C_EARLY·s·2·R·(L − 2)                      the early layers' R×2 activations
    unroll wide layer [dense]·T·blocks(C_DENSE, C_DENSE_HEAP, s·R·n)   the R×n features of every step
    backward          [dense]·C_BACK·(s + 1)·R·n + C_ROW·8·R       the features' cotangent, the active-share mask

``training_bytes`` is the sum of both. The probes of ``verify`` (float64 whatever the training dtype) run in
phases one after the other; ``probe_bytes`` is the largest phase, each with ``constants``. The method is
``kernel_method(probes.ntk_method, Q, P)`` (``auto``: dense where the kernels fit in half the available memory):

    constants         16·N·b·d                                     σ(M_i) and the minimum-norm X* (bounds.gd)
    features          blocks(C_FEAT, C_FEAT_HEAP, 8·R·n)           G_{L−1,t} and its SVD (α), row norms (δ₃)
    contraction fits  C_THEIL·8·(⌈(K + 1)/2⌉² + min(early, K + 1)²)    Theil–Sen's pairwise slopes (scipy)
                                                                    over the late and the early window: O(K²)
    dense:
      jacobian        2·8·Q·P                                      J and J̃, held until the kernels are formed
      jacobian work   structured: heaped(C_STRUCT, 8·Q·n) + C_ROW·8·R·T + 64·Q·d    the difference arrays over
                                  the sorted columns (Q×(2n+1)×2), their cumsum, Ā, the per-step records
                      func, angular layer: (C_FUNC_ROWS + C_FUNC_STEP·T)·8·Q·n + 64·Q·d    all b rows'
                                  cotangents of the prefix sums, at every step
                      func, dense layer: (C_FUNC_DENSE + b + T)·8·R·n    one row at a time
      kernels         heaped(2·(L + 1)·(1 + [bias]) + C_EIG, 8·Q²)     K and K̃ with one block per parameter, the
                                                                    symmetric parts, eigh with vectors, drift
      curves          C_CURVE·8·(K + 1)·Q + 8·Q²                   the eigen-projection curve over k = 0..K, K_0
      phases          features | jacobian + work | jacobian + kernels | curves + contraction fits
    lanczos:
      lanczos         C_LANCZOS·graph64 + 320·Q                    the VJP graphs of the true and the detached
                                                                    map and a JVP (graph64: the unroll at s = 8);
                                                                    ARPACK's vectors
      phases          features + lanczos | contraction fits

(Lanczos falls back to the dense kernel only where that fits in half the available memory: not counted.)

The LSTM (``model="lstm"``, H = ``lstm_hidden`` units in ℓ = ``lstm_layers`` layers; a conservative estimate, the
MLP's terms for the problem, records, fits and curves): P = :func:`lstm_parameters` (the module's count, in closed
form: resources sits below the models), p = 4ℓ + 2 + 2·heads parameter tensors, and w = C_LSTM·H·(ℓ + 1) + C_ROW
words per row and step of the unroll's graph (the gates, cell and hidden states of every layer, the linear layer,
the heads; the peak RSS of training at N=32 d=64 T=20 H=20 ℓ=2: 530 words = 8.5·H·(ℓ + 1) + C_ROW):

    model             8·P·(6 + 2·[adam])
    unroll            T·(C_STEP + s·R·w)                           the graph of the unroll
    backward          2·s·R·w + 4·8·ℓ·R·H                          two steps' cotangents; h_0, c_0 (float64, cast)
    records           (K + 1)·(C_RECORD + C_WEIGHT·p)
    dense probe:      jacobian 2·8·Q·P; jacobian work graph64 + C_LSTM_JAC·8·Q·R·w (torch.func's jacrev of the
                      whole map, vmapped over the Q outputs: a step's cotangents for every output); kernels
                      heaped(2·p + C_EIG, 8·Q²); phases jacobian + work | jacobian + kernels | curves + fits
    lanczos:          C_LSTM_LANCZOS·graph64 + 320·Q (forward-mode AD through torch's LSTM keeps many graphs);
                      phases lanczos | fits                                (graph64 = T·(C_STEP + 8·R·w))

Measured (tests/test_lstm_app.py; peak RSS as above): train N=32 d=64 b=25 T=20: 0.174 GB, estimate 0.275; verify,
dense, N=4 d=32 b=16 T=10: 0.086 GB, estimate 0.112; verify, Lanczos, N=8 d=32 b=16 T=10 (PA): 0.333 GB, estimate 0.471.

No α, δ₃ or features for the LSTM (they are the MLP's).

``total_bytes`` = FIXED + max(per-iteration part, ``probe_bytes``): the probes run between iterations, when the
previous iteration's graph is freed. ``driver``: in the largest term, the factor furthest above the small preset
(largest (value/preset)^exponent): ``width`` for the wide layer, ``T`` for a long unroll, ``N`` or ``b`` for the
dense kernel, ``iters`` for the fits, ``L`` for many layers; ``problem_file`` where the file's N, b or d drive it.

Calibration (``python benchmarks/bench_memory.py``: the peak RSS a run in memory adds, VmHWM after a reset minus
VmRSS before, in a fresh process after a tiny warm-up; torch 2.13 CPU, 1 thread, a busy 2-core machine; the
verify rows vary by up to 30 % between runs, from heap fragmentation):

    case (benchmarks/bench_memory.py: CASES)    measured  estimate  ratio  driver
    train, small preset, angular                 0.0038 GB  0.0092   2.42   T      (tiny: fixed overheads)
    train, N=32 d=256 b=200 T=200                0.331      0.568    1.71   T
    train, width 10⁶                             0.680      0.792    1.16   width
    train, L=40                                  0.0224     0.0335   1.49   L
    train, N=1 d=2 b=1 n=8 T=20000               0.592      0.731    1.23   T
    train, tiny, iters 3000                      0.0048     0.0084   1.75   L
    train, small, dense layer, float64           0.505      0.624    1.24   T
    train, N=10 d=128 b=100 n=2048 dense f32     0.627      0.791    1.26   d
    train, N=64 d=512 b=400 n=64 T=2             0.540      0.917    1.70   d
    verify, small, dense kernel (Q = 800)        0.176      0.246    1.40   N      (0.142–0.196 over runs)
    verify, N=32 d=64 b=64 T=10 (Q = 2048)       0.622      1.019    1.64   b
    verify, small, Lanczos                       0.061      0.074    1.22   N      (0.035–0.061 over runs)
    verify, N=8 d=16 b=12 n=256 dense layer      0.0091     0.0110   1.20   T
    verify, N=8 d=64 b=48 n=1024, func           0.179      0.300    1.68   b
    verify, the same, dense layer (func)         0.225      0.315    1.40   d
    verify, N=32 d=256 b=200 n=64 T=50 Lanczos   0.229      0.390    1.70   d
    verify, N=8 d=16 b=12 n=64 T=3, iters 2000   0.0278     0.0441   1.59   iters  (Theil–Sen)

And per piece, measured alone: the dense wide layer keeps 3.2·s·R·n per step at R·n·s = 8 MB (heap) and
1.1–1.4·s·R·n at 42 MB (mmap; ``MALLOC_MMAP_THRESHOLD_=65536`` gives 1.1 at 8 MB too); 29.6 kB per step at
R = 2 (T = 20000); 25 words per row and step at R = 8192 (T = 200); 69 words per column with n = 10⁶ (model and
prefix sums); at Q = 2048, n = 1024 the structured J took 15.8·8·Q·n, the two Gram matrices 10·8·Q² held, eigh
with vectors 5.1·8·Q² more; α's SVD 2.1·8·R·n; torch.func's Jacobian 8·Q·n·(26 + 2.4·T) on the angular layer
and 8·R·n·(11 + 0.9·b) on the dense one; Lanczos 1.0–1.3·graph64; Theil–Sen 3.5·8·w² over w points.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ntkcheck.config import DENSE_MAX, PRESETS, ConfigError, ProbeConfig, TrainConfig

INDEX_MAX = 2**62  # the largest array (in elements) this module lets numpy and torch form
GB = 1e9

# fitted constants (module docstring; what was measured in parentheses)
C_PREFIX = 80  # words per column: the angular layer's sort and prefix sums with the model (n = 10⁶: 69–85)
C_STEP = 36_000  # bytes per step of the unroll besides its tensors' data (R = 2, T = 20000: 29.6 kB)
C_ROW = 28  # 8-byte words per row and step of the angular unroll (R = 8192, T = 200: 25)
C_EARLY = 2  # s-byte words per R×2 activation, early layer and step (L = 40: 1.4)
C_DENSE = 1.5  # R×n feature matrices kept per step, mmapped blocks (42 MB: 1.1–1.4)
C_DENSE_HEAP = 3.5  # the same, heap-sized blocks (8 MB: 3.2–3.4)
HEAP_BLOCK = 32 * 2**20  # glibc serves blocks below this from its heap (its largest dynamic mmap threshold)
HEAP_PENALTY = 1.5  # the probes' heap-sized J and K blocks (Q = 800: 142–196 MB over five runs)
C_BACK = 3  # R×n matrices of the backward pass of the dense layer
C_RECORD = 2_000  # bytes per iteration's metrics (L = 3, K = 3000: 1.6 kB with L's part)
C_WEIGHT = 250  # bytes per layer in each iteration's metrics
C_FEAT = 2.5  # R×n float64 matrices for α and δ₃, mmapped (33 MB: 2.06)
C_FEAT_HEAP = 7  # the same, heap-sized (8 MB: 2.1 alone, 3–7 next to the rest of a probe)
C_EIG = 10  # Q×Q float64 matrices besides the per-parameter blocks (Q = 2048: 5.1 for eigh, 3 for spectra, + K_0)
C_STRUCT = 20  # Q×n float64 matrices of the structured Jacobian (Q = 2048, n = 1024: 15.8)
C_FUNC_ROWS = 48  # Q×n float64 matrices of torch.func's Jacobian on the angular layer (26 + 2.4·T)
C_FUNC_STEP = 4
C_FUNC_DENSE = 12  # R×n float64 matrices of torch.func's Jacobian on the dense layer (11 + 0.9·b)
C_CURVE = 4  # (K + 1)×Q float64 arrays of the eigen-projection curve
C_THEIL = 4  # w×w float64 arrays of Theil–Sen over w points (3.5)
C_LANCZOS = 2  # unroll graphs in float64 held by the Lanczos operators (1.0–1.3; 2: the small case varies)
C_LSTM = 12  # words per row, step and hidden unit (per layer, and the linear layer) of the LSTM's graph (8.5)
C_LSTM_JAC = 2  # the LSTM's jacrev: one step's cotangents for every output (N=4 d=32 b=16 T=10 H=20 ℓ=2: 1.6)
C_LSTM_LANCZOS = 30  # float64 unroll graphs held by the LSTM's Lanczos operators (N=8 d=32 b=16 T=10 H=20 ℓ=2: 21)

_REFERENCE = PRESETS["small"] | {"lstm_hidden": TrainConfig.lstm_hidden, "lstm_layers": TrainConfig.lstm_layers}
FIXED = ("problem M", "problem GD curve", "problem H", "model", "records")  # held for the whole run


@dataclass(frozen=True)
class Term:
    """One part of an estimate: its bytes and the config fields it grows with (field → exponent)."""

    name: str
    bytes: int
    factors: dict = field(default_factory=dict)
    hint: str = ""


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of a training run (``training_bytes``: what it holds throughout plus one iteration) and of its
    probes (``probe_bytes``, 0 without them); ``total_bytes`` of the whole (module docstring); ``driver``: the
    config field that dominates; ``terms``: every part, largest first."""

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
    (bytes) and ``source`` (``"the available memory"`` or ``"max_memory"``) let a caller word it otherwise.
    ``message`` spells the options as Python does (``max_memory=math.inf``); ``flagged``, the same advice with the
    option names in backticks and ``max_memory inf``, is what the command line prints with its flags
    (``--max-memory inf``)."""

    def __init__(self, estimate: Estimate, limit: float, source: str):
        self.estimate, self.limit, self.source = estimate, limit, source
        field = estimate.driver
        super().__init__(field, self._advice(str, "max_memory=inf (math.inf)"))
        self.flagged = self._advice(lambda name: f"`{name}`", "`max_memory` inf")

    def _advice(self, name, insist: str) -> str:
        """The message with every option spelled by ``name(field)`` and the way to insist."""
        field, est = self.estimate.driver, self.estimate
        lower = "use a smaller problem" if field == "problem_file" else f"lower {name(field)}"
        hint = re.sub(r"(\w+)=(\w+)", lambda m: f"{name(m[1])} {m[2]}", est.hint) if name is not str else est.hint
        source = self.source if self.source != "max_memory" else name("max_memory")
        return (f"needs about {gb(est.total_bytes)} of memory (limit {gb(self.limit)}: {source}); {lower}"
                f"{f', {hint}' if hint else ''} or pass {insist} to insist")


def idle_cores() -> int:
    """The cores this process may use that are not busy now: the affinity set's size minus the 1-minute load
    average, rounded, and at least 1. The default thread count: torch's own (every core) collapses on a shared
    machine, where threads that find their core taken spin-wait (10–30× slower runs, benchmarks/README.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # no load average on this platform: assume a quiet machine
        busy = 0
    return max(1, min(cores, cores - busy))


CHOSEN = {"threads": None}  # the count the process chose last (set_threads: the command line's --threads)


@contextmanager
def threads(n: int | None):
    """Run the ``with`` block on ``n`` CPU threads (:func:`set_threads`), then give torch and the BLAS pools back the
    threads they had. None: the count chosen with :func:`set_threads` (the command line's ``--threads``), else
    :func:`idle_cores` (the command line's default)."""
    import torch
    from threadpoolctl import threadpool_limits

    chosen = CHOSEN["threads"]
    n = (chosen or idle_cores()) if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096:
        raise ConfigError("threads", f"must be an integer in [1, 4096] (got {n!r})")
    before = torch.get_num_threads()
    importlib.import_module("scipy.linalg")  # loaded before the pools' limits are recorded, so restored too
    with threadpool_limits(limits=None):  # restores every pool's limit on exit
        set_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)
            CHOSEN["threads"] = chosen


def set_threads(n: int) -> None:
    """Use at most ``n`` CPU threads for linear algebra: torch's intra-op threads and the BLAS/OpenMP pools of numpy
    and scipy (through threadpoolctl), which ``torch.set_num_threads`` does not reach (scipy's BLAS runs the
    symmetric Gram products and syrk, numpy's LAPACK the eigendecompositions)."""
    import torch
    from threadpoolctl import threadpool_limits

    importlib.import_module("scipy.linalg")  # loads scipy's BLAS: threadpoolctl limits only the libraries loaded
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    CHOSEN["threads"] = n


def _sci(n: int) -> str:
    """A huge integer as ``1.23e+45`` (or ``10^400`` beyond the range of floats)."""
    return f"{float(n):.3g}" if n < 10**300 else f"10^{len(str(n)) - 1}"


def blocks(c: float, c_heap: float, size: int) -> int:
    """Bytes that blocks of ``size`` bytes cost: c·size, and at least c_heap·min(size, HEAP_BLOCK), the cost of a
    heap-sized block (glibc keeps freed heap blocks, which fragment). Monotone in ``size``, so a larger run never
    gets a smaller estimate; between HEAP_BLOCK and (c_heap/c)·HEAP_BLOCK this over-estimates by up to c_heap/c."""
    return int(max(c * size, c_heap * min(size, HEAP_BLOCK)))


def _heaped(c: float, size: int) -> int:
    """c blocks of ``size`` bytes that are allocated and freed in turn: HEAP_PENALTY more while heap-sized."""
    return blocks(c, HEAP_PENALTY * c, size)


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
    if not path.is_file():  # absent, a folder, or a fifo that opening would block on: the loader says which
        return None
    try:
        if path.suffix == ".npz":
            import numpy as np

            with zipfile.ZipFile(path) as z, z.open("M.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape = read(f)[0]
        elif path.suffix in (".pt", ".pth"):
            import warnings

            import torch

            with warnings.catch_warnings():  # nothing on stderr: the loader reports what is wrong, in one line
                warnings.simplefilter("ignore")
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


def _largest(cfg: TrainConfig, factors: dict, values: dict) -> str:
    """The factor whose (value/preset)^exponent is largest (in logarithms: exact for huge integers); the file's
    N, b or d are named ``problem_file``."""
    def weight(name):
        return factors[name] * (math.log(values[name]) - math.log(_REFERENCE.get(name, 1)))
    name = max(factors, key=weight)
    return "problem_file" if cfg.problem_file and name in ("N", "b", "d") else name


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
    _refuse(cfg, arrays, values)
    if probes is not None:  # Q ≤ N·b·d ≤ 2^62 from here on
        more = [("the metrics' curves", "iters·N·b", (cfg.iters + 1) * Q, {"iters": 1, "N": 1, "b": 1})]
        if probes.ntk_method == "dense":  # auto never picks dense beyond the memory
            more += [("the NTK", "(N·b)²", Q * Q, {"N": 2, "b": 2}),
                     ("the Jacobian", "N·b·width", Q * 3 * cfg.width, {"N": 1, "b": 1, "width": 1})]
        _refuse(cfg, more, values)


def _refuse(cfg: TrainConfig, arrays: list, values: dict) -> None:
    for what, expr, size, factors in arrays:
        if size > INDEX_MAX:
            name = _largest(cfg, factors, values)
            raise ConfigError(name, f"is too large: {what} would have {expr} ≈ {_sci(size)} entries, beyond "
                                    "2^62, the most numpy and torch can index")


# -- the estimate ------------------------------------------------------------------------------------------


def lstm_parameters(variant: str, hidden: int, layers: int) -> int:
    """P of :class:`~ntkcheck.models.lstm.MathL2OLSTM` (without B terms): torch's LSTM layer has 4H(in + H + 2)
    weights and biases (in = 2 for the first layer, H after), the linear layer H(H + 1), each head (P; A for PA)
    H + 1."""
    H, heads = hidden, 2 if variant == "PA" else 1
    return 4 * H * (2 + H + 2) + (layers - 1) * 4 * H * (2 * H + 2) + H * (H + 1) + heads * (H + 1)


def estimate(cfg: TrainConfig, probes: ProbeConfig | None = None) -> Estimate:
    """Peak memory of one training iteration of ``cfg`` and, with ``probes``, of its probes (module docstring for
    every formula). Raises ConfigError when a size cannot be indexed at all (:func:`check_sizes`)."""
    check_sizes(cfg, probes)
    if cfg.model == "lstm":
        return _estimate_lstm(cfg, probes)
    N, b, d = problem_shape(cfg)
    n, T, L, K = cfg.width, cfg.T, cfg.L, cfg.iters
    values = {"N": N, "b": b, "d": d, "width": n, "T": T, "L": L, "iters": K}
    R, Q, E = N * d, N * b, L - 2
    s = 4 if cfg.dtype == "float32" else 8
    P = 4 * E + 3 * n + (2 * E + n + 1 if cfg.bias else 0)
    angular = not cfg.bias and cfg.wide_layer != "dense"
    dense_hint = "use wide_layer=angular" if not cfg.bias and cfg.wide_layer == "dense" else ""

    training = _problem_terms(cfg, N, b, d, s) + [
        Term("model", 8 * P * (6 + (2 if cfg.optimizer == "adam" else 0)) + (C_PREFIX * 8 * n if angular else 0),
             {"width": 1, "L": 1}),
        Term("unroll overhead", T * C_STEP, {"T": 1}),
        Term("unroll rows", T * C_ROW * 8 * R, {"T": 1, "N": 1, "d": 1}),
        Term("unroll early layers", T * C_EARLY * s * 2 * R * E, {"T": 1, "L": 1, "N": 1, "d": 1}),
        Term("unroll wide layer", 0 if angular else T * blocks(C_DENSE, C_DENSE_HEAP, s * R * n),
             {"T": 1, "N": 1, "d": 1, "width": 1}, dense_hint),
        Term("backward", (0 if angular else C_BACK * R * n * (s + 1)) + C_ROW * 8 * R, {"N": 1, "d": 1, "width": 1},
             dense_hint),
        Term("records", (K + 1) * (C_RECORD + C_WEIGHT * L), {"iters": 1, "L": 1}),
    ]
    probe, phases = [], [[]]
    if probes is not None:
        wide64 = 0 if angular else blocks(C_DENSE, C_DENSE_HEAP, 8 * R * n)
        graph64 = T * (C_STEP + C_ROW * 8 * R + C_EARLY * 8 * 2 * R * E + wide64)  # the unroll's graph in float64
        early, late = min(probes.early, K + 1), (K + 2) // 2
        features = Term("features", blocks(C_FEAT, C_FEAT_HEAP, 8 * R * n), {"N": 1, "d": 1, "width": 1})
        constants = Term("constants", 2 * 8 * N * b * d, {"N": 1, "b": 1, "d": 1})
        theil = Term("contraction fits", C_THEIL * 8 * (late * late + early * early), {"iters": 2})
        probe += [features, constants, theil]
        method = kernel_method(probes.ntk_method, Q, P)
        if method == "dense":  # (Lanczos falls back to dense only where that fits in half the available memory)
            hint = "use ntk_method=lanczos"
            if angular and probes.jacobian != "func":  # the structured Jacobian
                work = Term("jacobian work", _heaped(C_STRUCT, 8 * Q * n) + C_ROW * 8 * R * T + 8 * 8 * Q * d,
                            {"N": 1, "b": 1, "width": 1}, hint)
            elif angular:  # torch.func, all b rows of an instance at once
                work = Term("jacobian work", 8 * Q * n * (C_FUNC_ROWS + C_FUNC_STEP * T) + 8 * 8 * Q * d,
                            {"N": 1, "b": 1, "width": 1, "T": 1}, hint)
            else:  # torch.func on the dense wide layer, one row at a time
                work = Term("jacobian work", 8 * R * n * (C_FUNC_DENSE + b + T),
                            {"N": 1, "d": 1, "width": 1, "b": 1}, hint)
            kernels = Term("kernels", _heaped(2 * (L + 1) * (2 if cfg.bias else 1) + C_EIG, 8 * Q * Q),
                           {"N": 2, "b": 2}, hint)
            jac = Term("jacobian", 2 * 8 * Q * P, {"N": 1, "b": 1, "width": 1}, hint)
            curves = Term("curves", C_CURVE * 8 * (K + 1) * Q + 8 * Q * Q, {"iters": 1, "N": 1, "b": 1})
            probe += [work, kernels, jac, curves]
            phases = [[features], [jac, work], [jac, kernels], [curves, theil]]
        else:
            phases = [[theil]]
        if method == "lanczos":
            lanczos = Term("lanczos", int(C_LANCZOS * graph64) + 40 * 8 * Q,
                           {"T": 1, "N": 1, "d": 1} | ({} if angular else {"width": 1}))
            probe.append(lanczos)
            phases.append([features, lanczos])
        phases = [[constants, *phase] for phase in phases]

    return _total(cfg, values, training, probe, phases)


def _problem_terms(cfg: TrainConfig, N: int, b: int, d: int, s: int) -> list[Term]:
    """The problem's terms of the module docstring (M, H, the GD curve), the same for every learner."""
    R = N * d
    return [
        Term("problem M", 8 * (N * b * d + 3 * N * b * b) + (4 * N * b * d if s == 4 else 0), {"N": 1, "b": 1, "d": 1}),
        Term("problem GD curve", 8 * 2 * R * (cfg.T + 8), {"N": 1, "d": 1, "T": 1}),
        Term("problem H", (4 * 8 + (4 if s == 4 else 0)) * N * d * d if d < 2 * b else 0, {"N": 1, "d": 2}),
    ]


def _estimate_lstm(cfg: TrainConfig, probes: ProbeConfig | None) -> Estimate:
    """The LSTM's estimate (module docstring)."""
    N, b, d = problem_shape(cfg)
    H, ell, T, K = cfg.lstm_hidden, cfg.lstm_layers, cfg.T, cfg.iters
    values = {"N": N, "b": b, "d": d, "T": T, "iters": K, "lstm_hidden": H, "lstm_layers": ell}
    R, Q = N * d, N * b
    s = 4 if cfg.dtype == "float32" else 8
    P = lstm_parameters(cfg.lstm_variant, H, ell)
    tensors = 4 * ell + 2 + 2 * (2 if cfg.lstm_variant == "PA" else 1)
    w = C_LSTM * H * (ell + 1) + C_ROW
    rows, sizes = {"N": 1, "d": 1, "lstm_hidden": 1, "lstm_layers": 1}, {"lstm_hidden": 2, "lstm_layers": 1}
    training = _problem_terms(cfg, N, b, d, s) + [
        Term("model", 8 * P * (6 + (2 if cfg.optimizer == "adam" else 0)), sizes),
        Term("unroll", T * (C_STEP + s * R * w), {"T": 1} | rows),
        Term("backward", 2 * s * R * w + 4 * 8 * ell * R * H, rows),
        Term("records", (K + 1) * (C_RECORD + C_WEIGHT * tensors), {"iters": 1, "lstm_layers": 1}),
    ]
    probe, phases = [], [[]]
    if probes is not None:
        graph64 = T * (C_STEP + 8 * R * w)
        early, late = min(probes.early, K + 1), (K + 2) // 2
        constants = Term("constants", 2 * 8 * N * b * d, {"N": 1, "b": 1, "d": 1})
        theil = Term("contraction fits", C_THEIL * 8 * (late * late + early * early), {"iters": 2})
        probe += [constants, theil]
        if kernel_method(probes.ntk_method, Q, P) == "dense":
            hint = "use ntk_method=lanczos"
            jac = Term("jacobian", 2 * 8 * Q * P, {"N": 1, "b": 1} | sizes, hint)
            work = Term("jacobian work", graph64 + C_LSTM_JAC * 8 * Q * R * w,
                        {"N": 2, "b": 1, "d": 1, "T": 1} | sizes, hint)
            kernels = Term("kernels", _heaped(2 * tensors + C_EIG, 8 * Q * Q), {"N": 2, "b": 2}, hint)
            curves = Term("curves", C_CURVE * 8 * (K + 1) * Q + 8 * Q * Q, {"iters": 1, "N": 1, "b": 1})
            probe += [jac, work, kernels, curves]
            phases = [[jac, work], [jac, kernels], [curves, theil]]
        else:
            lanczos = Term("lanczos", C_LSTM_LANCZOS * graph64 + 40 * 8 * Q, {"T": 1} | rows)
            probe.append(lanczos)
            phases = [[lanczos], [theil]]
        phases = [[constants, *phase] for phase in phases]
    return _total(cfg, values, training, probe, phases)


def _total(cfg: TrainConfig, values: dict, training: list[Term], probe: list[Term], phases: list) -> Estimate:
    """The estimate from its terms: the fixed part plus the larger of one iteration and the largest probe phase."""
    train_bytes = int(sum(t.bytes for t in training))
    fixed = int(sum(t.bytes for t in training if t.name in FIXED))
    probe_bytes = int(max(sum(t.bytes for t in phase) for phase in phases))
    total = fixed + max(train_bytes - fixed, probe_bytes)
    terms = tuple(sorted(training + probe, key=lambda t: t.bytes, reverse=True))
    driver = _largest(cfg, terms[0].factors, values) if terms[0].factors else "width"
    return Estimate(train_bytes, probe_bytes, total, driver, terms)


# -- the limit ---------------------------------------------------------------------------------------------


def kernel_method(ntk_method: str, n_outputs: int, n_params: int | None = None, *, memory: float | None = None,
              explain: bool = False):
    """The kernel method ``ntk_method`` (``auto``, ``dense``, ``lanczos``) resolves to for Q = N·b = ``n_outputs`` outputs and P = ``n_params`` parameters (``explain``:
    the pair (method, reason), the reason one short line).

    ``auto`` forms K densely whenever the dense probe fits in half of ``memory`` bytes (default: the memory
    available now, :func:`available_memory`): it needs 8·(20·Q² + 2·Q·P)
    bytes, twenty Q×Q float64 arrays (K and K̃, their per-parameter blocks and symmetric parts, the
    eigenvectors and eigh's workspace, the kernels kept for the drift) and the Jacobians J and J̃ (Q×P each;
    not counted when P is not given). Otherwise Lanczos (λ_max, λ_min only). Where the memory cannot be read,
    ``auto`` keeps the fixed rule Q ≤ :data:`DENSE_MAX`. ``dense`` and ``lanczos`` are taken as asked."""
    Q = int(n_outputs)
    if ntk_method != "auto":
        return (ntk_method, f"{ntk_method}: asked for") if explain else ntk_method

    def available() -> float | None:
        found = available_memory()
        return None if found >= 2 ** 63 else float(found)  # 2^63: nothing could be read

    def size(x: float) -> str:
        return f"{x / 1e9:.3g} GB" if x >= 1e8 else f"{x / 1e6:.3g} MB"

    memory = available() if memory is None else float(memory)
    if memory is None:
        method = "dense" if Q <= DENSE_MAX else "lanczos"
        reason = (f"auto → {method}: N·b = {Q} {'≤' if method == 'dense' else '>'} {DENSE_MAX} (the available "
                  "memory could not be read)")
    else:
        need = 8.0 * (20.0 * Q * Q + 2.0 * Q * (n_params or 0))
        method = "dense" if need <= memory / 2 else "lanczos"
        what = "K, K̃" + (" and J, J̃" if n_params else "")
        reason = (f"auto → {method}: the dense {what} need {size(need)}, "
                  f"{'within' if method == 'dense' else 'more than'} half of the {size(memory)} available")
    return (method, reason) if explain else method


def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still allocate: the least of MemAvailable (``/proc/meminfo``; else the free physical
    pages from ``os.sysconf``), the cgroup's limit minus its usage, the address-space limit (RLIMIT_AS) minus the
    process's current virtual size, and, for ``device`` ``cuda`` (or ``auto`` with CUDA present), the GPU's free
    memory (the graph lives there; the problem is drawn on the host)."""
    found = []
    if device != "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                found.append(torch.cuda.mem_get_info()[0])
        except Exception:  # no usable CUDA: the host's memory is the limit
            pass
    try:
        found.append(_meminfo("MemAvailable", "/proc/meminfo"))
    except (OSError, KeyError, ValueError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
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
    cap, source = (available_memory(cfg.device), "the available memory") if limit is None else (limit, "max_memory")
    if est.total_bytes > cap:
        raise MemoryLimitError(est, cap, source)
    return est
