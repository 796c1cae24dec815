"""The authors' draws of the training instances and of W_0: ``draw="paper"``, a compatibility mode.

ntkcheck draws from its own seeded numpy streams (:mod:`ntkcheck.problems.qp`, :mod:`ntkcheck.models.init`). This module
instead repeats the torch draws of the authors' released code, NetX-lab/MathL2OProof-Official (commit 60a4ea4),
in the same order, shapes and dtypes, so that their numbers can be rerun exactly. Their code seeds torch's global
generator; here each seeding is a fresh local ``torch.Generator`` on the CPU given the same seed and consumed in
the same order (a freshly seeded CPU generator and ``torch.manual_seed`` start the same Mersenne-Twister state), so
nothing global is touched.

Facts of their code (file and function):

1. ``main_train_anlys.py``: everything is float32 (``opts.dtype``); ``torch.manual_seed(--seed)`` is called once,
   with ``--seed`` 118 by default (``config_parser.py``; no run script under ``scripts/`` passes ``--seed``). The
   calls ``random.seed(seed + 7)`` and ``np.random.seed(seed + 42)`` do not touch torch, and the one branch that
   would draw in between (``--identical-dict``) is off in the QP runs. So the model, built next on the CPU, is the
   first consumer of the seeded generator.
2. ``optimizers/coord_math_dnn.py``, ``CoordMathDNN.__init__``: the layers are built in the order
   ``NonSingularLinear(2, 2, e)`` (``dnn``), ``NonSingularLinear(2, H, e)`` (``linear``), ``SingularLinear(H, 1)``
   (``linear_p``), with H = ``--lstm-hidden-size`` and no biases. That is ntkcheck's L = 3 network 2 → 2 → n → 1.
3. ``optimizers/non_singular.py``: a layer's weight is a float32 tensor of shape (in, out), applied ``x @ W`` —
   ntkcheck's own layout (:mod:`ntkcheck.models.init`), so nothing is transposed. ``init_non_singular_weights`` runs
   ``kaiming_uniform_`` (in·out uniform draws; the values are overwritten, only the generator advances), then
   ``orthogonal_`` (an (in, out) Gaussian draw; when in < out it is transposed before its QR; Q times the signs of
   diag R, transposed back), then multiplies by e (``--e``, an integer there). A 2×2 weight is thus e times an
   orthogonal matrix, the 2×n one has orthonormal rows times e (W Wᵀ = e²·I₂). ``SingularLinear`` is all zeros,
   no draw.
4. ``optimizees/qp.py``, ``QP.__init__`` with an optimizee seed s: under ``if seed:`` (s = 0 would mean "no
   seed") it saves the global generator's state, seeds s + 1 and draws M ~ N(0, 1) of shape (N, b, d) (their
   ``W``, (batch, output_dim, input_dim)), divides every column by its ℓ2 norm (the sum runs over the b rows);
   seeds s + 2 and draws x* ~ N(0, I_d) of shape (N, d); seeds s + 3 and, in ``initialize``, s again, drawing
   nothing (the sparsity code is commented out, X_0 = 0); sets Y = M x* in float32; and restores the saved state.
   The data therefore never move the model's stream.
5. ``main_train_anlys.py``, training loop: every iteration rebuilds the training set with s = ``--seed`` + 777
   (the ``* (i+1)`` is commented out), one fixed set of N = ``--train-batch-size`` instances; the test loop uses
   s = ``--seed`` + 7777·(i+1) for test batch i, and ``configs/2_qp_testing.yaml`` has one batch of 32.
6. ``CoordMathDNN.reset_state`` and ``QP.grad_lipschitz``: the base step is 0.9999/L_i with L_i = ‖M_i‖₂², i.e.
   ``step_scale`` 0.9999 (the ``*-official`` presets of :data:`ntkcheck.config.PRESETS`).

Where bits may still differ: their column normalisation and Y = M x* run on their device (CUDA in their scripts)
and here on the CPU, in float32 both; a different summation order there can change the last bit. The QR of step 3
runs on the CPU in both, through the LAPACK of the installed torch.

The numbers are returned in float64 (exactly the float32 values), like ntkcheck's own draws; a float32 run casts
them back without loss.
"""

from __future__ import annotations

import torch

from ntkcheck.models import init as inits
from ntkcheck.problems import qp as problems
from ntkcheck.config import TrainConfig, hidden_widths, weights_seed

TRAIN_OFFSET = 777  # the training set's optimizee seed: --seed + 777
TEST_OFFSET = 7777  # test batch i: --seed + 7777·(i + 1)
TEST_SIZE = 32  # one test batch of 32 instances (configs/2_qp_testing.yaml)


def _generator(seed: int) -> torch.Generator:
    """A CPU generator in the state ``torch.manual_seed(seed)`` gives the global one."""
    return torch.Generator(device="cpu").manual_seed(seed)


def _qp(N: int, d: int, b: int, s: int) -> problems.Problem:
    """The instances ``QP.__init__`` draws for optimizee seed s > 0 (fact 4), in float32, returned in float64."""
    M = torch.randn(N, b, d, dtype=torch.float32, generator=_generator(s + 1))
    M = M / M.pow(2).sum(dim=1, keepdim=True).sqrt()  # unit-norm columns
    x_star = torch.randn(N, d, dtype=torch.float32, generator=_generator(s + 2))
    Y = (M @ x_star[..., None])[..., 0]
    return problems.from_tensors(M.double(), Y.double(), x_star.double())


def problem(cfg: TrainConfig, split: str = "train") -> problems.Problem:
    """Their training set (``cfg.N`` instances of seed ``cfg.seed`` + 777) or, with ``split="test"``, their first
    test batch (32 instances of seed ``cfg.seed`` + 7777), on the CPU in float64 holding float32 values."""
    if split == "train":
        return _qp(cfg.N, cfg.d, cfg.b, cfg.seed + TRAIN_OFFSET)
    if split == "test":
        return _qp(TEST_SIZE, cfg.d, cfg.b, cfg.seed + TEST_OFFSET)
    raise ValueError(f"split must be one of train, test (got {split!r})")


def _orthogonal(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """What ``torch.nn.init.orthogonal_`` writes into an (in, out) float32 tensor (fact 3): a Gaussian of that shape,
    transposed when in < out, its QR with Q's columns times the signs of diag R, transposed back."""
    A = torch.randn(shape, dtype=torch.float32, generator=generator)
    wide = shape[0] < shape[1]
    Q, R = torch.linalg.qr(A.T if wide else A)
    Q = Q * R.diagonal().sign()
    return Q.T if wide else Q


def weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Their W_0 for seed ``init_seed`` (default ``seed``), as ntkcheck's dict W1..WL of (in, out) float64 tensors.

    One generator seeded like their global one, consumed layer by layer (facts 1–3): for each inner layer the
    Kaiming-uniform draw, which only advances it (its values are overwritten), then the orthogonal draw, times e in
    float32; W_L = 0."""
    generator = _generator(weights_seed(cfg))
    shapes = inits.layer_shapes(hidden_widths(cfg.width, cfg.L))
    params = {}
    for ell, shape in enumerate(shapes[:-1], start=1):
        torch.empty(shape, dtype=torch.float32).uniform_(generator=generator)  # one draw per entry, discarded
        params[f"W{ell}"] = (_orthogonal(shape, generator) * cfg.e).double()
    params[f"W{len(shapes)}"] = torch.zeros(shapes[-1], dtype=torch.float64)
    return params
