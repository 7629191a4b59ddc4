"""Where every parameter lives: the model's tensors mapped onto S shards.

Dense tensors are laid end to end in one flat float32 vector, in the model's
order, and the vector is cut into S contiguous ranges whose sizes differ by
at most one element (Dean et al. 2012: "each shard applies updates to its own
1/N of the parameters"). A tensor may straddle two shards; nothing cares.

Sparse tables (embeddings, feature weights) are spread by row id: row ``r``
lives on shard ``r % S`` at local row ``r // S``. Hot rows of a Zipf-skewed
table land on different shards, which a range split would not do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asyncps.optim.validation import check, check_int


@dataclass(frozen=True)
class Range:
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def of(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.start:self.stop]


class Layout:
    """The pure mapping from named tensors to shards; no state, no network."""

    def __init__(self, dense: dict[str, tuple[int, ...]], tables: dict[str, tuple[int, int]] | None = None,
                 num_shards: int = 1):
        check_int(num_shards, "num_shards")
        self.dense = {name: tuple(shape) for name, shape in dense.items()}
        self.tables = {name: (int(rows), int(dim)) for name, (rows, dim) in (tables or {}).items()}
        self.num_shards = num_shards
        self.offsets: dict[str, Range] = {}
        start = 0
        for name, shape in self.dense.items():
            size = math.prod(shape)
            self.offsets[name] = Range(start, start + size)
            start += size
        self.size = start
        cuts = [s * self.size // num_shards for s in range(num_shards + 1)]
        self.ranges = [Range(cuts[s], cuts[s + 1]) for s in range(num_shards)]
        self.spans = [(r.start, r.stop) for r in self.ranges]  # the same, as plain pairs: read on every push

    def __repr__(self) -> str:
        return (f"Layout({len(self.dense)} dense tensors, {self.size:,} floats, tables {self.tables}, "
                f"{self.num_shards} shards)")

    # -- dense -----------------------------------------------------------------
    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """One float32 vector of the dense tensors, in layout order."""
        missing = set(self.dense) - set(tensors)
        check(not missing, "dense tensors", sorted(tensors), f"missing {sorted(missing)}")
        for name, shape in self.dense.items():
            check(tuple(tensors[name].shape) == shape, f"shape of {name!r}", tuple(tensors[name].shape),
                  f"the layout says {shape}")
        if not self.dense:
            return torch.zeros(0)
        return torch.cat([tensors[name].detach().reshape(-1).float() for name in self.dense])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped as the named tensors (no copy)."""
        check(flat.shape == (self.size,), "flat vector shape", tuple(flat.shape), f"expected ({self.size},)")
        return {name: r.of(flat).view(self.dense[name]) for name, r in self.offsets.items()}

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each shard's slice of a flat vector (views)."""
        return [flat[start:stop] for start, stop in self.spans]

    # -- sparse tables -----------------------------------------------------------
    def table(self, table: str) -> tuple[int, int]:
        check(table in self.tables, "table", table, f"known tables are {sorted(self.tables)}")
        return self.tables[table]

    def route_rows(self, table: str, rows: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Group global row ids by shard: ``[(shard, positions in rows, local ids)]``,
        for shards that get at least one row."""
        n, _ = self.table(table)
        check(rows.dtype == torch.int64 and rows.dim() == 1, "rows", f"{rows.dim()}-D {rows.dtype}",
              "expected a 1-D torch.int64 vector of row ids")
        if rows.numel():
            low, high = int(rows.min()), int(rows.max())
            check(low >= 0 and high < n, f"row ids of table {table!r}", (low, high), f"ids must be in [0, {n})")
        shard_of = rows % self.num_shards
        routed = []
        for shard in range(self.num_shards):
            positions = (shard_of == shard).nonzero().view(-1)
            if positions.numel():
                routed.append((shard, positions, rows[positions] // self.num_shards))
        return routed

    def split_table(self, table: str, full: torch.Tensor) -> list[torch.Tensor]:
        """Each shard's rows of a whole table (copies, since they are strided)."""
        shape = self.table(table)
        check(tuple(full.shape) == shape, f"shape of table {table!r}", tuple(full.shape), f"the layout says {shape}")
        return [full[shard::self.num_shards].contiguous() for shard in range(self.num_shards)]

    def join_table(self, table: str, parts: list[torch.Tensor]) -> torch.Tensor:
        """The whole table back from its shard parts."""
        rows, dim = self.table(table)
        check(len(parts) == self.num_shards, f"parts of table {table!r}", len(parts),
              f"expected one per shard: {self.num_shards}")
        full = torch.empty(rows, dim, dtype=parts[0].dtype if parts else torch.float32)
        for shard, part in enumerate(parts):
            full[shard::self.num_shards] = part
        return full
