"""The kinds of delay, one small class each, and the reading of a spec table.

A spec is a table holding a ``kind`` and that kind's parameters, e.g.
``{kind = "lognormal", median = 0.01, sigma = 0.5}``, with an optional
per-worker ``slowdown = {"3" = 10.0}`` that multiplies worker 3's durations.
Every duration is in seconds. ``read_spec`` checks the table, and each refusal
names the key as the config writes it (``delays.push.sigma``).

A delay model draws from a *source*, one per (worker, event), called for each
duration: for the random kinds an endless stream from a numpy Generator
seeded from ``(seed, worker, event)``, taken from the generator a block at a
time (the same numbers, in the same order, as one call per draw, without
numpy's per-call cost, which is most of a draw's); for a trace, the recorded
rows, replayed in a cycle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from asyncps.optim.plugins import Interface, Registry
from asyncps.optim.validation import check, check_options, choose, is_int, is_number

EVENTS = ("compute", "pull", "push")  # one mini-batch gradient; a pull; a push
BLOCKS = (8, 32, 128, 512)  # draws a random source takes at once: blocks growing to the last size
TRACE_ROW = '{"worker": <int >= 0>, "event": "compute" | "pull" | "push", "seconds": <number >= 0>}'


@dataclass(frozen=True)
class DelayModel:
    """A kind of delay. ``build`` checks a spec's parameters (each a number >= 0,
    or > 0 where ``positive`` says why), ``source`` makes one (worker, event)'s
    state, and ``sampler`` the function that draws its durations, in seconds,
    from that state. A random kind says how to draw ``n`` durations at once
    (``sample``). A kind of one's own (``kind = "mypkg.delays:Mine"``;
    ``optim.plugins``) is a frozen dataclass subclass like those below, with
    a ``kind`` and ``sample`` (or ``sampler``)."""

    kind: ClassVar[str]
    positive: ClassVar[dict[str, str]] = {}  # parameter -> why it must be > 0

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def build(cls, where: str, event: str, num_workers: int, **params) -> "DelayModel":
        for name, value in params.items():
            if name in cls.positive:
                check(is_number(value) and value > 0, f"{where}.{name}", value,
                      f"must be a number > 0: {cls.positive[name]}")
            else:
                check(is_number(value) and value >= 0, f"{where}.{name}", value, "must be a number >= 0")
        return cls(**params)

    def source(self, seed: int, worker: int, event: str) -> Callable[[int], float]:
        return Stream(self.sample, np.random.default_rng([seed, worker, EVENTS.index(event)]))

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        raise NotImplementedError

    def sampler(self, source, factor: float) -> Callable[[int], float]:
        """``nbytes -> seconds``: ``source``'s next duration, times the worker's slowdown ``factor``.
        Unscaled, the source is its own sampler: one call a draw."""
        if factor == 1.0:
            return source
        return lambda nbytes: source(nbytes) * factor


class Stream:
    """A random kind's endless durations, taken from its generator a block at a
    time; the blocks grow to the last of ``BLOCKS``, so short runs waste few
    draws. ``stream(nbytes)`` is the next one, whatever the message's size.
    Picklable with its place in the stream (a Ray actor gets one)."""

    def __init__(self, sample: Callable[[np.random.Generator, int], list[float]], rng: np.random.Generator):
        self._sample, self._rng = sample, rng
        self._blocks = 0
        self._buffer: list[float] = []  # the block's draws not yet taken, the next one last

    def __call__(self, nbytes: int = 0) -> float:
        if not self._buffer:
            self._buffer = self._sample(self._rng, BLOCKS[min(self._blocks, len(BLOCKS) - 1)])[::-1]
            self._blocks += 1
        return self._buffer.pop()


class Replay:
    """A trace's recorded durations for one (worker, event), in order, starting
    over when they run out; ``replay(nbytes)`` is the next one. Picklable with
    its place (a Ray actor gets one)."""

    def __init__(self, seconds: tuple[float, ...]):
        self._seconds = seconds
        self._next = 0  # index of the next duration

    def __call__(self, nbytes: int = 0) -> float:
        seconds = self._seconds[self._next]
        self._next = (self._next + 1) % len(self._seconds)
        return seconds


def no_delay(nbytes: int) -> float:
    """The sampler of an event that takes no time."""
    return 0.0


@dataclass(frozen=True)
class NoDelay(DelayModel):
    kind: ClassVar[str] = "none"

    def sampler(self, source, factor):
        return no_delay


@dataclass(frozen=True)
class ConstantDelay(DelayModel):
    kind: ClassVar[str] = "constant"
    seconds: float

    def sampler(self, source, factor):
        seconds = float(self.seconds) * factor
        return lambda nbytes: seconds


@dataclass(frozen=True)
class UniformDelay(DelayModel):
    kind: ClassVar[str] = "uniform"
    low: float
    high: float

    @classmethod
    def build(cls, where, event, num_workers, **params):
        model = super().build(where, event, num_workers, **params)
        check(model.low <= model.high, f"{where}.high", model.high, f"must be >= low = {model.low!r}")
        return model

    def sample(self, rng, n):
        return rng.uniform(self.low, self.high, n).tolist()


@dataclass(frozen=True)
class ExponentialDelay(DelayModel):
    kind: ClassVar[str] = "exponential"
    mean: float

    def sample(self, rng, n):
        return rng.exponential(self.mean, n).tolist()


@dataclass(frozen=True)
class LognormalDelay(DelayModel):
    """exp(N(log median, sigma²)): the median is ``median``, the mean median·exp(sigma²/2)."""

    kind: ClassVar[str] = "lognormal"
    positive: ClassVar[dict[str, str]] = {"sigma": 'the spread (for none, use kind = "constant")'}
    median: float
    sigma: float

    def sample(self, rng, n):
        return [self.median * math.exp(self.sigma * z) for z in rng.standard_normal(n).tolist()]


@dataclass(frozen=True)
class ParetoDelay(DelayModel):
    """Heavy-tailed stragglers: the classical (type I) Pareto with minimum ``scale``,
    P(X > x) = (scale / x)^alpha for x >= scale, drawn as scale·(1 + Lomax), i.e.
    ``scale * (1 + numpy.random.Generator.pareto(alpha))``. The median is
    scale·2^(1/alpha); the mean, alpha·scale/(alpha - 1), exists only for alpha > 1,
    and so alpha must be: below it, a few draws are long enough to stall for hours a
    run that sleeps them (local, grpc, ray)."""

    kind: ClassVar[str] = "pareto"
    scale: float
    alpha: float

    @classmethod
    def build(cls, where, event, num_workers, **params):
        alpha = params["alpha"]
        check(is_number(alpha) and alpha > 1, f"{where}.alpha", alpha,
              "must be a number > 1: at alpha <= 1 the mean delay is infinite, and a few delays are long enough "
              "to stall a run; alpha = 1.5 is a heavy tail with a finite mean")
        return super().build(where, event, num_workers, **params)

    def sample(self, rng, n):
        return [self.scale * (1.0 + x) for x in rng.pareto(self.alpha, n).tolist()]


@dataclass(frozen=True)
class BandwidthDelay(DelayModel):
    """A message's time on the wire: latency + nbytes / bytes_per_second."""

    kind: ClassVar[str] = "bandwidth"
    positive: ClassVar[dict[str, str]] = {"bytes_per_second": "it divides the message size"}
    latency: float
    bytes_per_second: float

    @classmethod
    def build(cls, where, event, num_workers, **params):
        check(event != "compute", f"{where}.kind", cls.kind,
              "a computation sends no message: use bandwidth for pull or push")
        return super().build(where, event, num_workers, **params)

    def sampler(self, source, factor):
        return lambda nbytes: (self.latency + nbytes / self.bytes_per_second) * factor


@dataclass(frozen=True)
class TraceDelay(DelayModel):
    """Replays a recorded trace (``TraceRecorder.write``): this event's rows for a
    worker, in file order, starting over when they run out."""

    kind: ClassVar[str] = "trace"
    path: str
    rows: dict[int, tuple[float, ...]] = field(init=False, repr=False, compare=False)  # worker -> seconds

    @classmethod
    def build(cls, where, event, num_workers, **params):
        path = params["path"]
        check(isinstance(path, str) and path != "", f"{where}.path", path, "must be the path of a JSONL trace file")
        check(Path(path).is_file(), f"{where}.path", path, "no such file; TraceRecorder.write makes one")
        rows = _read_trace(path, event)
        for worker in range(num_workers):
            check(worker in rows, f"{where}.path", path,
                  f"no {event!r} rows for worker {worker}: a trace must cover all {num_workers} workers")
        model = cls(path)
        object.__setattr__(model, "rows", {w: tuple(seconds) for w, seconds in rows.items()})  # frozen: set once
        return model

    def source(self, seed, worker, event):
        return Replay(self.rows[worker])


# A plugin kind (``delays.compute = {kind = "mypkg.delays:Bimodal", ...}``): a frozen dataclass of its
# parameters, as the kinds above; most define sample, as ExponentialDelay does.
DELAY = Interface("a ps.delay_models.DelayModel subclass", DelayModel,
                  defines=("kind", ("sample", "sampler", "source")))
KINDS = Registry(DELAY, {cls.kind: cls for cls in (NoDelay, ConstantDelay, UniformDelay, ExponentialDelay,
                                                   LognormalDelay, ParetoDelay, BandwidthDelay, TraceDelay)})


def _read_trace(path: str, event: str) -> dict[int, list[float]]:
    """``event``'s rows of the trace file, per worker in file order."""
    rows: dict[int, list[float]] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            ok = (isinstance(row, dict) and set(row) == {"worker", "event", "seconds"}
                  and is_int(row["worker"], 0) and row["event"] in EVENTS
                  and is_number(row["seconds"]) and row["seconds"] >= 0)
            check(ok, "trace row", line.strip(), f"{path} line {number}: each row is {TRACE_ROW}")
            if row["event"] == event:
                rows.setdefault(row["worker"], []).append(float(row["seconds"]))
    return rows


def read_spec(event: str, spec, num_workers: int) -> tuple[DelayModel, dict[int, float]]:
    """``event``'s spec table -> its model and the slowdown factor of each slowed worker."""
    where = f"delays.{event}"
    check(isinstance(spec, dict), where, spec, 'must be a table, e.g. {kind = "constant", seconds = 0.001}')
    check("kind" in spec, where, spec, f"needs a kind: choose one of {sorted(KINDS)}")
    kind = spec["kind"]
    cls = choose(KINDS, kind, f"{where}.kind")
    params = {key: value for key, value in spec.items() if key not in ("kind", "slowdown")}
    check_options(cls, params, f"{where} (a {kind} delay)")
    for name in cls.parameters():
        if name not in params:
            raise ValueError(f"Invalid {where}.{name}: missing (a {kind} delay takes {', '.join(cls.parameters())})")
    model = cls.build(where, event, num_workers, **params)
    return model, _read_slowdown(f"{where}.slowdown", spec.get("slowdown", {}), num_workers)


def _read_slowdown(where: str, table, num_workers: int) -> dict[int, float]:
    check(isinstance(table, dict), where, table, 'must be a table of worker = factor, e.g. {"3" = 10.0}')
    factors = {}
    for key, factor in table.items():
        worker = int(key) if isinstance(key, str) and key.isdecimal() else key  # "3" in TOML, 3 in Python
        check(is_int(worker, 0) and worker < num_workers, f"{where} worker", key,
              f"must be a worker index from 0 to {num_workers - 1}: the run has {num_workers} workers")
        check(is_number(factor) and factor > 0, f"{where}.{key}", factor, "must be a number > 0 (1 is no slowdown)")
        factors[worker] = float(factor)
    return factors
