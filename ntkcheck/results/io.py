"""Files: reading user arrays, and writing results atomically (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ntkcheck.config import ConfigError


def read_arrays(path: str | Path) -> dict[str, torch.Tensor]:
    """The named arrays of a ``.npz`` file, or of a ``.pt`` file holding a dict of tensors (or of numeric arrays,
    numbers, lists of numbers), as tensors of their own dtype (bool, integer, float or complex: the caller decides
    what it accepts). Anything else raises a ValueError whose one-line message says what is wrong with the file."""
    import warnings
    import zipfile

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} is not a readable file: it does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is not a readable file: it is a directory")
    if not path.is_file():
        raise ValueError(f"{path} is not a readable file: it is not a regular file")
    if path.suffix not in (".npz", ".pt", ".pth"):
        raise ValueError(f"{path} must be a .npz or .pt file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not a readable file: permission denied")
    kind = "npz" if path.suffix == ".npz" else "pt"
    if kind == "npz" and not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a readable .npz file: it is not a zip archive of .npy arrays "
                         "(write it with numpy.savez)")
    try:
        if kind == "npz":
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
            for k, v in data.items():
                if not isinstance(v, np.ndarray):
                    raise ValueError(f"{path} is not a readable .npz file: its member {k!r} is not a .npy array "
                                     "(write it with numpy.savez)")
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols on stderr: the error says it all
                warnings.simplefilter("ignore")
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is a user error, reported in one line
        text = str(err)
        if isinstance(err, ValueError) and text.startswith(f"{path} is not a readable"):
            raise
        if "allow_pickle" in text:
            raise ValueError(f"{path} holds an array of Python objects, which is not loaded; save numeric "
                             "arrays") from None
        if "Unsupported global" in text:
            raise ValueError(f"{path} holds Python objects other than tensors, numbers and strings, which are not "
                             "loaded; save a dict of tensors (torch.save)") from None
        unpickling = "Weights only load failed" in text or "pickle" in type(err).__name__.lower()
        if unpickling or isinstance(err, (KeyError, EOFError)):
            raise ValueError(f"{path} is not a readable .pt file: it was not written by torch.save, or it is "
                             "damaged") from None
        first = text.strip().splitlines()[0][:200] if text.strip() else ""
        raise ValueError(f"{path} is not a readable .{kind} file ({type(err).__name__}{': ' + first if first else ''})"
                         ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a dict of named arrays (it holds a {type(data).__name__})")
    return {str(k): _numeric_tensor(path, str(k), v) for k, v in data.items()}


def _numeric_tensor(path: Path, name: str, value) -> torch.Tensor:
    """``value`` as a tensor when it is an array of numbers (bool, integer, float, complex); else a ValueError."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise ValueError(f"{path}: array {name} holds {value.dtype} values, not numbers")
        native = value.astype(value.dtype.newbyteorder("="), copy=False)
        try:
            return torch.from_numpy(np.ascontiguousarray(native))
        except TypeError:  # an unsigned type torch lacks
            return torch.from_numpy(native.astype(np.float64))
    if not isinstance(value, torch.Tensor):
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise ValueError(f"{path}: {name} holds a {type(value).__name__}, not an array of numbers")
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{path}: {name} holds a {type(value).__name__}, not an array of numbers") from None
    if value.dtype not in _NUMERIC:
        raise ValueError(f"{path}: {name} holds {value.dtype} values, not numbers this program reads")
    return value


_NUMERIC = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
            torch.float32, torch.float64, torch.complex64, torch.complex128}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's own files are 0600
TEMPORARY = ".*.tmp"  # the glob of a write that was cut short (a kill between write and rename)


def _atomic(path: Path, write) -> None:
    """Write through ``write(tmp)`` into a temporary file beside ``path``, then rename it: ``path`` is never
    half-written. A failed write (disk full, no permission) is an error naming ``out``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise ConfigError("out", f"cannot write {path}: {err.strerror}") from None
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write failed; is the disk full?"
        raise ConfigError("out", f"cannot write {path}: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")

    _atomic(Path(path), write)


def write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _atomic(Path(path), write)


def write_torch(path: Path, obj) -> None:
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def write_npy(path: Path, array) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    _atomic(Path(path), write)


def write_npz(path: Path, arrays: dict) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic(Path(path), write)


def write_frame(path: Path, frame, fmt: str) -> None:
    if fmt == "parquet":
        _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        _atomic(Path(path), lambda tmp: frame.to_csv(tmp, index=False))


def write_figure(path: Path, fig, fmt: str | None = None, **savefig) -> None:
    """Save a matplotlib figure (``fmt``: png, pdf, svg; default from the suffix) atomically."""
    _atomic(Path(path), lambda tmp: fig.savefig(tmp, format=fmt or Path(path).suffix.lstrip("."), **savefig))
