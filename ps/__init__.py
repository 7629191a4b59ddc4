"""The parameter server: layout, shards, server rules and the client interface."""

from ps.client import Client, ClientWrapper, InProcessClient, Versions
from ps.delays import Clock, DelayedClient, Delays, RealClock, TraceRecorder
from ps.flat import Flat
from ps.layout import Layout, Range
from ps.publication import Applied, Publication, ShardClosed
from ps.rules import ApplyEach, ServerRule
from ps.shard import Push, Shard, make_shards

__all__ = ["Layout", "Range", "Flat", "Applied", "Publication", "Shard", "ShardClosed", "Push", "make_shards",
           "ServerRule", "ApplyEach", "Client", "ClientWrapper", "InProcessClient", "Versions", "Delays",
           "DelayedClient", "Clock", "RealClock", "TraceRecorder"]
