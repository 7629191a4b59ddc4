"""MNIST, Fashion-MNIST and CIFAR-10 from their standard files: small files written in the real
formats (IDX plain and gzipped; CIFAR-10's pickled batches, as Python 2 and as today's Python
write them) load with the right shapes, dtypes, pixels, labels and splits; every refusal names
the file or the directory and what is wrong."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from asyncps.workers import DenseSplit, load_dataset
from asyncps.workers.image_files import read_cifar_batch, read_idx


def rows(split: DenseSplit) -> list[tuple]:
    """Each example as a hashable (label, pixels) pair, to compare splits as multisets."""
    return sorted((int(y), x.numpy().tobytes()) for x, y in zip(split.x, split.y))


def as_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / np.float32(255))


# -- MNIST and Fashion-MNIST: IDX files ----------------------------------------------

@pytest.mark.parametrize("name, gz", [("mnist", True), ("fashion_mnist", False)])
def test_idx_data_set_shapes_pixels_labels_and_splits(tmp_path, image_files, name, gz):
    written = image_files.idx_dataset(tmp_path, n_train=200, n_test=50, gz=gz)
    data = load_dataset(name, path=str(tmp_path))
    assert data.name == name and data.kind == "dense"
    assert data.meta == {"input_shape": (1, 28, 28), "num_classes": 10}
    assert [len(data.train), len(data.val), len(data.test)] == [180, 20, 50]
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.y.dtype == torch.int64
        assert split.x.min() >= 0 and split.x.max() == 1.0
    # the standard test set is the test split, in the files' order
    assert torch.equal(data.test.x, as_float(written["test_x"][:, None]))
    assert data.test.y.tolist() == written["test_y"].tolist()
    # train and val are the training files, split by class: 20 of each label, 2 of them to val
    expected = DenseSplit(as_float(written["train_x"][:, None]), torch.from_numpy(written["train_y"].astype(np.int64)))
    assert rows(DenseSplit(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))) \
        == rows(expected)
    assert torch.bincount(data.val.y, minlength=10).tolist() == [2] * 10


def test_idx_splits_are_seeded_and_val_fraction_and_limit_apply(tmp_path, image_files):
    written = image_files.idx_dataset(tmp_path)
    first, again, other = (load_dataset("mnist", path=str(tmp_path), seed=s) for s in (0, 0, 1))
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.val.y, again.val.y)
    assert not torch.equal(first.train.y, other.train.y)
    assert torch.equal(first.test.x, other.test.x)  # the test set is the files', whatever the seed

    small = load_dataset("mnist", path=str(tmp_path), limit=50, val_fraction=0.2)
    assert [len(small.train), len(small.val), len(small.test)] == [40, 10, 50]
    head = DenseSplit(as_float(written["train_x"][:50, None]),
                      torch.from_numpy(written["train_y"][:50].astype(np.int64)))
    assert rows(DenseSplit(torch.cat([small.train.x, small.val.x]), torch.cat([small.train.y, small.val.y]))) \
        == rows(head)
    assert len(load_dataset("mnist", path=str(tmp_path), val_fraction=0.0).val) == 0


def test_gzip_is_told_by_content_and_plain_files_come_first(tmp_path, image_files):
    written = image_files.idx_dataset(tmp_path, gz=True)
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / f"{name}.gz").rename(tmp_path / name)  # gzipped bytes under the plain name
    assert read_idx(tmp_path / name).tolist() == written["test_y"].tolist()
    image_files.write_idx(tmp_path / f"{name}.gz", np.zeros(50, dtype=np.uint8), gz=True)  # ignored beside it
    assert load_dataset("mnist", path=str(tmp_path)).test.y.tolist() == written["test_y"].tolist()


def test_read_idx_reads_every_type_code_big_endian(tmp_path):
    for code, dtype in ((0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")):
        array = np.array([[1, -2, 3], [4, 5, -6]]).astype(dtype) if code != 0x08 else np.arange(6, dtype=">u1")
        path = tmp_path / f"{code}.idx"
        path.write_bytes(struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                         + array.tobytes())
        read = read_idx(path)
        assert read.dtype == np.dtype(dtype).newbyteorder("=") and np.array_equal(read, array)


# -- CIFAR-10: pickled batches ----------------------------------------------------------

def test_cifar10_shapes_pixel_layout_labels_and_splits(tmp_path, image_files):
    written = image_files.cifar_dataset(tmp_path, per_batch=40, n_test=50)
    data = load_dataset("cifar10", path=str(tmp_path))
    assert data.meta == {"input_shape": (3, 32, 32), "num_classes": 10}
    assert [len(data.train), len(data.val), len(data.test)] == [180, 20, 50]
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (3, 32, 32) and split.y.dtype == torch.int64
    # a row of b"data" is the red, green and blue planes, each row by row
    flat = written["test_x"].reshape(50, 3072)
    assert data.test.x[7, 2, 5, 9] == flat[7, 2 * 1024 + 5 * 32 + 9] / np.float32(255)
    assert torch.equal(data.test.x, as_float(written["test_x"])) and data.test.y.tolist() == written["test_y"].tolist()
    expected = DenseSplit(as_float(written["train_x"]), torch.from_numpy(written["train_y"]))
    assert rows(DenseSplit(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))) \
        == rows(expected)


def test_cifar10_reads_the_batch_folder_itself_and_only_the_batches_a_limit_needs(tmp_path, image_files):
    written = image_files.cifar_dataset(tmp_path, per_batch=40)
    folder = tmp_path / "cifar-10-batches-py"
    assert len(load_dataset("cifar10", path=str(folder)).train) == 180
    (folder / "data_batch_3").write_bytes(b"not read")
    small = load_dataset("cifar10", path=str(tmp_path), limit=80, val_fraction=0.0)
    assert rows(small.train) == rows(DenseSplit(as_float(written["train_x"][:80]),
                                                torch.from_numpy(written["train_y"][:80])))
    with pytest.raises(ValueError, match="data_batch_3' \\(not a readable pickle"):
        load_dataset("cifar10", path=str(tmp_path), limit=81)


def py2_batch(x: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch pickled as the real files are, by Python 2's cPickle (protocol 2): str keys
    (SHORT_BINSTRING), the array by ``numpy.core.multiarray._reconstruct`` and ``numpy.dtype``."""
    def string(text: bytes) -> bytes:  # SHORT_BINSTRING, or BINSTRING past 255 bytes
        return b"U" + bytes([len(text)]) + text if len(text) < 256 else b"T" + struct.pack("<i", len(text)) + text

    dtype = b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|") \
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R" \
        + b"(K\x01M" + struct.pack("<H", len(x)) + b"M" + struct.pack("<H", 3072) + b"\x86" + dtype \
        + b"\x89" + string(x.reshape(len(x), -1).tobytes()) + b"tb"
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list \
        + string(b"batch_label") + string(b"training batch 1 of 5") + b"u."


@pytest.mark.parametrize("writer", ["python2", "protocol 2", "protocol 5"])
def test_cifar_batch_as_python_2_and_today_pickle_it(tmp_path, image_files, writer):
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    if writer == "python2":
        path.write_bytes(py2_batch(x, [3, 1, 4, 1]))
    else:
        image_files.write_cifar_batch(path, x, [3, 1, 4, 1], protocol=int(writer[-1]))
    images, labels = read_cifar_batch(path)
    assert images.dtype == np.uint8 and np.array_equal(images, x)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 1, 4, 1]


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": RunsACommand(marker), b"labels": []}, protocol=4))
    with pytest.raises(ValueError) as caught:
        read_cifar_batch(path)
    assert str(caught.value) == (f"Invalid CIFAR-10 batch: '{path}' (not a readable pickle: UnpicklingError: it "
                                 f"refers to subprocess.call, and a CIFAR batch holds arrays and lists only; delete "
                                 f"it and download it again)")
    assert not marker.exists()


# -- refusals -------------------------------------------------------------------------

def idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def write(path, data: bytes):
    path.write_bytes(data)


def truncate(path, keep: int):
    path.write_bytes(path.read_bytes()[:keep])


def batch(x, labels) -> bytes:
    return pickle.dumps({b"data": x, b"labels": labels}, protocol=2)


IMAGES = "train-images-idx3-ubyte"
LABELS = "train-labels-idx1-ubyte"
BATCHES = "cifar-10-batches-py"
U8 = np.uint8

# (data set, files to write: "idx" | "idx plain" | "cifar" | None, a change to them, options, message);
# {dir} is the data set's directory.
REFUSALS = [
    ("mnist", None, None, {}, "Invalid path: None (the mnist data set reads its files from a directory: pass "
                              "path='data/mnist'; asyncps data download mnist data/mnist fetches them)"),
    ("fashion_mnist", None, None, {"path": "{dir}/nowhere"},
     "Invalid path: '{dir}/nowhere' (no such directory: download the files there with: asyncps data download "
     "fashion_mnist {dir}/nowhere)"),
    ("mnist", "idx", None, {"path": "{dir}/t10k-images-idx3-ubyte.gz"},
     "Invalid path: '{dir}/t10k-images-idx3-ubyte.gz' (not a directory: pass the directory that holds "
     "train-images-idx3-ubyte[.gz] and the other IDX files)"),
    ("mnist", "idx", lambda d: (d / f"{IMAGES}.gz").unlink(), {},
     "Invalid path: '{dir}' (no train-images-idx3-ubyte[.gz] there: download it with: asyncps data download "
     "mnist {dir})"),
    ("fashion_mnist", None, lambda d: d.mkdir(), {},
     "Invalid path: '{dir}' (no train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
     "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] there: download them with: asyncps data download "
     "fashion_mnist {dir})"),
    ("cifar10", None, lambda d: d.mkdir(), {},
     "Invalid path: '{dir}' (no cifar-10-batches-py/ there: download it with: asyncps data download cifar10 {dir})"),
    ("cifar10", "cifar", lambda d: [(d / BATCHES / f).unlink() for f in ("data_batch_4", "test_batch")], {},
     "Invalid path: '{dir}' (no cifar-10-batches-py/data_batch_4, cifar-10-batches-py/test_batch there: download "
     "them with: asyncps data download cifar10 {dir})"),
    ("cifar10", None, None, {"path": "{dir}", "limit": 0},
     "Invalid limit: 0 (limit must be an integer >= 1, or left out for all)"),
    ("mnist", "idx", None, {"limit": True}, "Invalid limit: True (limit must be an integer >= 1, or left out for all)"),
    ("mnist", "idx", None, {"limit": 201},
     "Invalid limit: 201 (the training files hold 200 examples: limit must be an integer from 1 to 200)"),
    ("cifar10", "cifar", None, {"limit": 201},
     "Invalid limit: 201 (the CIFAR-10 training batches hold 200 examples: limit must be an integer from 1 to 200)"),
    ("mnist", "idx", None, {"val_fraction": 1.0}, "Invalid val_fraction: 1.0 (val_fraction must be in [0, 1))"),
    ("mnist", None, None, {"test_fraction": 0.2},
     "Invalid option for dataset 'mnist': 'test_fraction' (allowed options: ['limit', 'path', 'val_fraction'])"),
    # corrupt IDX files
    ("mnist", "idx", lambda d: truncate(d / "t10k-labels-idx1-ubyte.gz", 30), {},
     "Invalid gzip file: '{dir}/t10k-labels-idx1-ubyte.gz' (truncated or corrupt: Compressed file ended before the "
     "end-of-stream marker was reached; delete it and download it again)"),
    ("mnist", "idx plain", lambda d: truncate(d / IMAGES, 16 + 200 * 784 - 100), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (truncated: 156700 bytes of data after the header, and "
     "200x28x28 uint8 takes 156800)"),
    ("mnist", "idx plain", lambda d: truncate(d / IMAGES, 10), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (truncated: 10 bytes, and its header alone takes 16)"),
    ("mnist", "idx plain", lambda d: write(d / LABELS, idx(np.zeros(200, U8)) + b"abc"), {},
     "Invalid IDX file: '{dir}/train-labels-idx1-ubyte' (3 bytes after the 200 uint8 array its header announces)"),
    ("mnist", "idx plain", lambda d: write(d / IMAGES, b"hello, world"), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (it starts with 68 65 6c 6c, and an IDX file starts with "
     "00 00, a type code (08 for unsigned bytes) and the number of dimensions)"),
    ("mnist", "idx plain", lambda d: write(d / IMAGES, b""), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (it is empty, and an IDX file starts with 00 00, a type "
     "code (08 for unsigned bytes) and the number of dimensions)"),
    ("mnist", "idx plain", lambda d: shutil.copy(d / LABELS, d / IMAGES), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (expected images, a 3-dimensional uint8 array [n, rows, "
     "columns]; it holds (200,) uint8)"),
    ("mnist", "idx plain", lambda d: write(d / IMAGES, idx(np.zeros((200, 28, 28), ">i4"), 0x0C)), {},
     "Invalid IDX file: '{dir}/train-images-idx3-ubyte' (expected images, a 3-dimensional uint8 array [n, rows, "
     "columns]; it holds (200, 28, 28) int32)"),
    ("mnist", "idx", lambda d: write(d / f"{LABELS}.gz", gzip.compress(idx(np.zeros(199, U8)))), {},
     "Invalid IDX file: '{dir}/train-labels-idx1-ubyte.gz' (it has 199 labels, and train-images-idx3-ubyte.gz has "
     "200 images)"),
    ("fashion_mnist", "idx plain", lambda d: write(d / LABELS, idx(np.arange(200, dtype=U8) % 13)), {},
     "Invalid IDX file: '{dir}/train-labels-idx1-ubyte' (labels must be class ids 0 to 9; it holds 0 to 12)"),
    # corrupt CIFAR-10 batches
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "data_batch_2", b""), {},
     "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/data_batch_2' (not a readable pickle: EOFError: Ran out "
     "of input; delete it and download it again)"),
    ("cifar10", "cifar", lambda d: truncate(d / BATCHES / "data_batch_2", 5000), {},
     "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/data_batch_2' (not a readable pickle: UnpicklingError: "
     "pickle data was truncated; delete it and download it again)"),
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "test_batch", pickle.dumps([1, 2])), {},
     "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/test_batch' (expected a dict with b'data' and b'labels'; "
     "it holds list)"),
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "test_batch", pickle.dumps({b"data": 1, "labels": 2})), {},
     "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/test_batch' (expected a dict with b'data' and b'labels'; "
     "it holds ['labels', b'data'])"),
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "data_batch_5", batch(np.zeros((40, 1024), U8), [0] * 40)),
     {}, "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/data_batch_5' (b'data' must be a uint8 array "
         "[n, 3072]; it is (40, 1024) uint8)"),
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "data_batch_5", batch(np.zeros((40, 3072), U8), [0] * 39)),
     {}, "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/data_batch_5' (b'labels' must hold one class id per "
         "image: 40 integers)"),
    ("cifar10", "cifar", lambda d: write(d / BATCHES / "data_batch_5", batch(np.zeros((2, 3072), U8), [3, 10])),
     {}, "Invalid CIFAR-10 batch: '{dir}/cifar-10-batches-py/data_batch_5' (labels must be class ids 0 to 9; it "
         "holds 3 to 10)"),
]


@pytest.mark.parametrize("name, files, change, options, message", REFUSALS,
                         ids=[f"{i}-{r[0]}" for i, r in enumerate(REFUSALS)])
def test_refusal_names_the_file_or_directory_and_what_is_wrong(tmp_path, image_files, name, files, change,
                                                               options, message):
    directory = tmp_path / "data"
    if files == "cifar":
        image_files.cifar_dataset(directory, per_batch=40)
    elif files is not None:
        image_files.idx_dataset(directory, n_train=200, gz=files == "idx")
    if change is not None:
        change(directory)
    if files is not None or change is not None:
        options = {"path": "{dir}", **options}
    options = {k: v.replace("{dir}", str(directory)) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ValueError) as caught:
        load_dataset(name, **options)
    assert str(caught.value) == message.replace("{dir}", str(directory))
