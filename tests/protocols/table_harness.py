"""An in-process cluster for the protocol table, built from the pieces rather than from ``lab``.

Shards made by ``ps.make_shards``, an ``ps.InProcessClient`` and a
``workers.runtime.WorkerRuntime`` per worker, each worker on its own thread
as ``lab/backends/local.py`` runs them. It touches only constructors,
``WorkerRuntime.run(protocol)``, the shards' checkpoint verbs
(``state_dict``/``load_state_dict``, ``ps.checkpoint.save``/``restore``) and ``Shard.close``
to end a failed run, never the client's ``pull``/``push``: their shapes change.
Workers report through the runtime's ``record`` and are paced, when a test
needs a run that repeats exactly, through its ``after_compute`` and their data.

The problem is convex: softmax regression on the digits.
"""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass

import torch

from asyncps import optim
from asyncps import protocols
from asyncps.ps import InProcessClient, Layout, Shard, make_shards
from asyncps.workers import DataShard, Dataset, Model, build_model, load_dataset
from asyncps.workers.runtime import WorkerRuntime

SEED = 0
BATCH_SIZE = 32
WAIT_SECONDS = 60  # a guard against a hang, never a synchronisation: every wait ends on an event first


@dataclass(frozen=True)
class Problem:
    dataset: Dataset
    model: Model
    flat: torch.Tensor  # the initial dense parameters, flat in the model's order: never written

    def batches(self, worker: int, num_workers: int, lockstep: Lockstep | None = None) -> DataShard:
        if lockstep is not None:
            return PacedShard(lockstep, self.dataset.train, worker, num_workers, batch_size=BATCH_SIZE, seed=SEED)
        return DataShard(self.dataset.train, worker, num_workers, batch_size=BATCH_SIZE, seed=SEED)

    def evaluate(self, flat: torch.Tensor) -> dict[str, float]:
        """``{"loss", "accuracy"}`` of ``flat`` on the test split."""
        return self.model.evaluate(Layout(self.model.dense).unflatten(flat), {}, self.dataset.test)


@functools.cache
def digits_softmax() -> Problem:
    dataset = load_dataset("digits", seed=SEED)
    model = build_model("softmax", dataset.meta)
    dense, _ = model.init(SEED)
    return Problem(dataset, model, Layout(model.dense).flatten(dense))


class Records:
    """What the workers report through ``record(kind, **fields)``."""

    def __init__(self):
        self.entries: list[tuple[str, dict]] = []  # list.append is atomic: workers report from their threads

    def __call__(self, kind: str, **fields) -> None:
        self.entries.append((kind, fields))

    def of(self, kind: str, worker: int) -> list[dict]:
        return [fields for k, fields in self.entries if k == kind and fields["worker"] == worker]

    def losses(self, worker: int) -> list[float]:
        """The loss of each of ``worker``'s gradients, in order."""
        return [fields["loss"] for fields in self.of("train", worker)]


class Lockstep:
    """Every worker's steps in an order fixed in advance, so a run is the same every time.

    In each step, every worker reads and computes its gradient before any of
    them pushes; then they finish the step in worker order, each once the one
    before has finished it; and none begins the next step before all have
    finished this one. Where a protocol applies each push as it comes, worker
    w's are w updates stale. A worker that has ended counts as past every step.
    """

    def __init__(self, num_workers: int):
        self.finished = [0] * num_workers  # steps each worker has finished
        self.computed = [0] * num_workers  # gradients each worker has computed
        self.ended = [False] * num_workers
        self.changed = threading.Condition()

    def _past(self, counts: list[int], worker: int, step: int) -> bool:
        return self.ended[worker] or counts[worker] >= step

    def _wait(self, ready, what: str) -> None:
        if not self.changed.wait_for(ready, timeout=WAIT_SECONDS):
            raise TimeoutError(f"lockstep: {what} never came")

    def begin(self, worker: int, step: int) -> None:
        """Before worker's batch ``step`` is handed out, so before the step reads anything."""
        with self.changed:
            self.finished[worker] = step
            self.changed.notify_all()
            self._wait(lambda: all(self._past(self.finished, w, step) for w in range(len(self.finished))),
                       f"the end of step {step - 1} of every worker")

    def after_compute(self, worker: int):
        def wait_for_my_turn() -> None:  # between the gradient and its push
            with self.changed:
                self.computed[worker] += 1
                step = self.computed[worker]
                self.changed.notify_all()
                self._wait(lambda: all(self._past(self.computed, w, step) for w in range(len(self.computed)))
                           and (worker == 0 or self._past(self.finished, worker - 1, step)),
                           f"worker {worker}'s turn in step {step - 1}")
        return wait_for_my_turn

    def end(self, worker: int) -> None:
        with self.changed:
            self.ended[worker] = True
            self.changed.notify_all()


class PacedShard(DataShard):
    """A worker's batches, each handed out once ``lockstep`` lets its step begin."""

    def __init__(self, lockstep: Lockstep, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lockstep = lockstep

    def __iter__(self):
        for step, batch in enumerate(super().__iter__()):
            self.lockstep.begin(self.worker, step)
            yield batch


class Cluster:
    """``num_shards`` shards holding ``problem``'s parameters under ``protocol``'s server rule."""

    def __init__(self, problem: Problem, protocol: protocols.Protocol, server: tuple[str, dict], num_workers: int,
                 num_shards: int, flat: torch.Tensor | None = None):
        self.problem = problem
        self.protocol = protocol
        self.server = server
        self.num_workers = num_workers
        self.layout = Layout(problem.model.dense, problem.model.tables, num_shards)
        self.shards: list[Shard] = make_shards(self.layout, problem.flat if flat is None else flat, {},
                                               self.fresh_rule())

    def fresh_rule(self):
        name, options = self.server
        return self.protocol.server_rule(optim.create(name, **options), self.num_workers)

    def fresh_shards(self) -> list[Shard]:
        """Shards of the same layout with a fresh server rule, holding zeros: a checkpoint's destination."""
        return make_shards(self.layout, torch.zeros(self.layout.size), {}, self.fresh_rule())

    def over(self, shards: list[Shard]) -> Cluster:
        """This cluster with other shards of its layout: one restored from a checkpoint."""
        other = copy.copy(self)
        other.shards = shards
        return other

    def values(self) -> torch.Tensor:
        return torch.cat([shard.state_dict()["values"] for shard in self.shards])

    def state(self) -> list[dict]:
        return [shard.state_dict() for shard in self.shards]

    def train(self, steps: int, *, lockstep: bool = False) -> Records:
        """Every worker ``steps`` steps, each on its own thread: free-running, or
        in ``Lockstep``, the same on equal shards every time."""
        order = Lockstep(self.num_workers) if lockstep else None
        records = Records()
        stop = threading.Event()
        failures: list[BaseException] = []

        def end_run() -> None:  # as the local backend: a waiting pull ends with ShardClosed
            stop.set()
            for shard in self.shards:
                shard.close()

        def run_worker(runtime: WorkerRuntime) -> None:
            try:
                runtime.run(self.protocol)
            except BaseException as err:  # re-raised in the test's thread below
                failures.append(err)
                end_run()
            finally:
                if order is not None:
                    order.end(runtime.worker)

        runtimes = [WorkerRuntime(w, self.num_workers, InProcessClient(self.layout, self.shards, w),
                                  self.problem.model, self.problem.batches(w, self.num_workers, order), steps, records,
                                  stop.is_set, None if order is None else order.after_compute(w))
                    for w in range(self.num_workers)]
        threads = [threading.Thread(target=run_worker, args=(rt,), name=f"worker-{rt.worker}") for rt in runtimes]
        threads_before = torch.get_num_threads()
        torch.set_num_threads(1)  # as the backends: torch's own threads would take the cores the workers need
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_SECONDS)
            hung = [thread.name for thread in threads if thread.is_alive()]
            if hung:
                end_run()
                for thread in threads:
                    thread.join()
                raise AssertionError(f"{hung} still running after {WAIT_SECONDS} s: the run hung")
        finally:
            torch.set_num_threads(threads_before)
        if failures:
            raise failures[0]
        return records


def assert_same(ours, theirs, where: str = "state") -> None:
    """``ours`` and ``theirs`` hold the same things: nested dicts, lists and tuples of
    tensors equal bit for bit (with their dtypes and shapes) and of equal plain values."""
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} != {type(theirs).__name__}"
    if isinstance(ours, torch.Tensor):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, f"{where}: {ours.dtype} " \
            f"{tuple(ours.shape)} != {theirs.dtype} {tuple(theirs.shape)}"
        assert torch.equal(ours, theirs), f"{where}: values differ"
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), f"{where}: keys {sorted(ours, key=str)} != {sorted(theirs, key=str)}"
        for key in ours:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), f"{where}: length {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"
