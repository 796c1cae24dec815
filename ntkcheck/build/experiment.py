"""From a configuration to the objects a run works on, built once and handed on.

:func:`setup` resolves the device and dtype, loads or draws the training instances (:func:`make_problem`),
builds the initialised model (:func:`build_model`), and returns them as an :class:`Experiment`. ``train``,
``verify`` and the probes take that object (or the problem and model a caller built) instead of re-deriving
them from the config. With ``problem_file`` the config's N, d and b are the file's. ``cfg.model`` picks the learner:
Math-L2O's MLP (:class:`~ntkcheck.models.math_l2o.MathL2O`) or Liu et al.'s LSTM
(:class:`~ntkcheck.models.lstm.MathL2OLSTM`), both :class:`~ntkcheck.models.base.Learner` (the protocol).
"""

from __future__ import annotations

import copy

from dataclasses import dataclass

import torch

from ntkcheck.build import paper_draw
from ntkcheck.models import init as inits
from ntkcheck.problems import lasso, logistic
from ntkcheck.problems import qp as problems
from ntkcheck.config import ConfigError, TrainConfig, hidden_widths, weights_seed
from ntkcheck.models.base import Learner
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.models.math_l2o import build


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error naming ``device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def make_problem(cfg: TrainConfig) -> problems.Problem:
    """The training set (CPU, float64): the user's ``problem_file`` when given, else the seeded QP family
    (:func:`ntkcheck.problems.qp.generate` with ``cfg.seed``, split ``"train"``; with ``draw="paper"`` the authors'
    draw, :func:`ntkcheck.build.paper_draw.problem`)."""
    if cfg.problem_file:
        try:
            return problems.load(cfg.problem_file)
        except ValueError as err:
            raise ConfigError("problem_file", str(err)) from None
    if cfg.draw == "paper":
        return paper_draw.problem(cfg)
    return draw_problem(cfg, "train")


def draw_problem(cfg: TrainConfig, split: str = "train"):
    """The seeded instances of ``cfg.problem`` (float64, CPU): the QP (:func:`ntkcheck.problems.qp.generate`), the
    LASSO or logistic regression with λ = ``lam`` (default 0.1, relative to λ_max,i unless ``lam_scale`` is absolute),
    a planted x*_i with a share ``sparsity`` of non-zeros (default 0.1) and, for logistic, the ``penalty``."""
    if cfg.problem == "qp":
        return problems.generate(cfg.N, cfg.d, cfg.b, cfg.seed, split)
    family = {"lasso": lasso, "logistic": logistic}[cfg.problem]
    options = {"lam": 0.1 if cfg.lam is None else cfg.lam, "relative": cfg.lam_scale == "relative",
               "sparsity": 0.1 if cfg.sparsity is None else cfg.sparsity}
    if cfg.problem == "logistic":
        options["penalty"] = cfg.penalty or "l1"
    return family.generate(cfg.N, cfg.d, cfg.b, cfg.seed, split, **options)


def initial_weights(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """W_0 as named tensors W1..WL (b1..bL): ``init_file`` when given, else the config's initialisation, drawn with
    ``init_seed`` (default ``seed``; with ``draw="paper"`` the authors' draw, :func:`ntkcheck.build.paper_draw.weights`).
    For ``model="lstm"``: the LSTM's named parameters (float64, CPU) with PyTorch's initialisation drawn from that
    seed (:class:`~ntkcheck.models.lstm.MathL2OLSTM`)."""
    if cfg.model == "lstm":
        return {k: v.detach().clone() for k, v in lstm(cfg).state_dict().items()}
    widths = hidden_widths(cfg.width, cfg.L)
    if cfg.init_file:
        try:
            return inits.load(cfg.init_file, widths, cfg.bias)
        except ValueError as err:
            raise ConfigError("init_file", str(err)) from None
    if cfg.draw == "paper":
        return paper_draw.weights(cfg)
    seed = weights_seed(cfg)
    if cfg.init == "random":
        return inits.random(widths, seed, cfg.bias)
    if cfg.init in inits.RANDOM:
        return inits.RANDOM[cfg.init](widths, seed, cfg.bias)
    return inits.deterministic(widths, cfg.e, seed, cfg.bias, absolute=cfg.init == "deterministic-abs")


def lstm(cfg: TrainConfig) -> MathL2OLSTM:
    """The LSTM ``cfg`` describes (float64, CPU), its weights and its h_0, c_0 drawn from :func:`weights_seed`."""
    return MathL2OLSTM(cfg.lstm_variant, hidden=cfg.lstm_hidden, layers=cfg.lstm_layers, step_scale=cfg.step_scale,
                       seed=weights_seed(cfg), detach=cfg.detach)


def build_model(cfg: TrainConfig, weights: dict | None = None, *, device=None, dtype=None) -> Learner:
    """The learner ``cfg`` describes (``cfg.model``), holding ``weights`` (default: :func:`initial_weights`), on
    ``device`` in ``dtype`` (default: the config's)."""
    device = resolve_device(cfg.device) if device is None else device
    dtype = getattr(torch, cfg.dtype) if dtype is None else dtype
    if cfg.model == "lstm":
        model = lstm(cfg).to(device=device, dtype=dtype)
        if weights is not None:
            model.load_state_dict(weights)
        return model
    return build(hidden_widths(cfg.width, cfg.L), initial_weights(cfg) if weights is None else weights,
                 bias=cfg.bias, detach=cfg.detach, step_scale=cfg.step_scale, wide_layer=cfg.wide_layer,
                 update=cfg.update, device=device, dtype=dtype)


@dataclass(frozen=True)
class Experiment:
    """A configuration with its objects: the problem and the model on ``device`` in ``dtype``. ``config``
    carries the problem's N, d, b; ``model`` holds W_0 until a trainer updates it (the experiment's own copy)."""

    config: TrainConfig
    device: torch.device
    dtype: torch.dtype
    problem: problems.Problem
    model: Learner


def setup(cfg: TrainConfig, *, problem: problems.Problem | None = None, model: Learner | None = None) -> Experiment:
    """Build (or adopt) the problem and the model of ``cfg`` once.

    A given ``problem`` replaces the config's data (its N, d, b win); a given ``model`` must be the one the
    config describes (widths, bias, detach, step scale); a copy of it, on the config's device and dtype, is what the
    run trains, so the caller's module is never changed (its weights stay W_0)."""
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    problem = make_problem(cfg) if problem is None else problem
    cfg = cfg.replace(N=problem.N, d=problem.d, b=problem.b)
    if model is None:
        model = build_model(cfg, device=device, dtype=dtype)
    else:
        check_architecture(cfg, model)
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    return Experiment(cfg, device, dtype, problem.to(device=device, dtype=dtype), model)


def check_architecture(cfg: TrainConfig, model: Learner) -> None:
    """A model handed in must be the one ``cfg`` describes: the MLP's widths 2, …, n, biases, detach and step scale;
    the LSTM's variant, hidden size, layers, detach, step scale and state seed (h_0 is drawn from it)."""
    if cfg.model == "lstm":
        names = "(class, variant, hidden, layers, detach, step_scale, state_seed)"
        given = (type(model).__name__, *(getattr(model, k, None) for k in ("variant", "hidden", "layers", "detach",
                                                                          "step_scale", "state_seed")))
        described = ("MathL2OLSTM", cfg.lstm_variant, cfg.lstm_hidden, cfg.lstm_layers, cfg.detach, cfg.step_scale,
                     weights_seed(cfg))
    else:
        names = "(widths, bias, detach, step_scale, update)"
        given = (tuple(getattr(model, "widths", ())), getattr(model, "bias", None), model.detach,
                 getattr(model, "step_scale", None), getattr(getattr(model, "update", None), "name", None))
        described = (hidden_widths(cfg.width, cfg.L), cfg.bias, cfg.detach, cfg.step_scale, cfg.update)
    if given != described:
        raise ConfigError("model", f"has {names} = {given}; the config describes {described}")
