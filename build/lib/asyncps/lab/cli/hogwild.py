"""``asyncps hogwild CONFIG``: Hogwild! (``protocols.hogwild``) on one machine, from a TOML config.

Hogwild! is no parameter-server protocol: its workers are threads (or
processes) sharing one parameter array. So its config is a
``lab.config.HogwildExperiment`` rather than a ``Config``: no
``[cluster]``/``[protocol]``/``[server]``, but::

    name = "hogwild_sparse"      # the run directory is <out_dir>/<name>
    seed = 0                     # the data set, the initial parameters and every epoch's order
    out_dir = "runs"

    [data]                       # a sparse or ratings data set of workers.load_dataset
    dataset = "sparse_synthetic"
    options = { num_features = 1000000, nnz = 10 }

    [hogwild]                    # protocols.hogwild.Settings, plus the model
    model = "logistic"           # logistic | svm (sparse data) | matrix_factorization (ratings)
    threads = 2
    mode = "lockfree"            # lockfree | locked
    ...

``--set hogwild.threads=1`` overrides one value. The run directory receives
the resolved ``config.toml`` and ``hogwild.json``: the result and one record
per epoch. Its parameters are not saved.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from asyncps.lab.config import HOGWILD_MODELS, HogwildExperiment, load_hogwild_config, to_toml
from asyncps.optim.validation import choose
from asyncps.protocols import hogwild
from asyncps.workers import Dataset, load_dataset

__all__ = ["problem_from_dataset", "run_hogwild_config", "add_hogwild"]


def problem_from_dataset(dataset: Dataset, model: str = "logistic",
                         rank: int = 0) -> hogwild.SparseClassification | hogwild.MatrixCompletion:
    """A ``workers`` data set's train and test splits as a Hogwild! problem (the val split is unused)."""
    kind = choose(HOGWILD_MODELS, model, "model name")
    if dataset.kind != kind:
        names = "sparse_synthetic or libsvm" if kind == "sparse" else "matrix_completion"
        raise ValueError(f"Invalid data set for model {model!r}: {dataset.name!r} is {dataset.kind} "
                         f"(use a {kind} data set: {names})")
    if kind == "sparse":
        def examples(split):
            return hogwild.SparseExamples(split.indices.numpy(), split.offsets.numpy(), split.values.numpy(),
                                          split.y.numpy())

        loss = "logistic" if model == "logistic" else "hinge"
        return hogwild.SparseClassification(examples(dataset.train), examples(dataset.test),
                                            dataset.meta["num_features"], loss)

    def ratings(split):
        return hogwild.Ratings(split.user.numpy(), split.item.numpy(), split.rating.numpy())

    return hogwild.MatrixCompletion(ratings(dataset.train), ratings(dataset.test), dataset.meta["num_users"],
                                    dataset.meta["num_items"], rank or dataset.meta["rank"])


def run_hogwild_config(config: HogwildExperiment, out=print) -> tuple[hogwild.Result, Path]:
    """Load the data, train, print an epoch table, write the run directory."""
    settings = config.hogwild
    try:
        dataset = load_dataset(config.data.dataset, seed=config.seed, **config.data.options)
    except ValueError as err:
        raise ValueError(f"[data] {err}") from None
    problem = problem_from_dataset(dataset, settings.model, settings.rank)
    out(f"{config.name}: {settings.model} on {dataset.name} ({len(problem.train):,} train examples), "
        f"threads={settings.threads}{' (processes)' if settings.processes else ''}, mode={settings.mode}")
    result = hogwild.train(problem, seed=config.seed,
                           **{f.name: getattr(settings, f.name) for f in fields(hogwild.Settings)})
    scores = [k for k in ("train_loss", "test_error", "train_rmse", "test_rmse") if k in result.final]
    out(f"{'epoch':>5}{'step':>10}{'examples/s':>13}{'collisions':>12}" + "".join(f"{k:>12}" for k in scores))
    for record in result.history:
        speed = record["updates"] / record["seconds"] if record["seconds"] > 0 else float("inf")
        out(f"{record['epoch']:5d}{record['step_size']:10.4g}{speed / 1e6:11.2f} M{record['collisions']:12d}"
            + "".join(f"{record[k]:12.4f}" for k in scores))
    final = ", ".join(f"{k.replace('_', ' ')} {result.final[k]:.4f}" for k in scores if k.startswith("test"))
    out(f"{config.name}: {result.examples_per_second / 1e6:.2f}M examples/s over {result.train_seconds:.2f} s, "
        f"the workers getting {result.cpu_share:.0%} of {settings.threads} CPU(s); {result.collisions:,} collisions "
        f"({result.collision_rate:.2e} of updates); {final}")

    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(config))
    record = {k: v for k, v in asdict(result).items() if k != "params"} | {
        ratio: getattr(result, ratio) for ratio in ("examples_per_second", "collision_rate", "cpu_share")}
    (run_dir / "hogwild.json").write_text(json.dumps(record, indent=2) + "\n")
    out(f"run directory: {run_dir}/")
    return result, run_dir


# -- the subcommand ---------------------------------------------------------------------
def add_hogwild(commands) -> None:
    command = commands.add_parser(
        "hogwild", help="Hogwild!: lock-free SGD by threads or processes sharing one parameter array",
        description="Train a sparse linear model or a matrix factorization with Hogwild! (Niu et al. 2011) on "
                    "this machine, report examples/s, collisions and scores per epoch, and write "
                    "<out_dir>/<name>/: config.toml and hogwild.json.",
        epilog="e.g. asyncps hogwild experiments/hogwild_sparse.toml --set hogwild.mode=locked")
    command.add_argument("config", help="a TOML Hogwild! config, e.g. experiments/hogwild_sparse.toml")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config value, e.g. --set hogwild.threads=1 (repeatable)")
    command.set_defaults(run=run_hogwild_command)


def run_hogwild_command(args: argparse.Namespace) -> int:
    run_hogwild_config(load_hogwild_config(args.config, args.overrides))
    return 0
