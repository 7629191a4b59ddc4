"""Data sets by name: ``load_dataset(name, seed=..., **options) -> Dataset``.

- ``"digits"`` -- scikit-learn's bundled handwritten digits (1797 8x8
  images, 10 classes; Alpaydin & Kaynak 1998, UCI), the quickstart's real data.
- ``"sparse_synthetic"`` -- click-like sparse binary classification: Zipf
  distributed feature ids, labels from a hidden linear model with logistic noise.
- ``"matrix_completion"`` -- a noisy rank-``r`` ratings matrix, partly observed.
- ``"libsvm"`` -- a user's LIBSVM/SVMlight text file as a sparse data set.
- ``"mnist"``, ``"fashion_mnist"`` and ``"cifar10"`` -- the standard files of
  those data sets in a local directory (``path``), read by
  :mod:`workers.image_files`; ``asyncps data download`` fetches them.

Everything is seeded: the same ``(name, seed, options)`` gives the same
tensors. Splits are train/val/test with default fractions 0.7/0.1/0.2,
stratified by label for classification; the data sets that come as files
keep their standard test set and draw val from their training files.

A loader of one's own (``data.dataset = "mypkg.data:load"``, a plugin:
``optim.plugins``) is a function like those here: ``load(rng, **options)``
takes a seeded ``numpy.random.Generator`` (its only source of randomness, so
that every process of a run builds the same data) and the config's
``data.options`` by keyword, and returns a :class:`Dataset`, which
:func:`split_examples` makes of a :class:`Split` of every example. Its
``meta`` is what models are built from: ``input_shape`` and ``num_classes``
for the dense classifiers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asyncps.optim.plugins import Interface, Registry
from asyncps.optim.validation import check, check_int, check_options, choose, is_int, is_number
from asyncps.workers.image_files import NUM_CLASSES, read_cifar10, read_idx_dataset
from asyncps.workers.libsvm import read_libsvm
from asyncps.workers.splits import DenseSplit, RatingsSplit, SparseSplit, Split, split_indices

__all__ = ["Dataset", "Split", "DATASETS", "load_dataset", "split_examples"]


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    kind: str   # "dense", "sparse" or "ratings": the kind of every split
    meta: dict  # shapes a model is built from: input_shape/num_classes, num_features, or num_users/num_items/rank


def load_dataset(name: str, *, seed: int = 0, **options) -> Dataset:
    """The data set ``name`` with its options, split with ``seed``."""
    loader = choose(DATASETS, name, "dataset name")
    check_options(loader, options, f"dataset {name!r}", skip=("rng",))
    check_int(seed, "seed", low=0)
    dataset = loader(np.random.default_rng(seed), **options)
    check(isinstance(dataset, Dataset), "dataset name", name,
          f"its loader returned {type(dataset).__name__}, not a workers.Dataset")
    return dataset


def split_examples(name: str, everything: Split, rng: np.random.Generator, val_fraction: float = 0.1,
                   test_fraction: float = 0.2, labels=None, **meta) -> Dataset:
    """The Dataset ``name``: ``everything`` split train/val/test with ``rng``, stratified by ``labels``
    (a numpy array, one per example) when given; ``meta`` as models read it (``Dataset.meta``)."""
    train, val, test = split_indices(len(everything), rng, val_fraction, test_fraction, labels)
    parts = [everything.subset(torch.from_numpy(p)) for p in (train, val, test)]
    return Dataset(name, *parts, kind=parts[0].kind, meta=meta)


def _digits(rng, *, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    """8x8 grey images, pixels scaled from 0..16 to [0, 1], as ``x`` float32 ``[n, 1, 8, 8]``."""
    from sklearn.datasets import load_digits  # a second of import time, paid only by who uses it

    digits = load_digits()
    everything = DenseSplit(torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1),
                            torch.from_numpy(digits.target.astype(np.int64)))
    return split_examples("digits", everything, rng, val_fraction, test_fraction,
                          labels=digits.target, input_shape=(1, 8, 8), num_classes=10)


def _sparse_synthetic(rng, *, num_examples: int = 20_000, num_features: int = 100_000, nnz: int = 10,
                      exponent: float = 1.1, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    r"""Sparse binary classification shaped like click data.

    Each example has ``nnz`` distinct features of value 1, drawn without
    replacement (successive sampling) from a Zipf law :math:`p_k \propto
    k^{-s}` over ranks :math:`k = 1..F` (``exponent`` :math:`s`), so a few
    features occur in a large share of the examples and most almost never.
    Ranks map to feature ids through a seeded permutation: hot features are
    spread over the id space, as hashed click features are. Labels come from
    a hidden linear model :math:`w^* \sim \mathcal N(0, I)` with logistic
    noise: :math:`y = [\,x^\top w^* + \varepsilon > 0\,]`,
    :math:`\varepsilon \sim \mathrm{Logistic}(0, 1)`, i.e.
    :math:`P(y=1 \mid x) = \sigma(x^\top w^*)`.
    """
    check_int(num_examples, "num_examples")
    check_int(num_features, "num_features")
    check_int(nnz, "nnz")
    check(nnz <= num_features, "nnz", nnz, f"nnz must be <= num_features={num_features} (features are distinct)")
    check(is_number(exponent) and exponent > 0, "exponent", exponent, "the Zipf exponent must be a number > 0")

    ranks = _distinct_zipf_draws(rng, num_examples, num_features, nnz, exponent)
    ids = np.sort(rng.permutation(num_features)[ranks], axis=1)
    w_true = rng.standard_normal(num_features)
    y = (w_true[ids].sum(axis=1) + rng.logistic(size=num_examples) > 0).astype(np.float32)
    everything = SparseSplit(torch.from_numpy(ids.reshape(-1)), torch.arange(0, num_examples * nnz + 1, nnz),
                             torch.ones(num_examples * nnz), torch.from_numpy(y))
    return split_examples("sparse_synthetic", everything, rng, val_fraction, test_fraction,
                          labels=y, num_features=num_features)


def _distinct_zipf_draws(rng, n: int, num_features: int, nnz: int, exponent: float) -> np.ndarray:
    """``[n, nnz]`` Zipf ranks (0-based), distinct within each row: the first ``nnz`` distinct
    values of an i.i.d. stream; rows whose stream is too short are drawn again, longer."""
    cdf = np.cumsum(np.arange(1, num_features + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    out = np.empty((n, nnz), dtype=np.int64)
    pending, length = np.arange(n), 2 * nnz
    while pending.size:
        stream = np.minimum(np.searchsorted(cdf, rng.random((pending.size, length))), num_features - 1)
        keys = (np.arange(pending.size)[:, None] * num_features + stream).ravel()
        first = np.zeros(keys.size, dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        first = first.reshape(stream.shape)
        count = np.cumsum(first, axis=1)
        done = count[:, -1] >= nnz
        keep = first[done] & (count[done] <= nnz)
        out[pending[done]] = stream[done][keep].reshape(-1, nnz)
        pending, length = pending[~done], 2 * length
    return out


def _matrix_completion(rng, *, num_users: int = 500, num_items: int = 400, rank: int = 5, observed: float = 0.1,
                       noise: float = 0.1, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    r"""Ratings :math:`r_{ui} = \langle p_u, q_i \rangle + \sigma\varepsilon` of a hidden rank-``rank`` matrix.

    Factor entries are :math:`\mathcal N(0, 1/\sqrt{r})`, so the clean
    ratings have unit variance whatever the rank; ``noise`` is :math:`\sigma`
    and ``observed`` the fraction of the ``num_users x num_items`` entries
    seen, chosen uniformly without replacement.
    """
    check_int(num_users, "num_users")
    check_int(num_items, "num_items")
    check_int(rank, "rank")
    check(is_number(observed) and 0 < observed <= 1, "observed", observed, "observed must be in (0, 1]")
    check(is_number(noise) and noise >= 0, "noise", noise, "noise must be a standard deviation >= 0")
    count = round(observed * num_users * num_items)
    check(count >= 1, "observed", observed, "observed x num_users x num_items must be at least one rating")

    scale = rank ** -0.25
    users, items = rng.normal(0, scale, (num_users, rank)), rng.normal(0, scale, (num_items, rank))
    entry = rng.choice(num_users * num_items, size=count, replace=False)
    user, item = entry // num_items, entry % num_items
    rating = (users[user] * items[item]).sum(axis=1) + noise * rng.standard_normal(count)
    everything = RatingsSplit(torch.from_numpy(user), torch.from_numpy(item),
                              torch.from_numpy(rating.astype(np.float32)))
    return split_examples("matrix_completion", everything, rng, val_fraction, test_fraction,
                          num_users=num_users, num_items=num_items, rank=rank)


def _libsvm(rng, *, path: str | None = None, zero_based: bool | str = "auto", num_features: int | None = None,
            val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    """A LIBSVM/SVMlight file (see :mod:`workers.libsvm`) as a sparse data set, split by label."""
    check(path is not None, "path", path, "the libsvm data set reads a file: pass path='data/train.svm'")
    data = read_libsvm(path, zero_based=zero_based, num_features=num_features)
    everything = SparseSplit(torch.from_numpy(data.indices), torch.from_numpy(data.offsets),
                             torch.from_numpy(data.values), torch.from_numpy(data.y))
    return split_examples("libsvm", everything, rng, val_fraction, test_fraction,
                          labels=data.y, num_features=data.num_features)


def _mnist(rng, *, path: str | None = None, val_fraction: float = 0.1, limit: int | None = None) -> Dataset:
    """MNIST (LeCun et al. 1998): 60,000 training and 10,000 test 28x28 grey digits, from the four IDX files in
    ``path``. ``x`` float32 ``[n, 1, 28, 28]`` in [0, 1]; val is ``val_fraction`` of the first ``limit`` (default:
    all) training images, stratified."""
    return _from_files("mnist", rng, lambda: read_idx_dataset(path, "mnist", limit), val_fraction, limit)


def _fashion_mnist(rng, *, path: str | None = None, val_fraction: float = 0.1, limit: int | None = None) -> Dataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): Zalando's 28x28 grey pictures of 10 kinds of clothing, in
    MNIST's files and sizes; read and split as ``mnist`` is."""
    return _from_files("fashion_mnist", rng, lambda: read_idx_dataset(path, "fashion_mnist", limit), val_fraction,
                       limit)


def _cifar10(rng, *, path: str | None = None, val_fraction: float = 0.1, limit: int | None = None) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test 32x32 colour images of 10 classes, from the
    python batches in ``path/cifar-10-batches-py/`` (or ``path`` itself). ``x`` float32 ``[n, 3, 32, 32]`` in
    [0, 1]; val as for ``mnist``."""
    return _from_files("cifar10", rng, lambda: read_cifar10(path, limit), val_fraction, limit)


def _from_files(name: str, rng, read, val_fraction, limit) -> Dataset:
    """``read() -> ((x, y) train, (x, y) test)``, uint8 images: the test set as test, and a seeded, stratified
    val carved from the training set."""
    check(limit is None or is_int(limit), "limit", limit, "limit must be an integer >= 1, or left out for all")
    (x, y), test = read()
    train_at, val_at, _ = split_indices(len(y), rng, val_fraction, 0.0, y)
    # pixels stay uint8 until each split is chosen: the float copy of CIFAR-10's training set alone is 600 MB
    parts = [_images(x[at], y[at]) for at in (train_at, val_at)] + [_images(*test)]
    return Dataset(name, *parts, kind="dense", meta={"input_shape": tuple(x.shape[1:]), "num_classes": NUM_CLASSES})


def _images(x: np.ndarray, y: np.ndarray) -> DenseSplit:
    """uint8 pixels 0..255 as float32 in [0, 1]."""
    return DenseSplit(torch.from_numpy(np.divide(x, np.float32(255), dtype=np.float32)), torch.from_numpy(y))


# A plugin data set (``data.dataset = "mypkg.data:blobs"``): a function of a numpy Generator and keyword
# options that returns a Dataset, as the loaders above; split_examples makes one of a Split of every example.
DATASET = Interface("a data set loader, a function (rng, **options) -> workers.Dataset", takes=("rng",),
                    call="loader(rng, **options)")
DATASETS = Registry(DATASET, {"digits": _digits, "sparse_synthetic": _sparse_synthetic,
                              "matrix_completion": _matrix_completion, "libsvm": _libsvm, "mnist": _mnist,
                              "fashion_mnist": _fashion_mnist, "cifar10": _cifar10})
