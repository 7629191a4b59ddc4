"""A small streaming reader for LIBSVM / SVMlight text files.

One example a line::

    <label> [qid:<n>] <index>:<value> <index>:<value> ...  [# comment]

Labels -1, 0 and +1 (as integers or floats: ``-1``, ``+1``, ``1.0``) map to
{0, 1}; anything else is refused, as this reader feeds binary classifiers.
Blank lines and lines starting with ``#`` are skipped; ``qid:`` tokens
(ranking data) are ignored. Indices are 1-based (LIBSVM's convention) or
0-based: with ``zero_based="auto"`` a file is 0-based exactly when some
index is 0, the rule of ``sklearn.datasets.load_svmlight_file``. Within an
example the features are sorted by index and an index may appear once.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass

import numpy as np

from asyncps.optim.validation import check, is_int

__all__ = ["LibsvmData", "read_libsvm"]

_LABELS = {-1.0: 0.0, 0.0: 0.0, 1.0: 1.0}


@dataclass(frozen=True)
class LibsvmData:
    """CSR arrays of a whole file, indices already 0-based."""

    indices: np.ndarray  # int64 [nnz]
    offsets: np.ndarray  # int64 [n + 1]
    values: np.ndarray   # float32 [nnz]
    y: np.ndarray        # float32 [n] in {0, 1}
    num_features: int    # 1 + the largest index (0-based), or the caller's num_features


def read_libsvm(path: str | os.PathLike, *, zero_based: bool | str = "auto",
                num_features: int | None = None) -> LibsvmData:
    """Parse ``path`` line by line; a malformed line raises ``ValueError`` naming ``path:line``."""
    check(zero_based in (True, False, "auto"), "zero_based", zero_based, "zero_based must be True, False or 'auto'")
    check(os.path.isfile(path), "path", str(path), "no such file: pass the path of a LIBSVM text file")
    indices, values, y = array("q"), array("f"), array("f")
    offsets = array("q", [0])
    smallest = None
    with open(path, encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            where = f"LIBSVM line {os.fspath(path)}:{lineno}"
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            y.append(_parse_label(tokens[0], where))
            row = _parse_features(tokens[1:], where)
            if row:
                smallest = min(smallest, row[0][0]) if smallest is not None else row[0][0]
            for index, value in row:
                indices.append(index)
                values.append(value)
            offsets.append(len(indices))
    check(len(y) > 0, "LIBSVM file", os.fspath(path), "no examples found: expected lines 'label index:value ...'")

    index_array = np.frombuffer(indices, dtype=np.int64).copy()
    base = (1 if smallest != 0 else 0) if zero_based == "auto" else (0 if zero_based else 1)
    if base == 1:
        check(smallest is None or smallest >= 1, "LIBSVM index", smallest,
              "zero_based=False means indices start at 1; pass zero_based=True or 'auto' for 0-based files")
        index_array -= 1
    seen = int(index_array.max()) + 1 if index_array.size else 0
    if num_features is None:
        num_features = seen
    check(is_int(num_features, max(seen, 1)), "num_features", num_features,
          f"the file has features up to index {seen - 1} (0-based): num_features must be an integer >= {max(seen, 1)}")
    return LibsvmData(index_array, np.frombuffer(offsets, dtype=np.int64).copy(),
                      np.frombuffer(values, dtype=np.float32).copy(), np.frombuffer(y, dtype=np.float32).copy(),
                      num_features)


def _parse_label(token: str, where: str) -> float:
    try:
        label = float(token)
    except ValueError:
        label = None
    check(label in _LABELS, where, token, "the first token must be a binary label: -1, 0 or +1")
    return _LABELS[label]


def _parse_features(tokens: list[str], where: str) -> list[tuple[int, float]]:
    row = []
    for token in tokens:
        if token.startswith("qid:"):
            continue
        index, sep, value = token.partition(":")
        try:
            parsed = (int(index), float(value))
        except ValueError:
            parsed = None
        check(sep == ":" and parsed is not None and parsed[0] >= 0 and math.isfinite(parsed[1]), where, token,
              "expected 'index:value' with a non-negative integer index and a finite number value")
        row.append(parsed)
    row.sort()
    for (a, _), (b, _) in zip(row, row[1:]):
        check(a != b, where, f"{a}:", "an index may appear once per line")
    return row
