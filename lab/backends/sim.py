"""The ``sim`` backend: the same protocol coroutines, in virtual time.

A small discrete-event scheduler drives every worker's coroutine, and the
evaluator's, on one thread. A client call awaits the virtual time its message
takes (drawn from the run's delay models), and a gradient computation is
charged to the worker's next call. The gradient math is real: the shards are
the in-process ones. Events at the same virtual time run in the order they
were scheduled, and a zero-length wait does not yield. The same config and
seed therefore give a byte-identical ``metrics.jsonl``. That is how one
laptop studies 64 workers with heavy-tailed stragglers.

The delays drawn are written to ``trace.jsonl`` in the run directory. A
``trace`` delay model replays them. When the config gives no compute delay,
a gradient takes one virtual second. With nothing taking time, each worker
would run to its end before the next began.
"""

from __future__ import annotations

import heapq
import itertools
from functools import partial
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Coroutine

import torch
from tqdm import tqdm

from lab.evaluator import EVALUATOR, Evaluator
from lab.experiment import Experiment
from lab.metrics import Metrics
from ps import ClientWrapper, InProcessClient, Pulled, Push, make_shards
from ps.delay_models import no_delay
from ps.delays import EVENTS, TraceRecorder
from workers.runtime import WorkerRuntime


class _Command:
    """What a coroutine hands the scheduler when it yields."""

    def __init__(self, kind: str, value):
        self.kind, self.value = kind, value

    def __await__(self):
        yield self


class _NoWait:
    """What a wait of no time hands back: awaited, it returns without yielding,
    so the coroutine keeps its turn and the scheduler never sees it."""

    def __await__(self):
        return iter(())


_NO_WAIT = _NoWait()


@dataclass(order=True)
class _Task:
    seq: int
    name: str = field(compare=False)
    coro: Coroutine = field(compare=False, repr=False)


class VirtualTime:
    """A deterministic scheduler of coroutines over a virtual clock."""

    def __init__(self):
        self.now = 0.0
        self._ready: list[tuple[float, int, _Task]] = []
        self._waiting: list[tuple[Callable[[], bool], _Task]] = []
        self._changed = False  # whether a shard changed since the waiters were last asked: most steps change none
        self._seq = itertools.count()
        self.errors: list[tuple[str, BaseException]] = []

    def sleep(self, seconds: float) -> Awaitable[None]:
        # A zero-length wait keeps the turn: no other coroutine runs in between.
        # (A plain function returning the awaitable: a coroutine a call would cost more than the wait.)
        return _Command("sleep", seconds) if seconds > 0 else _NO_WAIT

    def wait_until(self, ready: Callable[[], bool]) -> Awaitable[None]:
        """Wait until ``ready()``, asked again after each ``changed()``."""
        return _NO_WAIT if ready() else _Command("wait", ready)

    def changed(self) -> None:
        """Something a waiter may wait for has changed (a push, the shards closing)."""
        self._changed = True

    def spawn(self, coro: Coroutine, name: str) -> None:
        task = _Task(next(self._seq), name, coro)
        heapq.heappush(self._ready, (self.now, task.seq, task))

    def run(self, on_idle: Callable[[], None]) -> None:
        """Run until every coroutine has finished. When only waiting coroutines
        remain, ``on_idle`` is called once (to end the run) so that they can finish."""
        idle_called = False
        while self._ready or self._waiting:
            if not self._ready:
                if idle_called:
                    names = ", ".join(task.name for _, task in self._waiting)
                    raise RuntimeError(f"simulation deadlock at t={self.now:.6g}: {names} wait for what never comes")
                on_idle()
                idle_called = True
                self._wake_waiters()
                continue
            self.now, _, task = heapq.heappop(self._ready)
            self._step(task)
            if self.errors:
                return
            if self._changed:
                self._wake_waiters()

    def _step(self, task: _Task) -> None:
        try:
            command = task.coro.send(None)
        except StopIteration:
            return
        except BaseException as err:  # a worker's failure is the run's result, reported by the backend
            self.errors.append((task.name, err))
            return
        if command.kind == "sleep":
            heapq.heappush(self._ready, (self.now + command.value, next(self._seq), task))
        else:
            self._waiting.append((command.value, task))

    def _wake_waiters(self) -> None:
        self._changed = False
        still = []
        for ready, task in self._waiting:
            if ready():
                heapq.heappush(self._ready, (self.now, next(self._seq), task))
            else:
                still.append((ready, task))
        self._waiting = still


class SimClient(ClientWrapper):
    """An in-process client whose calls take virtual time."""

    def __init__(self, inner: InProcessClient, sim: VirtualTime,
                 samplers: dict[str, Callable[[int], float]] | None = None, trace: TraceRecorder | None = None):
        """``samplers[event](nbytes)`` draws each event's duration (``None``:
        every call is instant); the draws are recorded in ``trace``."""
        super().__init__(inner)
        self.sim = sim
        samplers = samplers or {event: no_delay for event in EVENTS}
        # Per event, its sampler and the trace's list of this worker's draws (None: not recorded).
        self._samplers = {event: (samplers[event], None if trace is None else trace.durations(self.worker, event))
                        for event in EVENTS}
        self.owed = 0.0  # compute time not yet charged

    def compute(self) -> None:
        """A gradient was computed: charge its duration to the next call."""
        self.owed += self._draw("compute", 0)

    def _draw(self, event: str, nbytes: int) -> float:
        draw, drawn = self._samplers[event]
        seconds = draw(nbytes)
        if drawn is not None:
            drawn.append(seconds)
        return seconds

    def _travel(self, event: str, nbytes: int) -> Awaitable[None]:
        seconds, self.owed = self.owed + self._draw(event, nbytes), 0.0
        return self.sim.sleep(seconds)

    async def pull(self, min_versions=None) -> Pulled:
        await self._travel("pull", self.layout.size * 4)
        if min_versions:
            await self.sim.wait_until(partial(_reached, self.inner.shards, min_versions))
        return self.inner.pull_now(min_versions)

    async def push(self, grad, versions) -> list[Push]:
        # The dense vector in float32, the only push the shards take: its size
        # is the layout's, as a pull's is, without asking the tensor.
        await self._travel("push", self.layout.size * 4)
        pushes = self.inner.push_now(grad, versions)
        self.sim.changed()
        return pushes

    async def pull_rows(self, table, rows):
        await self._travel("pull", rows.numel() * self.layout.table(table)[1] * 4)
        return await self.inner.pull_rows(table, rows)

    async def push_rows(self, table, rows, grad_rows, versions):
        await self._travel("push", grad_rows.numel() * grad_rows.element_size())
        pushes = await self.inner.push_rows(table, rows, grad_rows, versions)
        self.sim.changed()
        return pushes


def _reached(shards: list, min_versions: list[int]) -> bool:
    """Whether every shard answers a pull for its wanted version: a waiting pull may go on."""
    for shard, wanted in zip(shards, min_versions):  # a loop: asked after every push while a pull waits
        if not shard.reached(wanted):
            return False
    return True


DEFAULT_COMPUTE_SECONDS = 1.0  # a gradient's virtual duration when the config gives none


def run_sim(experiment: Experiment, metrics: Metrics, progress: bool = True) -> tuple[dict, dict]:
    """Run the experiment in virtual time; metrics carry virtual seconds."""
    torch.set_num_threads(1)  # one thread: the same floating-point results every run
    sim = VirtualTime()
    metrics.use_clock(lambda: sim.now)
    layout, workers = experiment.layout, experiment.config.cluster.workers
    shards = make_shards(layout, experiment.initial_flat, experiment.initial_tables, experiment.server_rule())
    trace = TraceRecorder()

    def end_run() -> None:
        for shard in shards:
            shard.close()
        sim.changed()

    # The evaluator reads instantly.
    evaluator = Evaluator(experiment, SimClient(InProcessClient(layout, shards, EVALUATOR), sim), metrics, end_run)
    delays = experiment.delays

    def samplers(worker: int) -> dict[str, Callable[[int], float]]:
        drawn = {event: delays.sampler(worker, event) for event in EVENTS}
        if not delays.is_active("compute"):
            drawn["compute"] = lambda nbytes: DEFAULT_COMPUTE_SECONDS
        return drawn

    for w in range(workers):
        client = SimClient(InProcessClient(layout, shards, w), sim, samplers(w), trace)
        runtime = WorkerRuntime(w, workers, client, experiment.model, experiment.data_shards[w], experiment.steps,
                                metrics.record, ShardsClosed(shards), after_compute=client.compute)
        sim.spawn(runtime.work(experiment.protocol), f"worker {w}")
    sim.spawn(evaluator.run(), "evaluator")
    bar = tqdm(total=experiment.steps * workers, unit="step", desc=f"{experiment.config.name} (virtual time)",
               disable=not progress, mininterval=0.5)
    if progress:
        metrics.listeners.append(lambda kind, fields: kind == "train" and bar.update())
    sim.run(on_idle=end_run)
    if sim.errors:
        name, err = sim.errors[0]
        metrics.record("event", message=f"{name} failed: {err!r}")
        raise err
    bar.close()
    trace.write(metrics.path.parent / "trace.jsonl")
    _run_to_end(evaluator.evaluate())
    dense, tables, _ = _run_to_end(evaluator.read())
    return dense, tables


class ShardsClosed:
    """The stop flag a runtime checks between batches: set once early stopping
    has closed the shards (the sim has no threads to signal)."""

    def __init__(self, shards):
        self.shards = shards

    def is_set(self) -> bool:
        for shard in self.shards:  # a loop, not any() over a generator: asked before every batch
            if shard.closed:
                return True
        return False


def _run_to_end(coro):
    """Drive a coroutine that never needs to wait (the run is over)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a final read waited in virtual time after the run ended")
