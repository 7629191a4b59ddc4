"""Stale synchronous parallel as Ho et al. (2013) define it: each update applied
on arrival, reads bounded by s clocks, and every read showing the reader's own
updates, on a shard and in virtual time."""

from __future__ import annotations

import pytest
import torch

from asyncps import optim
from asyncps import protocols
from asyncps.lab.backends.sim import VirtualTime
from asyncps.ps import ClientWrapper, DelayedClient, Flat, InProcessClient, Layout, Shard, make_shards
from table_harness import assert_same, digits_softmax
from asyncps.workers.runtime import WorkerRuntime

LR = 0.1


def ssp_shard(staleness: int = 2) -> Shard:
    return Shard(0, torch.zeros(3), None, protocols.create("ssp", staleness=staleness).server_rule(
        optim.SGD(lr=1.0), 2))


def test_each_gradient_is_applied_on_arrival_and_the_version_counts_the_clocks_every_worker_completed():
    shard = ssp_shard()
    g = [torch.tensor([1.0, 2.0, 4.0]) * 2.0 ** -k for k in range(4)]  # sums exact in float32
    first = shard.push(Flat.of(g[0]), 0, worker=0)
    assert torch.equal(shard.dense.values, -g[0])  # at once: worker 1 has not pushed its clock 0
    assert first.version == 0 and not first.applied  # no clock completed: no new version, no update counted
    shard.push(Flat.of(g[1]), 0, worker=0)  # worker 0's clock 1, two clocks ahead
    assert shard.version == 0 and torch.equal(shard.dense.values, -(g[0] + g[1]))
    saved = shard.state_dict()  # mid-clock: worker 0 ahead, worker 1 at clock 0

    assert shard.push(Flat.of(g[2]), 0, worker=1).applied
    assert shard.version == 1  # every worker has completed clock 0
    shard.push(Flat.of(g[3]), 1, worker=1)
    assert shard.version == 2 and torch.equal(shard.dense.values, -(g[0] + g[1] + g[2] + g[3]))
    assert shard.staleness == {0: {0: 2}, 1: {0: 2}}  # in clocks completed between the read and the arrival

    restored = ssp_shard()
    restored.load_state_dict(saved)
    assert_same(restored.state_dict(), saved, "restored")
    restored.push(Flat.of(g[2]), 0, worker=1)
    restored.push(Flat.of(g[3]), 1, worker=1)
    assert_same(restored.state_dict(), shard.state_dict(), "went on")


def test_a_push_from_an_unknown_worker_changes_nothing():
    shard = ssp_shard()  # a shard outside a run, which leaves checking the worker to its rule
    before = shard.state_dict()
    with pytest.raises(ValueError, match=r"workers are numbered 0..1"):
        shard.push(Flat.of(torch.ones(3)), 0, worker=2)
    after = shard.state_dict()
    for key in ("values", "version", "rule_state"):
        assert_same(after[key], before[key], key)


class Log(ClientWrapper):
    """Every pull and push, as the shards answered it, in the one order the simulator runs them."""

    def __init__(self, inner, events: list):
        super().__init__(inner)
        self.events = events

    async def pull(self, out, at_least=0):
        read = await self.inner.pull(out, at_least)
        self.events.append(("pull", self.worker, out.clone()))
        return read

    async def push(self, grad, read):
        pushes = await self.inner.push(grad, read)
        self.events.append(("push", self.worker, grad.clone()))
        return pushes


def run_in_virtual_time(staleness: int, steps: int) -> list:
    """Two workers on two shards, as the sim backend runs them: worker 1
    computes ten times slower, and every message takes a little time."""
    problem = digits_softmax()
    protocol = protocols.create("ssp", staleness=staleness)
    layout = Layout(problem.model.dense, problem.model.tables, 2)
    shards = make_shards(layout, problem.flat, {}, protocol.server_rule(optim.SGD(lr=LR), 2), workers=2)
    sim, events = VirtualTime(), []
    for w, compute in enumerate((1.0, 10.0)):
        samplers = {"compute": lambda nbytes, s=compute: s, "pull": lambda nbytes: 0.25, "push": lambda nbytes: 0.5}
        client = DelayedClient(Log(InProcessClient(layout, shards, w, wait=sim.wait_until), events), samplers, sim)
        runtime = WorkerRuntime(w, 2, client, problem.model, problem.batches(w, 2), steps, lambda *a, **k: None,
                                after_compute=client.compute)
        sim.spawn(runtime.work(protocol), f"worker {w}")
    sim.run(on_idle=lambda: [shard.close() for shard in shards])
    return events


@pytest.mark.parametrize("staleness", [0, 2])
def test_in_virtual_time_reads_wait_s_clocks_at_most_and_show_every_update_that_arrived(staleness):
    steps = 6
    events = run_in_virtual_time(staleness, steps)
    values = digits_softmax().flat.clone()  # the parameters every update so far makes, applied in arrival order
    pushed, clock = [0, 0], [0, 0]
    for kind, worker, tensor in events:
        if kind == "pull":
            # Bounded staleness: every worker has completed clock c - s - 1, so the read includes its updates.
            assert min(pushed) >= clock[worker] - staleness, (worker, clock[worker], pushed)
            # On arrival and read-my-writes: the read shows every update pushed so far, the reader's own
            # included, and none is held back for its clock to complete.
            assert torch.allclose(tensor, values, rtol=0, atol=1e-6), (worker, clock[worker], pushed)
            clock[worker] += 1
        else:
            values = values - LR * tensor  # the [server] SGD step
            pushed[worker] += 1
    assert pushed == [steps, steps] and clock == [steps, steps]
    # The fast worker does run s clocks ahead: it read clocks 0..s before the slow one's first push.
    first_slow_push = events.index(next(e for e in events if e[:2] == ("push", 1)))
    assert sum(1 for kind, worker, _ in events[:first_slow_push] if (kind, worker) == ("pull", 0)) == staleness + 1
