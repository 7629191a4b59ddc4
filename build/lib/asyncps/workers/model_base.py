"""What a model is to the parameter server: named shapes, an initializer and a functional loss.

The parameters never live inside the model. A model describes them --
``dense`` (named tensors, flattened by the server into one float32 vector
in this order) and ``tables`` (sparse embedding tables, name -> (rows, dim))
-- and computes the loss *from* them, so the same code differentiates
values pulled from shards, a local copy, or a Hogwild! shared array.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from asyncps.workers.splits import Split
from asyncps.optim.validation import check

__all__ = ["Model", "hogwild_l2"]

Tensors = dict[str, torch.Tensor]


class Model:
    """Base of every model; subclasses set the shapes and implement the four verbs.

    A subclass -- a plugin's too (``model.name = "mypkg.nets:Net"``;
    ``optim.plugins``) -- sets ``name``, takes ``(meta, *, train=None,
    **options)`` (the data set's ``meta``, its training split, and the
    config's ``model.options`` by keyword), sets ``self.dense`` and
    ``self.tables`` there, and defines ``init``, ``loss`` and ``evaluate``
    (``rows`` too, with tables). Workers on threads share one model, and Ray
    and gRPC ship it pickled: keep no per-call state on it.

    ``loss(dense, rows, batch)`` sees only the table rows the batch touches:
    ``rows[t]`` holds the values of ``self.rows(batch)[t]`` (sorted unique
    ids) in that order. ``evaluate(dense, tables, split)`` sees whole tables
    and returns plain floats.
    """

    name: ClassVar[str]
    stochastic: bool = False  # whether loss draws random numbers (dropout): the runtime then seeds them per step
    dense: dict[str, tuple[int, ...]]
    tables: dict[str, tuple[int, int]]

    def init(self, seed: int) -> tuple[Tensors, Tensors]:
        """Initial ``(dense, tables)``, float32, the same for the same seed."""
        raise NotImplementedError

    def rows(self, batch: Split) -> Tensors:
        """Sorted unique int64 row ids of each table that ``batch`` touches."""
        return {}

    def loss(self, dense: Tensors, rows: Tensors, batch: Split) -> torch.Tensor:
        """Mean loss over ``batch``, differentiable w.r.t. ``dense`` and ``rows``."""
        raise NotImplementedError

    def evaluate(self, dense: Tensors, tables: Tensors, split: Split) -> dict[str, float]:
        """Scores on ``split``, recorded as ``val_<key>`` and ``test_<key>``: ``loss`` (early stopping and the
        plateau schedule watch it) and, for a classifier, ``accuracy`` (the target the reports time)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dense={self.dense}, tables={self.tables})"


def unique_rows(ids: torch.Tensor, pulled: torch.Tensor, table: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unique ids, position of each id among them)``, checking ``pulled`` has one row per unique id."""
    touched, where = torch.unique(ids, return_inverse=True)
    check(pulled.shape[0] == touched.numel(), f"rows[{table!r}]", tuple(pulled.shape),
          f"expected one row per id of model.rows(batch)[{table!r}]: {touched.numel()} rows")
    return touched, where


def hogwild_l2(l2: float, values: torch.Tensor, where: torch.Tensor, scale: torch.Tensor,
               batch_size: int) -> torch.Tensor:
    r"""The batch's share of :math:`\frac{\lambda}{2}\lVert w\rVert^2`, split over examples as Hogwild! does.

    Niu et al. (NIPS 2011), Sec. 4: each example :math:`e` carries
    :math:`\frac{\lambda}{2}\sum_{u \in e} \lVert w_u\rVert^2 \, N / d_u`, with
    :math:`d_u` the number of training examples touching row :math:`u`; the
    mean over all :math:`N` examples is then exactly
    :math:`\frac{\lambda}{2}\lVert w\rVert^2` (over rows the data touches),
    while a step reads and writes only the rows of its batch.

    ``values`` are the touched rows, ``where`` maps each occurrence in the
    batch to its row, ``scale`` is :math:`N / d_u` of the touched rows.
    """
    occurrences = torch.bincount(where, minlength=values.shape[0]).to(values.dtype)
    return 0.5 * l2 / batch_size * (occurrences * scale.to(values.dtype) * values.square().sum(1)).sum()
