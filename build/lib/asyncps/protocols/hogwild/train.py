r"""Hogwild!: Niu, Recht, Ré & Wright, "HOGWILD!: A Lock-Free Approach to
Parallelizing Stochastic Gradient Descent", NIPS 2011 (arXiv 1106.5730).

Single-node, not a parameter-server protocol: ``threads`` workers share one
parameter array and update it without locks. The objective is a sum of
terms :math:`f(x) = \sum_{e \in E} f_e(x_e)`, each term touching only the
few coordinates :math:`e` of one example. Each worker runs the paper's
Algorithm 1::

    loop:
        take the next example e                     # a shared random permutation, once per epoch
        read x_e; compute G_e(x)                    # the gradient of f_e, zero off e
        for v in e: x_v <- x_v - gamma * G_e,v      # only the coordinates in e; no locks

and ``gamma`` is multiplied by ``beta`` after each epoch (the paper's
experiments: 20 epochs, beta = 0.9, the largest gamma that converges). The
writes are plain, non-atomic stores, as in the paper's code. An update can
therefore overwrite a concurrent one, and on sparse problems that is rare
enough not to matter.

Problems (each a term per example, as in the paper's Section 2):

- :class:`SparseClassification`: a sparse linear model, logistic loss (or
  the paper's SVM hinge loss) on the margin :math:`z = \sum_{v \in e} x_v a_v`.
- :class:`MatrixCompletion`: :math:`(\langle L_u, R_v \rangle - r)^2` per
  observed rating; the edge :math:`e` is the two rows :math:`L_u, R_v`.

Regularization touches only :math:`e`. Otherwise every update would write
every coordinate, and the problem would stop being sparse (the paper's
:math:`\rho = 1`). Each example carries
:math:`\frac{\lambda}{2} \sum_{v \in e} \frac{N}{d_v} \lVert x_v \rVert^2`,
where :math:`d_v` is the number of the :math:`N` training examples that
touch :math:`v`. So the average over examples is exactly
:math:`\frac{\lambda}{2}\lVert x \rVert^2`, and a step shrinks
:math:`x_v` by :math:`\gamma \lambda N / d_v`. This is the paper's
:math:`\lambda \sum_{u \in e} x_u^2 / d_u` (SVM, Eq. 2.3) and
:math:`\frac{\mu}{2|E_u|} \lVert L_u \rVert^2` (matrix completion),
written for the mean loss with :math:`\lambda_{\text{paper}} = \lambda N / 2`
and :math:`\mu = \lambda N`. It is also what ``l2`` means for the
parameter-server models (``workers.model_base.hogwild_l2``).

Collisions, measured. Every coordinate (a feature, or a row of L or R) has
a write stamp, and every update writes a stamp unique to it after its
write. An update *collided* when, at its write, the stamp of some
coordinate of :math:`e` differs from the one it read: another worker wrote
that coordinate between this update's read and its write, so this update's
gradient used a value that was already stale. Of two overlapping updates
of one coordinate, the later writer counts the collision. Stamps are
checked just before each coordinate's write, without a lock, so a write
landing in the few instructions between that check and the write goes
uncounted: the count is a lower bound.

The locked baseline (``mode="locked"``) is the paper's "AIG". It is the
same loop, but each update holds a lock on every coordinate of :math:`e`
from its read to its write. The locks are spin locks built on an atomic
compare-and-swap inside the numba kernel, one per coordinate, taken in
increasing id order so that two updates cannot deadlock. It never reports
a collision. A lock around each chunk of examples, taken from Python,
would only measure serialization. A per-update lock has to live inside the
kernel, since calling back into Python for every example means taking the
GIL. A single global lock is the weakest baseline there is: it serializes
everything. The per-coordinate locks are the paper's own comparison and the
strongest locked contender, and on a sparse problem two workers almost
never wait for each other. What they pay is the atomics.

Workers are threads running a numba kernel that releases the GIL (Python
threads around a pure-Python loop would take turns), or, with
``processes=True``, processes started with ``spawn`` that share the
parameters, stamps and locks through shared memory; each holds its own copy
of the read-only training data. Either way the workers take chunks of
``chunk`` examples from the epoch's permutation through a shared atomic
cursor. So one worker walks the permutation front to back (plain sequential
SGD), and a worker slowed down by other load on the machine leaves the
others more to do, rather than idle at the end of the epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from asyncps.optim.validation import check, check_bool, check_int, is_number
from asyncps.protocols.hogwild import kernels
from asyncps.protocols.hogwild.workers import DTYPE, Job, ProcessTeam, ThreadTeam

MODES = ("lockfree", "locked")
LOSSES = {"logistic": kernels.LOGISTIC, "hinge": kernels.HINGE}


# -- problems --------------------------------------------------------------------------
def _array(value, dtype, name: str) -> np.ndarray:
    """A writable, contiguous 1-D numpy copy-or-view of ``value`` (numpy, torch or a list).
    numba compiles a readonly array as another type, so readonly input is copied."""
    array = np.ascontiguousarray(np.asarray(value), dtype=dtype)
    check(array.ndim == 1, name, array.shape, f"{name} must be 1-D")
    return array if array.flags.writeable else array.copy()


def _check_ids(ids: np.ndarray, count: int, name: str, what: str) -> None:
    ok = ids.size == 0 or (int(ids.min()) >= 0 and int(ids.max()) < count)
    check(ok, name, (int(ids.min()), int(ids.max())) if ids.size else (), f"{name} must be in [0, {what}={count})")


@dataclass(frozen=True, eq=False)
class SparseExamples:
    """CSR examples: example ``i`` has features ``indices[offsets[i]:offsets[i+1]]``
    (sorted and distinct within the example) with ``values``, and a label in {0, 1}
    (-1/+1 are mapped to 0/1)."""

    indices: np.ndarray
    offsets: np.ndarray
    values: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        indices = _array(self.indices, np.int64, "indices")
        if indices.size == 0 or (indices.min() >= 0 and indices.max() < 2**31):
            indices = indices.astype(np.int32)  # half the bytes to stream per example
        offsets = _array(self.offsets, np.int64, "offsets")
        values = _array(self.values, DTYPE, "values")
        labels = _array(self.labels, DTYPE, "labels")
        check(offsets.size >= 1 and offsets[0] == 0 and bool(np.all(np.diff(offsets) >= 0)), "offsets",
              offsets[:5], "CSR row pointers: n + 1 non-decreasing entries starting at 0")
        check(offsets[-1] == indices.size == values.size, "sparse examples",
              {"offsets[-1]": int(offsets[-1]), "indices": indices.size, "values": values.size},
              "offsets[-1] must equal the number of indices and of values")
        check(labels.size == offsets.size - 1, "labels", labels.size, f"one label per example: {offsets.size - 1}")
        check(bool(np.all(np.isin(labels, (-1.0, 0.0, 1.0)))), "labels", np.unique(labels)[:5],
              "labels must be 0/1 or -1/+1")
        check(bool(np.all(np.isfinite(values))), "values", "non-finite", "feature values must be finite")
        # Locks are taken in id order: a repeated id would deadlock, a reversed pair could.
        increasing = np.diff(indices) > 0
        row_starts = offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < indices.size)]
        increasing[row_starts - 1] = True
        check(bool(np.all(increasing)), "indices", "unsorted or repeated",
              "each example's feature ids must be sorted and distinct (np.unique per row)")
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "labels", np.where(labels < 0, 0, labels).astype(DTYPE))

    def __len__(self) -> int:
        return self.labels.size

    @property
    def width(self) -> int:
        """Non-zeros of the longest example."""
        return int(np.diff(self.offsets).max(initial=0))


@dataclass(frozen=True, eq=False)
class Ratings:
    """Observed entries ``(user[i], item[i]) -> rating[i]`` of a matrix."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray

    def __post_init__(self):
        user, item = _array(self.user, np.int64, "user"), _array(self.item, np.int64, "item")
        rating = _array(self.rating, DTYPE, "rating")
        check(user.size == item.size == rating.size, "ratings",
              {"user": user.size, "item": item.size, "rating": rating.size}, "one user and one item per rating")
        check(bool(np.all(np.isfinite(rating))), "rating", "non-finite", "ratings must be finite")
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "rating", rating)

    def __len__(self) -> int:
        return self.rating.size


@dataclass(frozen=True, eq=False)
class SparseClassification:
    """Binary classification with a sparse linear model: ``loss`` "logistic" or "hinge" (the paper's SVM).
    The model has no bias term (a bias is touched by every example; add a constant feature if the data need one)."""

    train: SparseExamples
    test: SparseExamples
    num_features: int
    loss: str = "logistic"

    def __post_init__(self):
        check(isinstance(self.train, SparseExamples) and isinstance(self.test, SparseExamples), "examples",
              (type(self.train).__name__, type(self.test).__name__), "train and test must be SparseExamples")
        check_int(self.num_features, "num_features")
        check(self.loss in LOSSES, "loss", self.loss, f"choose one of {sorted(LOSSES)}")
        check(len(self.train) >= 1, "train", len(self.train), "at least one training example")
        for split in (self.train, self.test):
            _check_ids(split.indices, self.num_features, "indices", "num_features")


@dataclass(frozen=True, eq=False)
class MatrixCompletion:
    """Rank-``rank`` factorization :math:`L R^T` of a ``num_users x num_items`` matrix from observed ratings."""

    train: Ratings
    test: Ratings
    num_users: int
    num_items: int
    rank: int = 5

    def __post_init__(self):
        check(isinstance(self.train, Ratings) and isinstance(self.test, Ratings), "ratings",
              (type(self.train).__name__, type(self.test).__name__), "train and test must be Ratings")
        for name in ("num_users", "num_items", "rank"):
            check_int(getattr(self, name), name)
        check(len(self.train) >= 1, "train", len(self.train), "at least one training rating")
        for split in (self.train, self.test):
            _check_ids(split.user, self.num_users, "user", "num_users")
            _check_ids(split.item, self.num_items, "item", "num_items")


# -- the settings and the result ---------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """How :func:`train` runs. ``asyncps hogwild``'s ``[hogwild]`` section is these plus the model
    (``lab.config.HogwildConfig``), so the defaults here are the command's too."""

    threads: int = 2             # workers sharing the parameters
    mode: str = "lockfree"       # lockfree (Hogwild!) | locked (a lock per coordinate, the paper's AIG)
    processes: bool = False      # workers as processes over shared memory instead of threads
    epochs: int = 20             # passes over the training examples (the paper's experiments: 20)
    step_size: float = 0.1       # gamma of the first epoch
    beta: float = 0.9            # gamma *= beta after every epoch (the paper: 0.9)
    l2: float = 0.0              # lambda of (lambda/2)||x||^2, applied to each example's own coordinates only
    chunk: int = 256             # examples a worker claims from the epoch's order at a time

    def __post_init__(self):
        check_int(self.threads, "threads")
        check(self.mode in MODES, "mode", self.mode, f"choose one of {list(MODES)}")
        check_bool(self.processes, "processes")
        check_int(self.epochs, "epochs")
        check(is_number(self.step_size) and self.step_size > 0, "step_size", self.step_size,
              "step_size must be a number > 0")
        check(is_number(self.beta) and 0 < self.beta <= 1, "beta", self.beta,
              "beta (the step decay per epoch) must be in (0, 1]")
        check(is_number(self.l2) and self.l2 >= 0, "l2", self.l2, "l2 must be a number >= 0")
        check_int(self.chunk, "chunk")


@dataclass(frozen=True)
class Result:
    threads: int
    mode: str
    processes: bool
    updates: int                # examples processed, over all epochs and workers
    collisions: int             # updates that found a coordinate of theirs rewritten since their read
    train_seconds: float        # the workers' time in the epochs: no start-up, shuffles or evaluation
    cpu_seconds: float          # the CPU time the workers got in the epochs (their threads' CPU clocks)
    wall_seconds: float         # the whole call
    history: list[dict] = field(repr=False)  # one record per epoch: step_size, seconds, collisions, scores
    params: dict[str, np.ndarray] = field(repr=False)  # "w", or "users" (L) and "items" (R)

    @property
    def final(self) -> dict:
        """The last epoch's record."""
        return self.history[-1]

    @property
    def examples_per_second(self) -> float:
        return self.updates / self.train_seconds if self.train_seconds > 0 else float("inf")

    @property
    def collision_rate(self) -> float:
        """The share of updates that collided."""
        return self.collisions / self.updates

    @property
    def cpu_share(self) -> float:
        """How much of ``threads`` whole CPUs the workers got while the epochs ran (1.0: all of them).
        On a machine busy with other work, this, not the algorithm, can bound the speed-up."""
        return self.cpu_seconds / (self.train_seconds * self.threads) if self.train_seconds > 0 else 1.0


# -- the algorithm -----------------------------------------------------------------------
def train(problem: SparseClassification | MatrixCompletion, *, seed: int = 0, **options) -> Result:
    """Run Hogwild! (or the locked baseline) on ``problem`` and report speed, collisions and scores.

    ``options`` are the fields of :class:`Settings`, each defaulting to its value there.
    ``threads`` workers (threads, or processes with ``processes=True``) run
    ``epochs`` passes; epoch ``k`` (from 0) uses the step size
    ``step_size * beta**k``. The initial parameters are
    :func:`initial_params` and the example orders :func:`epoch_orders`, both
    from ``seed``, so ``threads=1`` is exactly sequential SGD. After every
    epoch the model is scored, outside the timed part: train loss, test loss
    and test error (classification), or train and test RMSE (ratings).

    Worker processes are started with ``spawn``, so a script that asks for
    them needs the usual ``if __name__ == "__main__":`` guard.
    """
    started = time.perf_counter()
    check(isinstance(problem, (SparseClassification, MatrixCompletion)), "problem", type(problem).__name__,
          "pass a hogwild.SparseClassification or hogwild.MatrixCompletion")
    settings = Settings(**options)
    check_int(seed, "seed", low=0)
    written, read = _arrays(problem, settings.l2, seed)
    sparse = isinstance(problem, SparseClassification)
    job = Job(kind="sparse" if sparse else "ratings", loss=LOSSES[problem.loss] if sparse else 0,
              width=problem.train.width if sparse else 0, chunk=settings.chunk, workers=settings.threads,
              locked=settings.mode == "locked")
    team = (ProcessTeam if settings.processes else ThreadTeam)(written, read, job)  # may make `written` shared memory
    try:
        history = []
        orders = epoch_orders(len(problem.train), seed, out=written["order"])
        for epoch in range(settings.epochs):
            next(orders)
            step = settings.step_size * settings.beta ** epoch
            written["cursor"][0] = 0
            tick = time.perf_counter()
            counts = team.run_epoch(step)
            seconds = time.perf_counter() - tick
            record = {"epoch": epoch + 1, "step_size": step, "seconds": seconds,
                      "cpu_seconds": sum(cpu for _, _, cpu in counts), "updates": sum(u for u, _, _ in counts),
                      "collisions": sum(c for _, c, _ in counts)}
            history.append(record | _scores(problem, written))
    finally:
        team.close()
    params = {name: written[name].copy() for name in (("w",) if sparse else ("users", "items"))}
    return Result(threads=settings.threads, mode=settings.mode, processes=settings.processes,
                  updates=sum(r["updates"] for r in history), collisions=sum(r["collisions"] for r in history),
                  train_seconds=sum(r["seconds"] for r in history), cpu_seconds=sum(r["cpu_seconds"] for r in history),
                  wall_seconds=time.perf_counter() - started, history=history, params=params)


def initial_params(problem: SparseClassification | MatrixCompletion, seed: int) -> dict[str, np.ndarray]:
    """Zeros for the linear model (its loss is convex); for matrix completion,
    ``L`` then ``R`` drawn from :math:`\\mathcal N(0, 0.1^2)` by ``np.random.default_rng(seed)``."""
    if isinstance(problem, SparseClassification):
        return {"w": np.full(problem.num_features, 0, dtype=DTYPE)}  # written now, not mapped lazily as zeros would be
    rng = np.random.default_rng(seed)
    return {"users": (0.1 * rng.standard_normal((problem.num_users, problem.rank))).astype(DTYPE),
            "items": (0.1 * rng.standard_normal((problem.num_items, problem.rank))).astype(DTYPE)}


def epoch_orders(n: int, seed: int, out: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Each epoch's order of the ``n`` training examples: ``np.arange(n)`` shuffled
    in place, once per epoch, by ``np.random.default_rng([seed, 1])`` (into ``out``)."""
    rng = np.random.default_rng([seed, 1])
    order = np.arange(n) if out is None else out
    order[:] = np.arange(n)
    while True:
        rng.shuffle(order)
        yield order


def frequency_scale(ids: np.ndarray, rows: int, n: int) -> np.ndarray:
    """:math:`N / d_v` for each of ``rows`` coordinates (or rows of a table), in float32: ``n``
    examples over the number of them that touch it, the ``ids`` each example touches
    (a coordinate no example touches counts as touched once). The penalty of an
    example on :math:`v` is weighed by it; see the module's docstring."""
    return (n / np.maximum(np.bincount(ids, minlength=rows), 1)).astype(DTYPE)


def _arrays(problem, l2: float, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What the workers write and what they only read, by name. Written: the parameters, a
    write stamp and a lock per coordinate, the epoch's order and the shared cursor. Read: the
    training data and the penalty factor per coordinate (lambda N / d, empty without l2).
    Every buffer is written once here, so the first touch of fresh memory (slow on a VM)
    happens before the clock starts."""
    written = initial_params(problem, seed)
    train = problem.train
    if isinstance(problem, SparseClassification):
        tables = {"": (train.indices, problem.num_features)}
        read = {"indices": train.indices, "offsets": train.offsets, "values": train.values, "labels": train.labels}
    else:
        tables = {"user_": (train.user, problem.num_users), "item_": (train.item, problem.num_items)}
        read = {"user": train.user, "item": train.item, "rating": train.rating}
    for prefix, (ids, rows) in tables.items():
        read[prefix + "reg"] = l2 * frequency_scale(ids, rows, len(train)) if l2 else np.zeros(0, DTYPE)
        written[prefix + "stamps"] = np.full(rows, 0, dtype=np.int32)
        written[prefix + "locks"] = np.full(rows, 0, dtype=np.int32)
    written["order"] = np.arange(len(train))
    written["cursor"] = np.zeros(1, dtype=np.int64)
    return written, read


def _scores(problem, arrays) -> dict[str, float]:
    splits = (("train", problem.train), ("test", problem.test))
    if isinstance(problem, SparseClassification):
        scores = {}
        for name, split in splits:
            loss, error = kernels.sparse_scores(arrays["w"], split.indices, split.offsets, split.values, split.labels,
                                                LOSSES[problem.loss])
            scores |= {f"{name}_loss": loss, f"{name}_error": error}
        return scores
    return {f"{name}_rmse": kernels.ratings_rmse(arrays["users"], arrays["items"], split.user, split.item, split.rating)
            for name, split in splits}
