"""Models whose parameters are mostly sparse embedding tables: a batch reads and
writes only the rows it touches, the setting of Hogwild! (Niu et al., NIPS 2011).

Both take an optional ``l2`` penalty, split over examples by row frequency
as Hogwild! does (:func:`workers.model_base.hogwild_l2`); the frequencies
(:func:`protocols.hogwild.frequency_scale`) are counted on the ``train``
split given to ``build_model``. ``evaluate`` reports the data term only, so
runs with different ``l2`` compare directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from asyncps.optim.validation import check, check_int, is_number
from asyncps.protocols.hogwild import frequency_scale
from asyncps.workers.model_base import Model, Tensors, hogwild_l2, unique_rows
from asyncps.workers.splits import RatingsSplit, SparseSplit, Split

__all__ = ["SparseLogReg", "MatrixFactorization"]


def _check_l2(l2, train: Split | None, kind: type) -> None:
    check(is_number(l2) and l2 >= 0, "l2", l2, "l2 must be a number >= 0")
    check(l2 == 0 or isinstance(train, kind), "train", type(train).__name__,
          "l2 > 0 scales each row's penalty by its training frequency (Hogwild!): "
          "pass build_model(..., train=dataset.train)")


class SparseLogReg(Model):
    r"""Logistic regression over sparse features.

    .. math::
        z_e = \sum_{f \in e} w_f x_{ef} + b, \qquad
        \ell = \frac{1}{|B|}\sum_{e \in B} \mathrm{BCE}(\sigma(z_e), y_e)
        \;[+\ \text{Hogwild! } \ell_2 \text{ on the touched } w_f]

    Table ``"weights"`` ``(num_features, 1)``, dense ``"bias"`` ``(1,)``, both
    initialized to zero (the loss is convex).
    """

    name = "sparse_logreg"

    def __init__(self, meta: dict, *, l2: float = 0.0, train: Split | None = None):
        check("num_features" in meta, "dataset meta for model 'sparse_logreg'", meta,
              "needs 'num_features': use a sparse data set such as 'sparse_synthetic' or 'libsvm'")
        _check_l2(l2, train, SparseSplit)
        self.num_features = int(meta["num_features"])
        self.l2 = l2
        self.dense = {"bias": (1,)}
        self.tables = {"weights": (self.num_features, 1)}
        self.scale = (torch.from_numpy(frequency_scale(train.indices.numpy(), self.num_features, len(train)))
                      if l2 else None)

    def init(self, seed: int) -> tuple[Tensors, Tensors]:
        return {"bias": torch.zeros(1)}, {"weights": torch.zeros(self.num_features, 1)}

    def rows(self, batch: SparseSplit) -> Tensors:
        return {"weights": torch.unique(batch.indices)}

    def loss(self, dense: Tensors, rows: Tensors, batch: SparseSplit) -> torch.Tensor:
        weights = rows["weights"]
        touched, where = unique_rows(batch.indices, weights, "weights")
        logits = self._logits(weights[where, 0], dense["bias"], batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch.y.to(logits.dtype))
        if self.l2:
            loss = loss + hogwild_l2(self.l2, weights, where, self.scale[touched], len(batch))
        return loss

    @torch.no_grad()
    def evaluate(self, dense: Tensors, tables: Tensors, split: SparseSplit) -> dict[str, float]:
        """``{"loss": mean BCE, "accuracy": share of sign(z) right}``."""
        logits = self._logits(tables["weights"][split.indices, 0], dense["bias"], split)
        return {"loss": F.binary_cross_entropy_with_logits(logits, split.y).item(),
                "accuracy": ((logits > 0).to(split.y.dtype) == split.y).double().mean().item()}

    @staticmethod
    def _logits(w_of_nonzeros: torch.Tensor, bias: torch.Tensor, batch: SparseSplit) -> torch.Tensor:
        terms = w_of_nonzeros * batch.values.to(w_of_nonzeros.dtype)
        return torch.zeros(len(batch), dtype=terms.dtype).index_add(0, batch.example_ids(), terms) + bias


class MatrixFactorization(Model):
    r"""Low-rank matrix factorization for ratings (Koren, Bell & Volinsky 2009; Hogwild!'s matrix completion).

    .. math::
        \hat r_{ui} = \langle p_u, q_i \rangle, \qquad
        \ell = \frac{1}{|B|}\sum_{(u,i) \in B} (\hat r_{ui} - r_{ui})^2
        \;[+\ \text{Hogwild! } \ell_2 \text{ on the touched } p_u, q_i]

    Tables ``"users"`` ``(num_users, rank)`` and ``"items"`` ``(num_items,
    rank)``, entries :math:`\mathcal N(0, 0.1^2)`; no dense parameters.
    ``rank`` defaults to the data set's generating rank, else 5.
    """

    name = "matrix_factorization"

    def __init__(self, meta: dict, *, rank: int | None = None, l2: float = 0.0, train: Split | None = None):
        check("num_users" in meta and "num_items" in meta, "dataset meta for model 'matrix_factorization'", meta,
              "needs 'num_users' and 'num_items': use a ratings data set such as 'matrix_completion'")
        rank = meta.get("rank", 5) if rank is None else rank
        check_int(rank, "rank")
        _check_l2(l2, train, RatingsSplit)
        self.num_users, self.num_items, self.rank = int(meta["num_users"]), int(meta["num_items"]), rank
        self.l2 = l2
        self.dense = {}
        self.tables = {"users": (self.num_users, rank), "items": (self.num_items, rank)}
        if l2:
            self.user_scale = torch.from_numpy(frequency_scale(train.user.numpy(), self.num_users, len(train)))
            self.item_scale = torch.from_numpy(frequency_scale(train.item.numpy(), self.num_items, len(train)))

    def init(self, seed: int) -> tuple[Tensors, Tensors]:
        gen = torch.Generator().manual_seed(seed)
        return {}, {"users": 0.1 * torch.randn(self.num_users, self.rank, generator=gen),
                    "items": 0.1 * torch.randn(self.num_items, self.rank, generator=gen)}

    def rows(self, batch: RatingsSplit) -> Tensors:
        return {"users": torch.unique(batch.user), "items": torch.unique(batch.item)}

    def loss(self, dense: Tensors, rows: Tensors, batch: RatingsSplit) -> torch.Tensor:
        users, items = rows["users"], rows["items"]
        touched_users, u = unique_rows(batch.user, users, "users")
        touched_items, i = unique_rows(batch.item, items, "items")
        prediction = (users[u] * items[i]).sum(1)
        loss = (prediction - batch.rating.to(prediction.dtype)).square().mean()
        if self.l2:
            loss = loss + hogwild_l2(self.l2, users, u, self.user_scale[touched_users], len(batch)) \
                + hogwild_l2(self.l2, items, i, self.item_scale[touched_items], len(batch))
        return loss

    @torch.no_grad()
    def evaluate(self, dense: Tensors, tables: Tensors, split: RatingsSplit) -> dict[str, float]:
        """``{"loss": mean squared error, "rmse": its square root}``."""
        prediction = (tables["users"][split.user] * tables["items"][split.item]).sum(1)
        mse = (prediction - split.rating).square().mean().item()
        return {"loss": mse, "rmse": math.sqrt(mse)}
