"""Fixtures shared by the packages' tests: small image data sets written in their standard formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest


def images_of(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images ``[n, *shape]`` a model can tell apart: noise, and a bright block where the label says."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (len(labels), *shape), dtype=np.uint8)
    height, width = shape[-2:]
    for i, label in enumerate(labels):
        row, col = (label // 5) * height // 2, (label % 5) * width // 5
        x[i, ..., row:row + height // 4, col:col + width // 6] = 255
    return x


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the IDX format: 00 00 08 ndim, big-endian sizes, the bytes."""
    assert array.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


class ImageFiles:
    """Writers of small MNIST-like and CIFAR-10-like directories, in the real files' formats."""

    @staticmethod
    def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        return path

    @staticmethod
    def idx_dataset(directory: Path, n_train: int = 200, n_test: int = 50, gz: bool = True,
                    seed: int = 0) -> dict[str, np.ndarray]:
        """The four IDX files of an MNIST-sized data set (28x28) of ``n_train`` + ``n_test`` images."""
        directory.mkdir(parents=True, exist_ok=True)
        written = {}
        for part, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
            labels = (np.arange(n) * 7 + seed) % 10
            written[f"{part}_y"] = labels.astype(np.uint8)
            written[f"{part}_x"] = images_of(labels, (28, 28), seed + n)
            suffix = ".gz" if gz else ""
            ImageFiles.write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", written[f"{part}_x"], gz)
            ImageFiles.write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", written[f"{part}_y"], gz)
        return written

    @staticmethod
    def write_cifar_batch(path: Path, x: np.ndarray, labels: list[int], protocol: int = 2) -> Path:
        """A batch as CIFAR-10's files hold it: ``b"data"`` uint8 ``[n, 3072]``, ``b"labels"`` a list."""
        batch = {b"batch_label": b"training batch", b"labels": list(labels), b"data": x.reshape(len(x), -1),
                 b"filenames": [b"img_%d.png" % i for i in range(len(x))]}
        path.write_bytes(pickle.dumps(batch, protocol=protocol))
        return path

    @staticmethod
    def cifar_dataset(directory: Path, per_batch: int = 40, n_test: int = 50, seed: int = 0,
                      folder: bool = True) -> dict[str, np.ndarray]:
        """data_batch_1..5 and test_batch in ``directory/cifar-10-batches-py/`` (or ``directory``)."""
        where = directory / "cifar-10-batches-py" if folder else directory
        where.mkdir(parents=True, exist_ok=True)
        xs, ys = [], []
        for i in range(1, 6):
            labels = (np.arange(per_batch) * 3 + i) % 10
            xs.append(images_of(labels, (3, 32, 32), seed + i))
            ys.append(labels)
            ImageFiles.write_cifar_batch(where / f"data_batch_{i}", xs[-1], labels.tolist())
        test_y = np.arange(n_test) % 10
        test_x = images_of(test_y, (3, 32, 32), seed + 99)
        ImageFiles.write_cifar_batch(where / "test_batch", test_x, test_y.tolist())
        (where / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
        return {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys), "test_x": test_x, "test_y": test_y}


@pytest.fixture
def image_files() -> type[ImageFiles]:
    return ImageFiles
