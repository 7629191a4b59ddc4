"""Seeded delays: how long each worker's computations and messages take.

``Delays(specs, seed, num_workers)`` holds one delay model per event ("compute": one
mini-batch gradient; "pull"; "push"; see ``ps.delay_models`` for the kinds) and
answers ``sampler(worker, event)(nbytes)`` in seconds. Every (worker, event)
draws from its own generator, seeded from ``(seed, worker, event)``, so the
sequence a worker sees does not depend on how the workers interleave: a run
in virtual time (sim) and one with real sleeps (local) draw the same
durations. An event with no spec (``{}``) or ``kind = "none"`` takes no time.
If every event does, ``active`` is False, and a backend skips the delays.

``DelayedClient`` wraps any client and waits each call's duration on a
``Clock`` before forwarding it: real seconds (local, grpc, ray) or the
simulator's virtual ones (sim), the same wrapper for both.
``TraceRecorder`` collects the durations a run drew and writes the JSONL
file that a ``trace`` delay replays.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable, Protocol as Interface

from asyncps.optim.validation import check, check_int, is_int
from asyncps.ps.client import Client, ClientWrapper, Versions
from asyncps.ps.delay_models import EVENTS, KINDS, DelayModel, no_delay, read_spec
from asyncps.ps.shard import Push

__all__ = ["Delays", "DelayedClient", "Clock", "RealClock", "TraceRecorder", "EVENTS", "KINDS"]


def _check_event(event) -> None:
    check(event in EVENTS, "delay event", event, f"choose one of {list(EVENTS)}")


class Delays:
    """One delay model per event, drawn per (worker, event) from seeded sources."""

    def __init__(self, specs: dict | None = None, seed: int = 0, num_workers: int = 1):
        specs = {} if specs is None else specs
        check(isinstance(specs, dict), "delays", specs, "must be a table of event -> spec, e.g. "
              '{"push": {"kind": "constant", "seconds": 0.001}}')
        check_int(seed, "seed", low=0)
        check_int(num_workers, "num_workers")
        self.seed, self.num_workers = seed, num_workers
        self.models: dict[str, DelayModel] = {}  # the events that take time
        self._sources: dict[str, list] = {}  # event -> per worker, where its durations come from
        self._factors: dict[str, list[float]] = {}  # event -> per worker, its slowdown factor
        for event, spec in specs.items():
            _check_event(event)
            if spec == {}:
                continue
            model, slowdown = read_spec(event, spec, num_workers)
            if model.kind == "none":
                continue
            self.models[event] = model
            self._sources[event] = [model.source(seed, w, event) for w in range(num_workers)]
            self._factors[event] = [slowdown.get(w, 1.0) for w in range(num_workers)]

    @property
    def active(self) -> bool:
        """Whether any event takes time (if not, a backend need not wrap anything)."""
        return bool(self.models)

    def is_active(self, event: str) -> bool:
        _check_event(event)
        return event in self.models

    def sampler(self, worker: int, event: str) -> Callable[[int], float]:
        """``worker``'s durations of ``event``, checked once: ``sampler(nbytes)`` draws
        the seconds its next ``event`` takes (``nbytes``: the message's size, for pull
        and push). A client takes one per event; the sim backend draws hundreds of thousands."""
        check(is_int(worker, 0) and worker < self.num_workers, "worker", worker,
              f"must be in [0, {self.num_workers}): the delays were built for {self.num_workers} workers")
        _check_event(event)
        model = self.models.get(event)
        if model is None:
            return no_delay
        return model.sampler(self._sources[event][worker], self._factors[event][worker])

    def samplers(self, worker: int) -> dict[str, Callable[[int], float]]:
        """``sampler`` of every event, for ``DelayedClient``."""
        return {event: self.sampler(worker, event) for event in EVENTS}


class Clock(Interface):
    """Where a worker's time passes: real seconds, or the simulator's virtual ones."""

    def sleep(self, seconds: float) -> Awaitable[None]: ...


class RealClock:
    """Wall-clock time; a wait is ``asyncio.sleep`` on the worker's own event loop."""

    @staticmethod
    def sleep(seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds) if seconds > 0 else NO_WAIT


class _NoWait:
    """What a wait of no time hands back: awaited, it returns at once without
    yielding, so the coroutine keeps its turn (and the sim's order is kept)."""

    def __await__(self):
        return iter(())


NO_WAIT = _NoWait()


class DelayedClient(ClientWrapper):
    """Each call takes its drawn duration on ``clock`` before it is forwarded.

    ``samplers[event](nbytes)`` draws an event's duration ("compute", "pull",
    "push"); a message's size is that of its float32 values. ``compute()``,
    passed as ``WorkerRuntime(after_compute=...)``, draws a gradient's
    duration and owes it to the worker's next call: its time passes before
    that call travels. ``trace`` records every draw."""

    def __init__(self, inner: Client, samplers: dict[str, Callable[[int], float]], clock: Clock,
                 trace: TraceRecorder | None = None):
        super().__init__(inner)
        self.clock = clock
        # Per event, its sampler and the trace's list of this worker's draws (None: not recorded).
        self._samplers = {event: (samplers[event], None if trace is None else trace.durations(self.worker, event))
                          for event in EVENTS}
        self.owed = 0.0  # compute time not yet waited

    def compute(self) -> None:
        self.owed += self._draw("compute", 0)

    def _draw(self, event: str, nbytes: int) -> float:
        draw, drawn = self._samplers[event]
        seconds = draw(nbytes)
        if drawn is not None:
            drawn.append(seconds)
        return seconds

    def _travel(self, event: str, nbytes: int) -> Awaitable[None]:
        seconds, self.owed = self.owed + self._draw(event, nbytes), 0.0
        return self.clock.sleep(seconds)

    async def pull(self, out, at_least=0) -> Versions:
        await self._travel("pull", self.layout.size * 4)
        return await self.inner.pull(out, at_least)

    async def push(self, grad, read) -> list[Push]:
        await self._travel("push", self.layout.size * 4)
        return await self.inner.push(grad, read)

    async def pull_rows(self, table, rows):
        await self._travel("pull", rows.numel() * self.layout.table(table)[1] * 4)
        return await self.inner.pull_rows(table, rows)

    async def push_rows(self, table, rows, grad_rows, versions) -> list[Push]:
        await self._travel("push", rows.numel() * self.layout.table(table)[1] * 4)
        return await self.inner.push_rows(table, rows, grad_rows, versions)


class TraceRecorder:
    """The durations a run drew, per (worker, event) in the order they were
    drawn. ``write(path)`` makes the JSONL file that a ``trace`` delay
    (``{kind = "trace", path = ...}``) replays: the same durations per (worker, event)."""

    def __init__(self):
        self._drawn: dict[tuple[int, str], list[float]] = {}

    def durations(self, worker: int, event: str) -> list[float]:
        """The list of ``(worker, event)``'s draws. The simulator appends its
        draws to it directly: they come from the models, so they are valid, and
        it makes hundreds of thousands."""
        return self._drawn.setdefault((worker, event), [])

    def write(self, path: str | Path) -> None:
        """One JSON object a line: ``{"worker": 0, "event": "push", "seconds": 0.0021}``,
        grouped by (worker, event) in the order each first drew."""
        # The lines json.dumps would write (a float's repr is its JSON), made directly: a run draws many.
        lines = (f'{{"worker": {w}, "event": "{e}", "seconds": {float(s)!r}}}\n'
                 for (w, e), drawn in self._drawn.items() for s in drawn)
        Path(path).write_text("".join(lines), encoding="utf-8")
