"""Protocols: one file per algorithm, each its server rule and its worker loop."""

from asyncps.optim.plugins import Interface, Registry
from asyncps.optim.validation import check_options, choose
from asyncps.protocols.base import Gradient, Protocol, WorkerContext
from asyncps.protocols.dcasgd import DCASGD
from asyncps.protocols.downpour import Downpour
from asyncps.protocols.dtadagrad import AdaptiveRevision
from asyncps.protocols.easgd import EAMSGD, EASGD
from asyncps.protocols.ssp import SSP
from asyncps.protocols.sync import Sync

# A plugin protocol (``protocol.name = "mypkg.protocols:Mine"``): see protocols.base.Protocol.
PROTOCOL = Interface("a protocols.Protocol subclass", Protocol, defines=("name", "server_rule", "work"))
PROTOCOLS: dict[str, type[Protocol]] = Registry(PROTOCOL, {cls.name: cls for cls in (Downpour, Sync, EASGD, EAMSGD,
                                                                                   SSP, AdaptiveRevision, DCASGD)})


def create(name: str, **options) -> Protocol:
    """A protocol by name with its hyperparameters, e.g. ``create("downpour", n_push=4)``."""
    cls = choose(PROTOCOLS, name, "protocol name")
    check_options(cls, options, f"protocol {name!r}")
    return cls(**options)


__all__ = ["PROTOCOLS", "create", "Protocol", "WorkerContext", "Gradient", "Downpour", "Sync", "EASGD", "EAMSGD",
           "SSP", "AdaptiveRevision", "DCASGD"]
