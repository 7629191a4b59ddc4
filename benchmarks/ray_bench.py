"""The Ray transport against a bare Ray actor call, measured in the same run.

One round through asyncps: a push of a 10M-parameter float32 gradient to a
shard actor (``ps.ray_server.ShardActor``, applying plain SGD) and a pull of
the parameters back, through ``ps.ray_client.RayClient``. The peer: one call
of a trivial actor whose method takes an array of the same size and returns
one (the same bytes moved, in and out, with no work). Target: at most 1.5x.

Also measured, to show where the time goes: the peer with its argument put
in the object store first (as the client puts a large gradient), the
shard's SGD step and finite check alone, and the round over 2 shards (the
gradient is put once, and each shard reads its own range).

    python benchmarks/ray_bench.py [--size 10000000] [--reps 40]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

# A Ray for this benchmark alone: on 127.0.0.1, no usage report. Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

import optim  # noqa: E402
from ps import ApplyEach, Layout  # noqa: E402
from ps.ray_client import RayClient  # noqa: E402
from ps.ray_server import ShardActor  # noqa: E402
from ps.shard import all_finite  # noqa: E402
from timing import medians_ms  # noqa: E402

TARGET = 1.5


class Echo:
    """The bare peer: takes an array, returns one of the same size."""

    def __init__(self, size: int):
        self.out = np.zeros(size, dtype=np.float32)

    def echo(self, array: np.ndarray) -> np.ndarray:
        return self.out


def shard_client(size: int, shards: int) -> RayClient:
    layout = Layout({"w": (size,)}, num_shards=shards)
    rule = ApplyEach(optim.SGD(lr=1e-6))
    actors = [ray.remote(ShardActor).options(max_concurrency=16).remote(s, part.numpy(), {}, rule)
              for s, part in enumerate(layout.split(torch.randn(size)))]
    ray.get([actor.status.remote() for actor in actors])
    return RayClient(layout, actors, worker=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)

    grad = torch.randn(args.size) * 1e-3
    array = grad.numpy()
    echo = ray.remote(Echo).remote(args.size)
    one, two = shard_client(args.size, 1), shard_client(args.size, 2)
    loop = asyncio.new_event_loop()
    versions = {client: loop.run_until_complete(client.pull()).versions for client in (one, two)}

    def round_trip(client: RayClient):
        def run():
            loop.run_until_complete(client.push(grad, versions[client]))
            versions[client] = loop.run_until_complete(client.pull()).versions
        return run

    sgd, param, state = optim.SGD(lr=1e-6), torch.randn(args.size), None
    state = sgd.init(param)

    def shard_work():
        all_finite(grad)
        sgd.step(param, grad, state)

    bare, bare_put, ours, ours_two, work = medians_ms([
        lambda: ray.get(echo.echo.remote(array)),
        lambda: ray.get(echo.echo.remote(ray.put(array))),
        round_trip(one), round_trip(two), shard_work], args.reps)
    ratio = ours / bare
    mb = args.size * 4 / 1e6
    print(f"{args.size:,} float32 ({mb:.0f} MB) each way, Ray {ray.__version__}, {os.cpu_count()} cores "
          f"(median of {args.reps})")
    print(f"  bare actor call, array in and out            {bare:7.2f} ms")
    print(f"    the same, argument put first                {bare_put:7.2f} ms")
    print(f"  asyncps push + pull, 1 shard                  {ours:7.2f} ms")
    print(f"    of which the shard's finite check + SGD step {work:6.2f} ms (alone, in this process)")
    print(f"  asyncps push + pull, 2 shards                 {ours_two:7.2f} ms")
    print(f"  ratio {ratio:.2f}x the bare call (target <= {TARGET}x) {'OK' if ratio <= TARGET else 'MISSED'}")
    print(f"    without the shard's own work: {(ours - work) / bare:.2f}x (the transport and the second call)")
    ray.shutdown()


if __name__ == "__main__":
    main()
