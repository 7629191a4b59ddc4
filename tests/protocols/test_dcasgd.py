"""DC-ASGD (Zheng et al. 2017): plain training without delay, the compensation
term against a hand computation, adaptive lambda, checkpoints, convergence."""

from __future__ import annotations

import json

import pytest
import torch

from asyncps import optim
from asyncps.ps import Flat
from asyncps.lab.config import load_config
from asyncps.lab.runner import run
from asyncps.protocols import DCASGD


def push(rule, values, grad, state, *, worker=0, read, version, out=None):
    rule.apply(Flat.of(values), Flat.of(grad), state, None if out is None else Flat.of(out), worker=worker,
               staleness=version - read, version=version)


def test_without_delay_it_is_the_server_optimizer():
    torch.manual_seed(0)
    opt = optim.Adam(lr=0.01)
    for protocol in (DCASGD(), DCASGD(adaptive=True)):
        rule = protocol.server_rule(opt, 1)
        x = torch.randn(40)
        plain, plain_state = x.clone(), opt.init(x)
        state = rule.init(x)
        for t in range(100):
            g = torch.randn(40)
            out = torch.empty_like(x) if t % 2 else None
            push(rule, x, g, state, read=t, version=t, out=out)  # one worker: it read the version it meets
            x = x if out is None else out
            opt.step(plain, g, plain_state)
        assert torch.equal(x, plain)


def test_rows_without_delay_are_the_server_optimizer_on_rows():
    torch.manual_seed(1)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    rule = DCASGD().server_rule(opt, 1)
    table = torch.randn(20, 3)
    plain, plain_state = table.clone(), opt.init(table)
    state = rule.init(table)
    for t in range(50):
        ids, grad_rows = torch.randint(0, 20, (6,)), torch.randn(6, 3)
        rule.apply_rows(table, ids, grad_rows, state, worker=0, staleness=0, version=t)
        opt.step_rows(plain, ids, grad_rows, plain_state)
    assert torch.equal(table, plain)


def test_a_delayed_push_is_compensated_by_lambda_g_squared_times_the_drift():
    # Worker 0 reads w0 at version 0; worker 1 pushes twice meanwhile; worker 0's
    # gradient then meets w2 and is corrected by lambda g (.) g (.) (w2 - w0).
    torch.manual_seed(2)
    lam, lr = 0.5, 0.1
    rule = DCASGD(lambda_=lam).server_rule(optim.SGD(lr=lr), 2)
    w0 = torch.randn(8, dtype=torch.float64)
    g1, g2, g = (torch.randn(8, dtype=torch.float64) for _ in range(3))
    w, state = w0.clone(), rule.init(w0)
    push(rule, w, g1, state, worker=1, read=0, version=0)
    push(rule, w, g2, state, worker=1, read=1, version=1)
    w2 = w0 - lr * g1 - lr * g2
    torch.testing.assert_close(w, w2, rtol=1e-15, atol=1e-15)
    push(rule, w, g, state, worker=0, read=0, version=2)
    torch.testing.assert_close(w, w2 - lr * (g + lam * g * g * (w2 - w0)), rtol=1e-14, atol=1e-14)


def test_delayed_rows_are_compensated_by_their_own_drift():
    lam, lr = 0.5, 0.1
    rule = DCASGD(lambda_=lam).server_rule(optim.SGD(lr=lr), 2)
    table0 = torch.arange(12, dtype=torch.float64).view(6, 2) / 10
    table, state = table0.clone(), rule.init(table0)
    g1 = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=torch.float64)
    rule.apply_rows(table, torch.tensor([1, 3]), g1, state, worker=1, staleness=0, version=0)
    g = torch.tensor([[0.5, 2.0], [-1.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    rule.apply_rows(table, torch.tensor([3, 4, 3]), g, state, worker=0, staleness=1, version=1)  # read at 0
    expected = table0.clone()
    expected[[1, 3]] -= lr * g1
    g3, g4 = g[0] + g[2], g[1]  # row 3's duplicates summed; row 4 has not moved since the read
    expected[3] -= lr * (g3 + lam * g3 * g3 * (-lr * g1[1]))
    expected[4] -= lr * g4
    torch.testing.assert_close(table, expected, rtol=1e-14, atol=1e-14)


def test_adaptive_lambda_follows_the_mean_square_of_the_gradients():
    torch.manual_seed(3)
    lr, lambda0, m, eps = 0.1, 2.0, 0.95, 1e-7
    rule = DCASGD(adaptive=True).server_rule(optim.SGD(lr=lr), 2)
    w = torch.randn(5, dtype=torch.float64)
    state = rule.init(w)
    expected, mean_square, history = w.clone(), torch.zeros(5, dtype=torch.float64), [w.clone()]
    for version in range(10):
        g = torch.randn(5, dtype=torch.float64)
        read = max(0, version - 1)  # two workers taking turns: each misses the other's push
        push(rule, w, g, state, worker=version % 2, read=read, version=version)
        mean_square = m * mean_square + (1 - m) * g * g
        lam = lambda0 / (mean_square + eps).sqrt()
        expected = expected - lr * (g + lam * g * g * (expected - history[read]))
        history.append(expected)
        torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.mean_square, mean_square, rtol=1e-14, atol=0)


def test_adaptive_mean_square_on_rows_is_lazy():
    # Only the rows a push touches decay and take in g^2 (duplicates summed first);
    # the others keep their MeanSquare, and each touched row's lambda_t is taken from its own.
    lr, lambda0, m, eps = 0.1, 2.0, 0.95, 1e-7
    rule = DCASGD(adaptive=True).server_rule(optim.SGD(lr=lr), 2)
    table0 = torch.arange(12, dtype=torch.float64).view(6, 2) / 10
    table, state = table0.clone(), rule.init(table0)
    g1 = torch.tensor([[1.0, -1.0], [2.0, 0.5]], dtype=torch.float64)
    rule.apply_rows(table, torch.tensor([1, 3]), g1, state, worker=1, staleness=0, version=0)
    after_first = torch.zeros(6, 2, dtype=torch.float64)
    after_first[[1, 3]] = (1 - m) * g1 * g1
    torch.testing.assert_close(state.mean_square, after_first, rtol=1e-15, atol=0)

    g = torch.tensor([[0.5, 2.0], [-1.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    rule.apply_rows(table, torch.tensor([3, 4, 3]), g, state, worker=0, staleness=1, version=1)  # read at 0
    g3, g4 = g[0] + g[2], g[1]
    expected = after_first.clone()  # rows 0, 1, 2 and 5 untouched: row 1 keeps (1 - m) g1^2, undecayed
    expected[3] = m * after_first[3] + (1 - m) * g3 * g3
    expected[4] = m * after_first[4] + (1 - m) * g4 * g4
    torch.testing.assert_close(state.mean_square, expected, rtol=1e-15, atol=0)

    lam3 = lambda0 / (expected[3] + eps).sqrt()
    rows = table0.clone()
    rows[[1, 3]] -= lr * g1
    rows[3] -= lr * (g3 + lam3 * g3 * g3 * (-lr * g1[1]))  # row 3 moved since worker 0 read it
    rows[4] -= lr * g4  # row 4 had not: no compensation, whatever its lambda_t
    torch.testing.assert_close(table, rows, rtol=1e-14, atol=1e-14)


def test_defaults_are_the_papers_lambdas():
    assert DCASGD().lam == 0.04 and DCASGD(adaptive=True).lam == 2.0 and DCASGD(lambda_=0.5, adaptive=True).lam == 0.5


@pytest.mark.parametrize("options, match", [
    ({"lambda_": -1.0}, r"Invalid lambda_: -1.0 \(lambda_ must be a number >= 0\)"),
    ({"adaptive": 1}, r"Invalid adaptive: 1 \(adaptive must be True or False\)"),
    ({"mean_square_decay": 1.0}, r"Invalid mean_square_decay: 1.0 \(mean_square_decay must be in \[0.0, 1.0\)\)"),
    ({"eps": 0.0}, r"Invalid eps: 0.0 \(eps must be a number > 0\)"),
])
def test_refuses_bad_hyperparameters(options, match):
    with pytest.raises(ValueError, match=match):
        DCASGD(**options)


@pytest.mark.parametrize("adaptive", [False, True], ids=["DC-ASGD-c", "DC-ASGD-a"])
def test_sparse_logistic_regression_converges_with_four_delayed_workers(tmp_path, adaptive):
    config = load_config(None, [
        f"out_dir={tmp_path}", "backend=sim", "protocol.name=dcasgd",
        f"protocol.options={{adaptive = {str(adaptive).lower()}}}", "model.name=sparse_logreg",
        "data.dataset=sparse_synthetic", "data.options={num_examples = 2000, num_features = 500}",
        "cluster.workers=4", "cluster.shards=2", "train.epochs=3", "train.eval_every=100000",
        "server.optimizer=sgd", "server.options={lr = 0.5}", "delays.push={kind = 'constant', seconds = 0.1}"])
    run_dir = run(config, progress=False)
    final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "eval"' in line][-1]
    assert final["test_loss"] < 0.9 * 0.6931  # the untrained model predicts 1/2: log 2
    assert final["test_accuracy"] > 0.7
