"""The flat vector <-> model bridge: views not copies, and the leaf's gradient equal
to the per-parameter gradients of an ordinary torch module."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch
import torch.nn.functional as F

from asyncps.ps import Layout
from asyncps.workers import build_model, load_dataset, loss_and_grad


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def inside(view: torch.Tensor, flat: torch.Tensor) -> bool:
    start, size = flat.data_ptr(), flat.numel() * flat.element_size()
    return start <= view.data_ptr() and view.data_ptr() + view.numel() * view.element_size() <= start + size


DENSE = [("softmax", {}), ("mlp", {"hidden": [32, 16]}), ("cnn", {}), ("cnn", {"batch_norm": True}),
         ("mlp", {"batch_norm": True})]


@pytest.mark.parametrize("name, options", DENSE, ids=[f"{n}{o}" for n, o in DENSE])
def test_flat_gradient_is_the_concatenation_of_ordinary_torch_gradients(name, options, digits):
    model = build_model(name, digits.meta, **options)
    dense, _ = model.init(0)
    flat = Layout(model.dense).flatten(dense)
    batch = digits.train.subset(torch.arange(16))
    loss, grad, row_grads = loss_and_grad(model, flat, {}, batch)

    net = model.network(track_running_stats=False)  # the same architecture as a plain module
    with torch.no_grad():
        for name_, p in net.named_parameters():
            p.copy_(dense[name_])
    oracle = F.cross_entropy(net(batch.x), batch.y)
    oracle.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert loss == pytest.approx(oracle.item(), rel=1e-6)
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert row_grads == {}


def test_no_parameter_is_copied_and_the_gradient_is_the_leafs_own(digits):
    model = build_model("mlp", digits.meta)
    flat = Layout(model.dense).flatten(model.init(0)[0])
    before = flat.clone()
    seen = {}
    loss_of = model.loss

    def spy(dense, rows, batch):
        seen.update(dense)
        return loss_of(dense, rows, batch)

    model.loss = spy
    _, grad, _ = loss_and_grad(model, flat, {}, digits.train.subset(torch.arange(8)))
    assert set(seen) == set(model.dense)
    assert all(inside(view, flat) for view in seen.values())  # views into the caller's storage, not copies
    leaf = next(iter(seen.values()))._base
    assert leaf.is_leaf and leaf.data_ptr() == flat.data_ptr() and grad is leaf.grad
    assert grad.shape == flat.shape and grad.is_contiguous()
    assert torch.equal(flat, before) and not flat.requires_grad


def test_row_gradients_come_back_in_pull_order():
    data = load_dataset("sparse_synthetic", num_examples=200, num_features=50, nnz=4)
    model = build_model("sparse_logreg", data.meta)
    batch = data.train.subset(torch.arange(10))
    ids = model.rows(batch)["weights"]
    weights = torch.randn(50, 1, generator=torch.Generator().manual_seed(0))
    loss, grad, row_grads = loss_and_grad(model, torch.tensor([0.3]), {"weights": weights[ids]}, batch)

    table = weights.clone().requires_grad_()
    bias = torch.tensor([0.3], requires_grad=True)
    logits = torch.zeros(len(batch)).index_add(0, batch.example_ids(), table[batch.indices, 0] * batch.values) + bias
    F.binary_cross_entropy_with_logits(logits, batch.y).backward()
    assert torch.allclose(row_grads["weights"], table.grad[ids])
    assert torch.allclose(grad, bias.grad)


def test_a_model_without_dense_parameters_gets_an_empty_gradient():
    data = load_dataset("matrix_completion", num_users=10, num_items=8, observed=0.5)
    model = build_model("matrix_factorization", data.meta)
    _, tables = model.init(0)
    batch = data.train.subset(torch.arange(6))
    ids = model.rows(batch)
    _, grad, row_grads = loss_and_grad(model, torch.zeros(0), {t: tables[t][ids[t]] for t in ids}, batch)
    assert grad.shape == (0,)
    rank = data.meta["rank"]
    assert {t: tuple(g.shape) for t, g in row_grads.items()} == {t: (len(ids[t]), rank) for t in ids}


def test_missing_row_tables_are_refused():
    model = build_model("sparse_logreg", {"num_features": 5})
    with pytest.raises(ValueError, match=r"Invalid row tables: \[\] \(pass the pulled rows of every table of the "
                                         r"model: \['weights'\]\)"):
        loss_and_grad(model, torch.zeros(1), {}, None)


def test_threads_sharing_one_model_each_get_their_own_gradient(digits):
    model = build_model("mlp", digits.meta, hidden=[32])
    batch = digits.train.subset(torch.arange(64))
    flats = [Layout(model.dense).flatten(model.init(seed)[0]) for seed in range(4)]
    expected = [loss_and_grad(model, flat, {}, batch) for flat in flats]
    wrong = []

    def work(k):
        for _ in range(50):
            loss, grad, _ = loss_and_grad(model, flats[k], {}, batch)
            if loss != pytest.approx(expected[k][0], rel=1e-6) or not torch.allclose(grad, expected[k][1], rtol=1e-6):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_model_pickles_for_other_processes(digits):
    model = build_model("cnn", digits.meta, train=digits.train, batch_norm=True)
    clone = pickle.loads(pickle.dumps(model))
    dense, _ = model.init(0)
    batch = digits.train.subset(torch.arange(8))
    assert clone.dense == model.dense
    assert clone.loss(dense, {}, batch).item() == pytest.approx(model.loss(dense, {}, batch).item(), rel=1e-6)
    assert clone.evaluate(dense, {}, digits.test) == pytest.approx(model.evaluate(dense, {}, digits.test))
