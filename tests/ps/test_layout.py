"""Layout: the pure mapping from named tensors and table rows to shards."""

from __future__ import annotations

import pytest
import torch

from asyncps.ps import Layout, Range

# Three dense tensors of 12, 5 and 1 floats (18 in all); "w" straddles the cut
# between shards 0 and 1 for every S from 2 to 18.
DENSE = {"w": (3, 4), "b": (5,), "s": ()}
SIZE = 18
TABLES = {"emb": (23, 3), "bias": (3, 1)}


def dense_tensors(dtype=torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=gen, dtype=dtype) for name, shape in DENSE.items()}


def shares_storage(view: torch.Tensor, base: torch.Tensor) -> bool:
    start = base.data_ptr()
    stop = start + base.numel() * base.element_size()
    return view.numel() == 0 or start <= view.data_ptr() < stop


# -- dense ranges ----------------------------------------------------------------
@pytest.mark.parametrize("dense, num_shards", [
    (DENSE, 1),
    (DENSE, 2),
    (DENSE, 4),     # more shards than tensors
    (DENSE, 7),
    (DENSE, SIZE),  # one float per shard
    (DENSE, 25),    # more shards than floats: some ranges are empty
    ({"a": (1000,)}, 3),
    ({"a": (10,), "b": (7, 3)}, 6),
    ({}, 3),
])
def test_ranges_are_contiguous_cover_everything_and_differ_by_at_most_one(dense, num_shards):
    layout = Layout(dense, num_shards=num_shards)
    assert len(layout.ranges) == num_shards
    assert layout.ranges[0].start == 0
    assert layout.ranges[-1].stop == layout.size
    for left, right in zip(layout.ranges, layout.ranges[1:]):
        assert left.stop == right.start
    sizes = [len(r) for r in layout.ranges]
    assert sum(sizes) == layout.size
    assert max(sizes) - min(sizes) <= 1


def test_offsets_lay_tensors_end_to_end_in_model_order():
    layout = Layout(DENSE, num_shards=2)
    assert layout.size == SIZE
    assert layout.offsets == {"w": Range(0, 12), "b": Range(12, 17), "s": Range(17, 18)}
    # "w" is cut in two: part of it on each shard.
    assert layout.ranges == [Range(0, 9), Range(9, 18)]


def test_flatten_unflatten_round_trip():
    layout = Layout(DENSE, num_shards=3)
    tensors = dense_tensors()
    flat = layout.flatten(tensors)
    assert flat.shape == (SIZE,) and flat.dtype == torch.float32
    back = layout.unflatten(flat)
    assert list(back) == list(DENSE)
    for name, t in tensors.items():
        assert torch.equal(back[name], t)
    assert Layout({}).flatten({}).shape == (0,)


def test_flatten_casts_to_float32():
    layout = Layout(DENSE)
    tensors = dense_tensors(torch.float64)
    flat = layout.flatten(tensors)
    assert flat.dtype == torch.float32
    assert torch.equal(flat, torch.cat([t.reshape(-1) for t in tensors.values()]).float())


def test_unflatten_returns_views_into_the_flat_vector():
    layout = Layout(DENSE, num_shards=3)
    flat = torch.arange(SIZE, dtype=torch.float32)
    views = layout.unflatten(flat)
    for name, view in views.items():
        assert shares_storage(view, flat), name
    views["b"].fill_(-1.0)
    assert torch.equal(flat[12:17], torch.full((5,), -1.0))


def test_split_returns_views_of_each_shards_slice():
    layout = Layout(DENSE, num_shards=4)
    flat = torch.arange(SIZE, dtype=torch.float32)
    parts = layout.split(flat)
    assert torch.equal(torch.cat(parts), flat)
    for r, part in zip(layout.ranges, parts):
        assert shares_storage(part, flat)
        assert torch.equal(part, flat[r.start:r.stop])
    parts[1].zero_()
    assert torch.equal(flat[layout.ranges[1].start:layout.ranges[1].stop], torch.zeros(len(layout.ranges[1])))


# -- sparse tables -----------------------------------------------------------------
def test_route_rows_groups_ids_by_modulo_with_local_id_by_division():
    layout = Layout(DENSE, TABLES, num_shards=4)
    rows = torch.tensor([5, 0, 22, 5, 9, 13, 1, 21, 5])
    routed = layout.route_rows("emb", rows)
    assert [shard for shard, _, _ in routed] == [0, 1, 2]  # no id % 4 == 3: shard 3 is left out
    seen = []
    for shard, positions, local in routed:
        assert torch.all(rows[positions] % 4 == shard)
        assert torch.equal(local, rows[positions] // 4)
        assert torch.equal(positions, positions.sort().values)  # the caller's order is kept
        seen += positions.tolist()
    assert sorted(seen) == list(range(rows.numel()))  # every position exactly once, duplicates included


@pytest.mark.parametrize("num_shards", [1, 2, 4, 7, 30])
def test_route_rows_scatter_and_gather_round_trip(num_shards):
    layout = Layout({}, TABLES, num_shards=num_shards)
    full = torch.randn(23, 3, generator=torch.Generator().manual_seed(1))
    parts = layout.split_table("emb", full)
    rows = torch.tensor([22, 3, 3, 0, 17, 8, 3, 11, 22, 1])
    gathered = torch.empty(rows.numel(), 3)
    for shard, positions, local in layout.route_rows("emb", rows):
        gathered[positions] = parts[shard][local]
    assert torch.equal(gathered, full[rows])


def test_route_rows_of_no_ids_routes_nowhere():
    layout = Layout({}, TABLES, num_shards=3)
    assert layout.route_rows("emb", torch.zeros(0, dtype=torch.int64)) == []


@pytest.mark.parametrize("rows, num_shards", [(23, 4), (8, 4), (3, 5), (1, 1), (0, 3), (100, 7)])
def test_split_table_parts_sum_to_the_tables_rows(rows, num_shards):
    layout = Layout({}, {"t": (rows, 2)}, num_shards=num_shards)
    parts = layout.split_table("t", torch.zeros(rows, 2))
    assert sum(p.shape[0] for p in parts) == rows
    assert all(p.shape[1] == 2 for p in parts)


@pytest.mark.parametrize("num_shards", [1, 3, 4, 23, 40])
def test_split_table_and_join_table_round_trip(num_shards):
    layout = Layout({}, TABLES, num_shards=num_shards)
    full = torch.arange(23 * 3, dtype=torch.float32).view(23, 3)
    parts = layout.split_table("emb", full)
    assert len(parts) == num_shards
    for shard, part in enumerate(parts):
        assert torch.equal(part, full[shard::num_shards])
        assert part.is_contiguous()
    assert torch.equal(layout.join_table("emb", parts), full)


# -- validation ----------------------------------------------------------------------
@pytest.mark.parametrize("num_shards", [0, -1, 2.5, "2", None, True])
def test_bad_num_shards(num_shards):
    with pytest.raises(ValueError, match=r"Invalid num_shards: .* \(num_shards must be an integer >= 1\)"):
        Layout(DENSE, num_shards=num_shards)


@pytest.mark.parametrize("length", [SIZE - 1, SIZE + 1, 0])
def test_unflatten_refuses_a_wrong_flat_shape(length):
    layout = Layout(DENSE, num_shards=2)
    with pytest.raises(ValueError, match=rf"Invalid flat vector shape: \({length},\) \(expected \({SIZE},\)\)"):
        layout.unflatten(torch.zeros(length))


def test_unflatten_refuses_a_2d_vector():
    with pytest.raises(ValueError, match=r"Invalid flat vector shape: \(1, 18\) \(expected \(18,\)\)"):
        Layout(DENSE).unflatten(torch.zeros(1, SIZE))


def test_flatten_names_the_missing_tensor():
    tensors = dense_tensors()
    del tensors["b"]
    with pytest.raises(ValueError, match=r"Invalid dense tensors: \['s', 'w'\] \(missing \['b'\]\)"):
        Layout(DENSE).flatten(tensors)


def test_flatten_names_the_tensor_of_the_wrong_shape():
    tensors = dense_tensors()
    tensors["w"] = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"Invalid shape of 'w': \(4, 3\) \(the layout says \(3, 4\)\)"):
        Layout(DENSE).flatten(tensors)


@pytest.mark.parametrize("call", [
    lambda layout: layout.table("nope"),
    lambda layout: layout.route_rows("nope", torch.tensor([0])),
    lambda layout: layout.join_table("nope", [torch.zeros(1, 3)] * 2),
], ids=["table", "route_rows", "join_table"])
def test_unknown_table_lists_the_known_ones(call):
    layout = Layout(DENSE, TABLES, num_shards=2)
    with pytest.raises(ValueError, match=r"Invalid table: 'nope' \(known tables are \['bias', 'emb'\]\)"):
        call(layout)


def test_split_table_refuses_an_unknown_table_or_a_table_of_the_wrong_shape():
    # make_shards feeds split_table whatever tables it is given; without this
    # check a shard silently gets rows that route_rows will never route to it.
    layout = Layout(DENSE, TABLES, num_shards=2)
    with pytest.raises(ValueError, match=r"Invalid table: 'nope'"):
        layout.split_table("nope", torch.zeros(23, 3))
    with pytest.raises(ValueError, match=r"emb"):
        layout.split_table("emb", torch.zeros(24, 3))


def test_join_table_refuses_a_missing_part():
    # torch.empty would otherwise leave the missing shard's rows uninitialised.
    layout = Layout({}, TABLES, num_shards=3)
    parts = layout.split_table("emb", torch.zeros(23, 3))
    with pytest.raises(ValueError, match=r"parts"):
        layout.join_table("emb", parts[:2])


@pytest.mark.parametrize("rows, low_high", [
    (torch.tensor([0, 23]), (0, 23)),
    (torch.tensor([-1, 5]), (-1, 5)),
    (torch.tensor([100]), (100, 100)),
])
def test_route_rows_refuses_out_of_range_ids(rows, low_high):
    layout = Layout({}, TABLES, num_shards=4)
    with pytest.raises(ValueError, match=rf"Invalid row ids of table 'emb': \({low_high[0]}, {low_high[1]}\) "
                                         r"\(ids must be in \[0, 23\)\)"):
        layout.route_rows("emb", rows)


@pytest.mark.parametrize("rows, described", [
    (torch.tensor([0, 1], dtype=torch.int32), "1-D torch.int32"),
    (torch.tensor([0.0, 1.0]), "1-D torch.float32"),
    (torch.tensor([[0, 1]]), "2-D torch.int64"),
])
def test_route_rows_refuses_ids_of_the_wrong_dtype_or_rank(rows, described):
    layout = Layout({}, TABLES, num_shards=4)
    message = rf"Invalid rows: '{described}' \(expected a 1-D torch.int64 vector of row ids\)"
    with pytest.raises(ValueError, match=message):
        layout.route_rows("emb", rows)
