"""From a config to everything a backend needs to run it.

Every backend runs the same experiment. It is built here once: the data set
and each worker's shard of it, the model and its initial parameters, the
layout over the shards, the protocol, a fresh server rule per shard, and the
delay models.
Errors raised by the factories (``optim.create``, ``protocols.create``,
``load_dataset``, ``build_model``) come back naming the config section they
came from.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from asyncps import optim
from asyncps import protocols
from asyncps.lab.config import Config
from asyncps.ps import Layout, ServerRule
from asyncps.ps.delays import Delays
from asyncps.workers.data_shards import DataShard
from asyncps.workers.datasets import Dataset, load_dataset
from asyncps.workers.gradient_transforms import GradientTransform
from asyncps.workers.model_base import Model
from asyncps.workers.models import build_model


@contextmanager
def section(name: str):
    """Prefix a factory's ValueError with the config section it was given."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"Invalid config [{name}]: {err}") from None


# Every shard costs a message on every push and pull, whatever it holds. The
# quickstart (9,610 parameters) on the local backend: as many updates a second
# with 96 shards (100 parameters each) as with 2; with 960 (10 each), a quarter.
MIN_SHARD_PARAMETERS = 100


def _check_shards(shards: int, model: Model) -> None:
    """Refuse more shards than give each a meaningful slice of the model."""
    parameters = sum(math.prod(shape) for shape in model.dense.values()) + sum(
        rows * dim for rows, dim in model.tables.values())
    most = max(1, parameters // MIN_SHARD_PARAMETERS)
    if shards > most:
        raise ValueError(f"Invalid config value cluster.shards = {shards} (the model has {parameters:,} parameters, "
                         f"and each shard should hold at least {MIN_SHARD_PARAMETERS}: use at most {most} shards)")


def server_optimizer(config: Config) -> optim.Optimizer:
    """A fresh [server] optimizer, its lr on the [server] schedule."""
    server = config.server
    return optim.create(server.optimizer, schedule=server.schedule, **server.options)


@dataclass
class Experiment:
    config: Config
    dataset: Dataset
    model: Model
    protocol: protocols.Protocol
    layout: Layout
    initial_flat: torch.Tensor
    initial_tables: dict[str, torch.Tensor]
    data_shards: list[DataShard]
    steps: int  # per worker: the same for all, so that synchronous rounds complete
    delays: Delays = field(default_factory=Delays)  # per (worker, event) durations; real sleeps or virtual time

    @classmethod
    def build(cls, config: Config) -> "Experiment":
        workers = config.cluster.workers
        with section("data"):
            dataset = load_dataset(config.data.dataset, seed=config.seed, **config.data.options)
        with section("model"):
            model = build_model(config.model.name, dataset.meta, train=dataset.train, **config.model.options)
        _check_shards(config.cluster.shards, model)
        with section("protocol"):
            protocol = protocols.create(config.protocol.name, **config.protocol.options)
            if model.tables and not protocol.supports_sparse:
                raise ValueError(f"protocol {protocol.name!r} does not support sparse tables; model "
                                 f"{config.model.name!r} has {sorted(model.tables)} (use 'downpour')")
        with section("server"):
            protocol.server_rule(server_optimizer(config), workers)
        with section("data"):
            shards = [DataShard(dataset.train, w, workers, batch_size=config.data.batch_size, seed=config.seed,
                                curriculum=config.data.curriculum, growth=config.data.growth) for w in range(workers)]
        # Shards differ in size by at most one example, so their epochs may differ by
        # a batch: every worker takes the smallest shard's count.
        steps = max(1, min(s.steps_for(config.train.epochs) for s in shards))
        with section("protocol"):
            protocol.check_steps(steps)
        layout = Layout(model.dense, model.tables, config.cluster.shards)
        dense, tables = model.init(config.seed)
        delays = Delays(config.delays.specs(), config.seed, workers)  # Config has checked them
        return cls(config, dataset, model, protocol, layout, layout.flatten(dense), tables, shards, steps, delays)

    @property
    def transform(self) -> GradientTransform:
        """What every worker does to its gradients: the [train] clipping and noise."""
        train = self.config.train
        return GradientTransform(train.clip_norm, train.clip_value, train.noise_eta, train.noise_gamma,
                                 self.config.seed)

    def server_rule(self) -> ServerRule:
        """The rule every shard applies (each shard keeps its own state of it)."""
        return self.protocol.server_rule(server_optimizer(self.config), self.config.cluster.workers)
