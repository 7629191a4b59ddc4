"""Between the parameter server's flat float32 vector and a model, without copies.

The server keeps a model's dense tensors back to back in one vector
(``model.dense`` order). A worker turns the pulled vector into a single
autograd *leaf* that shares its memory, hands the model views into it, and
after ``backward`` the leaf's ``.grad`` is already the flat gradient to
push: no per-tensor gradients are concatenated, no parameters are copied.
"""

from __future__ import annotations

import torch

from asyncps.ps.layout import Layout
from asyncps.workers.model_base import Model
from asyncps.workers.splits import Split
from asyncps.optim.validation import check

__all__ = ["loss_and_grad"]


def loss_and_grad(model: Model, flat: torch.Tensor, rows: dict[str, torch.Tensor],
                  batch: Split) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, flat gradient, row gradients)`` of ``model`` on ``batch``.

    ``flat`` is the pulled dense vector and ``rows[t]`` the pulled rows of
    table ``t``, one per id of ``model.rows(batch)[t]`` in that order. The
    gradient vector is the leaf's own ``.grad`` (same length as ``flat``);
    ``row_grads[t]`` has the shape of ``rows[t]``. Neither input is changed.
    """
    check(set(rows) == set(model.tables), "row tables", sorted(rows),
          f"pass the pulled rows of every table of the model: {sorted(model.tables)}")
    leaf = flat.detach().requires_grad_()
    row_leaves = {name: values.detach().requires_grad_() for name, values in rows.items()}
    loss = model.loss(Layout(model.dense).unflatten(leaf), row_leaves, batch)
    loss.backward()
    grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
    row_grads = {name: r.grad if r.grad is not None else torch.zeros_like(r) for name, r in row_leaves.items()}
    return loss.item(), grad, row_grads
