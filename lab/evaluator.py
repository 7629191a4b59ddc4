"""The evaluator: reads the parameters through a client, like any worker,
and scores them on the validation and test splits as training goes on.

It evaluates after every ``eval_every`` updates applied (on every shard) and, with early stopping on, ends the run
once the validation loss has stopped improving. The staleness beside each
evaluation is derived from the push records when the run is finished
(``lab.metrics.finalize_metrics``).
"""

from __future__ import annotations

from typing import Callable

import torch

import optim
from lab.experiment import Experiment
from lab.metrics import Metrics
from ps import Client, ShardClosed, Versions


EVALUATOR = -1  # the evaluator's reader and worker id on the shards: never a worker's


class Evaluator:
    def __init__(self, experiment: Experiment, client: Client, metrics: Metrics, end_run: Callable[[], None]):
        """``end_run`` ends the run early (early stopping)."""
        self.experiment = experiment
        self.client = client
        self.metrics = metrics
        self.end_run = end_run
        train = experiment.config.train
        self.eval_every = train.eval_every
        self.early_stopping = (optim.EarlyStopping(train.patience, train.min_delta, mode="min")
                               if train.early_stopping else None)

    async def read(self, min_version: int = 0) -> tuple[dict, dict, Versions]:
        """A copy of every parameter, named as the model names them, once every
        shard has applied ``min_version`` updates; and the versions read."""
        layout = self.experiment.layout
        flat = torch.empty(layout.size)
        read = await self.client.pull(flat, min_version)
        dense = layout.unflatten(flat)
        tables = {}
        for table, (rows, _) in layout.tables.items():
            tables[table], _ = await self.client.pull_rows(table, torch.arange(rows))
        return dense, tables, read

    async def evaluate(self, min_version: int = 0) -> dict:
        """Score the parameters once every shard has applied ``min_version`` updates."""
        model, data = self.experiment.model, self.experiment.dataset
        dense, tables, read = await self.read(min_version)
        result = {"updates": int(read)}
        for split_name, split in (("val", data.val), ("test", data.test)):
            result.update({f"{split_name}_{k}": v for k, v in model.evaluate(dense, tables, split).items()})
        self.metrics.record("eval", **result)
        return result

    async def run(self) -> None:
        """Evaluate every ``eval_every`` updates until the shards close."""
        next_at = self.eval_every
        try:
            while True:
                result = await self.evaluate(next_at)
                next_at = result["updates"] + self.eval_every
                if self.early_stopping is not None and self.early_stopping.update(result["val_loss"]):
                    self.metrics.record("event", message=f"early stopping after {result['updates']} updates: "
                                                         f"no validation improvement in {self.early_stopping.patience}"
                                                         " evaluations")
                    self.end_run()
                    return
        except ShardClosed:
            return
        finally:
            await self.client.aclose()  # this loop's channels, before the loop goes
