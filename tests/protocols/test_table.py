"""Every registered protocol through the same generic tests, from one table, on
an in-process cluster (``table_harness``: shards, clients and a thread per
worker, no ``lab``): it converges on a convex problem; one worker with no
delay is sequential training bit for bit, as its algorithm implies; and its
shards' checkpoints round-trip. A new protocol is one new row.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from asyncps import optim
from asyncps import protocols
from asyncps.ps import checkpoint
from table_harness import Cluster, Problem, assert_same, digits_softmax
from asyncps.workers.gradient import loss_and_grad

# The sequential run one worker without delay must equal, bit for bit: the
# final parameters and the loss of every step. It is given the protocol, its
# server optimizer, the problem and the worker's batches.
Oracle = Callable[[protocols.Protocol, optim.Optimizer, Problem, list], tuple[torch.Tensor, list[float]]]


def server_optimizer_steps(protocol, server, problem, batches):
    """Plain training: the server optimizer's step on each batch's gradient, in order."""
    flat = problem.flat.clone()
    state = server.init(flat)
    losses = []
    for batch in batches:
        loss, grad, _ = loss_and_grad(problem.model, flat, {}, batch)
        losses.append(loss)
        server.step(flat, grad, state)
    return flat, losses


def elastic_averaging(protocol, server, problem, batches):
    """Zhang, Choromanska & LeCun's Algorithm 1 for p = 1: the worker's
    elastic moves are the center's, and its local step is the protocol's local
    optimizer (SGD in the paper). The server optimizer plays no part: the
    center only adds what is pushed."""
    alpha = protocol.elastic_alpha(1)
    local = optim.create(protocol.optimizer, **protocol.options)
    center = problem.flat.clone()  # x~
    x_i = center.clone()  # x^i = x~
    state = local.init(x_i)
    losses = []
    for t, batch in enumerate(batches):
        x = x_i.clone()  # x = x^i
        loss, g, _ = loss_and_grad(problem.model, x, {}, batch)  # g^i(x), at the pre-elastic copy
        losses.append(loss)
        if t % protocol.tau == 0:  # tau divides t^i: communicate
            diff = alpha * (x - center)
            x_i = x_i - diff  # (a) the worker moves toward the center
            center = center + diff  # (b) the master moves toward the worker
        local.step(x_i, g, state)  # x^i <- x^i - eta g^i(x)
    return center, losses


def elastic_momentum(protocol, server, problem, batches):
    """Algorithm 2 (EAMSGD) for p = 1: the exchange of Algorithm 1 at x, the
    gradient at x + delta v, and the elastic move kept out of the velocity."""
    alpha, eta, delta = protocol.elastic_alpha(1), protocol.lr, protocol.momentum
    center = problem.flat.clone()  # x~
    x_i = center.clone()  # x^i = x~
    v = torch.zeros_like(x_i)  # v^i = 0
    losses = []
    for t, batch in enumerate(batches):
        x = x_i.clone()  # x = x^i
        loss, g, _ = loss_and_grad(problem.model, x + delta * v, {}, batch)  # g^i(x + delta v)
        losses.append(loss)
        if t % protocol.tau == 0:  # tau divides t^i: communicate
            diff = alpha * (x - center)
            x_i = x_i - diff  # (a)
            center = center + diff  # (b)
        v = delta * v - eta * g
        x_i = x_i + v
    return center, losses


# One configuration of every core-library optimizer, as a [server] section.
EVERY_OPTIMIZER = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01},
    "adadelta": {"lr": 1.0},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "adam": {"lr": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01},
    "adamax": {"lr": 0.01},
    "nadam": {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 1e-3},
}


@dataclass(frozen=True)
class Row:
    options: dict  # protocols.create(name, **options): the protocol as a user would set it up
    server: tuple[str, dict]  # the [server] optimizer and its options
    # One worker without delay, as its algorithm implies: the sequential
    # oracle, or (a string) why the algorithm implies none.
    sequential: Oracle | str
    # The [server] sections the one-worker equality is checked with.
    one_worker_servers: tuple[tuple[str, dict], ...] = ()

    def servers(self) -> tuple[tuple[str, dict], ...]:
        return self.one_worker_servers or (self.server,)


ANY_SERVER = tuple(EVERY_OPTIMIZER.items())

TABLE: dict[str, Row] = {
    # n_fetch = n_push = 1: each push reads the version it is applied to, so
    # any server optimizer steps as it would alone.
    "downpour": Row({}, ("adagrad", {"lr": 0.1}), server_optimizer_steps, ANY_SERVER),
    # One worker's round is its own gradient, divided by one.
    "sync": Row({}, ("sgd", {"lr": 0.5}), server_optimizer_steps, ANY_SERVER),
    # One worker completes every clock alone: staleness never waits, nor shows.
    "ssp": Row({"staleness": 2}, ("sgd", {"lr": 0.5}), server_optimizer_steps, ANY_SERVER),
    # Algorithms 1 and 2 with one worker are tractable: the oracles write them out.
    "easgd": Row({"tau": 2, "options": {"lr": 0.5}}, ("sgd", {"lr": 0.1}), elastic_averaging),
    "eamsgd": Row({"tau": 2, "lr": 0.1, "momentum": 0.9}, ("sgd", {"lr": 0.1}), elastic_momentum),
    # No delay, g_bck = 0: AdaptiveRevision is AdaGrad (the paper's check 1),
    # with Bösen's z0 = 1 as well as with eps.
    "dtadagrad": Row({}, ("adagrad", {"lr": 0.1}), server_optimizer_steps,
                     (("adagrad", {"lr": 0.1}), ("adagrad", {"lr": 0.1, "initial_accumulator_value": 1.0}))),
    # The worker reads right before it pushes: the drift w - w_bak is 0, and
    # so is the compensation, whatever lambda.
    "dcasgd": Row({"adaptive": True}, ("sgd", {"lr": 0.5}), server_optimizer_steps, ANY_SERVER),
}

NAMES = sorted(TABLE)


def cluster(name: str, num_workers: int, num_shards: int, server: tuple[str, dict] | None = None) -> Cluster:
    row = TABLE[name]
    return Cluster(digits_softmax(), protocols.create(name, **row.options), server or row.server, num_workers,
                   num_shards)


def test_the_table_has_a_row_for_every_registered_protocol():
    assert set(TABLE) == set(protocols.PROTOCOLS)


def test_every_optimizer_is_tried_as_a_server_optimizer():
    assert set(EVERY_OPTIMIZER) == set(optim.OPTIMIZERS)


def test_every_row_has_a_sequential_oracle_or_says_why_not():
    for name, row in TABLE.items():
        assert callable(row.sequential) or (isinstance(row.sequential, str) and row.sequential), name


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_convex_problem(name):
    # Three asynchronous workers (threads) on two shards, three epochs of each worker's third of the digits.
    run = cluster(name, num_workers=3, num_shards=2)
    before = run.problem.evaluate(run.problem.flat)
    run.train(steps=42)
    after = run.problem.evaluate(run.values())
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["accuracy"] > 0.8, (before, after)  # 10 classes: chance is 0.1


def one_worker_id(name: str, server: tuple[str, dict], shards: int) -> str:
    optimizer, options = server
    return f"{name}-{optimizer}({','.join(f'{k}={v}' for k, v in options.items())})-{shards}shard"


ONE_WORKER = [pytest.param(name, server, shards, id=one_worker_id(name, server, shards))
              for name in NAMES if callable(TABLE[name].sequential)
              for server in TABLE[name].servers() for shards in (1, 2)]


@pytest.mark.parametrize("name, server, shards", ONE_WORKER)
def test_one_worker_without_delay_is_sequential_training(name, server, shards):
    # Every rule is per coordinate: the shard count, which cuts the flat vector, must not show.
    steps = 10
    run = cluster(name, num_workers=1, num_shards=shards, server=server)
    records = run.train(steps)
    batches = list(itertools.islice(run.problem.batches(0, 1), steps))
    flat, losses = TABLE[name].sequential(run.protocol, optim.create(server[0], **server[1]), run.problem, batches)
    pushes = records.of("push", 0)
    assert pushes and all(push["staleness"] == 0 for push in pushes)
    ours = run.values()
    assert torch.equal(ours, flat), f"{int((ours != flat).sum())} of {flat.numel()} parameters differ, " \
                                    f"by up to {(ours - flat).abs().max().item():.3g}"
    assert records.losses(0) == losses  # and every gradient was taken at the sequential parameters


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_round_trips_and_training_goes_on_from_it_alike(name, tmp_path):
    run = cluster(name, num_workers=2, num_shards=2)
    run.train(steps=5)
    saved = run.state()
    loaded = run.fresh_shards()
    for shard, state in zip(loaded, saved):
        shard.load_state_dict(state)
    restored = run.fresh_shards()
    for shard in run.shards:
        assert checkpoint.save(shard, tmp_path / f"shard-{shard.index}.pt") == shard.version
    for shard in restored:
        assert checkpoint.restore(shard, tmp_path / f"shard-{shard.index}.pt")[0] == saved[shard.index]["version"]
    # values, versions and the rule's state, as saved
    assert_same([shard.state_dict() for shard in loaded], saved, "loaded")
    assert_same([shard.state_dict() for shard in restored], saved, "restored")

    # Three more steps of every worker, in lockstep, the same on each: each
    # step every worker reads before any pushes, so the delay-aware rules read
    # their restored logs, and EASGD's workers (restarted at the center) make
    # a nonzero exchange by step tau.
    copies = [run.over(loaded), run.over(restored)]
    went_on = [c.train(steps=3, lockstep=True) for c in (run, *copies)]
    after = run.state()
    assert not torch.equal(run.values(), torch.cat([s["values"] for s in saved]))  # training did go on
    for copy, records, what in zip(copies, went_on[1:], ("loaded", "restored")):
        for w in range(run.num_workers):
            assert records.losses(w) == went_on[0].losses(w), (what, w)
            assert records.of("push", w) == went_on[0].of("push", w), (what, w)
        assert_same(copy.state(), after, f"{what}, three steps later")


def test_lockstep_steps_are_stale_and_the_same_every_time():
    # What the checkpoint test leans on: in lockstep, worker w's pushes are w
    # updates stale under a rule that applies each push, and a run repeats exactly.
    runs = [cluster("downpour", num_workers=3, num_shards=2) for _ in range(2)]
    records = [run.train(steps=3, lockstep=True) for run in runs]
    for w in range(3):
        assert [push["staleness"] for push in records[0].of("push", w)] == [w] * 3 * 2  # 3 steps, 2 shards
        assert records[0].of("push", w) == records[1].of("push", w)
    assert torch.equal(runs[0].values(), runs[1].values())
