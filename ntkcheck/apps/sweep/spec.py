"""What a sweep runs: a base configuration, axes over any TrainConfig field, seeds, and what to record.

A sweep is the product grid × seeds. Each point is a *cell*: one :class:`~ntkcheck.config.TrainConfig`, named by a
short hash of its fields (:func:`cell_id`), so that a cell is recognised again when the same sweep is rerun.

Seeds (``vary``): ``both`` draws the data and the initial weights with the same seed (``seed``), ``data`` varies the
data and keeps the base's weights (``init_seed`` fixed), ``init`` varies the weights and keeps the base's data.

The spec file is TOML, the same layout as the ``sweep.toml`` a sweep writes (so a finished sweep can be rerun from
its own record)::

    preset = "small"
    seeds = "0-4"            # or [0, 1, 2, 3, 4]
    vary = "both"
    record_every = 25        # curves at k = 0, 25, 50, …, and K
    probe_at = [0, "K"]      # probes (K_k, α_k, drift) at these iterations; "K" is each cell's last
    linearised = true        # each cell also trains its first-order Taylor model (default false)
    [base]                   # TrainConfig fields over the preset
    iters = 5000
    [grid]
    e = [1, 5, 25, 50, 100]
    lr = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7]

Instead of (or beside) the product grid, ``points`` lists configurations one by one, each a table of TrainConfig
fields; a point that names a ``seed`` runs with that seed only, the others over ``seeds``. An adaptive search (the
stability study's bisection) writes its rounds this way::

    [[points]]
    e = 50.0
    lr = 3.2e-4
    seed = 7
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ntkcheck.config import NTK_METHODS, SEED_MAX, ConfigError, TrainConfig, preset

VARY = ("both", "data", "init")
MAX_CELLS = 100_000  # cells in one sweep: grid × seeds (each cell is a training run)
FILE_ONLY = ("points", "linearised")  # spec settings that only a spec file (or make_spec) sets
SEED_FIELDS = ("seed", "init_seed")  # set by ``seeds`` and ``vary``, never an axis
CURVE_POINTS = 200  # default record_every: about this many points per curve
SPEC_KEYS = ("preset", "base", "grid", "points", "seeds", "vary", "record_every", "probe_at", "probe_method", "batch_size",
             "versions", "linearised")


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: its configuration (None when the axes' values make no valid one, then ``error``
    says why), the axis values and seed that made it, and its id."""

    id: str
    values: dict
    seed: int
    config: TrainConfig | None
    error: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    """A grid of configurations over seeds (module docstring).

    ``base``: the configuration every cell starts from; ``grid``: ordered axes ``(field, values)``; ``seeds``;
    ``points``: configurations listed one by one (module docstring), each a dict of fields; ``vary``: what a seed
    changes; ``record_every``: the curves' spacing in iterations (0: about
    :data:`CURVE_POINTS` points); ``probe_at``: iterations to probe every cell at (``"K"``: its last);
    ``probe_method``: ``auto``, ``dense``, ``lanczos``, or ``none`` for no probes; ``batch_size``: the most cells
    trained together; ``linearised``: each cell also trains its first-order Taylor model
    (:mod:`ntkcheck.apps.sweep.batched`)."""

    base: TrainConfig = field(default_factory=TrainConfig)
    grid: tuple[tuple[str, tuple], ...] = ()
    seeds: tuple[int, ...] = (0,)
    vary: str = "both"
    record_every: int = 0
    probe_at: tuple = (0,)
    probe_method: str = "auto"
    batch_size: int = 32
    preset: str = "small"
    points: tuple[dict, ...] = ()
    linearised: bool = False

    def __post_init__(self):
        names = [name for name, _ in self.grid]
        for name, values in self.grid:
            _check_axis(name, values)
        if len(set(names)) != len(names):
            raise ConfigError("grid", f"names a field twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError("seeds", f"must be integers ≥ 0 (got {list(self.seeds)!r})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"lists a seed twice ({list(self.seeds)})")
        if max(self.seeds) > SEED_MAX:
            raise ConfigError("seeds", f"must be ≤ {SEED_MAX} (seeds are stored as int64; got {max(self.seeds)})")
        self._check_points()
        cells = (math.prod(len(values) for _, values in self.grid) *
                 sum(1 if "seed" in p else len(self.seeds) for p in self.points or ({},)))
        if cells > MAX_CELLS:
            raise ConfigError("seeds" if len(self.seeds) > 1 and cells // len(self.seeds) <= MAX_CELLS else "grid",
                              f"the sweep has {cells} cells (grid × seeds), more than the {MAX_CELLS} one sweep takes; "
                              "split it into several sweeps")
        if self.vary not in VARY:
            raise ConfigError("vary", f"must be one of {', '.join(VARY)} (got {self.vary!r})")
        _integer("record_every", self.record_every, 0)
        _integer("batch_size", self.batch_size, 1)
        if not isinstance(self.linearised, bool):
            raise ConfigError("linearised", f"must be true or false (got {self.linearised!r})")
        if self.probe_method not in (*NTK_METHODS, "none"):
            raise ConfigError("probe_method", f"must be one of {', '.join((*NTK_METHODS, 'none'))} "
                                              f"(got {self.probe_method!r})")
        last = max([self.base.iters, *(v for name, values in self.grid if name == "iters" for v in values
                                       if isinstance(v, int)),
                    *(p["iters"] for p in self.points if isinstance(p.get("iters"), int))])
        for k in self.probe_at:
            if k != "K" and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
                raise ConfigError("probe_at", f"must list iterations ≥ 0 or K (got {k!r})")
            if k != "K" and k > last:
                raise ConfigError("probe_at", f"iteration {k} is beyond the last one of every cell (iters ≤ {last}); "
                                              "list iterations up to iters, or K")

    def _check_points(self) -> None:
        grid = {name for name, _ in self.grid}
        for point in self.points:
            if not isinstance(point, dict) or not point:
                raise ConfigError("points", f"each point is a table of configuration fields (got {point!r})")
            for name, value in point.items():
                if name == "seed":
                    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
                        raise ConfigError("points", f"seed must be an integer in [0, {SEED_MAX}] (got {value!r})")
                    continue
                try:
                    _check_axis(name, (value,))
                except ConfigError as err:
                    raise ConfigError("points", err.message) from None
                if name in grid:
                    raise ConfigError("points", f"{name} is both a grid axis and a field of a point; give it in one")
        if len(set(map(repr, self.points))) != len(self.points):
            raise ConfigError("points", "lists a point twice")

    @property
    def axes(self) -> tuple[str, ...]:
        """The fields that vary: the grid's axes, then the points' fields (a point's seed is a seed, not an axis)."""
        names = [name for name, _ in self.grid]
        for point in self.points:
            names += [n for n in point if n != "seed" and n not in names]
        return tuple(names)

    def record_step(self, iters: int) -> int:
        """The curves' spacing for a cell of ``iters`` iterations."""
        return self.record_every or max(1, math.ceil(iters / CURVE_POINTS))

    def probe_iterations(self, iters: int) -> list[int]:
        """The iterations at which a cell of ``iters`` iterations is probed (none with ``probe_method="none"``)."""
        if self.probe_method == "none":
            return []
        return sorted({iters if k == "K" else k for k in self.probe_at if k == "K" or k <= iters})

    def cells(self) -> list[Cell]:
        """Every cell: the axes' product (first axis slowest) × the points in order × seeds (a point's own seed)."""
        out = []
        names = [name for name, _ in self.grid]
        for combo in itertools.product(*(values for _, values in self.grid)):
            for point in self.points or ({},):
                values = dict(zip(names, combo)) | {k: v for k, v in point.items() if k != "seed"}
                for seed in (point["seed"],) if "seed" in point else self.seeds:
                    out.append(self._cell(values, seed))
        return out

    def _cell(self, values: dict, seed: int) -> Cell:
        seeds = {"both": {"seed": seed, "init_seed": None},
                 "data": {"seed": seed, "init_seed": _weights_seed(self.base)},
                 "init": {"seed": self.base.seed, "init_seed": seed}}[self.vary]
        try:
            cfg = self.base.replace(**values, **seeds)
        except ConfigError as err:
            return Cell(cell_id({**self.base.to_dict(), **values, **seeds}), values, seed, None, str(err))
        return Cell(cell_id(cfg.to_dict()), values, seed, cfg)

    def to_dict(self) -> dict:
        """The spec as the TOML tables of the module docstring (``base`` complete, without unset fields)."""
        return {"preset": self.preset, "seeds": list(self.seeds), "vary": self.vary, "record_every": self.record_every,
                "probe_at": list(self.probe_at), "probe_method": self.probe_method, "batch_size": self.batch_size,
                "base": {k: v for k, v in self.base.to_dict().items() if v is not None},
                "grid": {name: list(values) for name, values in self.grid}} | (
                    {"points": [dict(p) for p in self.points]} if self.points else {}) | (
                    {"linearised": True} if self.linearised else {})

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        """The inverse of :meth:`to_dict` (any subset of its keys; the rest default as in :func:`make_spec`)."""
        data = dict(data)
        return make_spec(data.pop("preset", "small"), base=data.pop("base", {}), grid=data.pop("grid", {}), **data)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def same_cells(self, other: "SweepSpec") -> bool:
        """Whether ``other`` describes the same cells and records (``batch_size`` only changes how they run)."""
        mine, theirs = self.to_dict(), other.to_dict()
        for d in (mine, theirs):
            d.pop("batch_size")
            d.pop("preset")
        return mine == theirs


def _weights_seed(cfg: TrainConfig) -> int:
    return cfg.seed if cfg.init_seed is None else cfg.init_seed


def cell_id(config: dict) -> str:
    """A short, stable name for a configuration: the first 12 hex digits of the SHA-256 of its sorted JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- building a spec -------------------------------------------------------------------------------------------


FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _check_axis(name: str, values) -> None:
    if name not in FIELD_TYPES:
        raise ConfigError("grid", f"{name!r} is not a configuration field; an axis is one of "
                                  f"{', '.join(f for f in FIELD_TYPES if f not in SEED_FIELDS)}")
    if name in SEED_FIELDS:
        raise ConfigError("grid", f"{name} is set by seeds and vary, not by an axis")
    if not isinstance(values, tuple) or not values:
        raise ConfigError("grid", f"{name} needs at least one value")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError("grid", f"{name} lists a value twice ({', '.join(map(str, values))})")


def _integer(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer ≥ {minimum} (got {value!r})")


def _convert(name: str, text: str):
    """One axis value, written on the command line, as the field's type."""
    kind = FIELD_TYPES[name].split(" | ")[0]
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError("grid", f"{name} takes {'integers' if kind == 'int' else 'numbers'} (got {text!r})") from None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ConfigError("grid", f"{name} takes true or false (got {text!r})")
        return text.lower() == "true"
    return text


AXIS_ALIASES = {"eta": "lr"}  # η: the command line takes --lr and --eta alike, and so does an axis


def parse_axis(text: str) -> tuple[str, tuple]:
    """``"e=1,5,25"`` → ``("e", (1.0, 5.0, 25.0))``, the values typed as the field is (``eta=`` is ``lr=``)."""
    name, sep, values = text.partition("=")
    name = AXIS_ALIASES.get(name.strip(), name.strip())
    if not sep or not name or not values.strip():
        raise ConfigError("grid", f"must be FIELD=V1,V2,… (got {text!r})")
    if name not in FIELD_TYPES or name in SEED_FIELDS:
        _check_axis(name, ())
    return name, tuple(_convert(name, v) for v in values.split(","))


def parse_seeds(text) -> tuple[int, ...]:
    """``"0-4"`` → (0, 1, 2, 3, 4); ``"0,3,7"`` → (0, 3, 7); a list of integers as given."""
    if isinstance(text, (list, tuple)):
        return tuple(text)
    out = []
    for part in str(text).split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            lo, hi = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ConfigError("seeds", f"must be a range a-b or a list a,b,c of integers ≥ 0 (got {text!r})") from None
        if hi < lo:
            raise ConfigError("seeds", f"range {part.strip()} is empty (write low-high)")
        if len(out) + hi - lo + 1 > MAX_CELLS:  # counted before the list is built
            raise ConfigError("seeds", f"{text!r} lists more than the {MAX_CELLS} cells one sweep takes")
        out += range(lo, hi + 1)
    return tuple(out)


def parse_probe_at(text) -> tuple:
    """``"0,K"`` → (0, "K")."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out = []
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if item in ("K", "k"):
            out.append("K")
            continue
        try:
            out.append(int(item))
        except (TypeError, ValueError):
            raise ConfigError("probe_at", f"must list iterations ≥ 0 or K (got {item!r})") from None
    return tuple(out)


def make_spec(preset_name: str = "small", *, base: dict | None = None, grid=(), seeds=None, **settings) -> SweepSpec:
    """A :class:`SweepSpec` from a preset, base overrides (TrainConfig fields, in ``base`` or as keywords, as in
    :func:`~ntkcheck.config.preset`), axes (``{"e": [1, 5]}`` or
    ``["e=1,5"]``), seeds (``"0-4"`` or a list; default the base's) and the other settings of :class:`SweepSpec`.
    The base's ``seed`` and ``init_seed`` are what a seed does not vary (``vary="init"`` keeps the data of ``seed``)."""
    fields = {k: settings.pop(k) for k in list(settings) if k in TrainConfig.__dataclass_fields__}
    for name in set(settings) - set(SweepSpec.__dataclass_fields__):
        raise ConfigError(name, "is neither a configuration field nor a sweep setting (" +
                          ", ".join(f for f in SweepSpec.__dataclass_fields__ if f not in ("base", "grid")) + ")")
    cfg = preset(preset_name, **(dict(base or {}) | fields))
    axes = grid.items() if isinstance(grid, dict) else (parse_axis(a) if isinstance(a, str) else a for a in grid)
    axes = tuple((AXIS_ALIASES.get(name, name), tuple(values)) for name, values in axes)
    if "points" in settings:
        if not isinstance(settings["points"], (list, tuple)):
            raise ConfigError("points", f"must be a list of tables of configuration fields (got {settings['points']!r})")
        settings["points"] = tuple({AXIS_ALIASES.get(k, k): v for k, v in p.items()} if isinstance(p, dict) else p
                                   for p in settings["points"])
    default_seeds = (_weights_seed(cfg),) if settings.get("vary") == "init" else (cfg.seed,)
    if "probe_at" in settings:
        settings["probe_at"] = parse_probe_at(settings["probe_at"])
    return SweepSpec(cfg, axes, default_seeds if seeds is None else parse_seeds(seeds), preset=preset_name, **settings)


def load_spec(path: str | Path, **overrides) -> SweepSpec:
    """The spec in the TOML file ``path`` (module docstring); ``overrides``: keys of :func:`make_spec` that win."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError("spec", f"cannot read {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("spec", f"{path} is not valid TOML ({err})") from None
    unknown = set(data) - set(SPEC_KEYS)
    if unknown:
        raise ConfigError("spec", f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(SPEC_KEYS)}")
    for table in ("base", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError("spec", f"{path}: {table} must be a table ([{table}])")
    data.pop("versions", None)  # a finished sweep's own record
    grid = {name: tuple(v if isinstance(v, list) else [v]) for name, v in data.pop("grid", {}).items()}
    data["grid"] = grid | dict(overrides.pop("grid", {}))
    data["base"] = data.get("base", {}) | overrides.pop("base", {})
    try:
        return SweepSpec.from_dict(data | overrides)
    except ConfigError as err:
        if err.field in FILE_ONLY:  # no command-line option sets them: the file is where to look
            raise ConfigError("spec", f"{path}: {err.field}: {err.message}") from None
        raise
