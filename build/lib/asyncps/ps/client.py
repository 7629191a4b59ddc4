"""The only thing a worker talks to: ``pull``, ``push``, ``pull_rows``, ``push_rows``.

A client speaks for the whole model. ``pull(out)`` copies every shard's
values into the worker's own vector and answers the ``Versions`` it read,
one per shard, which the worker hands back with its push so that each shard
measures its own staleness. Shards are not synchronized with one another
(Dean et al. 2012: "the timestamps of different shards are inconsistent"),
but a protocol never sees them apart: it holds the versions as one object,
and asks for "the model at least at version v" with one number.
Transports (in-process here; gRPC and Ray elsewhere) hide behind this
interface; delays wrap it (``ps.delays``).

The verbs are coroutines, so the same protocol loop runs on real threads and
in virtual time.
"""

from __future__ import annotations

import abc
from typing import Awaitable, Callable

import torch

from asyncps.optim.validation import check, is_int
from asyncps.ps.flat import Flat
from asyncps.ps.layout import Layout
from asyncps.ps.shard import Push, Shard, check_values


class Versions:
    """The versions one pull read, one per shard. A protocol hands them back
    with its push, waits for the ones after them (``next()``), or reads
    ``int(versions)``: the updates every shard has applied."""

    __slots__ = ("of_shard",)

    def __init__(self, of_shard: tuple[int, ...]):
        self.of_shard = of_shard

    def __int__(self) -> int:
        return min(self.of_shard)

    def next(self) -> Versions:
        return Versions(tuple(v + 1 for v in self.of_shard))

    def __eq__(self, other) -> bool:
        return isinstance(other, Versions) and other.of_shard == self.of_shard

    def __repr__(self) -> str:
        return f"Versions{self.of_shard}"


AtLeast = int | Versions  # a pull's wait: every shard at this version, or each at its own


class Client(abc.ABC):
    def __init__(self, layout: Layout, worker: int):
        self.layout = layout
        self.worker = worker

    @abc.abstractmethod
    async def pull(self, out: torch.Tensor, at_least: AtLeast = 0) -> Versions:
        """Copy the dense parameters into ``out`` (the caller's float32 vector),
        once every shard has applied ``at_least`` updates; the versions read."""

    @abc.abstractmethod
    async def push(self, grad: torch.Tensor, read: Versions) -> list[Push]:
        """The flat dense gradient, computed from the parameters of ``read``; one Push per shard."""

    combines_push_pull = False  # True: push_pull is one call per shard, not a push and then a pull

    async def aclose(self) -> None:
        """Close what this event loop's calls opened (a transport's channels); the client stays usable."""

    async def set_lr_factor(self, factor: float) -> None:
        """Tell every shard its optimizer's rate is now its schedule's times ``factor`` (the
        evaluator's plateau cut; ``Shard.set_lr_factor``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot set the shards' lr factor")

    async def push_pull(self, grad: torch.Tensor, read: Versions, out: torch.Tensor,
                        at_least: AtLeast = 0) -> tuple[list[Push], Versions]:
        """``push(grad, read)``, then ``pull(out, at_least)``: a transport that
        can do both in one call per shard overrides this (``ps.grpc_client``)."""
        pushes = await self.push(grad, read)
        return pushes, await self.pull(out, at_least)

    @abc.abstractmethod
    async def pull_rows(self, table: str, rows: torch.Tensor) -> tuple[torch.Tensor, dict[int, int]]:
        """Rows of a sparse table by global id, and the version of each shard read."""

    @abc.abstractmethod
    async def push_rows(self, table: str, rows: torch.Tensor, grad_rows: torch.Tensor,
                        versions: dict[int, int]) -> list[Push]:
        """Gradients for rows of a sparse table (duplicate ids are summed)."""

    # -- what every transport checks alike ----------------------------------------------
    def wanted(self, at_least: AtLeast) -> tuple[int, ...]:
        """Each shard's version to wait for."""
        if isinstance(at_least, Versions):
            self._check_read(at_least)
            return at_least.of_shard
        check(is_int(at_least, 0), "at_least", at_least,
              "wait for a number of updates, an integer >= 0, or for the Versions a pull returned")
        return (at_least,) * self.layout.num_shards

    def _check_out(self, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor) or out.shape != (self.layout.size,) or out.dtype != torch.float32 \
                or not out.is_contiguous() or out.requires_grad:
            raise ValueError(f"Invalid pull buffer: {_describe(out)} (expected a contiguous float32 vector of "
                             f"{self.layout.size}, the model's flat dense size, not requiring grad)")

    def _check_grad(self, grad: torch.Tensor) -> None:
        if not isinstance(grad, torch.Tensor) or grad.shape != (self.layout.size,):
            raise ValueError(f"Invalid gradient: {_describe(grad)} (expected shape ({self.layout.size},), "
                             "the model's flat dense vector)")

    def _check_read(self, read: Versions) -> None:
        if not isinstance(read, Versions) or len(read.of_shard) != self.layout.num_shards:
            raise ValueError(f"Invalid versions: {read!r} (pass back the Versions that pull returned)")

    def _route_row_push(self, table: str, rows: torch.Tensor, grad_rows: torch.Tensor,
                        versions: dict[int, int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """``layout.route_rows`` for a push of row gradients, once the gradients
        and the versions are known to fit: every transport refuses alike."""
        dim = self.layout.table(table)[1]
        if not isinstance(grad_rows, torch.Tensor) or tuple(grad_rows.shape) != (rows.numel(), dim):
            raise ValueError(f"Invalid row gradients: {_describe(grad_rows)} (expected ({rows.numel()}, {dim}): "
                             "one row per id)")
        routed = self.layout.route_rows(table, rows)
        missing = [shard for shard, _, _ in routed if shard not in versions]
        if missing:
            raise ValueError(f"Invalid versions: none for shards {missing} (pass back what pull_rows returned)")
        return routed


def _describe(t) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


Wait = Callable[[Callable[[], bool]], Awaitable[None]]


class InProcessClient(Client):
    """Shards in this process. A pull waiting for a version blocks the
    calling thread on the shards, unless ``wait`` is given: the simulator
    passes its scheduler's, so the pull waits in virtual time instead."""

    def __init__(self, layout: Layout, shards: list[Shard], worker: int, wait: Wait | None = None):
        super().__init__(layout, worker)
        if len(shards) != layout.num_shards:
            raise ValueError(f"Invalid shards: {len(shards)} given for a layout of {layout.num_shards}")
        self.shards = shards
        self._wait = wait

    def _reached(self, wanted: tuple[int, ...]) -> bool:
        for shard, version in zip(self.shards, wanted):  # a loop: asked after every step while a pull waits
            if not shard.dense.reached(version):
                return False
        return True

    async def pull(self, out, at_least=0) -> Versions:
        self._check_out(out)
        wanted = self.wanted(at_least)
        if self._wait is not None and not self._reached(wanted):
            await self._wait(lambda: self._reached(wanted))
        target = out.numpy()
        return Versions(tuple(shard.dense.copy_to(target[start:stop], version)
                              for shard, (start, stop), version in zip(self.shards, self.layout.spans, wanted)))

    async def push(self, grad, read) -> list[Push]:
        # The whole push is checked once, before any shard applies it: a refused push changes no shard.
        self._check_read(read)
        check_values(grad, (self.layout.size,), "gradient", "the model")
        self.shards[0].check_worker(self.worker)  # the shards of a run share its worker count: one asks for all
        for shard, version in zip(self.shards, read.of_shard):
            shard.check_read_version(version)
        whole = Flat.of(grad.detach().contiguous())
        return [shard.push(whole.part(start, stop), version, self.worker)
                for shard, (start, stop), version in zip(self.shards, self.layout.spans, read.of_shard)]

    async def pull_rows(self, table, rows):
        out = torch.empty(rows.numel(), self.layout.table(table)[1])
        versions = {}
        for shard, positions, local in self.layout.route_rows(table, rows):
            self.shards[shard].check_ids(table, local)
            out[positions], versions[shard] = self.shards[shard].pull_rows(table, local)
        return out, versions

    async def push_rows(self, table, rows, grad_rows, versions):
        routed = self._route_row_push(table, rows, grad_rows, versions)
        work = [(self.shards[shard], local, grad_rows[positions], versions[shard]) for shard, positions, local in routed]
        for shard, local, grads, version in work:  # all checked first: a refused push changes no shard
            shard.check_push_rows(table, local, grads, version, self.worker)
        return [shard.push_rows(table, local, grads, version, self.worker) for shard, local, grads, version in work]

    async def set_lr_factor(self, factor):
        for shard in self.shards:
            shard.set_lr_factor(factor)


class ClientWrapper(Client):
    """Forwards every verb to ``inner``; a wrapper overrides what it adds to
    (recording pushes, delays) and composes with any transport. ``push_pull``
    is not forwarded: it is this wrapper's push, then its pull, unless the
    wrapper forwards it itself."""

    def __init__(self, inner: Client):
        super().__init__(inner.layout, inner.worker)
        self.inner = inner

    async def pull(self, out, at_least=0) -> Versions:
        return await self.inner.pull(out, at_least)

    async def push(self, grad, read) -> list[Push]:
        return await self.inner.push(grad, read)

    async def pull_rows(self, table, rows):
        return await self.inner.pull_rows(table, rows)

    async def push_rows(self, table, rows, grad_rows, versions) -> list[Push]:
        return await self.inner.push_rows(table, rows, grad_rows, versions)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def set_lr_factor(self, factor) -> None:
        await self.inner.set_lr_factor(factor)
