"""Timing shared by the benchmarks: contenders measured in the same run, interleaved."""

from __future__ import annotations

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
