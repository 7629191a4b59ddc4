"""The Ray transport against a bare Ray actor call, measured in the same run.

One round through asyncps: a push of a 10M-parameter float32 gradient to a
shard actor (``ps.ray_server.ShardActor``, applying plain SGD) and a pull of
the parameters back, through ``ps.ray_client.RayClient``. The peer: one call
of a trivial actor whose method takes an array of the same size and returns
one (the same bytes moved, in and out, with no work). Target: at most 1.5x.

Also measured, to show where the time goes: the peer with its argument put
in the object store first (as the client puts a large gradient); a
hand-written minimal shard on Ray (torch: a finite check and an in-place
SGD step on push, the array itself on pull); a floor for any shard that
checks its input (one call: the check and the step fused in one numba pass
into a second buffer, which it returns); the shard's finite check and SGD
step alone; and the round over 2 shards (the gradient is put once, and each
shard reads its own range).

Steady state. A process's first touch of a page of the object store's shared
memory is a page fault, about 0.5 us a page here, 10 ms for 40 MB: enough to
decide a comparison by whichever contender the store happens to hand fresh
pages. The store is therefore sized to a few dozen arrays, and the warm-up
runs until every process has touched all of it.

    python benchmarks/ray_bench.py [--size 10000000] [--reps 40] [--warmup 30]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import warnings

# A Ray for this benchmark alone: on 127.0.0.1, no usage report. Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from numba import njit  # noqa: E402

from asyncps import optim  # noqa: E402
from asyncps.ps import ApplyEach, Layout  # noqa: E402
from asyncps.ps.ray_client import RayClient  # noqa: E402
from asyncps.ps.ray_server import ShardActor  # noqa: E402
from asyncps.ps.flat import all_usable  # noqa: E402
from timing import Targets, medians_ms  # noqa: E402

TARGET = 1.5
STORE_ARRAYS = 16  # the object store holds this many arrays of --size: every contender's in flight, with room
MIN_STORE_BYTES = 100 * 2**20  # Ray's floor is 75 MiB


class Echo:
    """The bare peer: takes an array, returns one of the same size."""

    def __init__(self, size: int):
        self.out = np.zeros(size, dtype=np.float32)

    def echo(self, array: np.ndarray) -> np.ndarray:
        return self.out


@njit(cache=True, nogil=True)
def _checked_sgd(values, grad, out, neg_lr) -> bool:
    """out = values + neg_lr * grad in one pass, and whether grad was finite
    (the largest exponent field of its float32 bits, an integer max that vectorizes)."""
    bits = grad.view(np.int32)
    largest = np.int32(0)
    for i in range(values.size):
        largest = max(largest, bits[i] & np.int32(0x7F800000))
        out[i] = values[i] + neg_lr * grad[i]
    return largest != np.int32(0x7F800000)


class FloorShard:
    """The least a Ray shard can do for a push and a pull: one call that checks
    and steps in a single pass, into a second buffer (so a refused gradient
    changes nothing), and returns it."""

    def __init__(self, values: np.ndarray, lr: float):
        self.values, self.spare, self.neg_lr = values.copy(), np.empty_like(values), np.float32(-lr)

    def push_pull(self, grad: np.ndarray) -> np.ndarray:
        if not _checked_sgd(self.values, grad, self.spare, self.neg_lr):
            raise ValueError("non-finite gradient")
        self.values, self.spare = self.spare, self.values
        return self.values


class MinimalShard:
    """What a Ray parameter server cannot do without: refuse a non-finite
    gradient, apply an SGD step in place (one torch pass, no temporary), hand
    the values back."""

    def __init__(self, values: np.ndarray, lr: float):
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")  # the gradient is only read
        self.values, self.lr = torch.from_numpy(values.copy()), lr

    def push(self, grad: np.ndarray) -> None:
        g = torch.from_numpy(grad)
        if not math.isfinite(g.sum().item()):
            raise ValueError("non-finite gradient")
        self.values.add_(g, alpha=-self.lr)

    def pull(self) -> np.ndarray:
        return self.values.numpy()


def shard_client(size: int, shards: int) -> RayClient:
    layout = Layout({"w": (size,)}, num_shards=shards)
    rule = ApplyEach(optim.SGD(lr=1e-6))
    actors = [ray.remote(ShardActor).options(max_concurrency=16).remote(s, part.numpy(), {}, rule)
              for s, part in enumerate(layout.split(torch.randn(size)))]
    ray.get([actor.status.remote() for actor in actors])
    return RayClient(layout, actors, worker=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = max(STORE_ARRAYS * args.size * 4, MIN_STORE_BYTES)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=store)

    grad = torch.randn(args.size) * 1e-3
    array = grad.numpy()
    echo = ray.remote(Echo).remote(args.size)
    one, two = shard_client(args.size, 1), shard_client(args.size, 2)
    loop = asyncio.new_event_loop()
    params = torch.empty(args.size)  # the worker's own vector, which every pull copies into
    reads = {client: loop.run_until_complete(client.pull(params)) for client in (one, two)}

    def round_trip(client: RayClient):
        def run():
            loop.run_until_complete(client.push(grad, reads[client]))
            reads[client] = loop.run_until_complete(client.pull(params))
        return run

    minimal = ray.remote(MinimalShard).remote(torch.randn(args.size).numpy(), 1e-6)
    floor = ray.remote(FloorShard).remote(torch.randn(args.size).numpy(), 1e-6)

    def minimal_round():
        ray.get(minimal.push.remote(ray.put(array)))
        ray.get(minimal.pull.remote())

    sgd, param = optim.SGD(lr=1e-6), torch.randn(args.size)
    state = sgd.init(param)

    def shard_work():
        all_usable(grad)
        sgd.step(param, grad, state)

    bare, bare_put, lowest, least, ours, ours_two, work = medians_ms([
        lambda: ray.get(echo.echo.remote(array)),
        lambda: ray.get(echo.echo.remote(ray.put(array))),
        lambda: ray.get(floor.push_pull.remote(ray.put(array))),
        minimal_round, round_trip(one), round_trip(two), shard_work], args.reps, warmup=args.warmup)
    ratio = ours / bare
    mb = args.size * 4 / 1e6
    print(f"{args.size:,} float32 ({mb:.0f} MB) each way, Ray {ray.__version__}, {os.cpu_count()} cores, "
          f"object store {store / 2**20:,.0f} MiB (median of {args.reps}, after {args.warmup} warm-up rounds)")
    print(f"  bare actor call, array in and out            {bare:7.2f} ms")
    print(f"    the same, argument put first                {bare_put:7.2f} ms")
    print(f"  floor: one call, check + step in one pass     {lowest:7.2f} ms  ({lowest / bare:.2f}x the bare call)")
    print(f"  minimal hand-written Ray shard, push + pull   {least:7.2f} ms  ({least / bare:.2f}x the bare call)")
    print(f"  asyncps push + pull, 1 shard                  {ours:7.2f} ms")
    print(f"    of which the shard's finite check + SGD step {work:6.2f} ms (alone, in this process)")
    print(f"  asyncps push + pull, 2 shards                 {ours_two:7.2f} ms")
    targets = Targets()
    print(f"  ratio {ratio:.2f}x the bare call (target <= {TARGET}x) {targets.verdict(ratio <= TARGET)}")
    print(f"    without the shard's own work: {(ours - work) / bare:.2f}x (the transport and the second call)")
    print(f"  asyncps against the minimal shard: {ours / least:.2f}x (asyncps's own cost on Ray)")
    ray.shutdown()
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
