"""Hogwild!'s workers (``protocols.hogwild``): threads running a numba kernel
that releases the GIL, or ``spawn``ed processes sharing what they write
through shared memory. Either way, each takes chunks of the epoch's example
order through a shared atomic cursor."""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from asyncps.protocols.hogwild import kernels

DTYPE = np.float32  # the parameters, as everywhere in asyncps


@dataclass(frozen=True)
class Job:
    kind: str     # "sparse" or "ratings"
    loss: int     # kernels.LOGISTIC or kernels.HINGE
    width: int    # non-zeros of the longest example
    chunk: int    # examples claimed at a time
    workers: int
    locked: bool


def _work(job: Job, a: dict[str, np.ndarray], step: float, worker: int) -> tuple[int, int, float]:
    """One worker's share of the epoch: ``(updates, collisions, CPU seconds of this thread)``."""
    started = time.thread_time()
    step = DTYPE(step)  # the kernels compute in the parameters' precision
    if job.kind == "sparse":
        updates, collisions = kernels.sparse_epoch(
            a["w"], a["reg"], a["stamps"], a["locks"], a["cursor"], a["order"], job.chunk, a["indices"], a["offsets"],
            a["values"], a["labels"], job.width, step, job.loss, worker, job.workers, job.locked)
    else:
        updates, collisions = kernels.ratings_epoch(
            a["users"], a["items"], a["user_reg"], a["item_reg"], a["user_stamps"], a["item_stamps"], a["user_locks"],
            a["item_locks"], a["cursor"], a["order"], job.chunk, a["user"], a["item"], a["rating"], step, worker,
            job.workers, job.locked)
    return updates, collisions, time.thread_time() - started


def _warm_up(job: Job, arrays: dict[str, np.ndarray]) -> None:
    """Compile (or load from numba's cache) the kernel, with nothing to do: a private cursor past the end."""
    _work(job, arrays | {"cursor": np.full(1, arrays["order"].size, dtype=np.int64)}, 0.0, 0)


class ThreadTeam:
    """Worker threads in one process; the kernel releases the GIL, so they run in parallel."""

    def __init__(self, written: dict[str, np.ndarray], read: dict[str, np.ndarray], job: Job):
        self.arrays, self.job = written | read, job
        _warm_up(job, self.arrays)
        self.pool = ThreadPoolExecutor(max_workers=job.workers, thread_name_prefix="hogwild")

    def run_epoch(self, step: float) -> list[tuple[int, int, float]]:
        futures = [self.pool.submit(_work, self.job, self.arrays, step, worker) for worker in range(self.job.workers)]
        return [future.result() for future in futures]

    def close(self) -> None:
        self.pool.shutdown()


class ProcessTeam:
    """Worker processes (``spawn``). What anyone writes during training (``written``: the
    parameters, stamps, locks, the epoch's order and the cursor) moves into
    ``multiprocessing`` shared buffers, which ``written`` then views, so the parent's
    shuffles and scores see what the workers wrote. What they only ``read`` (the training
    data) goes to each worker as a private copy. Shared memory gets no transparent huge
    pages (Linux's default for shmem), and random reads spread over ~100 MB of data then
    spend about 20% more CPU on TLB misses."""

    START_TIMEOUT = 120.0  # seconds for a worker to import asyncps and load its kernel

    def __init__(self, written: dict[str, np.ndarray], read: dict[str, np.ndarray], job: Job):
        context = multiprocessing.get_context("spawn")
        shared = {}
        for name, array in written.items():
            buffer = context.RawArray("b", max(array.nbytes, 1))
            view = np.frombuffer(buffer, dtype=array.dtype, count=array.size).reshape(array.shape)
            view[...] = array
            written[name] = view
            shared[name] = (buffer, array.dtype.str, array.shape)
        _warm_up(job, written | read)  # compiles into numba's cache, which the workers then load
        self.job = job
        self.results = context.Queue()
        self.commands = [context.Queue() for _ in range(job.workers)]
        self.workers = [context.Process(target=_serve, name=f"hogwild-{worker}", daemon=True,
                                        args=(shared, read, job, worker, self.commands[worker], self.results))
                        for worker in range(job.workers)]
        for process in self.workers:
            process.start()
        try:
            self._gather(timeout=self.START_TIMEOUT)  # each worker says it is ready
        except BaseException:
            self.close()
            raise

    def run_epoch(self, step: float) -> list[tuple[int, int, float]]:
        for commands in self.commands:
            commands.put(step)
        return self._gather()

    def _gather(self, timeout: float | None = None) -> list[tuple[int, int, float]]:
        """One answer from every worker; a worker's exception is raised here, a dead worker is an error."""
        answers, deadline = [], None if timeout is None else time.monotonic() + timeout
        while len(answers) < len(self.workers):
            try:
                answer = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = {p.name: p.exitcode for p in self.workers if not p.is_alive()}
                if dead:
                    raise RuntimeError(f"hogwild worker processes exited without answering (exit codes {dead}); "
                                       "a script that starts them needs the `if __name__ == '__main__':` guard")
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeError(f"hogwild worker processes not ready after {timeout:.0f} s")
                continue
            if isinstance(answer, str):
                raise RuntimeError(f"a hogwild worker process failed:\n{answer}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for process, commands in zip(self.workers, self.commands):
            if process.is_alive():
                commands.put(None)
        for process in self.workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


def _serve(shared: dict, read: dict, job: Job, worker: int, commands, results) -> None:
    """A worker process: view the shared arrays, then run one epoch per step size received, until None."""
    try:
        arrays = {name: np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
                  for name, (buffer, dtype, shape) in shared.items()}
        for array in arrays.values():  # map every shared page now, not in the first timed epoch
            array.reshape(-1).view(np.uint8)[::4096].sum()
        # A fresh numpy copy, because numpy asks the kernel for transparent huge pages for large
        # arrays and an unpickled buffer does not have them.
        arrays |= {name: np.array(array) for name, array in read.items()}
        _warm_up(job, arrays)
        results.put((0, 0, 0.0))
        while (step := commands.get()) is not None:
            results.put(_work(job, arrays, step, worker))
    except Exception:  # reported to the parent, which raises it
        results.put(traceback.format_exc())
