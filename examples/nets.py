"""A model of your own: a small convolutional network in torch, as a ``workers.Model``.

``model.name = "examples.nets:SmallConvNet"`` (examples/model.toml). The
parameters never live in the model: the parameter server holds them, and a
worker hands them in as a dict of named tensors. So the model says their
names and shapes (``dense``; ``tables`` for sparse embedding tables, none
here), makes their initial values (``init``), and computes the loss *from*
them (``loss``, differentiated by the worker) and the scores the evaluator
records (``evaluate``). An ``nn.Module`` of your own runs as a pure function
of them with ``torch.func.functional_call``.

The constructor takes the data set's ``meta`` (here ``input_shape`` and
``num_classes``), ``train`` (the training split, which this model does not
need) and, by keyword, the config's ``model.options``: ``channels`` here.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from asyncps.workers import Model


class SmallConvNet(Model):
    """conv 3x3 (C -> channels), ReLU, max-pool 2, then a linear layer to the classes."""

    name: ClassVar[str] = "small_convnet"

    def __init__(self, meta: dict, *, channels: int = 8, train=None):
        if len(meta.get("input_shape", ())) != 3 or "num_classes" not in meta:
            raise ValueError(f"Invalid data set for SmallConvNet: meta {meta} (it needs images: input_shape "
                             "(channels, height, width) and num_classes, e.g. data.dataset = 'digits')")
        if not (isinstance(channels, int) and channels >= 1):
            raise ValueError(f"Invalid channels: {channels!r} (must be an integer >= 1)")
        self.input_shape, self.num_classes, self.channels = tuple(meta["input_shape"]), meta["num_classes"], channels
        self.dense = {name: tuple(p.shape) for name, p in self.network("meta").named_parameters()}
        self.tables = {}

    def network(self, device: str) -> nn.Module:
        colors, height, width = self.input_shape
        return nn.Sequential(nn.Conv2d(colors, self.channels, 3, padding=1, device=device), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(self.channels * (height // 2) * (width // 2), self.num_classes, device=device))

    def init(self, seed: int):
        with torch.random.fork_rng(devices=[]):  # torch's default initialization, the same for the same seed
            torch.manual_seed(seed)
            net = self.network("cpu")
        return {name: p.detach() for name, p in net.named_parameters()}, {}

    def logits(self, dense: dict, x: torch.Tensor) -> torch.Tensor:
        # A parameterless skeleton per call: functional_call swaps the given tensors into the module while it
        # runs, and the local backend's worker threads share one model.
        return functional_call(self.network("meta"), dense, (x,))

    def loss(self, dense, rows, batch):
        return F.cross_entropy(self.logits(dense, batch.x), batch.y)

    @torch.no_grad()
    def evaluate(self, dense, tables, split):
        logits = self.logits(dense, split.x)
        return {"loss": F.cross_entropy(logits, split.y).item(),
                "accuracy": (logits.argmax(1) == split.y).double().mean().item()}
