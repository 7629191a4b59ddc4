"""A parameter-server shard: one slice of the model, its server rule, a version clock.

``version`` counts the updates applied (or what the rule counts instead:
the clocks every worker has completed, for stale synchronous parallel). Every
push carries the version its gradient was computed from, and ``staleness =
version - read_version`` is recorded for each push, per worker.

The dense slice, ``dense``, is a ``Publication`` (copy-on-write, version waits): the
shard reads from it and updates it through the rule. Sparse tables are
updated in place, one update at a time; row pulls copy their rows.

Validation happens once per boundary: ``check_push`` and ``check_push_rows``
are what a server calls on what it receives; the in-process client checks a
whole push once (``check_values``, ``check_read_version``). ``push`` and
``push_rows`` apply what was checked. Checkpoint files are ``ps.checkpoint``'s;
an optional ``journal`` logs each push before it is applied (``ps.journal``).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import NamedTuple

import torch

from asyncps import optim
from asyncps.optim.validation import is_int, is_number
from asyncps.ps.flat import MAX_ABS, Flat, all_usable
from asyncps.ps.journal import Journal
from asyncps.ps.publication import Publication
from asyncps.ps.rules import ServerRule


class Push(NamedTuple):
    """What the shard knew when a push arrived, and what became of it (a named
    tuple: one is made per shard for every push, thousands a second)."""

    shard: int
    worker: int
    read_version: int
    version: int  # the shard's version when the push arrived
    # True: counted as an update, a new version. False: buffered or dropped (synchronous SGD), or
    # applied within the version (stale synchronous parallel, whose version counts completed clocks).
    applied: bool

    @property
    def staleness(self) -> int:
        return self.version - self.read_version


def check_values(t, shape: tuple, what: str, where: str) -> None:
    """A float32 tensor of ``shape`` that ``all_usable`` passes, or ValueError naming ``where``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"Invalid {what} for {where}: expected a torch tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise ValueError(f"Invalid {what} dtype for {where}: {t.dtype} (shards hold torch.float32)")
    if t.shape != shape:
        raise ValueError(f"Invalid {what} shape for {where}: {tuple(t.shape)} (expected {tuple(shape)})")
    if not all_usable(t):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"Invalid {what} for {where}: {bad} non-finite values (NaN or Inf); nothing was applied")
        huge = int((t.abs() > MAX_ABS).sum())
        raise ValueError(f"Invalid {what} for {where}: {huge} values beyond ±{MAX_ABS:.3g}, whose squares overflow "
                         "float32 and would freeze an optimizer that sums them; nothing was applied")


class Shard:
    def __init__(self, index: int, values: torch.Tensor, tables: dict[str, torch.Tensor] | None, rule: ServerRule,
                 workers: int | None = None):
        """``workers``: the run's worker count, against which every push's
        worker id is checked (None: any id, for a shard outside a run)."""
        self.index = index
        self.workers = workers
        self.rule = rule
        self.dense = Publication(values, f"shard {index}")
        self.size = self.dense.size  # fixed for the shard's life: every push is checked against it
        self.tables = {name: t.detach().to(torch.float32).contiguous().clone() for name, t in (tables or {}).items()}
        self.rule_state = rule.init(self.dense.values)
        self.table_states = {name: rule.init(t) for name, t in self.tables.items()}
        self.staleness: dict[int, Counter] = defaultdict(Counter)  # worker -> staleness -> pushes
        self.lock = threading.Lock()  # one update at a time: the tables, the rule's state, staleness
        self.accepted = 0  # pushes handed to the rule (applied or kept by it): the journal numbers them
        self.journal: Journal | None = None  # writes each push before it is applied (ps.recovery)
        # The rule's optimizer's rate when it is a plateau schedule (the evaluator sets its factor), else None:
        # the rule is the shard's for life, so this is looked up once.
        lr = getattr(getattr(rule, "optimizer", None), "lr", None)
        self.scaled_lr = lr if isinstance(lr, optim.Scaled) else None

    @property
    def version(self) -> int:
        return self.dense.version

    @property
    def closed(self) -> bool:
        return self.dense.closed

    def close(self) -> None:
        """End the run: pulls waiting for a version not reached raise ShardClosed."""
        self.dense.close()

    # -- checks, made once per boundary ------------------------------------------------
    def check_read_version(self, read_version: int) -> None:
        """A version this shard has had. Versions only grow, so what passes
        here still passes when the push is applied."""
        version = self.version
        if not isinstance(read_version, int) or isinstance(read_version, bool) or not 0 <= read_version <= version:
            raise ValueError(f"Invalid read_version for shard {self.index}: {read_version!r} "
                             f"(must be a version this shard has had, 0..{version})")

    def check_worker(self, worker: int) -> None:
        """A worker of the run: rules keep per-worker state, and a push from
        anyone else must change nothing."""
        if self.workers is not None and not (is_int(worker, 0) and worker < self.workers):
            raise ValueError(f"Invalid worker for shard {self.index}: {worker!r} (the run's workers are "
                             f"0..{self.workers - 1})")

    def check_push(self, grad: torch.Tensor, read_version: int, worker: int) -> None:
        """Raise ValueError if ``grad`` is not a finite float32 vector of this
        shard's size, or the version or the worker is bad."""
        check_values(grad, (self.size,), "gradient", f"shard {self.index}")
        self.check_read_version(read_version)
        self.check_worker(worker)

    def check_push_rows(self, table: str, ids: torch.Tensor, grad_rows: torch.Tensor, read_version: int,
                        worker: int) -> None:
        self.check_worker(worker)
        self.check_ids(table, ids)
        check_values(grad_rows, (ids.numel(), self.tables[table].shape[1]), "row gradients", f"shard {self.index}")
        self.check_read_version(read_version)

    def check_ids(self, table: str, ids: torch.Tensor) -> None:
        if table not in self.tables:
            raise ValueError(f"Invalid table: {table!r} (shard {self.index} holds {sorted(self.tables)})")
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 1:
            raise ValueError(f"Invalid row ids for table {table!r}: expected a 1-D torch.int64 tensor")
        rows = self.tables[table].shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            raise ValueError(f"Invalid row ids for table {table!r}: local ids must be in [0, {rows}) on shard "
                             f"{self.index}, got [{int(ids.min())}, {int(ids.max())}]")

    # -- the update ----------------------------------------------------------------------
    def push(self, grad: Flat, read_version: int, worker: int = 0) -> Push:
        """Hand a checked gradient to the server rule."""
        with self.lock:
            if self.journal is not None:
                self.journal.write(self.accepted, read_version, worker, grad.array)
            self.accepted += 1
            arrived = self.version
            version, applied = self.dense.update(
                lambda values, out: self.rule.apply(values, grad, self.rule_state, out, worker=worker,
                                                    staleness=arrived - read_version, version=arrived))
            self.staleness[worker][version - read_version] += 1
        return Push(self.index, worker, read_version, version, applied)

    def pull_rows(self, table: str, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A copy of the given local rows of ``table`` (checked ids) and the version they hold."""
        with self.lock:
            return self.tables[table].index_select(0, ids), self.version

    def push_rows(self, table: str, ids: torch.Tensor, grad_rows: torch.Tensor, read_version: int,
                  worker: int = 0) -> Push:
        """Hand checked row gradients to the server rule."""
        with self.lock:
            if self.journal is not None:
                self.journal.write(self.accepted, read_version, worker, grad_rows.numpy(), table, ids.numpy())
            self.accepted += 1
            version = self.version
            applied = self.rule.apply_rows(self.tables[table], ids, grad_rows, self.table_states[table],
                                           worker=worker, staleness=version - read_version, version=version)
            if applied:
                self.dense.advance()
            self.staleness[worker][version - read_version] += 1
        return Push(self.index, worker, read_version, version, applied)

    # -- annealing on a plateau ----------------------------------------------------------
    def set_lr_factor(self, factor: float) -> None:
        """From the next update, the rule's optimizer's rate is its schedule's times ``factor``
        (the evaluator's plateau cut, ``optim.plateau``); a ValueError when the optimizer's
        lr is not a plateau schedule or the factor is not in (0, 1]."""
        scaled = self.scaled_lr
        if scaled is None:
            raise ValueError(f"Invalid lr factor for shard {self.index}: its optimizer's lr is not a plateau schedule "
                             "(set [server] schedule = {kind = \"plateau\"})")
        if not (is_number(factor) and 0 < factor <= 1):
            raise ValueError(f"Invalid lr factor for shard {self.index}: {factor!r} (must be a number in (0, 1])")
        with self.lock:
            scaled.factor = float(factor)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume: values, tables, version and the rule's state."""
        with self.lock:
            return {
                "index": self.index,
                "version": self.version,
                "accepted": self.accepted,
                "values": self.dense.values.clone(),
                "tables": {name: t.clone() for name, t in self.tables.items()},
                "rule_state": self.rule.state_dict(self.rule_state),
                "table_states": {name: self.rule.state_dict(s) for name, s in self.table_states.items()},
                "lr_factor": None if self.scaled_lr is None else self.scaled_lr.factor,
            }

    def load_state_dict(self, saved: dict) -> None:
        check_values(saved["values"], (self.size,), "checkpoint values", f"shard {self.index}")
        with self.lock:
            self.tables = {name: t.clone() for name, t in saved["tables"].items()}
            self.rule_state = self.rule.load_state_dict(saved["rule_state"])
            self.table_states = {name: self.rule.load_state_dict(s) for name, s in saved["table_states"].items()}
            self.accepted = int(saved["accepted"])
            if saved.get("lr_factor") is not None and self.scaled_lr is not None:
                self.scaled_lr.factor = float(saved["lr_factor"])
            self.dense.restore(saved["values"], int(saved["version"]))


def make_shards(layout, flat: torch.Tensor, tables: dict[str, torch.Tensor], rule: ServerRule,
                workers: int | None = None) -> list[Shard]:
    """One shard per range of ``layout``, holding its slice of ``flat`` and its rows of each table."""
    parts = {name: layout.split_table(name, full) for name, full in tables.items()}
    return [Shard(s, piece, {name: parts[name][s] for name in parts}, rule, workers)
            for s, piece in enumerate(layout.split(flat))]
