"""Every protocol from one table: it converges on a convex problem, and where
the algorithm implies it, one worker with no delay is sequential training."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

import pytest
import torch

from asyncps import optim
from asyncps import protocols
from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.runner import run
from asyncps.ps import Flat, InProcessClient, Shard, checkpoint, make_shards
from asyncps.workers.gradient import loss_and_grad
from asyncps.workers.runtime import WorkerRuntime

# name, protocol options, [server] optimizer and options: each protocol as a user would set it up.
PROTOCOLS = [
    ("downpour", {}, "adagrad", {"lr": 0.1}),
    ("downpour", {"staleness_lr": True}, "adagrad", {"lr": 0.1}),
    ("sync", {}, "sgd", {"lr": 0.5}),
    ("ssp", {"staleness": 2}, "sgd", {"lr": 0.5}),
    ("easgd", {"tau": 2, "options": {"lr": 0.2}}, "sgd", {"lr": 0.1}),
    ("eamsgd", {"tau": 2, "lr": 0.03, "momentum": 0.9}, "sgd", {"lr": 0.1}),
    ("dtadagrad", {}, "adagrad", {"lr": 0.1}),
    ("dcasgd", {}, "sgd", {"lr": 0.5}),
    ("dcasgd", {"adaptive": True}, "sgd", {"lr": 0.5}),
]

# One worker, no delay: the pushes reach the server in order, each read at the
# version it is applied to, so these are plain training with the server's optimizer.
SEQUENTIAL = [
    ("downpour", {"staleness_lr": True}),
    ("ssp", {"staleness": 3}),
    ("dcasgd", {}),
]


def config_for(tmp_path, name, options, optimizer, server_options, *overrides):
    return load_config(None, [
        f"out_dir={tmp_path}", "backend=sim", "model.name=softmax", f"protocol.name={name}",
        f"protocol.options={_toml(options)}", f"server.optimizer={optimizer}",
        f"server.options={_toml(server_options)}", "train.eval_every=100000", *overrides])


def _toml(table: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return _toml(v) if isinstance(v, dict) else repr(v)
    return "{" + ", ".join(f"{k} = {value(v)}" for k, v in table.items()) + "}"


def test_the_table_names_every_registered_protocol():
    assert {name for name, *_ in PROTOCOLS} == set(protocols.PROTOCOLS)


@pytest.mark.parametrize("name, options, optimizer, server_options", PROTOCOLS,
                         ids=[f"{p[0]}{'-' + '-'.join(p[1]) if p[1] else ''}" for p in PROTOCOLS])
def test_every_protocol_converges_on_a_convex_problem(tmp_path, name, options, optimizer, server_options):
    # Softmax regression on the digits with 4 asynchronous workers in virtual
    # time, messages taking a tenth of a gradient: the loss is convex.
    config = config_for(tmp_path, name, options, optimizer, server_options, "cluster.workers=4", "train.epochs=3",
                        "delays.push={kind = 'constant', seconds = 0.1}")
    run_dir = run(config, progress=False)
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in line]
    assert evals[-1]["test_accuracy"] >= 0.8  # 10 classes: chance is 0.1
    first = Experiment.build(config)
    untrained = first.model.evaluate(first.layout.unflatten(first.initial_flat), {}, first.dataset.test)
    assert evals[-1]["test_loss"] < 0.8 * untrained["loss"]


@pytest.mark.parametrize("name, options", SEQUENTIAL, ids=[s[0] for s in SEQUENTIAL])
def test_one_worker_without_delay_is_sequential_training(tmp_path, name, options):
    config = config_for(tmp_path, name, options, "adam", {"lr": 0.01}, "cluster.workers=1", "cluster.shards=2",
                        "train.epochs=2")
    saved = torch.load(run(config, progress=False) / "model.pt")
    exp = Experiment.build(config)
    opt = optim.create("adam", lr=0.01)
    flat = exp.initial_flat.clone()
    state = opt.init(flat)
    for batch in itertools.islice(iter(exp.data_shards[0]), exp.steps):
        opt.step(flat, loss_and_grad(exp.model, flat, {}, batch)[1], state)
    assert torch.allclose(exp.layout.flatten(saved["dense"]), flat, rtol=0, atol=1e-6)


class Recording(WorkerRuntime):
    """A worker runtime that keeps every parameter vector its gradients were taken at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[torch.Tensor] = []

    def gradient(self, params, rows, batch):
        self.seen.append(params.clone())
        return super().gradient(params, rows, batch)


def test_easgd_with_alpha_zero_is_independent_workers(tmp_path):
    config = config_for(tmp_path, "easgd", {"alpha": 0.0, "tau": 1, "options": {"lr": 0.3}}, "sgd", {"lr": 0.1},
                        "cluster.workers=3", "train.epochs=1")
    exp = Experiment.build(config)
    shards = make_shards(exp.layout, exp.initial_flat, {}, exp.server_rule())
    runtimes = [Recording(w, 3, InProcessClient(exp.layout, shards, w), exp.model, exp.data_shards[w], exp.steps,
                          lambda *a, **k: None) for w in range(3)]

    async def together():  # interleaved on one event loop, as asynchronous workers are
        await asyncio.gather(*(rt.work(exp.protocol) for rt in runtimes))

    asyncio.run(together())
    # Each worker's own copy followed plain SGD on its own batches, as if alone.
    fresh = Experiment.build(config)
    for w, runtime in enumerate(runtimes):
        alone = fresh.initial_flat.clone()
        for step, batch in enumerate(itertools.islice(iter(fresh.data_shards[w]), fresh.steps)):
            assert torch.allclose(runtime.seen[step], alone, rtol=0, atol=1e-6), (w, step)
            alone.sub_(loss_and_grad(fresh.model, alone, {}, batch)[1], alpha=0.3)
    center = torch.cat([shard.dense.values for shard in shards])
    assert torch.equal(center, exp.initial_flat)  # pushed differences were all zero: the center never moved


def test_easgd_follows_algorithm_1(tmp_path):
    # Two workers, exchanging every second step: the center and each worker's
    # copy are exactly the paper's updates, computed here by hand.
    alpha, lr, tau = 0.3, 0.2, 2
    config = config_for(tmp_path, "easgd", {"alpha": alpha, "tau": tau, "options": {"lr": lr}}, "sgd", {"lr": 0.1},
                        "cluster.workers=2", "cluster.shards=2", "train.epochs=1")
    exp = Experiment.build(config)
    shards = make_shards(exp.layout, exp.initial_flat, {}, exp.server_rule())
    runtimes = [Recording(w, 2, InProcessClient(exp.layout, shards, w), exp.model, exp.data_shards[w], exp.steps,
                          lambda *a, **k: None) for w in range(2)]

    for runtime in runtimes:  # one after the other: worker 1 starts from the center worker 0 left
        asyncio.run(runtime.work(exp.protocol))
    fresh = Experiment.build(config)
    center = fresh.initial_flat.clone()
    x = [None, None]
    for w in range(2):
        x[w] = center.clone()
        for t, batch in enumerate(itertools.islice(iter(fresh.data_shards[w]), fresh.steps)):
            assert torch.allclose(runtimes[w].seen[t], x[w], atol=1e-6), (w, t)
            g = loss_and_grad(fresh.model, x[w], {}, batch)[1]
            if t % tau == 0:
                d = alpha * (x[w] - center)
                x[w] -= d
                center += d
            x[w] -= lr * g
    assert torch.allclose(torch.cat([shard.dense.values for shard in shards]), center, atol=1e-6)


def test_eamsgd_follows_algorithm_2(tmp_path):
    # Two workers, exchanging every second step, one after the other: each
    # gradient's point and the center are Algorithm 2's, written out here. The
    # elastic difference is taken at x, not at the look-ahead x + delta v.
    alpha, lr, delta, tau = 0.3, 0.05, 0.9, 2
    config = config_for(tmp_path, "eamsgd", {"alpha": alpha, "tau": tau, "lr": lr, "momentum": delta}, "sgd",
                        {"lr": 0.1}, "cluster.workers=2", "cluster.shards=2", "train.epochs=1")
    exp = Experiment.build(config)
    shards = make_shards(exp.layout, exp.initial_flat, {}, exp.server_rule())
    runtimes = [Recording(w, 2, InProcessClient(exp.layout, shards, w), exp.model, exp.data_shards[w], exp.steps,
                          lambda *a, **k: None) for w in range(2)]
    for runtime in runtimes:  # worker 1 starts from the center worker 0 left
        asyncio.run(runtime.work(exp.protocol))

    fresh = Experiment.build(config)
    center = fresh.initial_flat.clone()  # x~
    for w in range(2):
        x = center.clone()  # x^i = x~
        v = torch.zeros_like(x)  # v^i = 0
        for t, batch in enumerate(itertools.islice(iter(fresh.data_shards[w]), fresh.steps)):
            x_before = x.clone()  # x = x^i
            assert torch.allclose(runtimes[w].seen[t], x_before + delta * v, atol=1e-6), (w, t)
            g = loss_and_grad(fresh.model, x_before + delta * v, {}, batch)[1]  # g(x + delta v)
            if t % tau == 0:  # tau divides t^i
                x = x - alpha * (x_before - center)  # (a)
                center = center + alpha * (x_before - center)  # (b)
            v = delta * v - lr * g
            x = x + v
    ours = torch.cat([shard.dense.values for shard in shards])
    assert torch.allclose(ours, center, rtol=0, atol=1e-6), (ours - center).abs().max().item()


def test_protocol_options_are_checked_with_clear_errors():
    cases = [
        ("downpoor", {}, "Invalid protocol name: 'downpoor' (choose one of ['dcasgd', 'downpour', "),
        ("downpour", {"n_pull": 2}, "Invalid option for protocol 'downpour': 'n_pull' (allowed options: ['local_lr', "),
        ("dtadagrad", {"lr": 0.1}, "Invalid option for protocol 'dtadagrad': 'lr' (allowed options: [])"),
        ("easgd", {"tau": 0}, "tau must be an integer >= 1"),
        ("easgd", {"beta": 1.5}, "beta must be in [0, 1]"),
        ("easgd", {"alpha": -0.1}, "alpha must be in [0, 1]"),
        ("easgd", {"optimizer": "nope"}, "nope"),
        ("eamsgd", {"momentum": 1.0}, "momentum must be in [0, 1)"),
        ("eamsgd", {"lr": -0.1}, "lr must be a number >= 0"),
        ("eamsgd", {"options": {"lr": 0.1}}, "Invalid option for protocol 'eamsgd': 'options' (allowed options: "),
        ("ssp", {"staleness": -1}, "staleness must be an integer >= 0"),
        ("sync", {"backup_workers": True}, "Invalid backup_workers: True (backup_workers must be an integer >= 0)"),
        ("downpour", {"warmstart_steps": True}, "warmstart_steps must be an integer >= 0"),
        ("downpour", {"staleness_lr": "yes"}, "staleness_lr must be True or False"),
    ]
    for name, options, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            protocols.create(name, **options)


@pytest.mark.parametrize("name, options, optimizer", [
    ("dtadagrad", {}, optim.Adagrad(lr=0.1, initial_accumulator_value=1.0)),
    ("dcasgd", {"adaptive": True}, optim.Adam(lr=0.01)),
    ("downpour", {"staleness_lr": True}, optim.Adagrad(lr=0.1)),
])
def test_a_checkpoint_restores_a_shard_with_its_rules_state(tmp_path, name, options, optimizer):
    # Every push reads two versions back, so the delay-aware rules have a log window to keep.
    torch.manual_seed(4)
    rules = [protocols.create(name, **options).server_rule(optimizer, 2) for _ in range(2)]
    shards = [Shard(0, torch.zeros(5), {"emb": torch.zeros(8, 2)}, rule) for rule in rules]
    history = [(w, torch.randn(5), torch.randint(0, 8, (3,)), torch.randn(3, 2)) for w in (0, 1) * 6]

    def replay(shard, part):
        for w, g, ids, rows in part:
            shard.push_rows("emb", ids, rows, max(0, shard.version - 2), worker=w)
            shard.push(Flat.of(g), max(0, shard.version - 2), worker=w)

    replay(shards[0], history[:6])
    checkpoint.save(shards[0], tmp_path / "shard.pt")
    assert checkpoint.restore(shards[1], tmp_path / "shard.pt")[0] == 12  # loads with weights_only: tensors and plain values
    replay(shards[0], history[6:])
    replay(shards[1], history[6:])
    assert torch.equal(shards[0].dense.values, shards[1].dense.values)
    assert torch.equal(shards[0].tables["emb"], shards[1].tables["emb"])


def test_each_protocol_says_how_many_workers_it_needs_alive():
    # A backend that loses workers goes on while this many remain (Ray), and stops otherwise.
    assert protocols.create("sync", backup_workers=2).min_workers(8) == 6
    assert protocols.create("ssp", staleness=3).min_workers(8) == 8
    for name in ("downpour", "easgd", "eamsgd", "dtadagrad", "dcasgd"):
        assert protocols.create(name).min_workers(8) == 1


@pytest.mark.parametrize("name, optimizer", [("dtadagrad", optim.Adagrad(lr=0.1)), ("dcasgd", optim.SGD(lr=0.1))])
@pytest.mark.parametrize("worker", [2, -1, 99])
def test_a_delay_aware_rule_refuses_an_unknown_worker_before_it_changes_anything(name, optimizer, worker):
    # The rule itself, not only the shard's boundary: a refused push must leave values and state alone.
    rule = protocols.create(name).server_rule(optimizer, 2)
    shard = Shard(0, torch.ones(5), {"emb": torch.ones(8, 2)}, rule)
    before = shard.state_dict()
    with pytest.raises(ValueError, match="workers are numbered 0..1"):
        shard.push(Flat.of(torch.full((5,), 0.5)), 0, worker=worker)
    with pytest.raises(ValueError, match="workers are numbered 0..1"):
        shard.push_rows("emb", torch.tensor([1, 3]), torch.full((2, 2), 0.5), 0, worker=worker)
    after = shard.state_dict()
    assert torch.equal(after["values"], before["values"]) and torch.equal(after["tables"]["emb"], before["tables"]["emb"])
    assert after["version"] == before["version"] == 0
