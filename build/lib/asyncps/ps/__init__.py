"""The parameter server: layout, shards, server rules and the client interface."""

from asyncps.ps.client import Client, ClientWrapper, InProcessClient, Versions
from asyncps.ps.delays import Clock, DelayedClient, Delays, RealClock, TraceRecorder
from asyncps.ps.flat import Flat
from asyncps.ps.layout import Layout, Range
from asyncps.ps.publication import Applied, Publication, ShardClosed
from asyncps.ps.rules import ApplyEach, ServerRule
from asyncps.ps.shard import Push, Shard, make_shards

__all__ = ["Layout", "Range", "Flat", "Applied", "Publication", "Shard", "ShardClosed", "Push", "make_shards",
           "ServerRule", "ApplyEach", "Client", "ClientWrapper", "InProcessClient", "Versions", "Delays",
           "DelayedClient", "Clock", "RealClock", "TraceRecorder"]
