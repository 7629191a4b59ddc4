"""AdaptiveRevision (McMahan & Streeter 2014): AdaGrad without delay, one AdaGrad
step on the sum for gradients read together, a bounded log, and its refusals."""

from __future__ import annotations

import json

import pytest
import torch

from asyncps import optim
from asyncps.ps import Flat
from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.runner import run
from asyncps.protocols import AdaptiveRevision
from asyncps.protocols.update_log import UpdateLog


def make_rule(num_workers: int = 1, **adagrad):
    return AdaptiveRevision().server_rule(optim.Adagrad(**adagrad), num_workers)


def push(rule, values, grad, state, *, worker=0, read, version, out=None):
    rule.apply(Flat.of(values), Flat.of(grad), state, None if out is None else Flat.of(out), worker=worker,
               staleness=version - read, version=version)


@pytest.mark.parametrize("z0", [0.0, 0.5])
def test_without_delay_it_is_torch_adagrad(z0):
    torch.manual_seed(0)
    rule = make_rule(3, lr=0.1, initial_accumulator_value=z0)
    x = torch.randn(50, dtype=torch.float64)
    oracle = x.clone().requires_grad_()
    torch_opt = torch.optim.Adagrad([oracle], lr=0.1, initial_accumulator_value=z0)
    state = rule.init(x)
    for t in range(300):
        g = torch.randn(50, dtype=torch.float64) * (torch.rand(50) < 0.5)  # zero gradients on some coordinates
        out = torch.empty_like(x) if t % 2 else None  # the shard's two paths: in place, or into a spare buffer
        push(rule, x, g, state, worker=t % 3, read=t, version=t, out=out)  # each read at the version it meets
        x = x if out is None else out
        oracle.grad = g.clone()
        torch_opt.step()
    torch.testing.assert_close(x, oracle.detach(), rtol=1e-10, atol=1e-12)
    assert torch.equal(state.z, state.z_max)  # with no delay z only grows


def test_rows_without_delay_are_torch_sparse_adagrad():
    torch.manual_seed(1)
    rule = make_rule(2, lr=0.2, initial_accumulator_value=0.1)
    table = torch.randn(30, 4, dtype=torch.float64)
    oracle = table.clone().requires_grad_()
    torch_opt = torch.optim.Adagrad([oracle], lr=0.2, initial_accumulator_value=0.1)
    state = rule.init(table)
    for t in range(200):
        ids = torch.randint(0, 30, (8,))  # with duplicates: summed first
        grad_rows = torch.randn(8, 4, dtype=torch.float64)
        rule.apply_rows(table, ids, grad_rows, state, worker=t % 2, staleness=0, version=t)
        oracle.grad = torch.sparse_coo_tensor(ids.unsqueeze(0), grad_rows, (30, 4))
        torch_opt.step()
    torch.testing.assert_close(table, oracle.detach(), rtol=1e-10, atol=1e-12)


def test_gradients_read_together_make_one_adagrad_step_on_their_sum():
    # ALGORITHMS.md section 1, check 2: k gradients read at one state, applied one
    # after another, give x0 - alpha * sum(g) / sqrt(z0 + sum(g)^2) when z never
    # decreases (here every coordinate's gradients share a sign).
    torch.manual_seed(2)
    k, alpha, z0 = 5, 0.3, 1.0
    rule = make_rule(k, lr=alpha, initial_accumulator_value=z0, eps=0.0)
    x0 = torch.randn(20, dtype=torch.float64)
    sign = torch.randn(20).sign().double()
    grads = [sign * torch.rand(20, dtype=torch.float64) for _ in range(k)]
    x, state = x0.clone(), rule.init(x0)
    for version, w in enumerate(torch.randperm(k).tolist()):  # any order
        push(rule, x, grads[w], state, worker=w, read=0, version=version)
    total = sum(grads)
    torch.testing.assert_close(state.z, z0 + total**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(x, x0 - alpha * total / (z0 + total**2).sqrt(), rtol=1e-12, atol=1e-14)


def test_rows_read_together_make_one_adagrad_step_on_their_sum():
    torch.manual_seed(3)
    alpha, z0 = 0.3, 1.0
    rule = make_rule(3, lr=alpha, initial_accumulator_value=z0, eps=0.0)
    table0 = torch.randn(10, 2, dtype=torch.float64)
    pushes = [torch.tensor([1, 4, 7]), torch.tensor([4, 2]), torch.tensor([7, 4, 9])]  # overlapping rows
    total = torch.zeros_like(table0)
    table, state = table0.clone(), rule.init(table0)
    for version, ids in enumerate(pushes):
        grad_rows = torch.rand(ids.numel(), 2, dtype=torch.float64)  # one sign: z never decreases
        total.index_add_(0, ids, grad_rows)
        rule.apply_rows(table, ids, grad_rows, state, worker=version, staleness=version, version=version)
    torch.testing.assert_close(table, table0 - alpha * total / (z0 + total**2).sqrt(), rtol=1e-12, atol=1e-14)
    untouched = torch.tensor([0, 3, 5, 6, 8])
    assert torch.equal(table[untouched], table0[untouched])


def test_when_z_decreases_the_running_max_keeps_the_rate_from_increasing():
    alpha, z0 = 0.5, 1.0
    rule = make_rule(2, lr=alpha, initial_accumulator_value=z0, eps=0.0)
    x0 = torch.tensor([3.0], dtype=torch.float64)
    x, state = x0.clone(), rule.init(x0)
    push(rule, x, torch.tensor([1.0], dtype=torch.float64), state, worker=0, read=0, version=0)
    push(rule, x, torch.tensor([-1.0], dtype=torch.float64), state, worker=1, read=0, version=1)
    # z = 1 + 1, then 2 + 1 + 2 (-1)(1) = 1: it went down, z' stayed at 2, and the
    # two steps cancel, as one step on their sum (0) would.
    assert state.z.item() == 1.0 and state.z_max.item() == 2.0
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-15)
    push(rule, x, torch.tensor([0.5], dtype=torch.float64), state, worker=1, read=2, version=2)
    # The next step's rate is alpha / sqrt(z') = alpha / sqrt(2), not alpha / sqrt(z = 1.25).
    assert state.z.item() == 1.25 and state.z_max.item() == 2.0
    torch.testing.assert_close(x, x0 - alpha * 0.5 / 2**0.5, rtol=1e-15, atol=0)


def test_the_log_holds_the_updates_in_flight_and_refuses_reads_it_dropped():
    k = 4
    rule = make_rule(k)
    x = torch.zeros(6)
    state = rule.init(x)
    for version in range(100):  # round robin: each worker misses the other k - 1 pushes
        push(rule, x, torch.ones(6), state, worker=version % k, read=max(0, version - (k - 1)), version=version)
        assert len(state.log) == (version + 1 if version < k else k)
    with pytest.raises(ValueError, match=r"Invalid read version: 10 \(updates before version 96 were dropped"):
        push(rule, x, torch.ones(6), state, worker=0, read=10, version=100)


def test_a_slow_worker_keeps_its_window_in_the_log():
    rule = make_rule(2)
    x = torch.zeros(3)
    state = rule.init(x)
    push(rule, x, torch.ones(3), state, worker=1, read=0, version=0)  # the slow worker read at 0, pushed
    for version in range(1, 30):  # the fast worker pushes alone, reading each version
        push(rule, x, torch.ones(3), state, worker=0, read=version, version=version)
    assert len(state.log) == 30  # the slow worker reads version >= 1: only version 0 could go, and it is kept
    assert torch.equal(state.log.since(1), torch.full((3,), 29.0))
    push(rule, x, torch.ones(3), state, worker=1, read=1, version=30)
    assert len(state.log) == 2  # versions 29 (worker 0's last push) and 30


@pytest.mark.parametrize("optimizer, match", [
    (optim.Adam(), (r"Invalid server optimizer: 'adam' \(protocol 'dtadagrad' revises AdaGrad's steps: "
                    r"set \[server\] optimizer = \"adagrad\"\)")),
    (optim.Adagrad(lr_decay=0.1), r"Invalid lr_decay: 0.1 \(.*set \[server\] options lr_decay = 0\)"),
    (optim.Adagrad(weight_decay=1e-4), r"Invalid weight_decay: 0.0001 \(.*set \[server\] options weight_decay = 0\)"),
    (optim.Adagrad(lr=optim.ExponentialDecay(0.1, 0.99)), r"Invalid lr: .*set \[server\] options lr to a number"),
    (optim.Adagrad(eps=0.0), r"Invalid eps: 0.0 \(.*set eps > 0 .* or initial_accumulator_value > 0"),
])
def test_refuses_what_it_cannot_revise(optimizer, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveRevision().server_rule(optimizer, 4)


def test_the_config_error_names_the_server_section():
    config = load_config(None, ["protocol.name=dtadagrad", "server.optimizer=sgd"])
    with pytest.raises(ValueError, match=r"Invalid config \[server\]: Invalid server optimizer: 'sgd'"):
        Experiment.build(config)


def test_sparse_logistic_regression_converges_with_four_delayed_workers(tmp_path):
    config = load_config(None, [
        f"out_dir={tmp_path}", "backend=sim", "protocol.name=dtadagrad", "model.name=sparse_logreg",
        "data.dataset=sparse_synthetic", "data.options={num_examples = 2000, num_features = 500}",
        "cluster.workers=4", "cluster.shards=2", "train.epochs=3", "train.eval_every=100000",
        "server.options={lr = 0.5}", "delays.push={kind = 'constant', seconds = 0.1}"])
    run_dir = run(config, progress=False)
    final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in line][-1]
    assert final["test_loss"] < 0.9 * 0.6931  # the untrained model predicts 1/2: log 2
    assert final["test_accuracy"] > 0.7


def test_a_silent_worker_cannot_grow_the_log_without_bound():
    # Worker 1 never pushes (dead, or far behind): the log keeps 32 entries per worker, no more.
    log = UpdateLog((3,), num_workers=2)
    for version in range(200):
        log.record(version, 0, torch.ones(3))
        assert len(log) <= 64
    assert len(log) == 64 and log.kept_from == 136
    assert torch.equal(log.since(190), torch.full((3,), 10.0))  # what is kept still sums exactly
    with pytest.raises(ValueError, match="updates before version 136 were dropped from the log.*"
                                         "not fall more than 64 updates behind"):
        log.since(0)  # the silent worker's push, read at version 0, is refused
