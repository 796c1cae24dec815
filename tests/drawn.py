"""Weights drawn for the property tests: every layer takes part in the derivatives."""

import numpy as np
import torch

from ntkcheck.models import init


def drawn_weights(widths, kind: str, e: float, seed: int) -> dict:
    """``random`` init, or the deterministic init (``deterministic-abs``: |e·Q|) with W_L moved off 0.

    W_L ~ N(0, 1)/e^{L−1} keeps φ of order 1 while making the inner layers' derivatives non-zero.
    """
    if kind == "random":
        return init.random(widths, seed)
    params = init.deterministic(widths, e, seed, absolute=kind == "deterministic-abs")
    L = len(widths) + 1
    rng = np.random.default_rng(seed)
    params[f"W{L}"] = torch.from_numpy(rng.standard_normal(params[f"W{L}"].shape) / e ** (L - 1))
    return params
