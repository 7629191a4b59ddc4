"""Server rules: what a shard does with a pushed gradient.

The rule is injected into the shard, not subclassed into it (as ps-lite's
request handle). So one Shard serves Downpour, synchronous SGD, and every
later protocol. Each protocol file under ``protocols/`` installs its own.
A rule keeps its per-tensor data in an explicit state object. The shard
stores that state and checkpoints it through the rule.
"""

from __future__ import annotations

from typing import Any, Protocol, Union

import numpy as np
import torch

import optim

Array = Union[torch.Tensor, np.ndarray]  # a pushed gradient, as a shard takes it today


class ServerRule(Protocol):
    def init(self, values: torch.Tensor) -> Any:
        """The rule's state for one tensor (the dense slice, or one table)."""

    def apply(self, values: np.ndarray, grad: Array, state: Any, out: np.ndarray | None, *,
              worker: int, staleness: int, version: int) -> bool:
        """Write the updated values into ``out`` (``None``: into ``values``, in
        place) and return True; or keep the gradient, or drop it, and return
        False, leaving ``values`` as they are.

        ``values`` and ``out`` are numpy views of the shard's float32 buffers,
        and ``grad`` a checked float32 vector, a torch tensor or a numpy array
        (the in-process client sends numpy slices): for a small shard, making
        tensors of them costs more than its update. ``rule_tensors`` makes
        tensors that share their memory."""

    def apply_rows(self, table: torch.Tensor, ids: torch.Tensor, grad_rows: torch.Tensor, state: Any, *,
                   worker: int, staleness: int, version: int) -> bool:
        """Update rows ``ids`` of ``table`` in place; True if applied."""

    def state_dict(self, state: Any) -> dict: ...

    def load_state_dict(self, saved: dict) -> Any: ...


def rule_tensors(values: Array, grad: Array,
                 out: Array | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A rule's ``apply`` arguments as tensors sharing their memory, for a rule
    written in torch ops."""
    return _tensor(values), _tensor(grad), None if out is None else _tensor(out)


def _tensor(x: Array) -> torch.Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x.detach()


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
        if isinstance(grad, torch.Tensor):
            grad = grad.detach().numpy()  # for now: shards still take tensor gradients too
        self.optimizer.update(values, grad, state, out, scale)  # flat numpy; the shard has checked the push
        return True

    def apply_rows(self, table, ids, grad_rows, state, *, worker, staleness, version) -> bool:
        self.optimizer.step_rows(table, ids, grad_rows, state,
                                 staleness_lr_scale(staleness) if self.staleness_aware else 1.0)
        return True

    def state_dict(self, state: optim.State) -> dict:
        return state.state_dict()

    def load_state_dict(self, saved: dict) -> optim.State:
        return optim.State.from_state_dict(saved)
