"""Models by name: ``build_model(name, dataset_meta, **options) -> Model``.

==========================  ==========================================  =====================
name                        what                                        options
==========================  ==========================================  =====================
``softmax``                 softmax regression (dense)                  ``batch_norm``
``mlp``                     ReLU multilayer perceptron (dense)          ``hidden``, ``batch_norm``
``cnn``                     two conv blocks + linear, any image size    ``batch_norm``
``sparse_logreg``           logistic regression, sparse weight table    ``l2``
``matrix_factorization``    ``<p_u, q_i>`` over user and item tables    ``rank``, ``l2``
==========================  ==========================================  =====================

Every model also takes ``train=dataset.train``: the training split, which
batch-norm models recalibrate their statistics on in ``evaluate`` and
``l2 > 0`` counts row frequencies on. See :class:`workers.model_base.Model`
for the contract.
"""

from __future__ import annotations

from asyncps.optim.plugins import Interface, Registry
from asyncps.optim.validation import check, check_options, choose
from asyncps.workers.dense_models import CNN, MLP, Softmax
from asyncps.workers.model_base import Model
from asyncps.workers.sparse_models import MatrixFactorization, SparseLogReg
from asyncps.workers.splits import Split

__all__ = ["Model", "MODELS", "build_model"]

# A plugin model (``model.name = "mypkg.nets:TinyNet"``): see workers.model_base.Model.
MODEL = Interface("a workers.Model subclass", Model, defines=("name", "init", "loss", "evaluate"), takes=("train",),
                  call="cls(meta, *, train=None, **options)")
MODELS: dict[str, type[Model]] = Registry(MODEL, {cls.name: cls for cls in (Softmax, MLP, CNN, SparseLogReg,
                                                                            MatrixFactorization)})


def build_model(name: str, dataset_meta: dict, *, train: Split | None = None, **options) -> Model:
    """The model ``name`` for a data set with ``dataset_meta`` (``Dataset.meta``)."""
    cls = choose(MODELS, name, "model name")
    check(isinstance(dataset_meta, dict), "dataset_meta", type(dataset_meta).__name__,
          "pass the data set's meta dict (dataset.meta)")
    check_options(cls, options, f"model {name!r}", skip=("meta", "train"))
    model = cls(dataset_meta, train=train, **options)
    check(isinstance(getattr(model, "dense", None), dict) and isinstance(getattr(model, "tables", None), dict),
          "model name", name, "its __init__ must set self.dense = {name: shape} and self.tables = {name: (rows, "
          "dim)}, each maybe empty")
    return model
