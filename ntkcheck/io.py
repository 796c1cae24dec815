"""Files: reading user arrays, and writing results atomically (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch


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


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")

    _atomic(Path(path), write)


def write_torch(path: Path, obj) -> None:
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


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
