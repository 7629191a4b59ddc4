"""The only thing a worker talks to: ``pull``, ``push``, ``pull_rows``, ``push_rows``.

A client speaks for the whole model. It fans out to every shard and returns
one version per shard, and a push hands those versions back, so that each
shard can measure its own staleness. Shards are not synchronized with one
another (Dean et al. 2012: "the timestamps of different shards are
inconsistent"). Transports (in-process here; gRPC and Ray elsewhere) hide
behind this interface. Delay injection wraps it.

The verbs are coroutines, so the same protocol loop runs on real threads and
in virtual time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from ps.layout import Layout
from ps.shard import Push, Shard, all_finite


@dataclass
class Pulled:
    """The dense parameters as read from each shard, and the versions read.

    ``parts`` may be the shards' published snapshots themselves: read them,
    never write them. ``flat()`` assembles one vector (a view when there is
    one shard, else a copy, into ``out`` if given).
    """

    parts: list[torch.Tensor]
    versions: list[int]

    def flat(self, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None and len(self.parts) == 1:
            return self.parts[0]
        return torch.cat(self.parts, out=out)


class Client(abc.ABC):
    def __init__(self, layout: Layout, worker: int):
        self.layout = layout
        self.worker = worker

    @abc.abstractmethod
    async def pull(self, min_versions: list[int] | None = None) -> Pulled:
        """Every shard's values, waiting where a shard is below ``min_versions[s]``."""

    @abc.abstractmethod
    async def push(self, grad: torch.Tensor, versions: list[int]) -> list[Push]:
        """The flat dense gradient, computed from ``versions``; one Push per shard."""

    @abc.abstractmethod
    async def pull_rows(self, table: str, rows: torch.Tensor) -> tuple[torch.Tensor, dict[int, int]]:
        """Rows of a sparse table by global id, and the version of each shard read."""

    @abc.abstractmethod
    async def push_rows(self, table: str, rows: torch.Tensor, grad_rows: torch.Tensor,
                        versions: dict[int, int]) -> list[Push]:
        """Gradients for rows of a sparse table (duplicate ids are summed)."""

    def close(self) -> None:
        """Let go of anything held for this worker."""

    def _check_grad(self, grad: torch.Tensor) -> None:
        if not isinstance(grad, torch.Tensor) or grad.shape != (self.layout.size,):
            shape = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise ValueError(f"Invalid gradient: {shape} (expected shape ({self.layout.size},), "
                             "the model's flat dense vector)")

    def _route_row_push(self, table: str, rows: torch.Tensor, grad_rows: torch.Tensor,
                        versions: dict[int, int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """``layout.route_rows`` for a push of row gradients, once the gradients
        and the versions are known to fit: every transport refuses alike."""
        dim = self.layout.table(table)[1]
        if not isinstance(grad_rows, torch.Tensor) or tuple(grad_rows.shape) != (rows.numel(), dim):
            shape = tuple(grad_rows.shape) if isinstance(grad_rows, torch.Tensor) else type(grad_rows).__name__
            raise ValueError(f"Invalid row gradients: {shape} (expected ({rows.numel()}, {dim}): one row per id)")
        routed = self.layout.route_rows(table, rows)
        missing = [shard for shard, _, _ in routed if shard not in versions]
        if missing:
            raise ValueError(f"Invalid versions: none for shards {missing} (pass back what pull_rows returned)")
        return routed

    def _check_versions(self, versions: list[int]) -> None:
        if len(versions) != self.layout.num_shards:
            raise ValueError(f"Invalid versions: {len(versions)} given (one per shard expected: "
                             f"{self.layout.num_shards}); pass back what pull returned")


class InProcessClient(Client):
    """Shards in this process. Pulls hand out the published snapshots
    themselves, valid until this client's next pull or push."""

    def __init__(self, layout: Layout, shards: list[Shard], worker: int):
        super().__init__(layout, worker)
        if len(shards) != layout.num_shards:
            raise ValueError(f"Invalid shards: {len(shards)} given for a layout of {layout.num_shards}")
        self.shards = shards
        self._reader = ("worker", worker)

    async def pull(self, min_versions=None) -> Pulled:
        return self.pull_now(min_versions)

    async def push(self, grad, versions) -> list[Push]:
        return self.push_now(grad, versions)

    def pull_now(self, min_versions=None) -> Pulled:
        """``pull`` as a plain function: in-process shards answer at once, and
        the simulator, having waited in virtual time, skips a coroutine a call."""
        wanted = min_versions or [0] * len(self.shards)
        reads = [shard.pull(self._reader, min_version=v) for shard, v in zip(self.shards, wanted)]
        return Pulled([values for values, _ in reads], [version for _, version in reads])

    def push_now(self, grad, versions) -> list[Push]:
        """``push`` as a plain function, for the same reason as ``pull_now``."""
        self._check_grad(grad)
        self._check_versions(versions)
        if grad.dtype == torch.float32 and not grad.requires_grad:
            # The shards take slices of one numpy view: a small slice costs less
            # as numpy than as a tensor, and their kernels read numpy.
            grad = grad.numpy()
        work = list(zip(self.shards, self.layout.split(grad), versions))
        # All checked first: a refused push changes no shard.
        if isinstance(grad, np.ndarray) and all_finite(grad):
            # A finite float32 vector of the layout's size, scanned once: each
            # slice is what its shard takes, and only the versions are left.
            for shard, _, version in work:
                shard.check_read_version(version)
        else:
            for shard, part, version in work:  # each shard says what it refuses
                shard.check_push(part, version)
        return [shard.apply_push(part, version, self.worker, self._reader) for shard, part, version in work]

    async def pull_rows(self, table, rows):
        out = torch.empty(rows.numel(), self.layout.table(table)[1])
        versions = {}
        for shard, positions, local in self.layout.route_rows(table, rows):
            out[positions], versions[shard] = self.shards[shard].pull_rows(table, local)
        return out, versions

    async def push_rows(self, table, rows, grad_rows, versions):
        routed = self._route_row_push(table, rows, grad_rows, versions)
        work = [(self.shards[shard], local, grad_rows[positions], versions[shard]) for shard, positions, local in routed]
        for shard, local, grads, version in work:  # all checked first: a refused push changes no shard
            shard.check_push_rows(table, local, grads, version)
        return [shard.apply_push_rows(table, local, grads, version, self.worker) for shard, local, grads, version in work]

    def close(self) -> None:
        for shard in self.shards:
            shard.release(self._reader)


class ClientWrapper(Client):
    """Forwards every verb to ``inner``; a wrapper overrides what it adds to
    (recording pushes, injecting delays) and composes with any transport."""

    def __init__(self, inner: Client):
        super().__init__(inner.layout, inner.worker)
        self.inner = inner

    async def pull(self, min_versions=None) -> Pulled:
        return await self.inner.pull(min_versions)

    async def push(self, grad, versions) -> list[Push]:
        return await self.inner.push(grad, versions)

    async def pull_rows(self, table, rows):
        return await self.inner.pull_rows(table, rows)

    async def push_rows(self, table, rows, grad_rows, versions) -> list[Push]:
        return await self.inner.push_rows(table, rows, grad_rows, versions)

    def close(self) -> None:
        self.inner.close()
