"""The three programs of a gRPC cluster: ``asyncps serve``, ``asyncps work``
and ``asyncps evaluate``. docker-compose runs exactly these; ``asyncps
run --backend grpc`` forks the work of the first two from its own process
(``lab.backends.grpc_processes``). Every process builds the same
``Experiment`` from the same config, so the initial parameters, the layout
and each worker's data shard agree without being shipped.

Ending a run: each worker tells every shard when it is done; a shard that
has heard from every worker closes. That ends the evaluator's wait, and it
writes the run directory. Early stopping closes the shards from the
evaluator, and the workers stop at their next call.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Callable

from asyncps.lab.backends.grpc import GrpcBackend
from asyncps.lab.backends.grpc_processes import serve_shard, token_from_env, work
from asyncps.lab.backends.health import unreachable
from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.lab.reports.compare import describe
from asyncps.lab.runner import Run, finish


def progress_lines(echo: Callable[[str], None] = partial(print, flush=True)) -> Callable[[str, dict], None]:
    """A ``Metrics`` listener that says each evaluation and event in a line
    of its own: a container's log is no terminal, for a progress bar."""
    start = time.monotonic()

    def tell(kind: str, fields: dict) -> None:
        if kind == "eval":
            scores = ", ".join(f"{k} {v:.4g}" for k, v in fields.items() if k.startswith("test_"))
            echo(f"evaluator: {time.monotonic() - start:.1f} s, {fields['updates']} updates: {scores}")
        elif kind == "event":
            echo(f"evaluator: {fields['message']}")

    return tell


def serve_main(config_path: str, shard: int, port: int, host: str = "127.0.0.1",
               tls: tuple[bytes, bytes] | None = None, checkpoints: str | None = None, run_id: str = "") -> int:
    """Serve one shard until SIGTERM or SIGINT (``lab.backends.grpc_processes.serve_shard``)."""
    return serve_shard(Experiment.build(load_config(config_path)), shard, port, host, token_from_env(), tls,
                       checkpoints, run_id)


def wait_for_shards(addresses: list[str], seconds: float, tls_ca: bytes | None = None) -> None:
    """Return once every shard is serving; refuse, naming those that are not, after ``seconds``."""
    missing = unreachable(addresses, seconds, tls_ca)
    if missing:
        raise ValueError(f"Invalid --shards: no shard serving at {', '.join(missing)} (tried for {seconds:g} s; "
                         f"start each with asyncps serve, or fix the address)")


def work_main(config_path: str, worker: int, addresses: list[str], run_dir: str,
              tls_ca: bytes | None = None, wait: float = 30.0) -> int:
    """Run one worker's loop to the end (``lab.backends.grpc_processes.work``),
    once every shard is serving (waiting up to ``wait`` seconds), saying in a
    line when it starts and when it is done."""
    experiment = Experiment.build(load_config(config_path))
    wait_for_shards(addresses, wait, tls_ca)
    print(f"worker {worker}: {experiment.steps} steps against {len(addresses)} shard(s)", flush=True)
    start = time.monotonic()
    code = work(experiment, worker, addresses, run_dir, token_from_env(), tls_ca)
    print(f"worker {worker}: done in {time.monotonic() - start:.1f} s", flush=True)
    return code


def evaluate_main(config_path: str, addresses: list[str], run_dir: str | None = None,
                  tls_ca: bytes | None = None) -> int:
    """The evaluator of a cluster whose workers run elsewhere: waits for the
    shards, evaluates until they close, writes the run directory."""
    config = load_config(config_path)
    experiment = Experiment.build(config)
    run_dir = Path(run_dir) if run_dir else config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)  # the workers write their records here too: it is not emptied
    (run_dir / "config.toml").write_text(Path(config_path).read_text())
    wait_for_shards(addresses, 120.0, tls_ca)
    print(f"evaluator: every shard serves; evaluating every {config.train.eval_every} updates", flush=True)
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        metrics.listeners.append(progress_lines())
        backend = GrpcBackend(experiment, metrics, addresses=addresses, tls_ca=tls_ca)
        dense, tables = Run(experiment, metrics, backend, progress=False).execute()
    finish(config, run_dir, metrics.start, dense, tables)
    print(f"final: {describe(run_dir)}", flush=True)
    print(f"run directory: {run_dir}/", flush=True)
    return 0
