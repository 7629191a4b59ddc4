"""TensorBoard scalars of a run as it goes: ``asyncps run --tensorboard``.

A listener of the run's records (``lab.metrics.Metrics.listeners``) writes,
into ``<run>/tensorboard/``:

- ``val/loss``, ``val/accuracy``, ``test/loss``, ``test/accuracy`` at each
  evaluation, against the updates applied;
- ``train/loss``, each worker's mini-batch loss, against the steps taken by
  all workers together;
- ``staleness/mean``, the mean staleness of the last ``STALENESS_WINDOW``
  pushes, against the pushes made.

``tensorboard --logdir runs`` then shows every run side by side. It needs
the ``tensorboard`` package, which asyncps does not require otherwise.
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["TensorBoard", "summary_writer", "STALENESS_WINDOW"]

STALENESS_WINDOW = 50  # pushes averaged into one staleness point


def summary_writer() -> type:
    """torch's SummaryWriter; a ValueError saying what to install when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("Invalid --tensorboard here: the tensorboard package is not installed "
                         "(pip install tensorboard)") from None
    return SummaryWriter


class TensorBoard:
    def __init__(self, log_dir: Path):
        self.writer = summary_writer()(str(log_dir))
        self.lock = threading.Lock()  # records come from every worker's thread
        self.steps = 0
        self.pushes = 0
        self.staleness: list[int] = []

    def __call__(self, kind: str, fields: dict) -> None:
        with self.lock:
            if kind == "eval":
                for split in ("val", "test"):
                    for metric in ("loss", "accuracy"):
                        self.writer.add_scalar(f"{split}/{metric}", fields[f"{split}_{metric}"], fields["updates"])
            elif kind == "train":
                self.steps += 1
                self.writer.add_scalar("train/loss", fields["loss"], self.steps)
            elif kind == "push":
                self.pushes += 1
                self.staleness.append(fields["staleness"])
                if len(self.staleness) == STALENESS_WINDOW:
                    self.writer.add_scalar("staleness/mean", sum(self.staleness) / STALENESS_WINDOW, self.pushes)
                    self.staleness.clear()

    def close(self) -> None:
        with self.lock:
            self.writer.close()
