"""asyncps's worker runtime: data sets, models, data shards and gradients.

``load_dataset(name)`` gives train/val/test :class:`Split` s;
``build_model(name, dataset.meta)`` a :class:`Model` that names its
parameters for the server and computes a loss from them; a
:class:`DataShard` yields one worker's batches; ``loss_and_grad`` turns
pulled values into the gradients to push.
"""

from asyncps.workers.data_shards import CURRICULA, DataShard, difficulty, shard_indices
from asyncps.workers.datasets import DATASETS, Dataset, load_dataset, split_examples
from asyncps.workers.gradient import loss_and_grad
from asyncps.workers.libsvm import read_libsvm
from asyncps.workers.model_base import Model
from asyncps.workers.models import MODELS, build_model
from asyncps.workers.splits import DenseSplit, RatingsSplit, SparseSplit, Split

__all__ = ["DATASETS", "Dataset", "load_dataset", "split_examples", "read_libsvm", "Split", "DenseSplit", "SparseSplit",
           "RatingsSplit", "MODELS", "Model", "build_model", "DataShard", "shard_indices", "difficulty", "CURRICULA",
           "loss_and_grad"]
