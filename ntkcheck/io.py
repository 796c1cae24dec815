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
    """The named arrays of a ``.npz`` file or of a ``.pt`` file holding a dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a readable file")
    if path.suffix not in (".npz", ".pt", ".pth"):
        raise ValueError(f"{path} must be a .npz or .pt file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: torch.from_numpy(f[k]) for k in f.files}
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is a user error, reported in one line
        raise ValueError(f"{path} could not be read ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a dict of tensors")
    return {k: torch.as_tensor(v) for k, v in data.items()}


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
