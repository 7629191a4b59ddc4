"""``asyncps compose CONFIG``: the docker-compose file of one experiment's cluster.

One service per parameter-server shard (``asyncps serve``) and per worker
(``asyncps work``), and the evaluator (``asyncps evaluate``): as many as the
config's ``[cluster]`` says. A generator, because docker-compose v1 (Debian's
``docker-compose``) cannot repeat a service from a count, and a replica of a
``--scale``d service cannot tell which shard or worker it is. The
repository's ``docker-compose.yml`` is this file for
``experiments/quickstart.toml`` (``tests/lab/test_compose.py`` keeps it so).

docker-compose reads the paths in a file relative to the file's own folder;
they are written so: the build context (the folder ``asyncps compose`` runs
in: the repository's top), the config, and the config's ``out_dir`` (relative
to that folder too, as ``asyncps run`` reads it), mounted at ``/runs``. A
plugin the config names from a package of that folder (``model.name =
"examples.nets:SmallConvNet"``) is mounted into the containers' working
directory, ``/work``, where asyncps imports it; a plugin installed elsewhere
must be installed in the image.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from asyncps.lab.config import Config, load_config
from asyncps.optim.plugins import IMPORT_PATH

__all__ = ["compose_file", "add_compose"]

PORT = 50051  # every shard's on the project's network; shard i's is PORT + i on the host's
DOCKERFILE = "deploy/Dockerfile"
WORKDIR = "/work"  # the image's working directory (deploy/Dockerfile): importable, as every working directory is
OWN = ("lab", "optim", "protocols", "protos", "ps", "workers")  # asyncps's packages, in the image already

HEADER = """\
# An asyncps cluster for {config}: {shards} parameter-server shard(s), {workers}
# asynchronous worker(s) and the evaluator, each a container running one
# `asyncps` program of one image (deploy/Dockerfile). Written by
# `asyncps compose {config}{flags}` from the config's [cluster]: write it again
# when that changes. The commands, from this folder (README.md, "Running a
# cluster with docker-compose"):
#
#   make compose-deps                                 # once: what the build starts from
#   docker-compose build
#   docker-compose up -d
#   docker wait "$(docker-compose ps -q evaluator)"   # prints 0 once the run directory is written
#   docker-compose logs evaluator                     # its progress and the final accuracy
#   docker-compose down                               # the shards serve on until then
#
# The workers and the evaluator start once every shard reports SERVING; the
# evaluator writes {runs}/${{ASYNCPS_RUN_NAME:-{name}}}/ and exits 0.
#
# A shard that crashes (its process exits non-zero: killed by a signal, out
# of memory) is restarted by Docker (restart: on-failure:3: at most 3 times,
# the container's RestartCount; [recovery] max_restarts is `asyncps run`'s
# and does not apply here) as the same container, on the same address, while
# the workers and the evaluator retry it (for 30 s). It resumes from the
# checkpoint it saves every [recovery] checkpoint_every applied updates (100
# unless the experiment says otherwise; 0 saves none, and a restarted shard
# starts over; with durability "log" or "fsync" it then replays its journal)
# in /tmp/asyncps-checkpoints of its container. Without a journal the updates
# applied since that checkpoint are lost, and counted: summary.json's
# shards.N.lost. The evaluator records the restart in metrics.jsonl and
# summary.json's events. A shard stopped on purpose (stop, down, docker kill)
# stays stopped. Workers and the evaluator are never restarted: a worker that
# dies is gone, as in `asyncps run`.
#
# Why the container's own filesystem for checkpoints: it outlives every
# restart of that container and goes with the container at `down`, so the
# next `up` starts over from the experiment's initial parameters (a volume
# would hand the next run an earlier one's parameters; a tmpfs is emptied at
# every restart). So a new run needs `down` first: `up` after `stop` resumes
# the stopped run.
#
# Settings, from the environment or an .env file beside this file:
#   ASYNCPS_RUN_NAME    the run directory under {runs} ({name})
#   ASYNCPS_TOKEN       shared secret between shards and clients (none)
#   ASYNCPS_USER        UID:GID the programs run as (0:0); with $(id -u):$(id -g)
#                       the run directory is yours (make {runs} first); any
#                       UID can write the shards' checkpoints under /tmp
#   ASYNCPS_IMAGE       the image built and run (asyncps:latest)
#   ASYNCPS_DEPS_IMAGE  the image the build starts from (asyncps-deps:latest,
#                       made by `make compose-deps`)
"""

TEMPLATES = """
x-asyncps: &asyncps
  image: ${{ASYNCPS_IMAGE:-asyncps:latest}}
  init: true              # tini as PID 1: signals reach asyncps, zombies are reaped
  user: ${{ASYNCPS_USER:-0:0}}
  restart: "no"
  volumes:
    - {config_path}:/config/experiment.toml:ro
    - {runs}:/runs{plugins}
  environment:
    ASYNCPS_TOKEN: ${{ASYNCPS_TOKEN:-}}
    # glibc keeps freed memory for reuse instead of page-faulting large
    # messages in afresh (as `asyncps run --backend grpc` does: lab/backends/grpc.py)
    MALLOC_MMAP_THRESHOLD_: "1073741824"
    MALLOC_TRIM_THRESHOLD_: "2147483648"{network}

x-shard: &shard
  <<: *asyncps
  restart: on-failure:3   # a crash (non-zero exit) only; the count is the container's (docker inspect .RestartCount)
  stop_grace_period: 15s

x-healthcheck: &healthcheck  # grpc only: no torch import every check
  interval: 3s
  timeout: 10s
  retries: 40

x-worker: &worker
  <<: *asyncps
  depends_on:
{depends_on}
services:
"""

BUILD = """\
    build:                # once, by this service: every other service runs the image it makes
      context: {context}
      dockerfile: {dockerfile}
      args:
        DEPS_IMAGE: ${{ASYNCPS_DEPS_IMAGE:-asyncps-deps:latest}}
"""


def relative(path: Path, start: Path) -> str:
    """``path`` as docker-compose reads it in a file in ``start``: ./-relative, ``$`` escaped."""
    text = os.path.relpath(path.resolve(), start.resolve())
    text = text if text.startswith("..") else f"./{text}" if text != "." else "."
    return text.replace("$", "$$")


def flow(items: list[str]) -> str:
    """A YAML flow sequence of strings (JSON's quoting is YAML's)."""
    return json.dumps(items)


def _strings(tree):
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, list):
        for value in tree:
            yield from _strings(value)
    elif isinstance(tree, str):
        yield tree


def plugin_sources(config: Config, root: Path) -> dict[str, Path]:
    """The top-level packages (or modules) under ``root`` that ``config`` names plugins from:
    ``{"examples": root / "examples"}`` for ``model.name = "examples.nets:SmallConvNet"``."""
    found = {}
    for value in _strings(asdict(config)):
        top = value.split(":")[0].split(".")[0]
        if not IMPORT_PATH.fullmatch(value) or top in OWN:
            continue
        spec = importlib.util.find_spec(top)  # loading the config has imported it
        if spec is None:
            continue
        where = Path(next(iter(spec.submodule_search_locations)) if spec.submodule_search_locations else spec.origin)
        if where.resolve().is_relative_to(root.resolve()):
            found[top] = where
    return found


def compose_file(config: Config, config_path: Path, folder: Path, root: Path, host_network: bool = False) -> str:
    """The compose file, to be written in ``folder``, of ``config`` (read from
    ``config_path``), built from the repository at ``root``: its
    ``out_dir`` is relative to ``root``. ``host_network``: every container on
    the host's network, shard i on 127.0.0.1:PORT+i."""
    shards, workers, name = config.cluster.shards, config.cluster.workers, config.name
    host = "127.0.0.1" if host_network else "0.0.0.0"
    ports = [PORT + i if host_network else PORT for i in range(shards)]
    addresses = ",".join(f"127.0.0.1:{ports[i]}" if host_network else f"shard{i}:{PORT}" for i in range(shards))
    run_name = f"${{ASYNCPS_RUN_NAME:-{name}}}"
    runs = relative(root / config.out_dir, folder)
    text = HEADER.format(config=os.path.relpath(config_path.resolve(), root.resolve()),
                         flags=" --host-network" if host_network else "", shards=shards, workers=workers,
                         name=name, runs=runs)
    plugins = "".join(f"\n    - {relative(where, folder)}:{WORKDIR}/{where.name}:ro   # the config's plugins: {top}"
                      for top, where in plugin_sources(config, root).items())
    text += TEMPLATES.format(
        config_path=relative(config_path, folder), runs=runs, plugins=plugins,
        network="\n  network_mode: host   # every container on the host's network: shard i on 127.0.0.1:"
                f"{PORT}+i" if host_network else "",
        depends_on="".join(f"    shard{i}:\n      condition: service_healthy\n" for i in range(shards)))
    for i in range(shards):
        text += f"  shard{i}:\n    <<: *shard\n"
        if i == 0:
            text += BUILD.format(context=relative(root, folder), dockerfile=DOCKERFILE)
        serve = ["asyncps", "serve", "/config/experiment.toml", "--shard", str(i), "--host", host,
                 "--port", str(ports[i]), "--checkpoints", "/tmp/asyncps-checkpoints", "--run-id", run_name]
        health = ["CMD", "python", "-m", "asyncps.lab.backends.health", f"127.0.0.1:{ports[i]}"]
        text += (f"    command: {flow(serve)}\n"
                 f"    healthcheck:\n      <<: *healthcheck\n      test: {flow(health)}\n\n")
    for w in range(workers):
        work = ["asyncps", "work", "/config/experiment.toml", "--worker", str(w), "--shards", addresses,
                "--run-dir", f"/runs/{run_name}"]
        text += f"  worker{w}:\n    <<: *worker\n    command: {flow(work)}\n\n"
    evaluate = ["asyncps", "evaluate", "/config/experiment.toml", "--shards", addresses, "--run-dir",
                f"/runs/{run_name}"]
    text += f"  evaluator:\n    <<: *worker\n    command: {flow(evaluate)}\n"
    return text


# -- asyncps compose -----------------------------------------------------------------
def add_compose(commands) -> None:
    command = commands.add_parser(
        "compose", help="write the docker-compose file of an experiment's cluster",
        description="Write a docker-compose file with one service per shard and per worker of CONFIG's "
                    "[cluster], and the evaluator. Run it at the repository's top: the image is built from "
                    "there, and the config's out_dir is read from there.",
        epilog="e.g. asyncps compose experiments/workers_sgd.toml -o workers_sgd.yml; "
               "then COMPOSE_FILE=workers_sgd.yml docker-compose up -d")
    command.add_argument("config", help="a TOML experiment config")
    command.add_argument("-o", "--out", type=Path, metavar="FILE",
                         help="write the file here (default: standard output; paths relative to this folder)")
    command.add_argument("--host-network", action="store_true",
                         help=f"every container on the host's network: shard i on 127.0.0.1:{PORT}+i")
    command.set_defaults(run=run_compose)


def run_compose(args: argparse.Namespace) -> int:
    root = Path.cwd()
    if not (root / DOCKERFILE).is_file():
        raise FileNotFoundError(f"no {DOCKERFILE} in {root}: run asyncps compose at the repository's top")
    config_path = Path(args.config)
    config = load_config(config_path)
    folder = args.out.parent if args.out else root
    if args.out and not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder} to write {args.out} in")
    text = compose_file(config, config_path, folder, root, args.host_network)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.write_text(text)
    print(f"{args.out}: {config.cluster.shards} shard(s), {config.cluster.workers} worker(s) and the evaluator of "
          f"{config_path}; the run directory is {relative(root / config.out_dir, folder)}/{config.name}",
          file=sys.stderr)
    return 0
