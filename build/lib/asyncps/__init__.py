"""asyncps: a parameter-server system for running and studying asynchronous SGD.

From Python (a notebook, a script)::

    import asyncps
    result = asyncps.run("experiments/quickstart.toml", backend="sim", overrides={"train.epochs": 2})
    result.summary["final"]["test_accuracy"]

``run`` and ``compare`` are ``asyncps.lab.api``'s. The packages, one folder
each in the repository: ``asyncps.optim`` (the optimizers), ``asyncps.ps``
(the parameter server), ``asyncps.protocols``, ``asyncps.workers``,
``asyncps.lab`` (configs, runs, reports, the CLI) and ``asyncps.protos``.
"""

from asyncps.lab.api import CompareResult, RunResult, compare, run

__all__ = ["run", "compare", "RunResult", "CompareResult"]
