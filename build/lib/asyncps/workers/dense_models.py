"""Dense classifiers for image-like data: softmax regression, an MLP and a small CNN.

Each is a ``torch.nn.Module`` used as a pure function of its parameters,
``torch.func.functional_call(net, dense, (x,))``: the tensors handed in --
views into the server's flat vector -- *are* the parameters, nothing is
copied into the module. The module itself is a parameterless skeleton on
the meta device, one per thread (see ``TorchClassifier.skeleton``).

Batch normalization (Ioffe & Szegedy, ICML 2015). Running statistics are
not parameters, so they are not on the parameter server. ``loss`` always
normalizes with the batch's own statistics (BN layers are built with
``track_running_stats=False``: no buffers, no train/eval mode, nothing a
Hogwild! thread could race on). ``evaluate`` recalibrates: it runs the
given parameters over up to ``CALIBRATION_EXAMPLES`` training examples in
one batch, takes those statistics as the running statistics (in a private
copy of the network), and evaluates in eval mode. The training examples
come from ``evaluate(..., calibration=split)`` or else from
``build_model(..., train=split)``.

Dropout (Srivastava et al., JMLR 2014; ``dropout = p``: on the inputs of
softmax, after each hidden layer of the MLP, before the CNN's linear layer)
zeroes each unit with probability p in ``loss`` and scales the
rest by 1/(1-p); ``evaluate`` runs without it. The masks come from torch's
global generator: ``WorkerRuntime`` seeds it per step while a model with
``stochastic`` set computes a gradient, so a run in virtual time draws the
same masks every time.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from asyncps.optim.validation import check, check_bool, is_int, is_number
from asyncps.workers.model_base import Model, Tensors
from asyncps.workers.splits import DenseSplit, Split

__all__ = ["TorchClassifier", "Softmax", "MLP", "CNN", "CALIBRATION_EXAMPLES"]

CALIBRATION_EXAMPLES = 1024
EVAL_CHUNK = 4096  # examples per forward pass in evaluate


class TorchClassifier(Model):
    """A classifier over ``x`` ``[n, *input_shape]``: mean cross-entropy loss, accuracy."""

    def __init__(self, meta: dict, *, batch_norm: bool = False, train: Split | None = None, dropout: float = 0.0):
        check("input_shape" in meta and "num_classes" in meta, f"dataset meta for model {self.name!r}", meta,
              "needs 'input_shape' and 'num_classes': use a dense data set such as 'digits'")
        check_bool(batch_norm, "batch_norm")
        check(is_number(dropout) and 0 <= dropout < 1, "dropout", dropout, "dropout must be a number in [0, 1)")
        self.dropout = float(dropout)
        check(train is None or isinstance(train, DenseSplit), "train", type(train).__name__,
              "train must be the dense training split (dataset.train)")
        self.input_shape = tuple(meta["input_shape"])
        self.num_classes = int(meta["num_classes"])
        self.batch_norm = batch_norm
        self.train_split = train
        self.local = threading.local()
        self.dense = {name: tuple(p.shape) for name, p in self.skeleton().named_parameters()}
        self.tables = {}

    def skeleton(self) -> nn.Module:
        """This thread's parameterless (meta-device) copy of the network. ``functional_call``
        swaps the given tensors into the module it runs for the duration of the call, so
        threads sharing one model (Hogwild!, the local backend) must not share a module."""
        net = getattr(self.local, "net", None)
        if net is None:
            with torch.device("meta"):
                net = self.local.net = self.network(track_running_stats=False)
        return net

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "local"}  # skeletons are rebuilt, not shipped

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, local=threading.local())

    def network(self, track_running_stats: bool) -> nn.Module:
        raise NotImplementedError

    def bn(self, kind: type, features: int, track_running_stats: bool) -> nn.Module:
        # momentum=None: after one calibration batch the running statistics are exactly that batch's
        return kind(features, momentum=None, track_running_stats=track_running_stats)

    def init(self, seed: int) -> tuple[Tensors, Tensors]:
        """torch's default initialization of each layer under ``torch.manual_seed(seed)``
        (the global generator is restored afterwards)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.network(track_running_stats=False)
        return {name: p.detach() for name, p in net.named_parameters()}, {}

    @property
    def stochastic(self) -> bool:
        """Whether ``loss`` draws random numbers (dropout masks)."""
        return self.dropout > 0

    def loss(self, dense: Tensors, rows: Tensors, batch: DenseSplit) -> torch.Tensor:
        check(not self.batch_norm or len(batch) >= 2, "batch for batch_norm", f"{len(batch)} example",
              "batch statistics need a batch_size >= 2")
        logits = functional_call(self.skeleton().train(), dense, (batch.x,), strict=True)
        return F.cross_entropy(logits, batch.y)

    @torch.no_grad()
    def evaluate(self, dense: Tensors, tables: Tensors, split: DenseSplit, *,
                 calibration: DenseSplit | None = None) -> dict[str, float]:
        """``{"loss", "accuracy"}`` on ``split``; BN models first recalibrate on ``calibration``
        (default: the ``train`` split given to ``build_model``)."""
        if not len(split):
            return {"loss": float("nan"), "accuracy": float("nan")}
        net, inputs = self.skeleton().eval(), dict(dense)
        if self.batch_norm:
            net = self.calibrated(dense, calibration if calibration is not None else self.train_split)
            inputs.update(net.named_buffers())
        logits = torch.cat([functional_call(net, inputs, (split.x[i:i + EVAL_CHUNK],), strict=True)
                            for i in range(0, len(split), EVAL_CHUNK)])
        return {"loss": F.cross_entropy(logits, split.y).item(),
                "accuracy": (logits.argmax(1) == split.y).double().mean().item()}

    def calibrated(self, dense: Tensors, calibration: DenseSplit | None) -> nn.Module:
        """A private eval-mode copy of the network whose BN running statistics are those of
        ``dense`` applied to the first ``CALIBRATION_EXAMPLES`` of ``calibration``."""
        check(calibration is not None and len(calibration) >= 2, "calibration",
              None if calibration is None else f"{len(calibration)} examples",
              "a batch_norm model recomputes BN statistics from training data: pass "
              "build_model(..., train=dataset.train) or evaluate(..., calibration=dataset.train)")
        with torch.device("meta"):
            net = self.network(track_running_stats=True)
        net = net.to_empty(device="cpu")
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
        net.train()
        batch = calibration.x[:CALIBRATION_EXAMPLES]
        functional_call(net, {**dense, **dict(net.named_buffers())}, (batch,), strict=True)
        return net.eval()


class Softmax(TorchClassifier):
    """Softmax (multinomial logistic) regression: ``logits = W vec(x) + b``; with batch_norm, BN on the inputs."""

    name = "softmax"

    def network(self, track_running_stats: bool) -> nn.Module:
        features = math.prod(self.input_shape)
        layers = [("flatten", nn.Flatten())]
        if self.dropout:  # on the inputs: the only units a linear model has
            layers.append(("dropout", nn.Dropout(self.dropout)))
        if self.batch_norm:
            layers.append(("bn", self.bn(nn.BatchNorm1d, features, track_running_stats)))
        layers.append(("linear", nn.Linear(features, self.num_classes)))
        return nn.Sequential(OrderedDict(layers))


class MLP(TorchClassifier):
    """Fully connected ReLU network: ``hidden`` widths, then a linear layer to the classes;
    with batch_norm, ``Linear -> BN -> ReLU`` in each hidden layer."""

    name = "mlp"

    def __init__(self, meta: dict, *, hidden: list[int] | tuple[int, ...] = (128,), batch_norm: bool = False,
                 train: Split | None = None, dropout: float = 0.0):
        check(isinstance(hidden, (list, tuple)) and len(hidden) > 0 and all(is_int(h) for h in hidden),
              "hidden", hidden, "hidden must be a non-empty list of layer widths, integers >= 1, e.g. [64]")
        self.hidden = tuple(hidden)
        super().__init__(meta, batch_norm=batch_norm, train=train, dropout=dropout)

    def network(self, track_running_stats: bool) -> nn.Module:
        width = math.prod(self.input_shape)
        layers = [("flatten", nn.Flatten())]
        for i, h in enumerate(self.hidden, start=1):
            layers.append((f"fc{i}", nn.Linear(width, h, bias=not self.batch_norm)))
            if self.batch_norm:
                layers.append((f"bn{i}", self.bn(nn.BatchNorm1d, h, track_running_stats)))
            layers.append((f"relu{i}", nn.ReLU()))
            if self.dropout:
                layers.append((f"dropout{i}", nn.Dropout(self.dropout)))
            width = h
        layers.append(("out", nn.Linear(width, self.num_classes)))
        return nn.Sequential(OrderedDict(layers))


class CNN(TorchClassifier):
    """Two conv blocks and a linear layer, for any image of at least 4x4:
    ``conv 3x3 (C->16) [BN] ReLU maxpool2 -> conv 3x3 (16->32) [BN] ReLU maxpool2
    -> linear (32*H/4*W/4 -> classes)`` (H/4 rounded down). The convolutions
    are the same for every size; the linear layer takes 32x2x2 features for
    the 8x8 digits, 32x7x7 for MNIST's 28x28, 32x8x8 for CIFAR-10's 3x32x32."""

    name = "cnn"

    def __init__(self, meta: dict, *, batch_norm: bool = False, train: Split | None = None, dropout: float = 0.0):
        shape = tuple(meta.get("input_shape", ()))
        check("input_shape" not in meta or (len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4),
              "input_shape for model 'cnn'", shape, "the CNN needs images (channels, height, width) of at least 4x4")
        super().__init__(meta, batch_norm=batch_norm, train=train, dropout=dropout)

    def network(self, track_running_stats: bool) -> nn.Module:
        channels, height, width = self.input_shape
        layers = []
        for i, (c_in, c_out) in enumerate(((channels, 16), (16, 32)), start=1):
            layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not self.batch_norm)))
            if self.batch_norm:
                layers.append((f"bn{i}", self.bn(nn.BatchNorm2d, c_out, track_running_stats)))
            layers += [(f"relu{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2))]
        layers.append(("flatten", nn.Flatten()))
        if self.dropout:
            layers.append(("dropout", nn.Dropout(self.dropout)))
        layers.append(("fc", nn.Linear(32 * (height // 4) * (width // 4), self.num_classes)))
        return nn.Sequential(OrderedDict(layers))
