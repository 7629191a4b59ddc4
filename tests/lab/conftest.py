"""A Ray shared by the tests of a module: starting one takes seconds, so a
module that runs on the ray backend starts it once (``ray_session``), and the
backend runs on the Ray it finds. Ray listens on 127.0.0.1 only."""

from __future__ import annotations

import logging
import os

import pytest

# Read when ray is imported: a Ray started here binds to 127.0.0.1, not the
# machine's network address (Ray's "no multi-node cluster" switch), and does
# not report usage statistics.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()
