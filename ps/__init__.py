"""The parameter server: layout, shards, server rules and the client interface."""

from ps.client import Client, ClientWrapper, InProcessClient, Pulled
from ps.delays import DelayedClient, Delays, TraceRecorder
from ps.layout import Layout, Range
from ps.rules import ApplyEach, ServerRule, rule_tensors
from ps.shard import Push, Shard, ShardClosed, make_shards

__all__ = ["Layout", "Range", "Shard", "ShardClosed", "Push", "make_shards", "ServerRule", "ApplyEach", "rule_tensors",
           "Client", "ClientWrapper", "InProcessClient",
           "Pulled", "Delays", "DelayedClient", "TraceRecorder"]
