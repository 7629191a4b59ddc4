"""Readers of the standard files of MNIST, Fashion-MNIST and CIFAR-10, with numpy alone.

- **IDX** (LeCun et al.'s format for MNIST, which Fashion-MNIST keeps), plain
  or gzipped: two zero bytes, a type code (``0x08``: unsigned bytes), the
  number of dimensions ``d``; then ``d`` big-endian uint32 sizes; then the
  values in C order, big-endian. Images are ``[n, rows, columns]`` uint8,
  labels ``[n]`` uint8. Whether a file is gzipped is read from its first
  bytes, not its name.
- **CIFAR-10's "python version"** (Krizhevsky 2009): one pickled dict per
  batch of images, ``b"data"`` a uint8 array ``[n, 3072]`` -- each row the
  red, then green, then blue 32x32 plane, row by row, so a row reshapes to
  ``[3, 32, 32]`` -- and ``b"labels"`` a list of ``n`` class ids.

A pickle can run code as it loads; the CIFAR reader's unpickler builds numpy
arrays and plain values and refuses anything else. Every refusal is one
``ValueError`` line naming the file (or the directory) and what is wrong.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np

from asyncps.optim.validation import check

__all__ = ["IDX_FILES", "CIFAR_FOLDER", "CIFAR_TRAIN", "CIFAR_TEST", "NUM_CLASSES", "read_idx", "read_idx_images",
           "read_idx_dataset", "read_cifar_batch", "read_cifar10"]

# train and test: (images, labels), each "<name>" or "<name>.gz" in the data set's directory
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_FOLDER = "cifar-10-batches-py"  # what cifar-10-python.tar.gz unpacks to
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
NUM_CLASSES = 10  # of all three data sets
CIFAR_SHAPE = (3, 32, 32)
Examples = tuple[np.ndarray, np.ndarray]  # (x uint8 [n, C, H, W], y int64 [n])

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"
# What pickled numpy arrays refer to, as Python 2's numpy (the CIFAR files) and today's numpy write them.
_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


# -- the directory ---------------------------------------------------------------
def data_directory(path, name: str, expected: str) -> Path:
    """``path`` as a directory; else a refusal that says how to get the data set ``name``."""
    check(isinstance(path, (str, os.PathLike)), "path", path,
          f"the {name} data set reads its files from a directory: pass path='data/{name}'; "
          f"asyncps data download {name} data/{name} fetches them")
    directory, where = Path(path), os.fspath(path)
    check(directory.exists(), "path", where,
          f"no such directory: download the files there with: asyncps data download {name} {where}")
    check(directory.is_dir(), "path", where, f"not a directory: pass the directory that holds {expected}")
    return directory


def _require(path, found: dict, missing: list[str], name: str) -> dict:
    """``found``, when nothing is ``missing``."""
    where = os.fspath(path)
    them = "it" if len(missing) == 1 else "them"
    check(not missing, "path", where,
          f"no {', '.join(missing)} there: download {them} with: asyncps data download {name} {where}")
    return found


# -- IDX ---------------------------------------------------------------------------
def idx_paths(path, name: str) -> dict[str, Path]:
    """Each IDX file of ``IDX_FILES`` in the directory ``path``: the plain file, or else the gzipped one."""
    directory = data_directory(path, name, "train-images-idx3-ubyte[.gz] and the other IDX files")
    found, missing = {}, []
    for filename in (f for pair in IDX_FILES.values() for f in pair):
        plain, zipped = directory / filename, directory / f"{filename}.gz"
        if plain.is_file() or zipped.is_file():
            found[filename] = plain if plain.is_file() else zipped
        else:
            missing.append(f"{filename}[.gz]")
    return _require(path, found, missing, name)


def _file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if they start with gzip's magic number."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"Invalid gzip file: {os.fspath(path)!r} (truncated or corrupt: {err}; "
                         f"delete it and download it again)") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzipped or not), in native byte order."""
    path = Path(path)
    raw, where = _file_bytes(path), os.fspath(path)
    magic = raw[:4]
    found = f"it starts with {magic.hex(' ')}" if magic else "it is empty"
    check(len(magic) == 4 and magic[:2] == b"\0\0" and magic[2] in _IDX_TYPES and magic[3] >= 1, "IDX file", where,
          f"{found}, and an IDX file starts with 00 00, a type code (08 for unsigned bytes) and the number of "
          f"dimensions")
    dtype, ndim = _IDX_TYPES[magic[2]], magic[3]
    header = 4 + 4 * ndim
    check(len(raw) >= header, "IDX file", where, f"truncated: {len(raw)} bytes, and its header alone takes {header}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected, got = math.prod(shape) * dtype.itemsize, len(raw) - header
    described = f"{'x'.join(map(str, shape))} {dtype.name}"
    check(got >= expected, "IDX file", where,
          f"truncated: {got} bytes of data after the header, and {described} takes {expected}")
    check(got == expected, "IDX file", where,
          f"{got - expected} bytes after the {described} array its header announces")
    return np.frombuffer(raw, dtype, math.prod(shape), header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_images(images: Path, labels: Path) -> Examples:
    """``(x uint8 [n, 1, rows, columns], y int64 [n])`` from a pair of IDX files."""
    x, y = read_idx(images), read_idx(labels)
    check(x.ndim == 3 and x.dtype == np.uint8, "IDX file", os.fspath(images),
          f"expected images, a 3-dimensional uint8 array [n, rows, columns]; it holds {x.shape} {x.dtype}")
    check(y.ndim == 1 and y.dtype == np.uint8, "IDX file", os.fspath(labels),
          f"expected labels, a 1-dimensional uint8 array [n]; it holds {y.shape} {y.dtype}")
    check(len(y) == len(x), "IDX file", os.fspath(labels),
          f"it has {len(y)} labels, and {images.name} has {len(x)} images")
    _check_labels(y, "IDX file", labels)
    return x[:, None], y.astype(np.int64)


def _check_labels(y: np.ndarray, what: str, where: Path) -> None:
    check(y.size == 0 or (y.min() >= 0 and y.max() < NUM_CLASSES), what, os.fspath(where),
          f"labels must be class ids 0 to {NUM_CLASSES - 1}; it holds {y.min()} to {y.max()}")


# -- CIFAR-10 ---------------------------------------------------------------------
class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain values, and nothing that could run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and a CIFAR batch holds arrays and lists only")


def cifar_paths(path) -> dict[str, Path]:
    """Each CIFAR-10 batch file in ``path/cifar-10-batches-py/`` or, when there is none, in ``path`` itself."""
    directory = data_directory(path, "cifar10", f"{CIFAR_FOLDER}/ (data_batch_1..5, test_batch)")
    folder = directory / CIFAR_FOLDER if (directory / CIFAR_FOLDER).is_dir() else directory
    found = {name: folder / name for name in (*CIFAR_TRAIN, CIFAR_TEST) if (folder / name).is_file()}
    missing = [os.fspath((folder / name).relative_to(directory)) for name in (*CIFAR_TRAIN, CIFAR_TEST)
               if name not in found]
    if not found and folder == directory:
        missing = [f"{CIFAR_FOLDER}/"]
    return _require(path, found, missing, "cifar10")


def read_cifar_batch(path: str | os.PathLike) -> Examples:
    """``(x uint8 [n, 3, 32, 32], y int64 [n])`` from one pickled CIFAR-10 batch."""
    path = Path(path)
    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnly(file, encoding="bytes").load()  # Python 2's str keys load as bytes
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"Invalid CIFAR-10 batch: {where!r} (not a readable pickle: {type(err).__name__}: {err}; "
                         f"delete it and download it again)") from None
    check(isinstance(batch, dict) and b"data" in batch and b"labels" in batch, "CIFAR-10 batch", where,
          f"expected a dict with b'data' and b'labels'; it holds "
          f"{sorted(batch, key=repr) if isinstance(batch, dict) else type(batch).__name__}")
    data, labels = batch[b"data"], batch[b"labels"]
    width = math.prod(CIFAR_SHAPE)
    check(isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == width,
          "CIFAR-10 batch", where, f"b'data' must be a uint8 array [n, {width}]; it is "
          f"{f'{data.shape} {data.dtype}' if isinstance(data, np.ndarray) else type(data).__name__}")
    y = np.asarray(labels)
    check(y.ndim == 1 and len(y) == len(data) and (y.size == 0 or np.issubdtype(y.dtype, np.integer)),
          "CIFAR-10 batch", where, f"b'labels' must hold one class id per image: {len(data)} integers")
    _check_labels(y, "CIFAR-10 batch", path)
    return data.reshape(-1, *CIFAR_SHAPE), y.astype(np.int64)


def read_cifar10(path, limit: int | None = None) -> tuple[Examples, Examples]:
    """``((x, y) train, (x, y) test)`` from the batch files; with ``limit``, the first ``limit``
    training images, reading only the batches they are in."""
    paths = cifar_paths(path)
    parts = []
    for name in CIFAR_TRAIN:
        if limit is not None and sum(len(y) for _, y in parts) >= limit:
            break
        parts.append(read_cifar_batch(paths[name]))
    train = tuple(np.concatenate(arrays) for arrays in zip(*parts))
    return take_first(train, limit, "the CIFAR-10 training batches"), read_cifar_batch(paths[CIFAR_TEST])


def read_idx_dataset(path, name: str, limit: int | None = None) -> tuple[Examples, Examples]:
    """``((x, y) train, (x, y) test)`` from a directory of the four IDX files."""
    paths = idx_paths(path, name)
    train, test = (read_idx_images(*(paths[f] for f in IDX_FILES[part])) for part in ("train", "test"))
    return take_first(train, limit, "the training files"), test


def take_first(examples: Examples, limit: int | None, where: str) -> Examples:
    """The first ``limit`` examples (all of them with ``limit=None``)."""
    if limit is None:
        return examples
    n = len(examples[1])
    check(limit <= n, "limit", limit, f"{where} hold {n} examples: limit must be an integer from 1 to {n}")
    return tuple(a[:limit] for a in examples)
