"""The probe columns, defined once: every number of a probe that a table, a frame or a file shows.

A :class:`Column` is data: its ``key`` (verify's metrics column, e.g. ``ntk/K/lambda_max``), the ``label`` of the
report tables, the ``formula``, its ``unit`` and how to read it from a probe, as a path into the plain dict of
:meth:`ntkcheck.instruments.probes.ProbeResult.as_dict` or a small function of that dict. Its ``sweep`` name is the
column of a sweep's probes.parquet (``initial``: also cells.parquet's ``<sweep>_0``, the k = 0 value). The readers
(verify's metrics and report.json, the sweep's probe rows and cells, both report.md tables) go through
:data:`COLUMNS`, so a quantity added here reaches all of them. A value the probe does not hold (the LSTM's α, a
Lanczos probe's rank) reads as None: verify leaves it out, the sweep writes None for a count and NaN for a number,
and verify's report.md writes ``n/a (why)`` where the probe's ``not_applicable`` names the key's first part
(``alpha`` for ``alpha/…``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

UNITS = {"number": "a real number on the problem's scale", "ratio": "a dimensionless ratio", "count": "an integer"}
TABLES = ("verify", "sweep")  # verify's report.md "Probes along training", the sweep's report.md at k = 0


@dataclass(frozen=True)
class Column:
    """One probe quantity. ``get``: a path of keys into the probe's dict, or a function of it (None: not measured).
    ``metrics``: a column of verify's metrics and report.json; ``sweep``: its name in the sweep (None: not there),
    with ``initial`` its k = 0 value in cells.parquet; ``tables``: the report tables that show it."""

    key: str
    label: str
    formula: str
    get: tuple[str, ...] | Callable[[dict], object]
    sweep: str | None
    unit: str = "number"
    metrics: bool = True
    initial: bool = True
    tables: tuple[str, ...] = TABLES

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"{self.key}: unit must be one of {', '.join(UNITS)} (got {self.unit!r})")
        if not set(self.tables) <= set(TABLES):
            raise ValueError(f"{self.key}: tables must be among {', '.join(TABLES)} (got {self.tables!r})")
        if "sweep" in self.tables and (self.sweep is None or not self.initial):
            raise ValueError(f"{self.key}: the sweep's table shows k = 0 values: it needs a sweep name and initial")
        if "verify" in self.tables and not self.metrics:
            raise ValueError(f"{self.key}: verify's table shows metrics columns only")

    def read(self, probe: dict):
        """The value in ``probe`` (:meth:`~ntkcheck.instruments.probes.ProbeResult.as_dict`), None where absent."""
        if callable(self.get):
            return self.get(probe)
        value = probe
        for name in self.get:
            value = value.get(name) if isinstance(value, dict) else None
        return value

    @property
    def missing(self):
        """The sweep's entry for a value not measured: None for a count (no integer NaN), NaN for a number."""
        return None if self.unit == "count" else math.nan

    @property
    def initial_name(self) -> str:
        """Its cells.parquet column: the value at k = 0."""
        return f"{self.sweep}_0"


def stable_lr(probe: dict) -> float:
    """2/λ_max(K): the linearised dynamics r_{k+1} = (I − ηK) r_k are stable iff η < 2/λ_max (∞ for λ_max ≤ 0)."""
    lam = probe["K"]["lambda_max"]
    return 2.0 / lam if lam > 0 else math.inf


def asymmetry(probe: dict) -> float | None:
    """‖K̃ − K̃ᵀ‖_F/‖K̃‖_F, given with the drift from K to K̃ (None where that is not measured, e.g. K = 0)."""
    return probe["K_training"].get("asymmetry") if probe.get("K_vs_K_training") else None


COLUMNS: tuple[Column, ...] = (
    Column("ntk/loss", "F(X_T)", "½‖r‖² = F(X_T), r = vec(M X_T − Y)", ("loss",), "loss", initial=False,
           tables=("verify",)),
    Column("ntk/n_outputs", "N·b", "N·b, the length of r", ("n_outputs",), "n_outputs", "count", metrics=False,
           initial=False, tables=()),
    Column("ntk/K/lambda_max", "λ_max(K)", "λ_max(K), K = J Jᵀ, J = ∂r/∂W", ("K", "lambda_max"), "lambda_max"),
    Column("ntk/K/lambda_min", "λ_min(K)", "λ_min(K), K = J Jᵀ", ("K", "lambda_min"), "lambda_min",
           tables=("verify",)),
    Column("ntk/K/threshold", "2/λ_max(K)", "2/λ_max(K): η below it is stable for the linearised dynamics",
           stable_lr, "stable_lr", metrics=False, tables=("sweep",)),
    Column("ntk/K/rank", "rank K", "numerical rank of K at N·b·eps·max_i |λ_i(K)| (dense)", ("K", "rank"), "rank_K",
           "count"),
    Column("ntk/K/rank_tol", "tol of rank K", "N·b·eps·max_i |λ_i(K)| (dense)", ("K", "rank_tol"), "rank_K_tol",
           metrics=False, tables=()),
    Column("ntk/K_training/lambda_max", "λ_max(½(K̃ + K̃ᵀ))", "λ_max(½(K̃ + K̃ᵀ)), K̃ = J J̃ᵀ",
           ("K_training", "lambda_max"), None, tables=()),
    Column("ntk/K_training/lambda_min", "λ_min(½(K̃ + K̃ᵀ))", "λ_min(½(K̃ + K̃ᵀ)), K̃ = J J̃ᵀ",
           ("K_training", "lambda_min"), None, tables=()),
    Column("ntk/K_training/rank", "rank ½(K̃ + K̃ᵀ)", "numerical rank of ½(K̃ + K̃ᵀ) (dense)", ("K_training", "rank"),
           None, "count", tables=()),
    Column("alpha/alpha", "α = σ_min(G_{L−1,T})", "α = σ_min(G_{L−1,T}), the wide layer's features over the data",
           ("alpha", "alpha"), "alpha"),
    Column("alpha/sigma_max", "σ_max(G_{L−1,T})", "σ_max(G_{L−1,T})", ("alpha", "sigma_max"), None, tables=()),
    Column("alpha/rank", "rank G", "numerical rank of G_{L−1,T} at its tolerance", ("alpha", "rank"), "alpha_rank",
           "count"),
    Column("alpha/tol", "tol of α", "max(shape)·eps·σ_max(G_{L−1,T})", ("alpha", "tol"), "alpha_tol", tables=()),
    Column("alpha/n_rows", "rows of G", "rows of G_{L−1,T}", ("alpha", "n_rows"), "alpha_rows", "count",
           metrics=False, initial=False, tables=()),
    Column("alpha/n_cols", "columns of G", "columns of G_{L−1,T}, the width n", ("alpha", "n_cols"), "alpha_cols",
           "count", metrics=False, initial=False, tables=()),
    Column("alpha/sigma_min_nonzero", "σ_min⁺(G_{L−1,T})",
           "min{σ_i(G_{L−1,T}) : σ_i > tol}, the smallest singular value above the rank's tolerance",
           ("alpha", "sigma_min_nonzero"), "sigma_min_nonzero", tables=()),
    Column("features/drift/rel_change", "‖G_k − G_0‖/‖G_0‖",
           "‖G_{L−1,T}(W_k) − G_{L−1,T}(W_0)‖_F/‖G_{L−1,T}(W_0)‖_F, the wide layer's features over the data (sweep)",
           ("features_drift", "rel_change"), "features_drift_rel", "ratio", metrics=False, initial=False, tables=()),
    Column("ntk/plateau", "plateau ½‖P_null r‖²", "½‖P_null(K) r‖², the loss the linearised dynamics keep (dense)",
           ("linearised", "plateau"), "plateau", metrics=False, tables=()),
    Column("ntk/drift/rel_change", "‖K_k − K_0‖/‖K_0‖", "‖K_k − K_0‖_F/‖K_0‖_F (dense)", ("drift", "rel_change"),
           "drift_rel", "ratio", initial=False, tables=("verify",)),
    Column("ntk/drift/distance", "1 − cos(K_0, K_k)", "1 − ⟨K_0, K_k⟩/(‖K_0‖_F‖K_k‖_F) (dense)",
           ("drift", "distance"), "drift_distance", "ratio", initial=False, tables=()),
    Column("ntk/K_vs_K_training/rel_change", "‖K̃ − K‖/‖K‖", "‖K̃ − K‖_F/‖K‖_F (dense)",
           ("K_vs_K_training", "rel_change"), None, "ratio", tables=()),
    Column("ntk/K_vs_K_training/distance", "1 − cos(K, K̃)", "1 − ⟨K, K̃⟩/(‖K‖_F‖K̃‖_F) (dense)",
           ("K_vs_K_training", "distance"), None, "ratio", tables=()),
    Column("ntk/K_training/asymmetry", "‖K̃ − K̃ᵀ‖/‖K̃‖", "‖K̃ − K̃ᵀ‖_F/‖K̃‖_F (dense)", asymmetry, None, "ratio",
           tables=()),
)


# -- readers: each reads COLUMNS when called, so a column added there reaches every one -----------------------


def metrics_columns() -> list[Column]:
    return [c for c in COLUMNS if c.metrics]


def sweep_columns() -> list[Column]:
    return [c for c in COLUMNS if c.sweep is not None]


def initial_columns() -> list[Column]:
    return [c for c in sweep_columns() if c.initial]


def table(name: str) -> list[Column]:
    """The columns report table ``name`` (:data:`TABLES`) shows, in order."""
    return [c for c in COLUMNS if name in c.tables]


def metrics_row(probe: dict) -> dict[str, float]:
    """verify's metrics at one probe: key → float, the values not measured left out."""
    return {c.key: float(v) for c in metrics_columns() if (v := c.read(probe)) is not None}


def sweep_row(probe: dict) -> dict:
    """The sweep's probe row: sweep name → value, :attr:`Column.missing` where not measured."""
    return {c.sweep: c.missing if (v := c.read(probe)) is None else v for c in sweep_columns()}


def initial_row(row: dict | None) -> dict:
    """cells.parquet's k = 0 columns from the sweep's probe row at k = 0 (None: not probed there)."""
    return {c.initial_name: row.get(c.sweep) if row else None for c in initial_columns()}


def definitions(columns: list[Column]) -> list[dict]:
    """The columns as plain dicts for JSON: key, label, formula, unit."""
    return [{"key": c.key, "label": c.label, "formula": c.formula, "unit": c.unit} for c in columns]
