"""The one plotting style of every figure ntkcheck draws (verify, sweeps, reproduce).

Figures are matplotlib :class:`~matplotlib.figure.Figure` objects, never pyplot's: nothing is displayed, no backend
is chosen and no global setting changes, so a notebook's own settings are left alone. Each is drawn under one
style (:func:`styled`: seaborn's whitegrid style and paper context, plain numbers on the axes), and saved with
:func:`save`, which writes it under a temporary name and renames it (:func:`ntkcheck.results.io.write_figure`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import Figure

from ntkcheck.config import FORMATS, ConfigError
from ntkcheck.results import io

DPI = 150
PLAIN = {"axes.formatter.useoffset": False, "axes.formatter.use_mathtext": False}  # 1000000, not 1 + 1e6 offsets


def style() -> dict:
    """The rc settings every figure is drawn under."""
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), **PLAIN}


def styled(draw):
    """``draw`` run under :func:`style`, without touching the global settings."""
    @functools.wraps(draw)
    def under_style(*args, **kwargs):
        with matplotlib.rc_context(style()):
            return draw(*args, **kwargs)
    return under_style


def figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` × ``height`` inches with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)} (got {fmt!r})")


def save(fig: Figure, path: str | Path, fmt: str = "png") -> Path:
    """Write ``fig`` to ``path`` as ``fmt`` (png, pdf, svg) at :data:`DPI`, cropped to what is drawn: under a
    temporary name, then renamed, so ``path`` is never half-written, and a failed draw leaves no file at all."""
    check_format(fmt)
    path = Path(path)
    with matplotlib.rc_context(style()):
        io.write_figure(path, fig, fmt, dpi=DPI, bbox_inches="tight")
    return path


def tick(x: float) -> str:
    """A plain number for a tick or a label, 4 significant digits: 0.001, 2.236, 40000 within [10⁻³, 10⁵), else
    1e−5, 2.5e6 (no mathtext, no offset)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    rounded = float(f"{x:.4g}")
    if 1e-3 <= abs(rounded) < 1e5:
        text = f"{rounded:f}".rstrip("0").rstrip(".")
    else:
        mantissa, exponent = f"{x:.3e}".split("e")
        text = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return text.replace("-", "−")


class _PlainLogFormatter(ticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, each written by :func:`tick`."""

    def _num_to_string(self, x, vmin, vmax):
        return tick(x)


def plain_ticks(axis) -> None:
    """Every major tick of ``axis`` labelled by :func:`tick` (e.g. on a symlog axis)."""
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: tick(x)))


def log_axes(ax, x: bool = False, y: bool = False) -> None:
    """Log scale on the named axes of ``ax``, ticked in plain numbers (:func:`tick`)."""
    for on, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            set_scale("log")
            axis.set_major_formatter(_PlainLogFormatter())
            axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
