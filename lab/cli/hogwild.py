"""``asyncps hogwild CONFIG``: Hogwild! (``protocols.hogwild``) on one machine, from a TOML config.

Hogwild! is no parameter-server protocol: its workers are threads (or
processes) sharing one parameter array. So it has its own small config
rather than ``[cluster]``/``[protocol]``/``[server]``::

    name = "hogwild_sparse"      # the run directory is <out_dir>/<name>
    seed = 0                     # the data set, the initial parameters and every epoch's order
    out_dir = "runs"

    [data]                       # a sparse or ratings data set of workers.load_dataset
    dataset = "sparse_synthetic"
    options = { num_features = 1000000, nnz = 10 }

    [hogwild]                    # protocols.hogwild.train's settings, plus the model
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from lab.config import parse_value, read_toml
from optim.validation import is_number
from protocols import hogwild
from workers import DATASETS, Dataset, load_dataset

__all__ = ["HogwildConfig", "DataSettings", "HogwildSettings", "load_hogwild_config", "problem_from_dataset",
           "run_hogwild_config", "add_hogwild"]

MODELS = {"logistic": "sparse", "svm": "sparse", "matrix_factorization": "ratings"}  # model -> data kind


def _refuse(key: str, value, rule: str) -> None:
    raise ValueError(f"Invalid config value {key} = {value!r} ({rule})")


def _whole(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class DataSettings:
    dataset: str = "sparse_synthetic"  # sparse_synthetic | libsvm | matrix_completion
    options: dict = field(default_factory=dict)  # the data set's keyword options

    def __post_init__(self):
        if self.dataset not in DATASETS:
            _refuse("data.dataset", self.dataset, f"choose one of: {', '.join(sorted(DATASETS))}")
        if not isinstance(self.options, dict):
            _refuse("data.options", self.options, "must be a table, e.g. {num_features = 1000}")


@dataclass(frozen=True)
class HogwildSettings:
    model: str = "logistic"      # logistic | svm (hinge loss, the paper's) | matrix_factorization
    rank: int = 0                # matrix_factorization: the factors' rank; 0 = the data set's
    threads: int = 2             # workers sharing the parameters
    mode: str = "lockfree"       # lockfree (Hogwild!) | locked (a lock per coordinate, the paper's AIG)
    processes: bool = False      # workers as processes over shared memory instead of threads
    epochs: int = 20             # the paper's experiments: 20
    step_size: float = 0.1       # gamma of the first epoch
    beta: float = 0.9            # gamma *= beta after every epoch (the paper: 0.9)
    l2: float = 0.0              # lambda of (lambda/2)||x||^2, applied to touched coordinates only
    chunk: int = 256             # examples a worker claims at a time

    def __post_init__(self):
        checks = [
            ("model", self.model in MODELS, f"choose one of: {', '.join(MODELS)}"),
            ("rank", _whole(self.rank, 0), "must be an integer >= 0 (0: the data set's rank)"),
            ("threads", _whole(self.threads, 1), "must be a positive integer"),
            ("mode", self.mode in hogwild.MODES, f"choose one of: {', '.join(hogwild.MODES)}"),
            ("processes", isinstance(self.processes, bool), "must be true or false"),
            ("epochs", _whole(self.epochs, 1), "must be a positive integer"),
            ("step_size", is_number(self.step_size) and self.step_size > 0, "must be a positive number"),
            ("beta", is_number(self.beta) and 0 < self.beta <= 1, "must be a number in (0, 1]"),
            ("l2", is_number(self.l2) and self.l2 >= 0, "must be a number >= 0"),
            ("chunk", _whole(self.chunk, 1), "must be a positive integer"),
        ]
        for name, ok, rule in checks:
            if not ok:
                _refuse(f"hogwild.{name}", getattr(self, name), rule)


@dataclass(frozen=True)
class HogwildConfig:
    name: str = "hogwild"        # the run directory is <out_dir>/<name>
    seed: int = 0                # the data set, the initial parameters and the epochs' orders
    out_dir: str = "runs"
    data: DataSettings = field(default_factory=DataSettings)
    hogwild: HogwildSettings = field(default_factory=HogwildSettings)

    def __post_init__(self):
        if not (isinstance(self.name, str) and self.name.strip(".") and "/" not in self.name):
            _refuse("name", self.name, "must be a directory name: not empty, no '/'")
        if not _whole(self.seed, 0):
            _refuse("seed", self.seed, "must be an integer >= 0")
        if not (isinstance(self.out_dir, str) and self.out_dir):
            _refuse("out_dir", self.out_dir, "must be a non-empty path")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


SECTIONS = {"data": DataSettings, "hogwild": HogwildSettings}


def load_hogwild_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> HogwildConfig:
    """The config in ``path``, with ``section.key=value`` (or ``key=value``) overrides applied."""
    tree = read_toml(Path(path))
    for override in overrides:
        key, sep, text = override.partition("=")
        keys = [part.strip() for part in key.split(".")]
        nested_option = len(keys) == 3 and keys[1] == "options"  # data.options.num_features=1000
        if not sep or "" in keys or (len(keys) > 2 and not nested_option):
            raise ValueError(f"Invalid --set override: {override!r} (expected key=value, e.g. hogwild.threads=1)")
        node = tree
        for part in keys[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Invalid --set override: {override!r} ({part} is a value, not a table)")
        node[keys[-1]] = parse_value(text.strip())
    return _build(tree)


def _build(tree: dict) -> HogwildConfig:
    known = {f.name for f in fields(HogwildConfig)}
    for key, value in tree.items():
        if key not in known:
            raise ValueError(f"Invalid config key '{key}': unknown key "
                             f"(known top-level keys: {', '.join(sorted(known))})")
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"Invalid config value {key} = {value!r} (must be a table: [{key}])")
            allowed = {f.name for f in fields(SECTIONS[key])}
            for inner in value:
                if inner not in allowed:
                    raise ValueError(f"Invalid config key '{key}.{inner}': unknown key "
                                     f"(known keys in [{key}]: {', '.join(sorted(allowed))})")
    sections = {key: cls(**tree.get(key, {})) for key, cls in SECTIONS.items()}
    return HogwildConfig(**{k: v for k, v in tree.items() if k not in SECTIONS}, **sections)


def problem_from_dataset(dataset: Dataset, model: str = "logistic",
                         rank: int = 0) -> hogwild.SparseClassification | hogwild.MatrixCompletion:
    """A ``workers`` data set's train and test splits as a Hogwild! problem (the val split is unused)."""
    kind = MODELS.get(model)
    if kind is None:
        raise ValueError(f"Invalid model: {model!r} (choose one of {list(MODELS)})")
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
                                    dataset.meta["num_items"], rank or dataset.meta.get("rank", 5))


def run_hogwild_config(config: HogwildConfig, out=print) -> tuple[hogwild.Result, Path]:
    """Load the data, train, print an epoch table, write the run directory."""
    settings = config.hogwild
    try:
        dataset = load_dataset(config.data.dataset, seed=config.seed, **config.data.options)
    except ValueError as err:
        raise ValueError(f"[data] {err}") from None
    problem = problem_from_dataset(dataset, settings.model, settings.rank)
    out(f"{config.name}: {settings.model} on {dataset.name} ({len(problem.train):,} train examples), "
        f"threads={settings.threads}{' (processes)' if settings.processes else ''}, mode={settings.mode}")
    result = hogwild.train(problem, threads=settings.threads, mode=settings.mode, processes=settings.processes,
                           epochs=settings.epochs, step_size=settings.step_size, beta=settings.beta, l2=settings.l2,
                           seed=config.seed, chunk=settings.chunk)
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
    (run_dir / "config.toml").write_text(tomli_w.dumps(asdict(config)))
    record = {k: v for k, v in asdict(result).items() if k != "params"} | {"cpu_share": result.cpu_share}
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
