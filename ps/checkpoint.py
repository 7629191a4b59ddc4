"""Checkpoint files of a shard: ``Shard.state_dict()`` tagged with the run it belongs to."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from ps.shard import Shard


def save(shard: Shard, path: str | os.PathLike, run: str = "") -> int:
    """Write the shard's state to the file ``path``, tagged with ``run``; the version saved.

    The file is written beside ``path`` and renamed over it: a crash
    mid-write leaves the previous checkpoint whole.
    """
    saved = shard.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    torch.save({"run": run, "shard": saved}, partial)
    os.replace(partial, path)
    return saved["version"]


def restore(shard: Shard, path: str | os.PathLike, run: str = "") -> int | None:
    """Resume ``shard`` from the checkpoint file ``path``; its version. None,
    and nothing changes, when there is no such file or it is another run's."""
    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError:
        return None
    if saved.get("run") != run:
        return None
    if saved["shard"]["index"] != shard.index:
        raise ValueError(f"Invalid checkpoint {path}: it holds shard {saved['shard']['index']}, "
                         f"not shard {shard.index}")
    shard.load_state_dict(saved["shard"])
    return shard.version
