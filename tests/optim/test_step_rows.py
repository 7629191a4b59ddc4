"""Lazy sparse updates: step_rows against torch's sparse-gradient paths and
against the dense rule restricted to the touched rows."""

from __future__ import annotations

import pytest
import torch

from asyncps import optim

from cases import CASES

ROWS, DIM, TOUCHED, STEPS = 60, 8, 24, 300


def relative_error(ours, oracle) -> float:
    return ((ours - oracle).abs().max() / oracle.abs().max()).item()


def row_batches(dtype, steps=STEPS, seed=0):
    """Random row ids with duplicates (drawn with replacement) and one gradient row each."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, ROWS, (TOUCHED,), generator=gen)
        yield rows, torch.randn(TOUCHED, DIM, generator=gen, dtype=dtype)


def sparse_grad(rows, grad_rows):
    return torch.sparse_coo_tensor(rows.unsqueeze(0), grad_rows, (ROWS, DIM), check_invariants=True)


TORCH_SPARSE = [
    # (our optimizer, torch optimizer with a sparse-gradient path, dtype, tolerance)
    (lambda: optim.SGD(lr=0.05), lambda p: torch.optim.SGD([p], lr=0.05), torch.float64, 1e-10),
    (lambda: optim.SGD(lr=0.05), lambda p: torch.optim.SGD([p], lr=0.05), torch.float32, 1e-5),
    (lambda: optim.Adagrad(lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1),
     lambda p: torch.optim.Adagrad([p], lr=0.1, lr_decay=1e-3, initial_accumulator_value=0.1), torch.float64, 1e-10),
    (lambda: optim.Adagrad(), lambda p: torch.optim.Adagrad([p]), torch.float32, 1e-5),
    # SparseAdam adds eps before the second-moment bias correction, dense Adam
    # after it; our lazy Adam keeps dense Adam's rule, so the two agree to
    # float64 precision only as eps vanishes (SparseAdam refuses eps = 0), and
    # to float32 precision at the default eps.
    (lambda: optim.Adam(lr=1e-2, eps=1e-30), lambda p: torch.optim.SparseAdam([p], lr=1e-2, eps=1e-30),
     torch.float64, 1e-10),
    (lambda: optim.Adam(lr=1e-2), lambda p: torch.optim.SparseAdam([p], lr=1e-2), torch.float32, 1e-5),
]


@pytest.mark.parametrize("make_ours, make_torch, dtype, tolerance", TORCH_SPARSE)
def test_matches_torch_sparse_gradient_paths(make_ours, make_torch, dtype, tolerance):
    table = torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(1), dtype=dtype)
    theirs = table.clone().requires_grad_()
    opt, torch_opt = make_ours(), make_torch(theirs)
    state = opt.init(table)
    for rows, grad_rows in row_batches(dtype):
        opt.step_rows(table, rows, grad_rows, state)
        theirs.grad = sparse_grad(rows, grad_rows)
        torch_opt.step()
    assert relative_error(table, theirs.detach()) <= tolerance


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_touching_every_row_equals_the_dense_update_on_summed_gradients(case):
    """When every row is touched, lazy and dense are the same algorithm: the
    dense torch optimizer, given the duplicates' summed gradient, is the oracle."""
    torch.manual_seed(0)
    table = torch.randn(ROWS, DIM, dtype=torch.float64)
    theirs = table.clone().requires_grad_()
    opt = optim.create(case.name, **case.hparams)
    state = opt.init(table)
    torch_opt, scheduler = case.torch_optimizer(theirs)
    for _ in range(50):
        rows = torch.cat([torch.randperm(ROWS), torch.randint(0, ROWS, (10,))])  # all rows, some twice
        grad_rows = torch.randn(rows.numel(), DIM, dtype=torch.float64)
        opt.step_rows(table, rows, grad_rows, state)
        theirs.grad = sparse_grad(rows, grad_rows).to_dense()
        torch_opt.step()
        if scheduler is not None:
            scheduler.step()
    assert relative_error(table, theirs.detach()) <= 1e-10


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_untouched_rows_and_their_state_do_not_change(case):
    table = torch.randn(ROWS, DIM)
    opt = optim.create(case.name, **case.hparams)
    state = opt.init(table)
    for rows, grad_rows in row_batches(torch.float32, steps=5):
        opt.step_rows(table, rows, grad_rows, state)  # give every slot some history
    before, saved = table.clone(), state.state_dict()
    rows = torch.tensor([3, 7, 7, 40])
    opt.step_rows(table, rows, torch.randn(4, DIM), state)

    untouched = torch.ones(ROWS, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(table[untouched], before[untouched])
    assert not torch.equal(table[~untouched], before[~untouched])
    for slot in opt.slots:
        assert torch.equal(state[slot][untouched], saved["tensors"][slot][untouched]), slot
    assert state.step == saved["step"] + 1


def test_touched_rows_get_the_dense_rule_with_their_own_state():
    """A lazy step on rows R equals a dense step on the sub-table table[R] with
    the matching rows of the state, at the table's global step count."""
    opt = optim.Adam(lr=0.1, amsgrad=True)
    table = torch.randn(ROWS, DIM, dtype=torch.float64)
    state = opt.init(table)
    for rows, grad_rows in row_batches(torch.float64, steps=7):
        opt.step_rows(table, rows, grad_rows, state)
    rows, g = torch.tensor([5, 9]), torch.randn(2, DIM, dtype=torch.float64)
    sub = table[rows].clone()
    sub_state = optim.State(state.step, {k: v[rows].clone() for k, v in state.tensors.items()})
    opt.step(sub, g, sub_state)
    opt.step_rows(table, rows, g, state)
    assert torch.equal(table[rows], sub)
    for slot in opt.slots:
        assert torch.equal(state[slot][rows], sub_state[slot])


def test_empty_rows_only_advance_the_step():
    opt = optim.Adagrad()
    table = torch.randn(ROWS, DIM)
    state, before = opt.init(table), table.clone()
    opt.step_rows(table, torch.empty(0, dtype=torch.int64), torch.empty(0, DIM), state)
    assert torch.equal(table, before) and state.step == 1


BAD_ROWS_INPUT = [
    (torch.randn(ROWS), torch.tensor([1]), torch.randn(1, DIM), "Invalid table: 1-D"),
    (torch.randn(ROWS, DIM), torch.tensor([1.0]), torch.randn(1, DIM), "Invalid rows: 1-D torch.float32"),
    (torch.randn(ROWS, DIM), torch.tensor([[1]]), torch.randn(1, DIM), "Invalid rows: 2-D torch.int64"),
    (torch.randn(ROWS, DIM), torch.tensor([1, 2]), torch.randn(1, DIM), r"Invalid grad_rows shape: \(1, 8\)"),
    (torch.randn(ROWS, DIM), torch.tensor([1, ROWS]), torch.randn(2, DIM), r"ids must be in \[0, 60\), got \[1, 60\]"),
    (torch.randn(ROWS, DIM), torch.tensor([-1]), torch.randn(1, DIM), r"ids must be in \[0, 60\)"),
    (torch.randn(ROWS, DIM), torch.tensor([1]), torch.randn(1, DIM, dtype=torch.float64), "Invalid dtypes"),
]


@pytest.mark.parametrize("table, rows, grad_rows, message", BAD_ROWS_INPUT)
def test_bad_rows_input_is_refused_and_changes_nothing(table, rows, grad_rows, message):
    opt = optim.Adam()
    state = opt.init(table) if table.dim() == 2 else optim.State()
    before = table.clone()
    with pytest.raises(ValueError, match=message):
        opt.step_rows(table, rows, grad_rows, state)
    assert torch.equal(table, before) and state.step == 0
