"""Server rules: what a shard does with a pushed gradient.

The rule is injected into the shard, not subclassed into it (as ps-lite's
request handle). So one Shard serves Downpour, synchronous SGD, and every
later protocol. Each protocol file under ``protocols/`` installs its own.
A rule keeps its per-tensor data in an explicit state object. The shard
stores that state and checkpoints it through the rule.
"""

from __future__ import annotations

from typing import Any, Protocol as Interface

import torch

from asyncps import optim
from asyncps.ps.flat import Flat
from asyncps.ps.publication import Applied


class ServerRule(Interface):
    def init(self, values: torch.Tensor) -> Any:
        """The rule's state for one tensor (the dense slice, or one table)."""

    def apply(self, values: Flat, grad: Flat, state: Any, out: Flat | None, *,
              worker: int, staleness: int, version: int) -> bool | Applied:
        """Write the updated values into ``out`` (``None``: into ``values``, in
        place) and return True, a new version; or keep the gradient, or drop
        it, and return False, leaving ``values`` as they are. A rule whose
        version counts something other than updates returns
        ``Applied.SAME_VERSION`` for an update that leaves it unchanged. Each
        argument is a checked float32 vector as a tensor and a numpy array
        over the same memory: a rule in torch ops reads ``.tensor``, an
        optimizer's kernel ``.array``."""

    def apply_rows(self, table: torch.Tensor, ids: torch.Tensor, grad_rows: torch.Tensor, state: Any, *,
                   worker: int, staleness: int, version: int) -> bool:
        """Update rows ``ids`` of ``table`` in place; True if applied."""

    def state_dict(self, state: Any) -> dict: ...

    def load_state_dict(self, saved: dict) -> Any: ...


def staleness_lr_scale(staleness: int) -> float:
    """The staleness-aware learning rate's factor (Zhang, Gupta, Lian & Liu,
    IJCAI 2016): a gradient computed ``staleness`` updates ago is applied with
    lr / staleness; a fresh one (staleness 0) with lr itself."""
    return 1.0 / staleness if staleness > 1 else 1.0


class ApplyEach:
    """Apply a core-library optimizer to every gradient as it arrives: the
    asynchronous server of Downpour SGD (Dean et al. 2012) and Hogwild-style
    parameter servers. With ``staleness_aware``, each update's learning rate
    is divided by its push's staleness (``staleness_lr_scale``)."""

    def __init__(self, optimizer: optim.Optimizer, staleness_aware: bool = False):
        self.optimizer = optimizer
        self.staleness_aware = staleness_aware

    def __repr__(self) -> str:
        return f"ApplyEach({self.optimizer!r}, staleness_aware={self.staleness_aware})"

    def init(self, values: torch.Tensor) -> optim.State:
        return self.optimizer.init(values)

    def apply(self, values, grad, state, out, *, worker, staleness, version) -> bool:
        scale = staleness_lr_scale(staleness) if self.staleness_aware else 1.0
        self.optimizer.update(values.array, grad.array, state, None if out is None else out.array, scale)
        return True

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        self.optimizer.step_rows(table, ids, grad_rows, state,
                                 staleness_lr_scale(staleness) if self.staleness_aware else 1.0)
        return True

    def state_dict(self, state: optim.State) -> dict:
        return state.state_dict()

    def load_state_dict(self, saved: dict) -> optim.State:
        return optim.State.from_state_dict(saved)
