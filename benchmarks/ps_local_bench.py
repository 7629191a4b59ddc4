"""The in-process parameter server's overhead, measured in the same run.

One round is a push of a 10M-parameter float32 gradient and a pull of the
parameters, through asyncps's client over 4 in-process shards that apply
Adagrad (Downpour's server optimizer). The peer is the same Adagrad step
applied to the whole vector directly. Target: at most 1.2x.

Also measured, to show where the time goes: the shards' check that a pushed
gradient is finite (a push with NaN or Inf is refused before anything
changes). It is one more read of the gradient, about a fifth of the memory
traffic of an Adagrad step; and the pull's copy into the worker's own vector,
a read and a write.

    python benchmarks/ps_local_bench.py [--size 10000000] [--shards 4] [--reps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import torch

from asyncps import optim
from asyncps.ps import ApplyEach, InProcessClient, Layout, make_shards
from asyncps.ps.flat import all_usable
from timing import Targets, medians_ms

TARGET = 1.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--optimizer", default="adagrad", choices=sorted(optim.OPTIMIZERS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    grad = torch.randn(args.size)
    direct_opt = optim.create(args.optimizer)
    direct_param = torch.randn(args.size)
    direct_state = direct_opt.init(direct_param)

    layout = Layout({"w": (args.size,)}, num_shards=args.shards)
    shards = make_shards(layout, torch.randn(args.size), {}, ApplyEach(optim.create(args.optimizer)))
    client = InProcessClient(layout, shards, worker=0)
    loop = asyncio.new_event_loop()
    params = torch.empty(args.size)  # the worker's own vector, which every pull copies into
    read = loop.run_until_complete(client.pull(params))

    def round_trip():
        nonlocal read
        loop.run_until_complete(client.push(grad, read))
        read = loop.run_until_complete(client.pull(params))

    copy = torch.empty(args.size)
    direct, through_ps, check, copied = medians_ms([lambda: direct_opt.step(direct_param, grad, direct_state),
                                                    round_trip, lambda: all_usable(grad),
                                                    lambda: copy.copy_(grad)], args.reps)
    ratio = through_ps / direct
    print(f"{args.optimizer} on {args.size:,} float32 parameters, 1 thread (median of {args.reps})")
    print(f"  direct step on the whole vector        {direct:7.2f} ms")
    print(f"  push + pull + apply over {args.shards} shards     {through_ps:7.2f} ms")
    print(f"    of which the finite check (alone)     {check:7.2f} ms")
    print(f"    and the pull's copy (alone)           {copied:7.2f} ms")
    targets = Targets()
    print(f"  ratio {ratio:.2f}x (target <= {TARGET}x) {targets.verdict(ratio <= TARGET)}")
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
