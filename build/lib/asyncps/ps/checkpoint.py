"""Checkpoint files of a shard: ``Shard.state_dict()`` tagged with the run it belongs to."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from asyncps.ps.shard import Shard


def save(shard: Shard, path: str | os.PathLike, run: str = "", extra: dict | None = None) -> int:
    """Write the shard's state to the file ``path``, tagged with ``run``, with
    its server's own ``extra`` state; the version saved.

    The file is written beside ``path`` and renamed over it: a crash
    mid-write leaves the previous checkpoint whole, and the half-written file
    under the one name the next save of ``path`` writes over (callers save
    one at a time).
    """
    saved = shard.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_of(path)
    try:
        torch.save({"run": run, "shard": saved, "extra": extra or {}}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return saved["version"]


def partial_of(path: Path) -> Path:
    return path.with_name(f"{path.name}.partial")


def restore(shard: Shard, path: str | os.PathLike, run: str = "") -> tuple[int, dict] | None:
    """Resume ``shard`` from the checkpoint file ``path``: its version and the
    ``extra`` saved with it. None, and nothing changes, when there is no such
    file or it is another run's."""
    partial_of(Path(path)).unlink(missing_ok=True)  # a save cut short by a crash
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
    return shard.version, saved["extra"]
