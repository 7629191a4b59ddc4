"""A data set of your own: interleaved spirals, a loader function.

``data.dataset = "examples.data:spirals"`` (examples/data.toml). A loader
is a function of a seeded ``numpy.random.Generator`` and the config's
``data.options`` (by keyword) that returns a ``workers.Dataset``:
``workers.split_examples`` splits one split of every example into train,
validation and test, and records the ``meta`` a model is built from. Use
only ``rng`` for randomness, and every process of a run (each builds the
data set itself) gets the same examples. A file works the same way: read
it (``np.loadtxt(path, delimiter=",")``) where this draws the points.
"""

from __future__ import annotations

import numpy as np
import torch

from asyncps.workers import Dataset, DenseSplit, split_examples


def spirals(rng: np.random.Generator, *, num_examples: int = 1200, arms: int = 3, turns: float = 1.0,
            noise: float = 0.2, val_fraction: float = 0.1, test_fraction: float = 0.2) -> Dataset:
    """``arms`` spiral arms in the unit disc, one class each, winding ``turns`` times from the centre out,
    their angles blurred by ``noise`` radians; points ``(x, y)`` float32, labels int64."""
    if not (isinstance(num_examples, int) and num_examples >= 10 * arms):
        raise ValueError(f"Invalid num_examples: {num_examples!r} (must be an integer >= 10 * arms = {10 * arms})")
    label = rng.integers(0, arms, num_examples)
    radius = rng.uniform(0.1, 1.0, num_examples)
    angle = 2 * np.pi * (label / arms + turns * radius) + noise * rng.standard_normal(num_examples)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    everything = DenseSplit(torch.from_numpy(points), torch.from_numpy(label))
    return split_examples("spirals", everything, rng, val_fraction, test_fraction, labels=label,
                          input_shape=(2,), num_classes=arms)
