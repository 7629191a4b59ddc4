"""Data sets: shapes and dtypes, seeded stratified splits, the synthetic generators'
statistics, the LIBSVM reader, Split.subset, and every refusal's message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asyncps.workers import DATASETS, DenseSplit, RatingsSplit, SparseSplit, load_dataset, read_libsvm
from asyncps.workers.splits import split_indices

SMALL_SPARSE = {"num_examples": 2_000, "num_features": 5_000, "nnz": 8}
SMALL_RATINGS = {"num_users": 40, "num_items": 30, "rank": 3, "observed": 0.5}


def dense_rows(split: SparseSplit, num_features: int) -> torch.Tensor:
    out = torch.zeros(len(split), num_features)
    out[split.example_ids(), split.indices] = split.values
    return out


def write(tmp_path, text: str, name: str = "data.svm") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- digits --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_dtypes_and_pixel_range(digits):
    assert digits.kind == "dense" and digits.name == "digits"
    assert digits.meta == {"input_shape": (1, 8, 8), "num_classes": 10}
    for split in (digits.train, digits.val, digits.test):
        assert isinstance(split, DenseSplit)
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 8, 8)
        assert split.y.dtype == torch.int64 and len(split) == split.x.shape[0]
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert digits.train.x.max() == 1.0  # 16/16


def test_digits_default_fractions_are_stratified(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    assert [round(s / 1797, 2) for s in sizes] == [0.7, 0.1, 0.2]
    for split, fraction in ((digits.train, 0.7), (digits.val, 0.1), (digits.test, 0.2)):
        counts = torch.bincount(split.y, minlength=10)
        total = torch.bincount(torch.cat([digits.train.y, digits.val.y, digits.test.y]), minlength=10)
        assert ((counts - fraction * total).abs() <= 1).all()


def test_digits_splits_are_not_ordered_by_class(digits):
    assert (digits.train.y[:50] != digits.train.y[0]).any()
    assert (digits.train.y.diff() != 0).float().mean() > 0.5


def test_same_seed_same_tensors_and_another_seed_another_split(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.test.y, digits.test.y)
    assert not torch.equal(other.train.y, digits.train.y)


def test_fraction_options_and_an_empty_val_split():
    data = load_dataset("digits", val_fraction=0.0, test_fraction=0.5)
    assert len(data.val) == 0 and data.val.x.shape == (0, 1, 8, 8)
    assert abs(len(data.test) - 1797 / 2) <= 10


def test_split_indices_are_disjoint_cover_and_stratify():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    parts = split_indices(100, np.random.default_rng(0), 0.1, 0.2, labels)
    joined = np.concatenate(parts)
    assert sorted(joined) == list(range(100))
    assert [len(p) for p in parts] == [70, 10, 20]
    assert list(np.bincount(labels[parts[2]])) == [10, 6, 4]


# -- sparse_synthetic ------------------------------------------------------------

@pytest.fixture(scope="module")
def sparse():
    return load_dataset("sparse_synthetic", **SMALL_SPARSE)


def test_sparse_synthetic_is_valid_csr_with_distinct_sorted_features(sparse):
    assert sparse.kind == "sparse" and sparse.meta == {"num_features": 5_000}
    assert len(sparse.train) + len(sparse.val) + len(sparse.test) == 2_000
    for split in (sparse.train, sparse.val, sparse.test):
        assert split.indices.dtype == split.offsets.dtype == torch.int64
        assert split.values.dtype == split.y.dtype == torch.float32
        assert (split.nnz() == 8).all()
        rows = split.indices.view(-1, 8)
        assert (rows.diff(dim=1) > 0).all()  # sorted and distinct within an example
        assert split.indices.min() >= 0 and split.indices.max() < 5_000
        assert (split.values == 1).all()
        assert set(split.y.unique().tolist()) == {0.0, 1.0}


def test_sparse_synthetic_feature_frequencies_are_zipf_skewed(sparse):
    counts = torch.bincount(sparse.train.indices, minlength=5_000).sort(descending=True).values.double()
    n = len(sparse.train)
    assert counts[0] / n > 0.3       # the hottest feature is in a large share of examples
    assert counts[100] / n < 0.01    # the hundredth already rare
    assert (counts[:10].diff() <= 0).all()
    steeper = load_dataset("sparse_synthetic", exponent=2.0, **SMALL_SPARSE)
    top = torch.bincount(steeper.train.indices).max() / len(steeper.train)
    assert top > counts[0] / n


def test_sparse_synthetic_labels_are_mixed_and_seeded(sparse):
    y = torch.cat([sparse.train.y, sparse.val.y, sparse.test.y])
    assert 0.1 < y.mean() < 0.9
    again = load_dataset("sparse_synthetic", **SMALL_SPARSE)
    assert torch.equal(again.train.indices, sparse.train.indices) and torch.equal(again.train.y, sparse.train.y)


def test_sparse_synthetic_can_fill_every_feature_of_a_tiny_space():
    data = load_dataset("sparse_synthetic", num_examples=50, num_features=6, nnz=6, exponent=3.0)
    assert (data.train.indices.view(-1, 6) == torch.arange(6)).all()


# -- matrix_completion -----------------------------------------------------------

def test_matrix_completion_shapes_ids_and_distinct_entries():
    data = load_dataset("matrix_completion", **SMALL_RATINGS)
    assert data.kind == "ratings" and data.meta == {"num_users": 40, "num_items": 30, "rank": 3}
    parts = (data.train, data.val, data.test)
    assert sum(len(p) for p in parts) == 600
    for split in parts:
        assert isinstance(split, RatingsSplit)
        assert split.user.dtype == split.item.dtype == torch.int64 and split.rating.dtype == torch.float32
        assert 0 <= split.user.min() and split.user.max() < 40 and 0 <= split.item.min() and split.item.max() < 30
    entries = torch.cat([p.user * 30 + p.item for p in parts])
    assert entries.unique().numel() == 600


def test_matrix_completion_without_noise_is_exactly_low_rank_with_unit_scale():
    data = load_dataset("matrix_completion", num_users=40, num_items=30, rank=3, observed=1.0, noise=0.0)
    full = torch.zeros(40, 30, dtype=torch.float64)
    for split in (data.train, data.val, data.test):
        full[split.user, split.item] = split.rating.double()
    assert torch.linalg.matrix_rank(full, rtol=1e-5) == 3
    assert 0.3 < full.var() < 3


# -- libsvm ------------------------------------------------------------------------

LIBSVM_TEXT = """\
# a comment line
+1 3:0.5 1:2 7:1e-1
-1 2:1   # trailing comment

1.0 qid:3 1:-1.5
-1
"""


def test_read_libsvm_one_based_labels_comments_and_qid(tmp_path):
    data = read_libsvm(write(tmp_path, LIBSVM_TEXT))
    assert data.y.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert data.offsets.tolist() == [0, 3, 4, 5, 5]
    assert data.indices.tolist() == [0, 2, 6, 1, 0]  # 1-based -> 0-based, sorted within a line
    assert np.allclose(data.values, [2, 0.5, 0.1, 1, -1.5])
    assert data.num_features == 7


def test_read_libsvm_detects_zero_based_files_and_takes_num_features(tmp_path):
    path = write(tmp_path, "0 0:1 4:2\n1 2:3\n")
    data = read_libsvm(path, num_features=10)
    assert data.indices.tolist() == [0, 4, 2] and data.num_features == 10 and data.y.tolist() == [0.0, 1.0]
    assert read_libsvm(path, zero_based=True).num_features == 5


def test_libsvm_dataset_is_a_stratified_sparse_dataset(tmp_path):
    lines = [f"{'+1' if i % 2 else '-1'} {i % 9 + 1}:1 {i % 9 + 12}:0.5" for i in range(40)]
    data = load_dataset("libsvm", path=write(tmp_path, "\n".join(lines)), seed=3)
    assert data.kind == "sparse" and data.meta == {"num_features": 20}
    assert [len(data.train), len(data.val), len(data.test)] == [28, 4, 8]
    assert data.test.y.sum() == 4
    full = read_libsvm(str(tmp_path / "data.svm"))
    rows = sorted(tuple(dense_rows(s, 20)[i].tolist()) + (float(s.y[i]),)
                  for s in (data.train, data.val, data.test) for i in range(len(s)))
    expected = SparseSplit(*(torch.from_numpy(a) for a in (full.indices, full.offsets, full.values, full.y)))
    assert rows == sorted(tuple(dense_rows(expected, 20)[i].tolist()) + (float(expected.y[i]),) for i in range(40))


MALFORMED = [
    ("1 1:1\n2 3:1\n", 2, r"'2' \(the first token must be a binary label: -1, 0 or \+1\)"),
    ("1 1:1\nyes 3:1\n", 2, r"'yes' \(the first token must be a binary label"),
    ("1 1:1\n-1 3:abc\n", 2, r"'3:abc' \(expected 'index:value' with a non-negative integer index"),
    ("1 1:1\n\n-1 3\n", 3, r"'3' \(expected 'index:value'"),
    ("-1 -2:1\n", 1, r"'-2:1' \(expected 'index:value' with a non-negative integer index"),
    ("-1 2:nan\n", 1, r"'2:nan' \(expected 'index:value' with a non-negative integer index and a finite"),
    ("1 1:1 3:1 1:2\n", 1, r"'1:' \(an index may appear once per line\)"),
]


@pytest.mark.parametrize("text, line, message", MALFORMED)
def test_malformed_libsvm_line_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"Invalid LIBSVM line {path}:{line}: {message}"):
        read_libsvm(path)


def test_libsvm_refusals(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid LIBSVM file: .* \(no examples found: expected lines"):
        read_libsvm(write(tmp_path, "# only a comment\n\n"))
    with pytest.raises(ValueError, match=r"Invalid LIBSVM index: 0 \(zero_based=False means indices start at 1"):
        read_libsvm(write(tmp_path, "1 0:1 2:1\n"), zero_based=False)
    with pytest.raises(ValueError, match=r"Invalid num_features: 3 \(the file has features up to index 4 "
                                         r"\(0-based\): num_features must be an integer >= 5\)"):
        read_libsvm(write(tmp_path, "1 5:1\n"), num_features=3)
    with pytest.raises(ValueError, match=r"Invalid num_features: True \(the file has features up to index 0 "
                                         r"\(0-based\): num_features must be an integer >= 1\)"):
        read_libsvm(write(tmp_path, "1 1:1\n"), num_features=True)
    with pytest.raises(ValueError, match=r"Invalid zero_based: 'yes' \(zero_based must be True, False or 'auto'\)"):
        read_libsvm(write(tmp_path, "1 5:1\n"), zero_based="yes")


# -- Split ------------------------------------------------------------------------

def test_sparse_subset_gathers_rows_in_order_with_repeats():
    gen = torch.Generator().manual_seed(0)
    nnz = torch.randint(0, 5, (30,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), nnz.cumsum(0)])
    ids = torch.cat([torch.randperm(20, generator=gen)[:k].sort().values for k in nnz.tolist()])
    split = SparseSplit(ids, offsets, torch.randn(ids.numel(), generator=gen), torch.randint(0, 2, (30,)).float())
    index = torch.tensor([5, 0, 29, 5, 12, 7])
    sub = split.subset(index)
    assert torch.equal(dense_rows(sub, 20), dense_rows(split, 20)[index])
    assert torch.equal(sub.y, split.y[index]) and len(sub) == 6
    assert len(split.subset([])) == 0


def test_dense_and_ratings_subsets_take_the_chosen_rows():
    dense = DenseSplit(torch.arange(12.0).view(6, 2), torch.arange(6))
    assert dense.subset(np.array([4, 1])).x.tolist() == [[8.0, 9.0], [2.0, 3.0]]
    ratings = RatingsSplit(torch.arange(5), torch.arange(5) * 2, torch.arange(5.0))
    sub = ratings.subset(range(3, 5))
    assert sub.user.tolist() == [3, 4] and sub.item.tolist() == [6, 8] and sub.rating.tolist() == [3.0, 4.0]


def test_split_refusals():
    with pytest.raises(ValueError, match=r"Invalid dense split: \{'x': 3, 'y': 2\} \(every tensor needs one row"):
        DenseSplit(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"Invalid offsets: \(3,\) \(CSR row pointers: n \+ 1 entries starting at 0\)"):
        SparseSplit(torch.zeros(2, dtype=torch.int64), torch.tensor([1, 2, 2]), torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"Invalid sparse split: .* \(offsets\[-1\] must equal the number of indices"):
        SparseSplit(torch.zeros(2, dtype=torch.int64), torch.tensor([0, 1, 3]), torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"Invalid index: \(2, 1\) \(subset takes a 1-D vector of example positions\)"):
        DenseSplit(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64)).subset(torch.zeros(2, 1, dtype=torch.int64))


# -- refusals ----------------------------------------------------------------------

INVALID = [
    ("imagenet", {}, r"Invalid dataset name: 'imagenet' \(choose one of \['cifar10', 'digits', 'fashion_mnist', "
                     r"'libsvm', 'matrix_completion', 'mnist', 'sparse_synthetic'\], or a plugin "
                     r"'package.module:Name'\)"),
    ("digits", {"fraction": 0.1}, r"Invalid option for dataset 'digits': 'fraction' \(allowed options: "
                                  r"\['test_fraction', 'val_fraction'\]\)"),
    ("digits", {"seed": -1}, r"Invalid seed: -1 \(seed must be an integer >= 0\)"),
    ("digits", {"seed": 1.5}, r"Invalid seed: 1.5 \(seed must be an integer >= 0\)"),
    ("digits", {"test_fraction": 1.0}, r"Invalid test_fraction: 1.0 \(test_fraction must be in \[0, 1\)\)"),
    ("digits", {"val_fraction": -0.1}, r"Invalid val_fraction: -0.1 \(val_fraction must be in \[0, 1\)\)"),
    ("digits", {"val_fraction": 0.5, "test_fraction": 0.5},
     r"Invalid fractions: \(0.5, 0.5\) \(val_fraction \+ test_fraction must be < 1, leaving examples to train on\)"),
    ("sparse_synthetic", {"num_examples": 0}, r"Invalid num_examples: 0 \(num_examples must be an integer >= 1\)"),
    ("sparse_synthetic", {"num_features": 2.5}, r"Invalid num_features: 2.5 \(num_features must be an integer"),
    ("sparse_synthetic", {"nnz": 0}, r"Invalid nnz: 0 \(nnz must be an integer >= 1\)"),
    ("sparse_synthetic", {"nnz": 11, "num_features": 10},
     r"Invalid nnz: 11 \(nnz must be <= num_features=10 \(features are distinct\)\)"),
    ("sparse_synthetic", {"exponent": 0}, r"Invalid exponent: 0 \(the Zipf exponent must be a number > 0\)"),
    ("matrix_completion", {"num_users": 0}, r"Invalid num_users: 0 \(num_users must be an integer >= 1\)"),
    ("matrix_completion", {"num_items": -3}, r"Invalid num_items: -3"),
    ("matrix_completion", {"rank": 0}, r"Invalid rank: 0 \(rank must be an integer >= 1\)"),
    ("matrix_completion", {"observed": 0.0}, r"Invalid observed: 0.0 \(observed must be in \(0, 1\]\)"),
    ("matrix_completion", {"observed": 1e-9},
     r"Invalid observed: 1e-09 \(observed x num_users x num_items must be at least one rating\)"),
    ("matrix_completion", {"noise": -0.1}, r"Invalid noise: -0.1 \(noise must be a standard deviation >= 0\)"),
    ("libsvm", {}, r"Invalid path: None \(the libsvm data set reads a file: pass path='data/train.svm'\)"),
    ("libsvm", {"path": "/no/such/file.svm"}, r"Invalid path: '/no/such/file.svm' \(no such file: pass the path"),
    # the data sets read from their standard files: every message in tests/workers/test_image_files.py
    ("mnist", {}, r"Invalid path: None \(the mnist data set reads its files from a directory: pass path='data/mnist'"),
    ("fashion_mnist", {"path": "/no/such/dir"}, r"Invalid path: '/no/such/dir' \(no such directory: download the "
                                                r"files there with: asyncps data download fashion_mnist /no/such/dir\)"),
    ("cifar10", {"limit": 0}, r"Invalid limit: 0 \(limit must be an integer >= 1, or left out for all\)"),
]


@pytest.mark.parametrize("name, options, message", INVALID, ids=[f"{n}-{sorted(o)}" for n, o, _ in INVALID])
def test_invalid_dataset_request_is_refused_with_the_fix(name, options, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, **options)


def test_every_dataset_has_refusal_rows():
    assert {name for name, _, _ in INVALID} >= set(DATASETS)
