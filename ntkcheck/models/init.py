"""Initial weights of the step-size network φ_W, as a dict ``{"W1": …, "WL": …, "b1": …}``.

``deterministic`` (the paper's: e·Q, W_L = 0, so the untrained model is its classical method), ``random`` (PyTorch's
``nn.Linear`` default) and the standard random schemes :data:`RANDOM`: ``gaussian`` N(0, 1/fan_in), ``xavier``
(Glorot & Bengio 2010, Var = 2/(fan_in + fan_out)) and ``he`` (He et al. 2015, Var = 2/fan_in), each applied to every
layer, W_L included (the untrained model is then not its classical method).

Weights are stored (in, out) and applied as ``G @ W``. All draws are float64 from a numpy stream seeded
by ``SeedSequence([seed, 2])``, so the same seed gives the same weights on every device and dtype.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ntkcheck.results.io import read_arrays

INIT_STREAM = 2  # problems use streams 0 (train) and 1 (test)


def layer_shapes(widths: tuple[int, ...]) -> list[tuple[int, int]]:
    """(in, out) of layers 1..L for hidden widths n_1..n_{L−1}: 2 → n_1 → … → n_{L−1} → 1."""
    dims = (2, *widths, 1)
    return list(zip(dims[:-1], dims[1:]))


def scaled_orthogonal(shape: tuple[int, int], e: float, rng: np.random.Generator) -> np.ndarray:
    """e·Q with Q from the QR decomposition of a Gaussian matrix, signs fixed by diag(R).

    For ``in ≥ out`` Q has orthonormal columns, otherwise orthonormal rows, so every singular value
    of the result equals e (as torch.nn.init.orthogonal_ followed by a scale, the paper's code).
    """
    rows, cols = shape
    A = rng.standard_normal((max(rows, cols), min(rows, cols)))
    Q, R = np.linalg.qr(A)
    Q = Q * np.where(np.diag(R) >= 0, 1.0, -1.0)
    return e * (Q if rows >= cols else Q.T)


def deterministic(widths, e: float, seed: int, bias: bool = False, absolute: bool = False) -> dict:
    """The paper's initialisation: W_ℓ = e·Q_ℓ for ℓ < L (|e·Q_ℓ| if ``absolute``), W_L = 0, biases 0.

    With W_L = 0 every step size is P = 2σ(0) = 1, so the untrained model is GD with step 1/β_i.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, INIT_STREAM]))
    shapes = layer_shapes(tuple(widths))
    params = {}
    for ell, shape in enumerate(shapes[:-1], start=1):
        W = scaled_orthogonal(shape, e, rng)
        params[f"W{ell}"] = np.abs(W) if absolute else W
    params[f"W{len(shapes)}"] = np.zeros(shapes[-1])
    if bias:
        params.update({f"b{ell}": np.zeros(out) for ell, (_, out) in enumerate(shapes, start=1)})
    return {k: torch.from_numpy(v) for k, v in params.items()}


def random(widths, seed: int, bias: bool = False) -> dict:
    """A plain random initialisation for ablations: every weight and bias ~ U(−1/√fan_in, 1/√fan_in).

    This is PyTorch's default for ``nn.Linear``; the last layer is not zero, so the untrained model is
    not GD.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, INIT_STREAM]))
    params = {}
    for ell, (fan_in, out) in enumerate(layer_shapes(tuple(widths)), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        params[f"W{ell}"] = rng.uniform(-bound, bound, (fan_in, out))
        if bias:
            params[f"b{ell}"] = rng.uniform(-bound, bound, out)
    return {k: torch.from_numpy(v) for k, v in params.items()}


def _zero_mean(widths, seed: int, bias: bool, draw) -> dict:
    """Every W_ℓ = draw(rng, fan_in, fan_out) from the init stream, layer by layer; biases 0."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, INIT_STREAM]))
    params = {}
    for ell, (fan_in, out) in enumerate(layer_shapes(tuple(widths)), start=1):
        params[f"W{ell}"] = draw(rng, fan_in, out)
        if bias:
            params[f"b{ell}"] = np.zeros(out)
    return {k: torch.from_numpy(v) for k, v in params.items()}


def gaussian(widths, seed: int, bias: bool = False) -> dict:
    """W_ℓ ~ N(0, 1/fan_in) entrywise, biases 0: the standard Gaussian of the NTK parameterisation (Jacot et al.
    2018: N(0, 1) weights times 1/√fan_in in the forward pass) written in the standard one, so that every
    pre-activation has the variance of its input layer's mean square at any width. Std 1/√fan_in."""
    return _zero_mean(widths, seed, bias, lambda rng, fan_in, out: rng.normal(0.0, 1.0 / np.sqrt(fan_in),
                                                                              (fan_in, out)))


def xavier(widths, seed: int, bias: bool = False) -> dict:
    """Glorot & Bengio (2010), eq. 16, the "normalized initialization": W_ℓ ~ U(−a, a) with a = √(6/(fan_in +
    fan_out)), so Var = a²/3 = 2/(fan_in + fan_out); biases 0."""
    def draw(rng, fan_in, out):
        a = np.sqrt(6.0 / (fan_in + out))
        return rng.uniform(-a, a, (fan_in, out))

    return _zero_mean(widths, seed, bias, draw)


def he(widths, seed: int, bias: bool = False) -> dict:
    """He et al. (2015), eq. 10: W_ℓ ~ N(0, 2/fan_in) (std √(2/fan_in), the variance that keeps a ReLU network's
    forward signal from shrinking), biases 0."""
    return _zero_mean(widths, seed, bias, lambda rng, fan_in, out: rng.normal(0.0, np.sqrt(2.0 / fan_in),
                                                                              (fan_in, out)))


RANDOM = {"gaussian": gaussian, "xavier": xavier, "he": he}  # the standard random schemes, by name


def load(path: str | Path, widths, bias: bool = False) -> dict:
    """Read user-given initial weights (keys W1..WL, and b1..bL with bias) from ``.npz`` or ``.pt``.

    Every weight must have its layer's shape and be real and finite; a layer array the model does not have (a W4
    for L = 3, biases without ``bias``) is refused, not ignored. Other names are ignored."""
    arrays = read_arrays(path)
    shapes = layer_shapes(tuple(widths))
    params = {}
    for ell, (fan_in, out) in enumerate(shapes, start=1):
        expected = {f"W{ell}": (fan_in, out), **({f"b{ell}": (out,)} if bias else {})}
        for name, shape in expected.items():
            if name not in arrays:
                raise ValueError(f"{path} has no array {name}; expected {name} of shape {shape}")
            if arrays[name].is_complex():
                raise ValueError(f"{path}: {name} must be real (got {str(arrays[name].dtype)[6:]} values; their "
                                 "imaginary part would be lost)")
            value = arrays[name].to(torch.float64)
            if tuple(value.shape) != shape:
                raise ValueError(f"{path}: {name} must have shape {shape} (got {tuple(value.shape)})")
            if not torch.isfinite(value).all():
                raise ValueError(f"{path}: {name} must be finite")
            params[name] = value
    layers = (k for k in arrays if re.fullmatch(r"[Wb][0-9]+", k) and k not in params)
    extra = sorted(layers, key=lambda k: (k[0], int(k[1:])))
    if extra:
        has = f"W1..W{len(shapes)}" + (f" and b1..b{len(shapes)}" if bias else ", no biases")
        raise ValueError(f"{path} has {', '.join(extra)}, which the model does not have (L = {len(shapes)}: {has}); "
                         "a file for another model would be used only in part")
    return params
