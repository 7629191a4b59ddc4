"""A delay model of your own: stragglers that are slow now and then.

``delays.compute = {kind = "examples.delays:Hiccups", usual = 0.001, slow = 0.01, p = 0.1}``
(examples/protocol.toml). A delay kind is a frozen dataclass of its
parameters (each a number >= 0 unless its ``build`` checks otherwise) with
a ``kind`` and ``sample(rng, n)``: ``n`` durations in seconds drawn from
``rng``, a numpy Generator seeded per (seed, worker, event), so a run draws
the same durations on every backend, as sleeps (local, ray, grpc) or in
virtual time (sim).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from asyncps.ps.delay_models import DelayModel


@dataclass(frozen=True)
class Hiccups(DelayModel):
    """``usual`` seconds, but ``slow`` seconds with probability ``p``."""

    kind: ClassVar[str] = "hiccups"
    usual: float
    slow: float
    p: float

    @classmethod
    def build(cls, where, event, num_workers, **params):  # what DelayModel.build does not check itself
        model = super().build(where, event, num_workers, **params)
        if model.p > 1:
            raise ValueError(f"Invalid {where}.p: {model.p!r} (must be a probability, in [0, 1])")
        return model

    def sample(self, rng, n):
        return [self.slow if hiccup else self.usual for hiccup in (rng.random(n) < self.p).tolist()]
