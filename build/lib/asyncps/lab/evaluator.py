"""The evaluator: reads the parameters through a client, like any worker,
and scores them on the validation and test splits as training goes on.

It evaluates after every ``eval_every`` updates applied (on every shard) and, with early stopping on, ends the run
once the validation loss has stopped improving. With a plateau schedule on the server optimizer
(``[server] schedule = {kind = "plateau"}``) it also watches the validation loss for the shards, and tells
them each new lr factor (after every evaluation from the first cut on, so that a restarted shard has it again). The staleness beside each
evaluation is derived from the push records when the run is finished
(``lab.metrics.finalize_metrics``).
"""

from __future__ import annotations

from typing import Callable

import torch

from asyncps import optim
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.ps import Client, ShardClosed, Versions


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
        server = experiment.config.server
        self.plateau = optim.plateau_of(server.schedule)
        self.base_lr = optim.base_lr(server.optimizer, server.options)

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

    async def watch_plateau(self, result: dict) -> None:
        """The plateau schedule's step: cut the shards' rate when the validation loss stalls."""
        if self.plateau is None:
            return
        if self.plateau.update(result["val_loss"], self.base_lr):
            self.metrics.record("event", message=f"lr cut to {self.base_lr * self.plateau.factor:.4g} after "
                                                 f"{result['updates']} updates: the validation loss has not "
                                                 f"improved in {self.plateau.patience + 1} evaluations")
        if self.plateau.factor != 1.0:
            await self.client.set_lr_factor(self.plateau.factor)

    async def run(self) -> None:
        """Evaluate every ``eval_every`` updates until the shards close."""
        next_at = self.eval_every
        try:
            while True:
                result = await self.evaluate(next_at)
                next_at = result["updates"] + self.eval_every
                await self.watch_plateau(result)
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
