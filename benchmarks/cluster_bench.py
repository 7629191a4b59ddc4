"""The quickstart as a cluster, against the same run on threads, each timed from the command line.

For each round, ``asyncps run`` runs in a fresh process with ``--backend local``
and then with ``--backend grpc`` (2 shards, 4 workers: the quickstart). From
each run's ``metrics.jsonl`` and ``summary.json`` (``started_at``, the Unix
time of the run's time 0):

- start: from launching ``asyncps run`` to the first push. Target (grpc) <= 4 s.
- training: updates per second from the first push to the last.
  Target: grpc >= 50% of local's.
- stop: from the last push to the process's exit. Target (grpc) <= 2 s.

Medians over the rounds; the contenders alternate within each round.

    python benchmarks/cluster_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import Targets

BACKENDS = ("local", "grpc")


def one_run(out: Path, backend: str) -> dict[str, float]:
    launched = time.time()
    subprocess.run([sys.executable, "-m", "asyncps.lab.cli", "run", "--backend", backend, "--no-progress",
                    "--set", f"out_dir={out}", "--set", f"name={backend}"], check=True, stdout=subprocess.DEVNULL)
    exited = time.time()
    run_dir = out / backend
    started = json.loads((run_dir / "summary.json").read_text())["started_at"]
    pushes = [m["time"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if m["kind"] == "push"]
    updates = json.loads((run_dir / "summary.json").read_text())["updates"]
    first, last = started + min(pushes), started + max(pushes)
    return {"start": first - launched, "updates/s": updates / (last - first), "stop": exited - last,
            "wall": exited - launched}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {backend: [] for backend in BACKENDS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for backend in BACKENDS:
                results[backend].append(one_run(Path(tmp), backend))
    figures = {backend: {key: median([r[key] for r in runs]) for key in runs[0]} for backend, runs in results.items()}
    for backend, f in figures.items():
        print(f"{backend:5}: start {f['start']:.2f} s, training {f['updates/s']:,.0f} updates/s, "
              f"stop {f['stop']:.2f} s, wall {f['wall']:.2f} s")
    grpc, local = figures["grpc"], figures["local"]
    share = grpc["updates/s"] / local["updates/s"]
    targets = Targets()
    for name, ok, text in (
            ("start", grpc["start"] <= 4, f"grpc {grpc['start']:.2f} s (target <= 4 s)"),
            ("training", share >= 0.5, f"grpc at {share:.0%} of local's updates/s (target >= 50%)"),
            ("stop", grpc["stop"] <= 2, f"grpc {grpc['stop']:.2f} s (target <= 2 s)")):
        print(f"{name}: {text} {targets.verdict(ok)}")
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
