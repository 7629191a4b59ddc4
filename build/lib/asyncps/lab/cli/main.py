"""The ``asyncps`` command line.

Each subcommand is one ``add_<name>(commands)`` function that declares its
options and sets ``run`` to the function that does the work and returns the
exit code; :func:`build_parser` lists them. Usage errors (an unknown name, a
non-positive count) are argparse errors: a message naming what is allowed,
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from asyncps.lab.cli import cluster
from asyncps.lab.reports.compare import compare, default_out, describe, parse_sweep, plan
from asyncps.lab.config import BACKENDS, load_config
from asyncps.lab.backends.health import health_main
from asyncps.lab.cli.hogwild import add_hogwild
from asyncps.lab.cli.compose import add_compose
from asyncps.lab.cli.data import add_data
from asyncps.lab.cli.info import add_config, add_version
from asyncps.lab.runner import INTERRUPTED, run
from asyncps.lab.visualize.surfaces import DEFAULT_STEPS, RECIPES, SURFACES


def number_type(parse: Callable[[str], float], allowed: Callable[[float], bool], expected: str):
    """An argparse type: ``parse(text)`` when ``allowed`` says yes, else an
    error saying ``expected`` and what was given."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return convert


positive_int = number_type(int, lambda n: n >= 1, "a whole number >= 1")
port_number = number_type(int, lambda n: 0 <= n <= 65535, "a port number from 0 to 65535")  # 0: any free port
positive_seconds = number_type(float, lambda s: 0 < s < float("inf"), "a number of seconds > 0")


def optimizer_names(text: str) -> list[str]:
    """An argparse type: comma-separated optimizer names, each a key of ``RECIPES``."""
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in RECIPES]
    allowed = f"choose from {', '.join(RECIPES)}"
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated optimizer names, got {text!r}; {allowed}")
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown optimizer {', '.join(map(repr, unknown))}; {allowed}")
    return names


# -- asyncps visualize -----------------------------------------------------------
def add_visualize(commands) -> None:
    command = commands.add_parser(
        "visualize", help="optimizer trajectories on 2-D test surfaces",
        description="Every optimizer's path on Beale's function and the saddle x^2 - y^2, the surfaces of "
                    "Ruder's Images 5 and 6: a PNG and an animated GIF per surface, trajectories.json, and a "
                    "summary. The learning rates are ours (trajectories.json records them; the README says why) "
                    "and the outcome depends on them. With them, in the default 300 steps: on the saddle, as in "
                    "Image 6, SGD does not escape and Momentum and NAG escape after every adaptive method; on "
                    "Beale, unlike Image 5, Momentum and NAG reach the minimum first and Adagrad, Adadelta and "
                    "RMSprop do not reach it.")
    command.add_argument("--out", type=Path, default=Path("runs/visualize"),
                         help="output directory (default: %(default)s)")
    command.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                         help="steps per optimizer (default: %(default)s)")
    command.add_argument("--surface", choices=[*SURFACES, "all"], default="all",
                         help="which surface to draw (default: %(default)s)")
    command.add_argument("--optimizers", type=optimizer_names, default=list(RECIPES), metavar="A,B,...",
                         help=f"comma-separated, from {', '.join(RECIPES)} (default: all)")
    command.add_argument("--no-gif", dest="gif", action="store_false", help="skip the animated GIFs")
    command.set_defaults(run=run_visualize)


def run_visualize(args: argparse.Namespace) -> int:
    surfaces = list(SURFACES) if args.surface == "all" else [args.surface]
    from asyncps.lab.visualize.trajectories import visualize  # matplotlib: imported by the commands that draw

    print(visualize(args.out, args.steps, surfaces, args.optimizers, args.gif))
    print(f"\npictures and trajectories.json in {args.out}/")
    return 0


def add_run(commands) -> None:
    command = commands.add_parser(
        "run", help="run one experiment", description="Run one experiment and write runs/<name>/: "
        "config.toml, metrics.jsonl, summary.json and plots. With no CONFIG, the quickstart: Downpour, "
        "4 workers, 2 shards, Adagrad on the shards, an MLP on the handwritten digits.")
    command.add_argument("config", nargs="?", help="a TOML experiment config (default: the quickstart)")
    command.add_argument("--backend", choices=BACKENDS, help="where shards and workers run")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set cluster.workers=8 (repeatable)")
    command.add_argument("--ray-address", metavar="HOST:PORT",
                         help="with --backend ray: join the Ray cluster there (e.g. one `ray start --head` started) "
                              "instead of starting a local Ray")
    command.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    command.add_argument("--tensorboard", action="store_true",
                         help="write TensorBoard scalars (losses, accuracies, staleness) into RUN_DIR/tensorboard/ "
                              "as the run goes (needs: pip install tensorboard)")
    command.set_defaults(run=run_experiment)


def run_experiment(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
    if args.ray_address is not None:
        overrides.append(f"ray.address={json.dumps(args.ray_address)}")
    config = load_config(args.config, overrides)
    if args.ray_address is not None and config.backend != "ray":
        raise ValueError(f"Invalid --ray-address: it is for the ray backend, and this run's backend is "
                         f"{config.backend!r} (add --backend ray)")
    run_dir = run(config, progress=args.progress, tensorboard=args.tensorboard)
    print(describe(run_dir))
    print(f"run directory: {run_dir}/")
    return 0


# -- asyncps report / asyncps compare -----------------------------------------------
def add_report(commands) -> None:
    command = commands.add_parser(
        "report", help="plots and an HTML report from run directories",
        description="Remake each run's plots, add its worker-progress and per-worker/per-shard staleness "
                    "plots, and write report.html: settings, a table with one row per run, and (for several "
                    "runs) overlays of the runs side by side.")
    command.add_argument("runs", nargs="+", metavar="RUN", help="a run directory that asyncps run wrote")
    command.add_argument("--out", type=Path, metavar="DIR",
                         help="where report.html goes (default: the run directory for one run, runs/report "
                              "for several)")
    command.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from asyncps.lab.reports.report import report

    print(f"report: {report(args.runs, args.out)}")
    return 0


def add_compare(commands) -> None:
    command = commands.add_parser(
        "compare", help="run several configs, on one seed or several, and report them side by side",
        description="Run each CONFIG (or, with --sweep, one run per value of a key on the base CONFIG, or on "
                    "the defaults when none is given; several --sweep flags make the cross product), each in "
                    "its own directory under --out, and write one report.html comparing them. A run that fails "
                    "does not stop the others: the report marks it with its error, and the exit code is 1.",
        epilog="e.g. asyncps compare --sweep protocol.name=downpour,sync --set train.epochs=5 --seeds 3")

    def sweep(text: str) -> tuple[str, list[str]]:
        try:
            return parse_sweep(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    command.add_argument("configs", nargs="*", metavar="CONFIG", help="a TOML experiment config")
    command.add_argument("--sweep", dest="sweeps", action="append", default=[], type=sweep,
                         metavar="KEY=V1,V2,...", help="one run per value of KEY (repeatable: the cross product); KEY1+KEY2=... "
                              "sets both keys to each value")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value in every run (repeatable)")
    command.add_argument("--backend", choices=BACKENDS, help="where shards and workers run, for every run")
    command.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                         help="run each configuration on N seeds: its config's seed S, S+1, ..., S+N-1; the report "
                              "gives each configuration's mean ± standard deviation over them (default: 1)")
    command.add_argument("--out", type=Path, metavar="DIR",
                         help="the comparison's directory (default: runs/compare-<YYYYmmdd-HHMMSS>)")
    command.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    command.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    out = args.out or default_out()
    configs = plan(args.configs, args.sweeps, args.overrides, args.backend, out, args.seeds)
    first_seeds = {config.seed for config in configs[::args.seeds]}  # each configuration's first run's
    if len(first_seeds) > 1 and "seed" not in dict(args.sweeps):
        print("asyncps compare: note: the configs set different seeds, so data order, initial parameters "
              "and delays differ too; --set seed=N gives them one", file=sys.stderr)
    report_file, failures = compare(configs, out, progress=args.progress)
    print(f"report: {report_file}")
    if failures:
        print(f"asyncps compare: error: {len(failures)} of {len(configs)} runs failed; the report marks them:",
              *(f"  {failure}" for failure in failures), sep="\n", file=sys.stderr)
        return 1
    return 0


# -- the cluster programs (what docker-compose runs) -------------------------------
def read_file(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def addresses(text: str) -> list[str]:
    """An argparse type: comma-separated HOST:PORT shard addresses, in shard order."""
    found = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in found if a.rpartition(":")[2].isdigit() is False]
    if not found or bad:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...] in shard order, got {text!r}")
    return found


def add_serve(commands) -> None:
    command = commands.add_parser("serve", help="serve one parameter-server shard over gRPC",
                                  description="Serve shard S of the experiment CONFIG until SIGTERM. "
                                  "A shared token is read from ASYNCPS_TOKEN.")
    command.add_argument("config")
    command.add_argument("--shard", type=int, required=True)
    command.add_argument("--port", type=port_number, default=50051,
                         help="port to listen on, 0 to 65535 (0: any free one) (default: %(default)s)")
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    command.add_argument("--tls-cert", help="PEM certificate; with --tls-key, serve TLS only")
    command.add_argument("--tls-key", help="PEM private key")
    command.add_argument("--checkpoints", metavar="DIR",
                         help="keep checkpoints (and the journal, per the config's [recovery]) in DIR, and resume "
                              "from them when restarted: give a restarted shard the same DIR and --run-id")
    command.add_argument("--run-id", default="",
                         help="the run the checkpoints belong to: a shard resumes only from its own run's")
    command.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):  # one alone would serve plaintext where TLS was meant
        raise ValueError("Invalid TLS settings: --tls-cert and --tls-key go together (give both to serve TLS, "
                         "or neither for plaintext)")
    tls = (read_file(args.tls_key), read_file(args.tls_cert)) if args.tls_cert else None
    return cluster.serve_main(args.config, args.shard, args.port, args.host, tls, args.checkpoints, args.run_id)


def add_work(commands) -> None:
    command = commands.add_parser("work", help="run one worker process against gRPC shards")
    command.add_argument("config")
    command.add_argument("--worker", type=int, required=True)
    command.add_argument("--shards", type=addresses, required=True, metavar="HOST:PORT,...")
    command.add_argument("--run-dir", required=True, help="where the worker records its metrics")
    command.add_argument("--tls-ca", help="PEM certificate authority of the shards' TLS certificates")
    command.add_argument("--wait", type=positive_seconds, default=30.0, metavar="SECONDS",
                         help="how long to wait for every shard to serve before giving up (default: %(default)g)")
    command.set_defaults(run=lambda a: cluster.work_main(a.config, a.worker, a.shards, a.run_dir,
                                                         read_file(a.tls_ca), a.wait))


def add_evaluate(commands) -> None:
    command = commands.add_parser("evaluate", help="evaluate a gRPC cluster's run and write its run directory")
    command.add_argument("config")
    command.add_argument("--shards", type=addresses, required=True, metavar="HOST:PORT,...")
    command.add_argument("--run-dir", help="default: <out_dir>/<name> from the config")
    command.add_argument("--tls-ca", help="PEM certificate authority of the shards' TLS certificates")
    command.set_defaults(run=lambda a: cluster.evaluate_main(a.config, a.shards, a.run_dir, read_file(a.tls_ca)))


def add_health(commands) -> None:
    command = commands.add_parser("health", help="exit 0 if the shard at HOST:PORT is serving")
    command.add_argument("address")
    command.add_argument("--tls-ca", help="PEM certificate authority of the shard's TLS certificate")
    command.set_defaults(run=lambda a: health_main(a.address, tls_ca=read_file(a.tls_ca)))


# -- the parser ------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncps", description="Run and study asynchronous SGD on a parameter server.")
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_run, add_compare, add_report, add_serve, add_work, add_evaluate, add_health,
                add_visualize, add_hogwild, add_compose, add_data):
        add(commands)
    add_config(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the subcommand,
    return its exit code. Input the user can fix (a config value, a missing
    file) is a one-line error and exit code 2, for every subcommand alike."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"asyncps {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the command has stopped what it started; a run directory says so too
        print(f"\nasyncps {args.command}: {INTERRUPTED}", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it


def entry() -> None:
    """The ``asyncps`` program: ``main()``, then exit at once. Everything a
    command writes is closed by then; what is left is the interpreter's
    teardown of torch, numba and gRPC, which takes about a second here. Its
    exit code is main's; an exception still ends the program as usual."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
