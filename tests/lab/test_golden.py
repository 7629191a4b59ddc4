"""Golden equivalences on every backend: what asynchronous and synchronous runs
must reduce to, checked against plain single-process training loops. The
grpc backend runs every shard and worker as a real process on 127.0.0.1; the
ray backend, every one as an actor of a Ray started once for this module."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from asyncps import optim
from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.runner import run
from asyncps.ps import ClientWrapper, InProcessClient, make_shards
from asyncps.workers.gradient import loss_and_grad
from asyncps.workers.runtime import WorkerRuntime
from asyncps.workers.splits import DenseSplit


BACKENDS = ["local", "sim", "grpc", "ray"]
backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request):
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return request.param


def run_experiment(tmp_path, backend, *overrides):
    config = load_config(None, ["train.eval_every=100000", f"out_dir={tmp_path}", f"backend={backend}", *overrides])
    run_dir = run(config, progress=False)
    saved = torch.load(run_dir / "model.pt")
    return config, run_dir, saved


def final_flat(config, saved) -> torch.Tensor:
    return Experiment.build(config).layout.flatten(saved["dense"])


def relative_error(ours, oracle) -> float:
    return ((ours - oracle).abs().max() / oracle.abs().max()).item()


def sequential(config, batches_of_step) -> torch.Tensor:
    """Single-process training with the server's optimizer on the whole vector."""
    exp = Experiment.build(config)
    opt = optim.create(config.server.optimizer, **config.server.options)
    flat = exp.initial_flat.clone()
    state = opt.init(flat)
    for batch in itertools.islice(batches_of_step(exp), exp.steps):
        _, grad, _ = loss_and_grad(exp.model, flat, {}, batch)
        opt.step(flat, grad, state)
    return flat


def one_worker_batches(exp):
    return iter(exp.data_shards[0])


@backends
def test_downpour_one_worker_equals_sequential_training_with_the_server_optimizer(tmp_path, backend):
    config, _, saved = run_experiment(tmp_path, backend, "cluster.workers=1", "cluster.shards=3", "train.epochs=2",
                                      "protocol.name=downpour")
    assert relative_error(final_flat(config, saved), sequential(config, one_worker_batches)) <= 1e-6


@backends
def test_sync_one_worker_equals_single_process_training(tmp_path, backend):
    config, _, saved = run_experiment(tmp_path, backend, "cluster.workers=1", "cluster.shards=2", "train.epochs=2",
                                      "protocol.name=sync", "server.optimizer=adam", "server.options={lr = 0.01}")
    assert relative_error(final_flat(config, saved), sequential(config, one_worker_batches)) <= 1e-6


@backends
def test_sync_k_workers_equals_single_process_training_on_the_concatenated_batch(tmp_path, backend):
    # Half an epoch of batches of 16: every worker's batches are full, so the mean
    # of the workers' mean gradients is the gradient of the concatenated batch.
    config, _, saved = run_experiment(tmp_path, backend, "cluster.workers=3", "cluster.shards=2", "train.epochs=0.5",
                                      "data.batch_size=16", "protocol.name=sync", "server.optimizer=sgd",
                                      "server.options={lr = 0.1, momentum = 0.9}")

    def concatenated(exp):
        for batches in zip(*(iter(shard) for shard in exp.data_shards)):
            assert len({len(b) for b in batches}) == 1
            yield DenseSplit(torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]))

    # The shards sum the workers' gradients in arrival order: float32 rounding differs.
    assert relative_error(final_flat(config, saved), sequential(config, concatenated)) <= 1e-5


def union_batches(exp):
    """Each step's batches of every worker, as one batch."""
    for batches in zip(*(iter(shard) for shard in exp.data_shards)):
        yield DenseSplit(torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches]))


@backends
def test_sync_rounds_with_short_last_batches_are_sgd_on_the_union_batch(tmp_path, backend):
    # Shards of 419, 420 and 420 digits in batches of 208: every epoch ends with batches of 3, 4 and 4
    # examples, which each worker weighs by its share of the round's 11, not by a third.
    config, _, saved = run_experiment(tmp_path, backend, "cluster.workers=3", "cluster.shards=2", "train.epochs=2",
                                      "data.batch_size=208", "protocol.name=sync", "server.optimizer=sgd",
                                      "server.options={lr = 0.5}")
    exp = Experiment.build(config)
    assert [[len(b) for b in itertools.islice(iter(shard), 3)] for shard in exp.data_shards] == \
        [[208, 208, 3], [208, 208, 4], [208, 208, 4]]
    assert relative_error(final_flat(config, saved), sequential(config, union_batches)) <= 1e-6


def pushes(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == "push"]


@backends
def test_one_worker_sees_no_staleness(tmp_path, backend):
    _, run_dir, _ = run_experiment(tmp_path, backend, "cluster.workers=1", "train.epochs=1")
    recorded = pushes(run_dir)
    assert recorded and all(p["staleness"] == 0 for p in recorded)


@backends
def test_staleness_is_consistent_with_the_versions_read(tmp_path, backend):
    config, run_dir, _ = run_experiment(tmp_path, backend, "cluster.workers=4", "cluster.shards=2", "train.epochs=2")
    recorded = pushes(run_dir)
    exp = Experiment.build(config)
    assert len(recorded) == 4 * exp.steps * 2  # every step pushes to both shards
    summary = json.loads((run_dir / "summary.json").read_text())
    for shard in range(2):
        mine = [p for p in recorded if p["shard"] == shard]
        # Each applied push turns version v into v + 1: the versions pushes arrived
        # at are exactly 0 .. N-1, and the final version is the number applied.
        assert sorted(p["version"] for p in mine) == list(range(len(mine)))
        assert all(0 <= p["version"] - p["staleness"] <= p["version"] for p in mine)
    assert summary["updates"] == 4 * exp.steps
    if backend not in ("grpc", "ray"):  # processes and actors start apart: a short run may not overlap
        assert summary["staleness"]["max"] > 0  # four asynchronous workers do overlap


class RowLog(ClientWrapper):
    """Observes which rows a worker pulls and pushes."""

    def __init__(self, inner):
        super().__init__(inner)
        self.pulled, self.pushed = [], []

    async def pull_rows(self, table, rows):
        self.pulled.append(rows.clone())
        return await self.inner.pull_rows(table, rows)

    async def push_rows(self, table, rows, grad_rows, versions):
        self.pushed.append(rows.clone())
        return await self.inner.push_rows(table, rows, grad_rows, versions)


SPARSE = ["data.dataset=sparse_synthetic", "data.options={num_features = 3000, num_examples = 1500}",
          "model.name=sparse_logreg", "cluster.workers=1", "cluster.shards=3", "train.epochs=1",
          "server.options={lr = 0.5}"]


def test_sparse_model_pulls_and_pushes_only_the_rows_each_batch_touches():
    exp = Experiment.build(load_config(None, SPARSE))
    shards = make_shards(exp.layout, exp.initial_flat, exp.initial_tables, exp.server_rule())
    client = RowLog(InProcessClient(exp.layout, shards, worker=0))
    runtime = WorkerRuntime(0, 1, client, exp.model, exp.data_shards[0], exp.steps, lambda *a, **k: None)
    runtime.run(exp.protocol)
    batches = list(itertools.islice(iter(exp.data_shards[0]), exp.steps))
    touched = [exp.model.rows(b)["weights"] for b in batches]
    assert len(client.pulled) == len(client.pushed) == exp.steps
    for want, pulled, pushed in zip(touched, client.pulled, client.pushed):
        assert torch.equal(pulled, want) and torch.equal(pushed, want)
    assert max(len(t) for t in touched) < exp.layout.tables["weights"][0] / 10


@backends
def test_sparse_shards_agree_with_a_dense_run(tmp_path, backend):
    config, _, saved = run_experiment(tmp_path, backend, *SPARSE)
    exp = Experiment.build(config)
    # A dense run: one process, the whole table, a dense gradient with zeros off the batch.
    opt = optim.create(config.server.optimizer, **config.server.options)
    table, bias = exp.initial_tables["weights"].clone(), exp.initial_flat.clone()
    table_state, bias_state = opt.init(table), opt.init(bias)
    for batch in itertools.islice(iter(exp.data_shards[0]), exp.steps):
        rows = exp.model.rows(batch)["weights"]
        _, bias_grad, row_grads = loss_and_grad(exp.model, bias, {"weights": table[rows]}, batch)
        opt.step(table, torch.zeros_like(table).index_add_(0, rows, row_grads["weights"]), table_state)
        opt.step(bias, bias_grad, bias_state)
    assert relative_error(saved["tables"]["weights"], table) <= 1e-6
    assert relative_error(exp.layout.flatten(saved["dense"]), bias) <= 1e-6


def test_factory_errors_name_their_config_section(tmp_path):
    for override, message in [("server.options={lr = -1.0}", r"Invalid config \[server\]: Invalid learning rate"),
                              ("protocol.options={n_fetch = 0}", r"Invalid config \[protocol\]: Invalid n_fetch"),
                              ("model.options={hidden = [0]}", r"Invalid config \[model\]: Invalid hidden"),
                              ("data.options={nope = 1}", r"Invalid config \[data\]")]:
        with pytest.raises(ValueError, match=message):
            run(load_config(None, [f"out_dir={tmp_path}", override]), progress=False)


def test_sync_refuses_a_model_with_sparse_tables(tmp_path):
    config = load_config(None, ["data.dataset=sparse_synthetic", "data.options={num_features = 500, "
                                "num_examples = 300}", "model.name=sparse_logreg", "protocol.name=sync"])
    with pytest.raises(ValueError, match=r"\[protocol\]: protocol 'sync' does not support sparse tables"):
        Experiment.build(config)
