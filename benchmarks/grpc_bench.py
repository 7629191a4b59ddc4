"""The gRPC transport against its peers, measured in one run on 127.0.0.1.

1. Raw loopback TCP bandwidth: 4 MiB writes into a socket whose reader discards.
2. Push and pull of a 10M-parameter float32 model over 2 shards (`asyncps serve`
   processes) through asyncps's client. Target: each at least 45% of (1).
   And a push plus a pull of a 586k-parameter model (2.3 MB) on one shard:
   target at most 4 ms, beside a peer written here in the style of the
   public PyTorch + gRPC parameter servers: each tensor ``torch.save``d into
   one unary message, an Adagrad step in torch ops on the server. Beside
   both, gRPC's own ceiling: bare unary calls moving the same bytes to and
   from a server that does nothing else.
3. Small pushes (4 KB) per second against a bare gRPC unary echo of 4 KB.
   Target: at least 80% of the echo rate.
4. What durability costs (``[recovery] durability``): pushes per second to one
   shard journaling each push ("log": written to the OS; "fsync": on the disk)
   against the same shard without a journal, every contender checkpointing
   every 100 updates, measured in alternating rounds; for 4 KB and 4 MB pushes.

    python benchmarks/grpc_bench.py [--params 10000000] [--reps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import torch

from asyncps.lab.backends.grpc import free_ports
from asyncps.lab.backends.grpc_processes import MALLOC_ENV
from asyncps.lab.backends.health import wait_until_serving
from asyncps.lab.config import load_config, to_toml
from asyncps.lab.experiment import Experiment
from asyncps.ps.grpc_client import GrpcClient
from asyncps.ps.journal import DURABILITIES
from timing import Targets

# gRPC's own ceiling: a server that answers each message with itself (Echo) or
# with nothing (Sink), and that sends argv[2] bytes for any message (Source).
ECHO_SERVER = """
import sys, time, grpc
from concurrent import futures
source = bytes(int(sys.argv[2]))
server = grpc.server(futures.ThreadPoolExecutor(4), options=LIMITS)
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    "Sink": grpc.unary_unary_rpc_method_handler(lambda request, context: b""),
    "Source": grpc.unary_unary_rpc_method_handler(lambda request, context: source)})])
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""

PEER_SERVER = """
import io, sys, grpc, torch
from concurrent import futures
torch.set_num_threads(1)
params = torch.zeros(int(sys.argv[2]))
sums = torch.zeros_like(params)
def push(request, context):
    grad = torch.load(io.BytesIO(request), weights_only=True)
    sums.add_(grad * grad)
    params.addcdiv_(grad, sums.sqrt().add_(1e-10), value=-0.1)
    return b""
def pull(request, context):
    out = io.BytesIO()
    torch.save(params, out)
    return out.getvalue()
server = grpc.server(futures.ThreadPoolExecutor(4), options=LIMITS)
server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("Peer", {
    "Push": grpc.unary_unary_rpc_method_handler(push), "Pull": grpc.unary_unary_rpc_method_handler(pull)})])
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""
LIMITS = [("grpc.max_receive_message_length", 1 << 28), ("grpc.max_send_message_length", 1 << 28)]

SINK_SERVER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
buffer = bytearray(4 << 20)
while True:
    conn, _ = listener.accept()
    while conn.recv_into(buffer):
        pass
"""


def tcp_bandwidth(total_bytes: int) -> float:
    """Bytes per second through a loopback socket into a reader in another process."""
    port = free_ports(1)[0]
    sink = subprocess.Popen([sys.executable, "-c", SINK_SERVER, str(port)])
    try:
        for _ in range(100):
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        payload = memoryview(bytearray(4 << 20))
        conn.sendall(payload)  # warm up
        start = time.perf_counter()
        for _ in range(total_bytes // len(payload)):
            conn.sendall(payload)
        elapsed = time.perf_counter() - start
        conn.close()
        return total_bytes / elapsed
    finally:
        sink.kill()


def start_shards(config_path: Path, shards: int, checkpoints: Path | None = None
                 ) -> tuple[list[subprocess.Popen], list[str]]:
    ports = free_ports(shards)
    env = {**os.environ, **MALLOC_ENV}
    keep = ["--checkpoints", str(checkpoints), "--run-id", "bench"] if checkpoints else []
    processes = [subprocess.Popen([sys.executable, "-m", "asyncps.lab.cli", "serve", str(config_path), "--shard", str(s),
                                   "--port", str(port), *keep], env=env, stdout=subprocess.DEVNULL)
                 for s, port in enumerate(ports)]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    for process, address in zip(processes, addresses):
        wait_until_serving(address, timeout=300, process=process)
    return processes, addresses


def stop_all(processes) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


def model_config(directory: Path, hidden: int, shards: int, durability: str = "none") -> tuple[Path, Experiment]:
    path = directory / f"model-{hidden}-{durability}.toml"
    path.write_text(to_toml(load_config(None, [f"model.options={{hidden = [{hidden}]}}", f"cluster.shards={shards}",
                                               "cluster.workers=1", f"recovery.durability={durability}"])))
    return path, Experiment.build(load_config(path))


def median(values):
    return sorted(values)[len(values) // 2]


async def model_transfer(experiment: Experiment, addresses: list[str], reps: int) -> tuple[float, float, float]:
    """Median seconds of one push, of one pull, and of one combined push and
    pull (what a Downpour step calls) of the whole model."""
    client = GrpcClient(experiment.layout, addresses, worker=0)
    grad = torch.randn(experiment.layout.size) * 1e-6
    pulls, pushes, both = [], [], []
    params = torch.empty(experiment.layout.size)  # the worker's own vector, which every pull fills
    read = await client.pull(params)
    for _ in range(reps + 1):
        start = time.perf_counter()
        await client.push(grad, read)
        pushes.append(time.perf_counter() - start)
        start = time.perf_counter()
        read = await client.pull(params)
        pulls.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, read = await client.push_pull(grad, read, params)
        both.append(time.perf_counter() - start)
    await client.aclose()
    return median(pushes[1:]), median(pulls[1:]), median(both[1:])


async def bare_seconds(address: str, method: str, payload: bytes, reps: int) -> float:
    """Median seconds of one call to the bare server's ``method``."""
    async with grpc.aio.insecure_channel(address, options=LIMITS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=60)
        call, times = channel.unary_unary(f"/Echo/{method}"), []
        for _ in range(reps + 1):
            start = time.perf_counter()
            await call(payload)
            times.append(time.perf_counter() - start)
        return median(times[1:])


async def peer_transfer(address: str, size: int, reps: int) -> float:
    """Median seconds of one push and one pull of ``size`` float32 through the peer."""
    async with grpc.aio.insecure_channel(address, options=LIMITS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=60)
        push, pull = channel.unary_unary("/Peer/Push"), channel.unary_unary("/Peer/Pull")
        grad, times = torch.randn(size) * 1e-6, []
        for _ in range(reps + 1):
            start = time.perf_counter()
            sent = io.BytesIO()
            torch.save(grad, sent)
            await push(sent.getvalue())
            torch.load(io.BytesIO(await pull(b"")), weights_only=True)
            times.append(time.perf_counter() - start)
        return median(times[1:])


async def small_pushes(experiment: Experiment, addresses: list[str], seconds: float) -> float:
    client = GrpcClient(experiment.layout, addresses, worker=0)
    grad = torch.randn(experiment.layout.size) * 1e-6
    read = await client.pull(torch.empty(experiment.layout.size))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await client.push(grad, read)
        count += 1
    rate = count / (time.perf_counter() - start)
    await client.aclose()
    return rate


def durability_cost(directory: Path, hidden: int, seconds: float, rounds: int = 3) -> dict[str, float]:
    """Pushes per second to one shard, for each durability, the contenders alternating round by round."""
    shards = {}
    try:
        for durability in DURABILITIES:
            path, experiment = model_config(directory, hidden, 1, durability)
            processes, addresses = start_shards(path, 1, directory / f"checkpoints-{hidden}-{durability}")
            shards[durability] = (experiment, processes, addresses)
        rates = {durability: [] for durability in DURABILITIES}
        for _ in range(rounds):
            for durability, (experiment, _, addresses) in shards.items():
                rates[durability].append(asyncio.run(small_pushes(experiment, addresses, seconds)))
        return {durability: median(r) for durability, r in rates.items()}
    finally:
        for _, processes, _ in shards.values():
            stop_all(processes)


async def echo_rate(address: str, nbytes: int, seconds: float) -> float:
    async with grpc.aio.insecure_channel(address, options=LIMITS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=60)
        echo = channel.unary_unary("/Echo/Echo")
        payload = bytes(nbytes)
        await echo(payload)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await echo(payload)
            count += 1
        return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=10_000_000, help="model size for push and pull")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each small-push rate measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gb = 1e9
    targets = Targets()

    tcp = tcp_bandwidth(2 << 30)
    print(f"raw loopback TCP: {tcp / gb:.2f} GB/s")

    with tempfile.TemporaryDirectory() as tmp:
        hidden = max(1, args.params // 75)  # an MLP on 8x8 digits has about 75 parameters per hidden unit
        path, experiment = model_config(Path(tmp), hidden, shards=2)
        nbytes = experiment.layout.size * 4
        echo_port = free_ports(1)[0]
        echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER.replace("LIMITS", repr(LIMITS)), str(echo_port),
                                 str(nbytes // 2)])
        bare = f"127.0.0.1:{echo_port}"
        try:
            processes, addresses = start_shards(path, 2)
            try:
                push_s, pull_s, _ = asyncio.run(model_transfer(experiment, addresses, args.reps))
            finally:
                stop_all(processes)
            sink_s = asyncio.run(bare_seconds(bare, "Sink", bytes(nbytes // 2), args.reps))
            source_s = asyncio.run(bare_seconds(bare, "Source", b"", args.reps))
            print(f"model of {experiment.layout.size:,} float32 over 2 shards ({nbytes / 1e6:.0f} MB; gRPC's own "
                  f"ceiling: a bare unary call moving one shard's half, sent {nbytes / 2 / sink_s / tcp:.0%} and "
                  f"received {nbytes / 2 / source_s / tcp:.0%} of raw TCP):")
            for verb, seconds in (("push", push_s), ("pull", pull_s)):
                share = nbytes / seconds / tcp
                print(f"  {verb}: {seconds * 1e3:7.1f} ms, {nbytes / seconds / gb:.2f} GB/s = {share:.0%} of raw TCP "
                      f"(target >= 45%) {targets.verdict(share >= 0.45)}")

            path, mid = model_config(Path(tmp), 586_000 // 75, shards=1)
            processes, addresses = start_shards(path, 1)
            try:
                push_s, pull_s, both_s = asyncio.run(model_transfer(mid, addresses, args.reps * 4))
            finally:
                stop_all(processes)
            echo_s = asyncio.run(bare_seconds(bare, "Echo", bytes(mid.layout.size * 4), args.reps * 4))
        finally:
            echo.kill()
        port = free_ports(1)[0]
        peer = subprocess.Popen([sys.executable, "-c", PEER_SERVER.replace("LIMITS", repr(LIMITS)), str(port),
                                 str(mid.layout.size)])
        try:
            theirs = asyncio.run(peer_transfer(f"127.0.0.1:{port}", mid.layout.size, args.reps * 4))
        finally:
            peer.kill()
        both = both_s * 1e3
        print(f"model of {mid.layout.size:,} float32 on 1 shard: push + pull in one call {both:.1f} ms (target <= "
              f"4 ms) {targets.verdict(both <= 4)}; as two calls {(push_s + pull_s) * 1e3:.1f} ms; the "
              f"torch.save-per-message peer {theirs * 1e3:.1f} ms ({theirs * 1e3 / both:.1f}x ours); gRPC's own "
              f"ceiling, a bare unary echo of the same bytes, {echo_s * 1e3:.1f} ms")

        path, small = model_config(Path(tmp), 14, shards=1)  # 1,060 floats: about 4 KB
        processes, addresses = start_shards(path, 1)
        echo_port = free_ports(1)[0]
        echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER.replace("LIMITS", repr(LIMITS)), str(echo_port),
                                 "0"])
        try:
            ours = asyncio.run(small_pushes(small, addresses, args.seconds))
            bare = asyncio.run(echo_rate(f"127.0.0.1:{echo_port}", small.layout.size * 4, args.seconds))
        finally:
            stop_all(processes)
            echo.kill()
        print(f"small pushes of {small.layout.size * 4:,} bytes: {ours:,.0f}/s against a bare unary echo "
              f"{bare:,.0f}/s = {ours / bare:.0%} (target >= 80%) {targets.verdict(ours / bare >= 0.8)}")

        for hidden in (14, 14_000):  # about 4 KB and 4 MB a push
            rates = durability_cost(Path(tmp), hidden, args.seconds)
            size = model_config(Path(tmp), hidden, 1)[1].layout.size * 4
            print(f"durability, pushes of {size:,} bytes to one shard (a checkpoint every 100): " + ", ".join(
                f"{d} {rates[d]:,.0f}/s ({rates[d] / rates['none']:.0%})" for d in DURABILITIES))
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
