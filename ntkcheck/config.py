"""Run configuration: every knob of a Math-L2O training run, validated at the boundary.

Symbols follow DESIGN.md §1: N instances, b×d matrices M_i, width n of layer L−1, L layers,
expansion coefficient e, horizon T, meta learning rate η (``lr``), K training iterations (``iters``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

INITS = ("deterministic", "deterministic-abs", "random")
LOSSES = ("last", "mean", "weighted")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
WIDE_LAYERS = ("auto", "dense", "angular")
ON_DIVERGENCE = ("stop", "skip")


class ConfigError(ValueError):
    """A parameter has a value that is not allowed; ``param`` names it as the user typed it."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class TrainConfig:
    """One Math-L2O training run. Defaults: the paper's small-scale configuration (Fig. 5)."""

    N: int = 32
    d: int = 32
    b: int = 25
    width: int = 1024
    L: int = 3
    T: int = 20
    e: float = 50.0
    lr: float = 1e-7
    iters: int = 300
    optimizer: str = "sgd"
    loss: str = "last"
    init: str = "deterministic"
    bias: bool = False
    detach: bool = True
    wide_layer: str = "auto"
    step_scale: float = 1.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "float64"
    on_divergence: str = "stop"
    checkpoint_every: int = 25
    saturation_tol: float = 1e-2
    problem_file: str | None = None
    init_file: str | None = None

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{name}", f"must be an integer ≥ {minimum} (got {value!r})")


def _positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"--{name}", f"must be a number (got {value!r})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--{name}", f"must be a finite number > 0 (got {value!r})")


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name}", f"must be one of {', '.join(allowed)} (got {value!r})")


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first parameter whose value is not allowed."""
    for name in ("N", "d", "b", "width", "T", "iters", "checkpoint_every"):
        _positive_int(name, getattr(cfg, name))
    _positive_int("L", cfg.L, minimum=2)
    if cfg.b > cfg.d:
        raise ConfigError("--b", f"must satisfy 0 < b ≤ d = {cfg.d} (got {cfg.b}); M_i is b×d with full row rank")
    for name in ("e", "lr", "step_scale", "saturation_tol"):
        _positive_float(name.replace("_", "-"), getattr(cfg, name))
    if cfg.saturation_tol >= 1:
        raise ConfigError("--saturation-tol", f"must lie in (0, 1) (got {cfg.saturation_tol})")
    if cfg.step_scale >= 2:
        raise ConfigError("--step-scale", f"must lie in (0, 2) for GD to be stable (got {cfg.step_scale})")
    _choice("init", cfg.init, INITS)
    _choice("loss", cfg.loss, LOSSES)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("device", cfg.device, DEVICES)
    _choice("dtype", cfg.dtype, DTYPES)
    _choice("wide-layer", cfg.wide_layer, WIDE_LAYERS)
    if cfg.wide_layer == "angular" and cfg.bias:
        raise ConfigError("--wide-layer", "angular needs a bias-free wide layer; use auto or dense with --bias")
    _choice("on-divergence", cfg.on_divergence, ON_DIVERGENCE)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError("--seed", f"must be an integer ≥ 0 (got {cfg.seed!r})")


def hidden_widths(width: int, L: int) -> tuple[int, ...]:
    """Widths of layers 1..L−1: ``2, …, 2, n``. The wide layer L−1 always sees a 2-D input.

    L = 3 gives the paper's 2 → 2 → n → 1.
    """
    return (2,) * (L - 2) + (width,)
