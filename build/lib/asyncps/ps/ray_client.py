"""The Client interface over Ray actor handles (``ps.ray_server.ShardActor``).

A call fans out to every shard at once (one actor call each) and waits for
all the answers. Tensors travel through Ray's object store as numpy arrays,
without needless copies:

- push: a large gradient is put in the object store once and every shard
  reads its own range of it; a small one goes to each shard as its slice,
  inside the call itself (Ray inlines arguments under 100 KB).
- pull: the shard's snapshot is copied into the object store once, and from
  there into the caller's vector.

The verbs are coroutines but wait with ``ray.get``, as the in-process client
waits on a shard's condition: a worker's loop is the only coroutine on its
thread, and ``ray.get`` answers sooner than awaiting the reference (a small
call: 0.75 ms against 0.95 to 1.4 ms on a 2-core machine).
A shard's own exception (ValueError for bad input, ShardClosed once the
run is over) is raised here as itself, with its message.

Each answer carries the shard's life token (see ``ps.ray_server``), and the
client passes it back with the versions it read. When the token changes,
Ray has restarted that shard from its checkpoint, and ``on_restart(status)``
is told.
"""

from __future__ import annotations

from typing import Callable

import ray
import torch
from ray.exceptions import RayTaskError

from asyncps.ps.client import Client, Versions
from asyncps.ps.layout import Layout
from asyncps.ps.ray_server import tensor
from asyncps.ps.shard import Push

PUT_BYTES = 100 * 1024  # Ray's limit for arguments inlined in the call; larger ones go to the object store
SETTLE_SECONDS = 1.0  # how long a failed fan-out waits for the other shards' answers


def _fetch_the_others(refs) -> None:
    """After one shard's call failed, fetch the others' answers (as many as arrive within
    ``SETTLE_SECONDS``): Ray prints an error nobody fetched as a traceback on the console
    (at the end of a run, each shard's ShardClosed to the evaluator's last pull)."""
    if not isinstance(refs, list):
        return
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=SETTLE_SECONDS)
    for ref in ready:
        try:
            ray.get(ref)
        except RayTaskError:
            pass


def get(refs):
    """``ray.get``, raising a shard's own exception rather than Ray's wrapper of it."""
    try:
        return ray.get(refs)
    except RayTaskError as err:
        _fetch_the_others(refs)
        if isinstance(err.cause, Exception):
            raise err.cause from None
        raise


class RayClient(Client):
    def __init__(self, layout: Layout, shards: list, worker: int,
                 on_restart: Callable[[dict], None] | None = None):
        """``shards``: one ShardActor handle per shard of ``layout``, in order."""
        super().__init__(layout, worker)
        if len(shards) != layout.num_shards:
            raise ValueError(f"Invalid shards: {len(shards)} actor handles given for a layout of "
                             f"{layout.num_shards}")
        self.shards = list(shards)
        self.on_restart = on_restart
        self.lives: list[str | None] = [None] * layout.num_shards

    def _seen(self, shard: int, life: str) -> None:
        known, self.lives[shard] = self.lives[shard], life
        if known is not None and known != life and self.on_restart is not None:
            self.on_restart(get(self.shards[shard].status.remote()))

    # -- the four verbs --------------------------------------------------------
    async def pull(self, out, at_least=0) -> Versions:
        self._check_out(out)
        answers = get([shard.pull.remote(self.worker, v, life)
                       for shard, v, life in zip(self.shards, self.wanted(at_least), self.lives)])
        target = out.numpy()
        for s, (values, _, life) in enumerate(answers):
            self._seen(s, life)
            start, stop = self.layout.spans[s]
            target[start:stop] = values
        return Versions(tuple(version for _, version, _ in answers))

    async def push(self, grad, read) -> list[Push]:
        self._check_grad(grad)
        self._check_read(read)
        versions = read.of_shard
        array = grad.detach().numpy()
        if array.nbytes >= PUT_BYTES:
            whole = ray.put(array)
            parts = [(whole, span) for span in self.layout.spans]  # each shard reads its range of it
        else:
            parts = [(part, None) for part in self.layout.split(array)]
        answers = get([shard.push.remote(part, span, version, self.worker, life) for shard, (part, span), version, life
                       in zip(self.shards, parts, versions, self.lives)])
        return self._pushes(range(self.layout.num_shards), answers)

    async def pull_rows(self, table, rows):
        out = torch.empty(rows.numel(), self.layout.table(table)[1])
        routed = self.layout.route_rows(table, rows)
        answers = get([self.shards[shard].pull_rows.remote(table, local.numpy()) for shard, _, local in routed])
        versions = {}
        for (shard, positions, _), (values, version, life) in zip(routed, answers):
            self._seen(shard, life)
            out[positions], versions[shard] = tensor(values), version
        return out, versions

    async def push_rows(self, table, rows, grad_rows, versions):
        routed = self._route_row_push(table, rows, grad_rows, versions)
        answers = get([self.shards[shard].push_rows.remote(table, local.numpy(), grad_rows[positions].numpy(),
                                                           versions[shard], self.worker, self.lives[shard])
                       for shard, positions, local in routed])
        return self._pushes([shard for shard, _, _ in routed], answers)

    async def set_lr_factor(self, factor):
        get([shard.set_lr_factor.remote(factor) for shard in self.shards])

    def _pushes(self, shards, answers) -> list[Push]:
        pushes = []
        for shard, (read_version, version, applied, life) in zip(shards, answers):
            self._seen(shard, life)
            pushes.append(Push(shard, self.worker, read_version, version, applied))
        return pushes

    def close(self) -> None:
        """End this reader's loans of the shards' snapshots (see ``ps.ray_server``)
        once it pulls no more. Waits for the shards: a threaded actor may run
        calls out of order, and this must not overtake a later pull."""
        get([shard.release.remote(self.worker) for shard in self.shards])
