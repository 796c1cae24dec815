"""Configurations: every knob of a Math-L2O run (:class:`TrainConfig`) and of its probes (:class:`ProbeConfig`),
validated at the boundary, and the one table of named presets.

Symbols (docs/ARCHITECTURE.md): N instances, b×d matrices M_i, width n of layer L−1 (``width``), L layers,
expansion coefficient e, horizon T, meta learning rate η (``lr``), K training iterations (``iters``).

Errors name the config field as it is spelled here (``width``, ``step_scale``); the command line maps a field
to its flag (``--width``, ``--step-scale``).

``draw`` says how the training instances and the initial weights are drawn: ``"ntkcheck"`` (the default) from
ntkcheck's seeded numpy streams (:mod:`ntkcheck.problems.qp`, :mod:`ntkcheck.models.init`); ``"paper"``, a compatibility
mode, with torch's generator in the order, shapes and dtypes of the authors' released code
(:mod:`ntkcheck.build.paper_draw`), so that their numbers can be rerun exactly. With ``draw="paper"``, ``seed`` is their
``--seed`` (118 in all their runs and in the ``-official`` presets) and the instances come from seed + 777, as in
their code.

``model`` picks the learner: ``"mlp"`` (the default), Math-L2O's step-size network, the model the theorem is about;
``"lstm"``, Liu et al.'s coordinate-wise LSTM (:class:`ntkcheck.models.lstm.MathL2OLSTM`, variant ``lstm_variant``,
``lstm_hidden`` units in ``lstm_layers`` layers), with PyTorch's default initialisation drawn from the weights' seed
(``init_seed``, default ``seed``) and h_0, c_0 drawn from the same seed. The MLP's settings (``width``, ``L``, ``e``)
do not describe the LSTM and are not read for it; settings that would change it and cannot (``wide_layer`` other than
auto, ``init`` other than deterministic, ``bias``, ``init_file``, ``draw="paper"``) are refused.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass

INITS = ("deterministic", "deterministic-abs", "random", "gaussian", "xavier", "he")
PROBLEMS = ("qp", "lasso", "logistic")  # the objective family (ntkcheck.problems): the paper's least squares, or beyond
UPDATES = ("gd", "nag", "prox", "fista")  # the backbone the learned step drives (ntkcheck.models.updates)
PENALTIES = ("l1", "l2")  # logistic regression's regulariser
LAM_SCALES = ("relative", "absolute")  # λ as given, or relative to λ_max,i (ntkcheck.problems.lasso)
REGULARISED = ("lasso", "logistic")
LOSSES = ("last", "mean", "weighted")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
WIDE_LAYERS = ("auto", "dense", "angular")
ON_DIVERGENCE = ("stop", "skip")
NTK_METHODS = ("auto", "dense", "lanczos")
JACOBIANS = ("auto", "func", "structured")
ALPHA_STEPS = ("T", "all")
LINEARISED = ("auto", "on", "off")  # verify's linearised training: auto skips it where the eigen-projection is it
DRAWS = ("ntkcheck", "paper")
MODELS = ("mlp", "lstm")  # the learner: Math-L2O's step-size MLP, or Liu et al.'s coordinate-wise LSTM
LSTM_VARIANTS = ("P", "PA")  # the LSTM's heads: step multipliers P, and the accelerator A (ntkcheck.models.lstm)
FORMATS = ("png", "pdf", "svg")  # figure files
SEED_MAX = 2**63 - 1  # seeds are stored as int64 (metrics, cells.parquet)
DENSE_MAX = 4000  # ``ntk_method="auto"`` where the available memory cannot be read: dense up to N·b = 4000 outputs

# The named configurations: the paper's small scale (Fig. 5) and its full scale (Fig. 4a). Every default of
# TrainConfig and ProbeConfig is the "small" entry's. The "-official" entries are the same two configurations in
# the setting of the authors' official code (NetX-lab/MathL2OProof-Official, main_train_anlys.py): its draws
# (draw="paper") with its default --seed 118 (no run script sets another), float32, the step 0.9999/β_i, and an
# iteration with a NaN/Inf loss skipped.
PRESETS: dict[str, dict] = {
    "small": {"N": 32, "d": 32, "b": 25, "width": 1024, "L": 3, "T": 20, "e": 50.0, "lr": 1e-7, "iters": 5000,
              "ntk_every": 500},
    "paper": {"N": 10, "d": 512, "b": 400, "width": 5120, "L": 3, "T": 100, "e": 100.0, "lr": 1e-7, "iters": 5000,
              "ntk_every": 1000},
}
_OFFICIAL = {"draw": "paper", "seed": 118, "dtype": "float32", "step_scale": 0.9999, "on_divergence": "skip"}
PRESETS |= {"small-official": PRESETS["small"] | _OFFICIAL, "paper-official": PRESETS["paper"] | _OFFICIAL}
# The synthetic settings of Math-L2O's own paper (Liu et al., ICML 2023; its code MS4L2O): LASSO with M_i of 250×500
# and a 50-sparse x*_i, λ = 0.1; logistic regression + λ‖x‖₁ on 1000 samples of 50 features with a 20-sparse x*_i,
# λ = 0.1. Their sizes, with N = 4 fixed instances, width 1024 and Adam so that they train in minutes on a CPU. The
# logistic preset unrolls T = 5 steps: at T = 20 proximal gradient alone is within 2e-7 of F* on these well-conditioned
# instances (unit-norm samples), and there is nothing left to learn.
_MS4L2O = {"N": 4, "width": 1024, "L": 3, "T": 20, "e": 50.0, "lr": 1e-3, "optimizer": "adam", "iters": 500,
           "ntk_every": 100, "update": "prox", "lam": 0.1, "lam_scale": "absolute"}
PRESETS |= {"lasso-ms4l2o": _MS4L2O | {"problem": "lasso", "b": 250, "d": 500, "sparsity": 0.1},
            "logistic-ms4l2o": _MS4L2O | {"problem": "logistic", "b": 1000, "d": 50, "sparsity": 0.4, "T": 5}}
_SMALL = PRESETS["small"]


class ConfigError(ValueError):
    """A value that is not allowed; ``field`` names the parameter as the library spells it (``width``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class TrainConfig:
    """One Math-L2O training run. Defaults: the paper's small-scale configuration (``PRESETS["small"]``)."""

    N: int = _SMALL["N"]
    d: int = _SMALL["d"]
    b: int = _SMALL["b"]
    width: int = _SMALL["width"]
    L: int = _SMALL["L"]
    T: int = _SMALL["T"]
    e: float = _SMALL["e"]
    lr: float = _SMALL["lr"]
    iters: int = _SMALL["iters"]
    optimizer: str = "sgd"
    loss: str = "last"
    init: str = "deterministic"
    bias: bool = False
    detach: bool = True
    wide_layer: str = "auto"
    step_scale: float = 1.0
    seed: int = 0
    init_seed: int | None = None  # the initial weights' seed; None: ``seed`` (data and weights drawn together)
    device: str = "auto"
    dtype: str = "float64"
    on_divergence: str = "stop"
    checkpoint_every: int = 25
    saturation_tol: float = 1e-2
    problem_file: str | None = None
    init_file: str | None = None
    draw: str = "ntkcheck"  # "paper": the authors' torch draws of the instances and W_0 (a compatibility mode)
    model: str = "mlp"  # "lstm": Liu et al.'s coordinate-wise LSTM (module docstring)
    lstm_variant: str = "P"
    lstm_hidden: int = 20  # Liu et al. and the NeurIPS baseline: 20 units, 2 layers (MathL2OLSTM's defaults)
    lstm_layers: int = 2
    problem: str = "qp"  # the objective family (module docstring)
    update: str = "gd"  # the backbone: gd (the paper's), nag, prox, fista
    lam: float | None = None  # λ of lasso/logistic (None: 0.1); relative to λ_max,i unless lam_scale="absolute"
    lam_scale: str = "relative"
    sparsity: float | None = None  # the share of non-zeros in the planted x*_i of lasso/logistic (None: 0.1)
    penalty: str | None = None  # logistic's regulariser: l1 (None) or l2

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in values.items() if k in _fields(cls)})


@dataclass(frozen=True)
class ProbeConfig:
    """What ``verify`` measures along training. ``ntk_every`` = 0 probes only at k = 0 and k = K.

    ``ntk_method``: ``dense`` (K formed: spectrum, rank, drift, plateau), ``lanczos`` (λ_max, λ_min only) or
    ``auto`` (dense whenever the dense kernels fit in half the available memory: :func:`ntkcheck.resources.kernel_method`); ``jacobian``: the Jacobian behind the dense kernel;
    ``alpha_steps="all"`` adds α over every step t at k = 0; ``early``: the window [0, early) of the early
    contraction fit; ``linearised``: train the first-order Taylor model at W_0 beside the run (``on``), not
    (``off``), or ``auto``: on, except where the eigen-projection rows already are linearised training exactly
    (:func:`ntkcheck.apps.verify.linearised_skip`), since it costs about three times the run's own training."""

    ntk_every: int = _SMALL["ntk_every"]
    ntk_method: str = "auto"
    jacobian: str = "auto"
    alpha_steps: str = "T"
    early: int = 50
    linearised: str = "auto"

    def __post_init__(self):
        _integer("ntk_every", self.ntk_every, minimum=0)
        _choice("ntk_method", self.ntk_method, NTK_METHODS)
        _choice("jacobian", self.jacobian, JACOBIANS)
        _choice("alpha_steps", self.alpha_steps, ALPHA_STEPS)
        _integer("early", self.early, minimum=3)
        _choice("linearised", self.linearised, LINEARISED)

    def steps(self, iters: int) -> list[int]:
        """k = 0, every, 2·every, …, and K."""
        if self.ntk_every == 0:
            return sorted({0, iters})
        return sorted(set(range(0, iters + 1, self.ntk_every)) | {iters})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset(name: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of ``PRESETS[name]`` with ``overrides`` (any TrainConfig field) applied."""
    _choice("preset", name, tuple(PRESETS))
    return TrainConfig(**_pick(TrainConfig, PRESETS[name] | overrides))


def probe_preset(name: str, **overrides) -> ProbeConfig:
    """The :class:`ProbeConfig` of ``PRESETS[name]`` (its probe interval) with ``overrides`` applied."""
    _choice("preset", name, tuple(PRESETS))
    return ProbeConfig(**_pick(ProbeConfig, PRESETS[name] | overrides))


FLAG_NAMES = {"early": "--fit-early"}  # config fields whose command-line flag is not --<field with - for _>


def flag(field: str) -> str:
    """The command-line flag of a config field: ``step_scale`` → ``--step-scale``."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def command_line(command: str, *configs, **options) -> str:
    """The ``ntkcheck <command>`` line that rebuilds ``configs`` (TrainConfig, ProbeConfig): a flag for each field
    that differs from its default (the defaults are the small preset's, the command line's default), then
    ``options`` (field → value; None is left out). Shell-quoted, so it can be pasted."""
    words = ["ntkcheck", command]
    pairs = [(f.name, getattr(c, f.name), f.default) for c in configs for f in dataclasses.fields(c)]
    for name, value, default in pairs + [(k, v, None) for k, v in options.items()]:
        if value is None or value == default:
            continue
        if isinstance(value, bool):
            words.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            words += [flag(name), str(value)]
    return shlex.join(words)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _pick(cls, values: dict) -> dict:
    unknown = set(values) - _fields(TrainConfig) - _fields(ProbeConfig)
    if unknown:
        raise ConfigError(sorted(unknown)[0], "is not a configuration field")
    return {k: v for k, v in values.items() if k in _fields(cls)}


# -- validation ---------------------------------------------------------------------------------------------


def _integer(name: str, value, minimum: int = 1, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer ≥ {minimum} (got {value!r})")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be an integer ≤ {maximum} (got {value!r})")


def _positive_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be a number (got {value!r})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(name, f"must be a finite number > 0 (got {value!r})")


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)} (got {value!r})")


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first field whose value is not allowed."""
    for name in ("N", "d", "b", "width", "T", "iters", "checkpoint_every"):
        _integer(name, getattr(cfg, name))
    _integer("L", cfg.L, minimum=2)
    if cfg.b > cfg.d and cfg.problem != "logistic":  # logistic: b samples of d features, any b
        raise ConfigError("b", f"must satisfy 0 < b ≤ d = {cfg.d} (got {cfg.b}); M_i is b×d with full row rank")
    for name in ("e", "lr", "step_scale", "saturation_tol"):
        _positive_float(name, getattr(cfg, name))
    if cfg.saturation_tol >= 1:
        raise ConfigError("saturation_tol", f"must lie in (0, 1) (got {cfg.saturation_tol})")
    if cfg.step_scale >= 2:
        raise ConfigError("step_scale", f"must lie in (0, 2) for GD to be stable (got {cfg.step_scale})")
    _choice("init", cfg.init, INITS)
    _choice("loss", cfg.loss, LOSSES)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("device", cfg.device, DEVICES)
    _choice("dtype", cfg.dtype, DTYPES)
    _choice("wide_layer", cfg.wide_layer, WIDE_LAYERS)
    if cfg.wide_layer == "angular" and cfg.bias:
        raise ConfigError("wide_layer", "angular needs a bias-free wide layer; use auto or dense with bias")
    _choice("on_divergence", cfg.on_divergence, ON_DIVERGENCE)
    _integer("seed", cfg.seed, minimum=0, maximum=SEED_MAX)
    if cfg.init_seed is not None:
        _integer("init_seed", cfg.init_seed, minimum=0, maximum=SEED_MAX)
    _choice("draw", cfg.draw, DRAWS)
    _choice("model", cfg.model, MODELS)
    _choice("lstm_variant", cfg.lstm_variant, LSTM_VARIANTS)
    _integer("lstm_hidden", cfg.lstm_hidden)
    _integer("lstm_layers", cfg.lstm_layers)
    _choice("problem", cfg.problem, PROBLEMS)
    _choice("update", cfg.update, UPDATES)
    _choice("lam_scale", cfg.lam_scale, LAM_SCALES)
    _family(cfg)
    if cfg.model == "lstm":
        _lstm_model(cfg)
    if cfg.draw == "paper":
        _paper_model(cfg)
        if cfg.problem_file:
            raise ConfigError("draw", "paper draws the authors' instances, which a problem_file would replace; give "
                                      "one of them")


def _family(cfg: TrainConfig) -> None:
    """The objective family's own settings: λ, its scale, the sparsity and the penalty belong to lasso/logistic (the
    penalty to logistic), a prox backbone needs a nonsmooth part, and only the QP can be read from a problem file or
    drawn as the paper's."""
    if cfg.lam is not None:
        _positive_float("lam", cfg.lam)
    if cfg.sparsity is not None:
        _positive_float("sparsity", cfg.sparsity)
        if cfg.sparsity > 1:
            raise ConfigError("sparsity", f"is the share of non-zeros in x*: it must lie in (0, 1] (got {cfg.sparsity})")
    if cfg.penalty is not None:
        _choice("penalty", cfg.penalty, PENALTIES)
    if cfg.problem not in REGULARISED:
        for name, value in (("lam", cfg.lam), ("sparsity", cfg.sparsity), ("lam_scale", cfg.lam_scale != "relative"
                                                                          or None)):
            if value is not None:
                raise ConfigError(name, f"belongs to problem lasso or logistic; the {cfg.problem} has no regulariser")
    if cfg.penalty is not None and cfg.problem != "logistic":
        raise ConfigError("penalty", f"belongs to problem logistic (got problem {cfg.problem})")
    smooth = cfg.problem == "qp" or (cfg.problem == "logistic" and cfg.penalty == "l2")
    if cfg.update in ("prox", "fista") and smooth:
        twin = {"prox": "gd", "fista": "nag"}[cfg.update]
        raise ConfigError("update", f"{cfg.update} needs an objective with a nonsmooth part; on this one its prox is the "
                                    f"identity and it is {twin}: use update {twin}")
    if cfg.problem != "qp":
        for name, value in (("problem_file", cfg.problem_file), ("draw", cfg.draw == "paper" or None)):
            if value:
                raise ConfigError(name, f"applies to problem qp only (got problem {cfg.problem})")


def _lstm_model(cfg: TrainConfig) -> None:
    """``model="lstm"`` has its own architecture and initialisation: refuse the MLP's settings that would change
    them (the MLP's width, L and e are not read for it)."""
    refused = (("wide_layer", cfg.wide_layer != "auto", f"{cfg.wide_layer} is the MLP's wide layer"),
               ("init", cfg.init != "deterministic", f"{cfg.init} is an initialisation of the MLP"),
               ("bias", cfg.bias, "the LSTM's biases are part of its architecture"),
               ("init_file", cfg.init_file is not None, "holds the MLP's weights W1..WL"),
               ("draw", cfg.draw == "paper", "paper draws the authors' MLP"),
               ("update", cfg.update != "gd", "the LSTM's heads are its update (lstm_variant P or PA)"),
               ("problem", cfg.problem != "qp", "the LSTM learner here has no prox step"))
    for name, wrong, why in refused:
        if wrong:
            raise ConfigError(name, f"does not apply to model lstm: {why} (leave it unset, or use model mlp)")


def _paper_model(cfg: TrainConfig) -> None:
    """``draw="paper"`` draws the authors' network: 2 → 2 → n → 1, no biases, the deterministic initialisation."""
    differs = [f"{name} = {value!r}" for name, value, theirs in
               (("L", cfg.L, 3), ("bias", cfg.bias, False), ("init", cfg.init, "deterministic")) if value != theirs]
    if differs:
        raise ConfigError("draw", f"paper draws the authors' network (L = 3, no bias, init deterministic); got "
                                  f"{', '.join(differs)}: use those values or draw ntkcheck")


def weights_seed(cfg: TrainConfig) -> int:
    """The seed of the initial weights' draw: ``init_seed`` when set, else ``seed``."""
    return cfg.seed if cfg.init_seed is None else cfg.init_seed


def hidden_widths(width: int, L: int) -> tuple[int, ...]:
    """Widths of layers 1..L−1: ``2, …, 2, n``. The wide layer L−1 always sees a 2-D input.

    L = 3 gives the paper's 2 → 2 → n → 1.
    """
    return (2,) * (L - 2) + (width,)
