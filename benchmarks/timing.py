"""Timing shared by the benchmarks: contenders measured in the same run,
interleaved; and their targets, each printed OK or MISSED, with the load the
machine was under (``Targets``): a benchmark exits 1 if any target is missed."""

from __future__ import annotations

import os
import statistics
import time


def medians_ms(fns, reps: int, warmup: int = 3) -> list[float]:
    """Median time of each function, interleaved rep by rep so that load from
    elsewhere on the machine falls on every contender alike."""
    for fn in fns:
        for _ in range(warmup):  # first touches of fresh memory are slow on this VM
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


class Targets:
    """A benchmark's targets. ``verdict(ok)`` is the word printed beside a
    figure, OK or MISSED, and counts it; ``report()`` prints the load average
    the figures were measured under and how many targets were met, and
    returns the exit code: 1 if any was missed."""

    def __init__(self):
        self.met, self.missed = 0, 0

    def verdict(self, ok: bool) -> str:
        if ok:
            self.met += 1
        else:
            self.missed += 1
        return "OK" if ok else "MISSED"

    def report(self) -> int:
        print(f"{self.met}/{self.met + self.missed} targets met; {load_average()}")
        return 1 if self.missed else 0


def load_average() -> str:
    """The machine's load average: other work running beside a benchmark slows it."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"
