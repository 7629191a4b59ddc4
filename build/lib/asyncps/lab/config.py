"""An experiment's configuration: a TOML file -> frozen dataclasses.

``load_config(path, overrides)`` reads the file (or starts from the defaults),
applies ``--set key=value`` overrides, and returns a validated :class:`Config`;
``to_toml(config)`` writes it back, fully resolved, as each run's
``config.toml``. Every refusal is a ``ValueError`` naming the dotted key and
what is allowed. The contents of the ``options`` tables are checked later, by
the factory that takes them (dataset, model, protocol, optimizer). The
``[delays]`` tables are checked at load, against the run's workers.
``load_hogwild_config`` reads the config of ``asyncps hogwild`` (a
:class:`HogwildExperiment`: Hogwild! on one machine, no parameter server)
the same way.

``lab.config_file`` reads the file and layers the overrides on it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import tomli_w

from asyncps.lab.config_checks import boolean, integer, number, one_of, require, string, table
from asyncps.lab.config_file import load
from asyncps.optim import OPTIMIZERS
from asyncps.optim.validation import is_int, is_number
from asyncps.protocols import PROTOCOLS, hogwild
from asyncps.ps.delays import Delays
from asyncps.ps.journal import DURABILITIES
from asyncps.ps.recovery import RecoveryPlan
from asyncps.workers import CURRICULA, DATASETS, MODELS

__all__ = ["Config", "DataConfig", "ModelConfig", "ClusterConfig", "ProtocolConfig", "ServerConfig", "TrainConfig",
           "DelaysConfig", "RayConfig", "load_config", "to_toml", "BACKENDS",
           "HogwildExperiment", "HogwildDataConfig", "HogwildConfig", "load_hogwild_config", "HOGWILD_MODELS"]

BACKENDS = ("local", "sim", "ray", "grpc")


# -- the sections ----------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """[data]: the data set, and how each worker batches its shard of it."""

    section: ClassVar[str] = "data"
    dataset: str = "digits"      # digits | mnist | fashion_mnist | cifar10 (their files: options.path) |
                                 # sparse_synthetic | matrix_completion | libsvm | a plugin, mypkg.data:load
    batch_size: int | str = 32   # examples per gradient: an integer >= 1, or "full" (the worker's whole shard)
    curriculum: str = "none"     # order within an epoch: none | easy_to_hard | mixed
    options: dict = field(default_factory=dict)  # the data set's keyword options, e.g. {path = "a9a.txt"}
    batch_schedule: dict = field(default_factory=dict)  # grow the batch by factor at each of epochs (Smith et al.
                                                        # 2018), e.g. {factor = 2, epochs = [10, 20]}; {} = fixed

    def __post_init__(self):
        one_of(self, "dataset", DATASETS)
        require(self, "batch_size", self.batch_size == "full" or is_int(self.batch_size),
                 "must be an integer >= 1 or 'full'")
        one_of(self, "curriculum", CURRICULA)
        table(self, "options", "{num_features = 1000}")
        table(self, "batch_schedule", "{factor = 2, epochs = [10, 20]}")
        schedule = self.batch_schedule
        if schedule:
            require(self, "batch_schedule", set(schedule) == {"factor", "epochs"},
                     "needs exactly the keys factor and epochs, e.g. {factor = 2, epochs = [10, 20]}")
            require(self, "batch_schedule", is_number(schedule["factor"]) and schedule["factor"] >= 1,
                     "its factor must be a number >= 1")
            epochs = schedule["epochs"]
            require(self, "batch_schedule", isinstance(epochs, list) and all(is_int(e) for e in epochs)
                     and epochs == sorted(set(epochs)), "its epochs must be a list of increasing integers >= 1")
            require(self, "batch_schedule", self.batch_size != "full", "cannot grow a batch_size of 'full'")

    @property
    def growth(self) -> tuple[float, tuple[int, ...]]:
        """``batch_schedule`` as ``DataShard`` takes it: (factor, epochs)."""
        if not self.batch_schedule:
            return 1.0, ()
        return float(self.batch_schedule["factor"]), tuple(self.batch_schedule["epochs"])


@dataclass(frozen=True)
class ModelConfig:
    """[model]: what the workers train."""

    section: ClassVar[str] = "model"
    name: str = "mlp"            # softmax | mlp | cnn | sparse_logreg | matrix_factorization | a plugin, mypkg.nets:Net
    options: dict = field(default_factory=dict)  # the model's keyword options, e.g. {hidden = [64]}

    def __post_init__(self):
        one_of(self, "name", MODELS)
        table(self, "options", "{hidden = [64], batch_norm = false}")


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: how many workers compute gradients, how many shards hold parameters."""

    section: ClassVar[str] = "cluster"
    workers: int = 4             # workers computing gradients: an integer >= 1
    shards: int = 2              # server shards the parameters are split over: an integer >= 1, at most one
                                 # per 100 of the model's parameters (checked by lab.experiment)

    def __post_init__(self):
        integer(self, "workers")
        integer(self, "shards")


@dataclass(frozen=True)
class ProtocolConfig:
    """[protocol]: the algorithm (server rule and worker loop), by its registered name or import path."""

    section: ClassVar[str] = "protocol"
    name: str = "downpour"       # dcasgd | downpour | dtadagrad | eamsgd | easgd | ssp | sync | a plugin, mypkg.m:Name
    options: dict = field(default_factory=dict)  # its hyperparameters, e.g. {n_fetch = 1, n_push = 1}

    def __post_init__(self):
        one_of(self, "name", PROTOCOLS)
        table(self, "options", "{n_fetch = 1, n_push = 1}")


@dataclass(frozen=True)
class ServerConfig:
    """[server]: the optimizer each shard applies to the gradients pushed to it."""

    section: ClassVar[str] = "server"
    optimizer: str = "adagrad"   # the rule each shard applies to pushed gradients: any optim.create name or plugin
    options: dict = field(default_factory=lambda: {"lr": 0.1})  # its hyperparameters
    schedule: dict = field(default_factory=dict)  # the lr's schedule, e.g. {kind = "sgdr", T_0 = 100}; {} = constant
                                                  # (kinds and keys: optim.schedule_spec; the README's table)

    def __post_init__(self):
        one_of(self, "optimizer", OPTIMIZERS)
        table(self, "options", "{lr = 0.1}")
        table(self, "schedule", '{kind = "step", step_size = 100, gamma = 0.5}')


@dataclass(frozen=True)
class TrainConfig:
    """[train]: how long to train, how often to evaluate, when to stop."""

    section: ClassVar[str] = "train"
    epochs: float = 30.0         # passes over each worker's data shard: a positive number
    eval_every: int = 50         # evaluate after every this many updates applied: an integer >= 1
    target_accuracy: float = 0.95  # the "time to target" of reports: in (0, 1]
    early_stopping: bool = False  # stop when the validation loss stops improving
    patience: int = 5            # evaluations without improvement before stopping: an integer >= 0
    min_delta: float = 0.0       # a smaller improvement does not count: a number >= 0
    clip_norm: float = 0.0       # workers rescale each gradient to at most this joint L2 norm: a number >= 0 (0: off)
    clip_value: float = 0.0      # workers clamp each gradient element into [-v, v]: a number >= 0 (0: off)
    noise_eta: float = 0.0       # workers add N(0, noise_eta / (1 + t)^noise_gamma) to each gradient, t the
                                 # worker's step (Neelakantan et al. 2015): a number >= 0 (0: off)
    noise_gamma: float = 0.55    # how fast that noise's variance decays with the step: a number >= 0

    def __post_init__(self):
        number(self, "epochs", positive=True)
        integer(self, "eval_every")
        value = self.target_accuracy
        require(self, "target_accuracy", is_number(value) and 0 < value <= 1, "must be a number in (0, 1]")
        boolean(self, "early_stopping")
        integer(self, "patience", low=0)
        for name in ("min_delta", "clip_norm", "clip_value", "noise_eta", "noise_gamma"):
            number(self, name)


@dataclass(frozen=True)
class DelaysConfig:
    """[delays]: how long each worker's gradients, pulls and pushes take (``ps.delays``).

    Each is a table: a kind and its parameters, and optionally a per-worker
    ``slowdown = {"3" = 10.0}``. Kinds: none, constant (seconds), uniform (low,
    high), exponential (mean), lognormal (median, sigma), pareto (scale, alpha > 1),
    bandwidth (latency, bytes_per_second; pull and push only), trace (path).
    The same durations drive real sleeps (local) and virtual time (sim).
    ``Config`` checks the tables against the run's workers and seed.
    """

    section: ClassVar[str] = "delays"
    compute: dict = field(default_factory=dict)  # per mini-batch gradient; {} = no delay
    pull: dict = field(default_factory=dict)     # per pull of the parameters; {} = no delay
    push: dict = field(default_factory=dict)     # per push of a gradient; {} = no delay

    def __post_init__(self):
        for name in ("compute", "pull", "push"):
            table(self, name, '{kind = "constant", seconds = 0.001}')

    def specs(self) -> dict[str, dict]:
        """Event -> spec, as ``ps.delays.Delays`` takes them."""
        return {"compute": self.compute, "pull": self.pull, "push": self.push}


@dataclass(frozen=True)
class RayConfig:
    """[ray]: where the ray backend runs, and what each actor asks of the cluster."""

    section: ClassVar[str] = "ray"
    address: str = ""            # "": start a local Ray sized to this machine; HOST:PORT (or "auto"): join that cluster
    shard_cpus: float = 0.0      # CPUs each shard actor reserves: a number >= 0 (0: share the cores, like threads)
    worker_cpus: float = 0.0     # CPUs each worker actor reserves: a number >= 0 (e.g. 1 on a real cluster)

    def __post_init__(self):
        address = self.address
        require(self, "address", isinstance(address, str) and (
            address in ("", "auto") or re.fullmatch(r"(ray://)?[^\s:/]+:\d+", address) is not None),
            "must be HOST:PORT of a running Ray head, e.g. 127.0.0.1:6379, or 'auto', or empty to start a local Ray")
        number(self, "shard_cpus")
        number(self, "worker_cpus")


@dataclass(frozen=True)
class RecoveryConfig:
    """[recovery]: how the shards of the ray and grpc backends survive their process (``ps.recovery``)."""

    section: ClassVar[str] = "recovery"
    checkpoint_every: int = 100  # a shard checkpoints after every this many updates (0: never), in <run>/checkpoints
    max_restarts: int = 3        # times a shard that dies is restarted (by Ray, or by asyncps run): an integer >= 0
    durability: str = "none"     # none | log | fsync: journal each push before acknowledging it (see the README)

    def __post_init__(self):
        integer(self, "checkpoint_every", low=0)
        integer(self, "max_restarts", low=0)
        one_of(self, "durability", DURABILITIES)
        require(self, "durability", self.durability == "none" or self.checkpoint_every > 0,
                 "needs recovery.checkpoint_every >= 1: the journal is cut at each checkpoint")

    def plan(self, directory: Path) -> RecoveryPlan | None:
        """What each shard is told, to keep its files in ``directory``; None when it keeps nothing."""
        if not self.checkpoint_every:
            return None
        return RecoveryPlan(str(directory), self.checkpoint_every, self.durability)


class _Experiment:
    """The top-level keys every kind of experiment has: its seed, and the two that place
    its run directory, <out_dir>/<name>."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        name = self.name
        string(self, "name")
        require(self, "name", name.strip(".") != "" and "/" not in name and "\\" not in name,
                 "must be a directory name: not empty, no '/'")
        string(self, "out_dir")
        require(self, "out_dir", self.out_dir != "", "must be a non-empty path")
        integer(self, "seed", low=0)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


@dataclass(frozen=True)
class Config(_Experiment):
    """A whole experiment: top-level keys, then one field per [section]."""

    examples: ClassVar[tuple[str, str]] = ("cluster.workers=8", "server.options.lr=0.1")  # for --set's errors
    name: str = "quickstart"     # the run directory is <out_dir>/<name>
    seed: int = 0                # one seed for the data split, shards, initial parameters and delays
    backend: str = "local"       # local | sim | ray | grpc
    out_dir: str = "runs"        # where run directories are made
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    delays: DelaysConfig = field(default_factory=DelaysConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self):
        super().__post_init__()
        one_of(self, "backend", BACKENDS)
        Delays(self.delays.specs(), self.seed, self.cluster.workers)  # each refusal names e.g. delays.push.sigma


# -- Hogwild! (asyncps hogwild): one machine, no parameter server ----------------------
HOGWILD_MODELS = {"logistic": "sparse", "svm": "sparse", "matrix_factorization": "ratings"}  # -> its data's kind


@dataclass(frozen=True)
class HogwildDataConfig:
    """[data] of a Hogwild! experiment: a sparse or a ratings data set, taken one example at a time."""

    section: ClassVar[str] = "data"
    dataset: str = "sparse_synthetic"  # sparse_synthetic | libsvm (sparse) | matrix_completion (ratings)
    options: dict = field(default_factory=dict)  # the data set's keyword options, e.g. {num_features = 1000}

    def __post_init__(self):
        one_of(self, "dataset", DATASETS)
        table(self, "options", "{num_features = 1000}")


@dataclass(frozen=True)
class HogwildConfig(hogwild.Settings):
    """[hogwild]: the model, and how ``protocols.hogwild.train`` trains it: the fields of
    ``hogwild.Settings``, with their defaults there."""

    section: ClassVar[str] = "hogwild"
    model: str = "logistic"      # logistic | svm (hinge loss, the paper's) | matrix_factorization
    rank: int = 0                # matrix_factorization: the factors' rank; 0 = the data set's

    def __post_init__(self):  # in the config's words (hogwild.<key>), where Settings speaks train's
        require(self, "model", self.model in HOGWILD_MODELS, f"choose one of: {', '.join(HOGWILD_MODELS)}")
        require(self, "rank", is_int(self.rank, 0), "must be an integer >= 0 (0: the data set's rank)")
        integer(self, "threads")
        require(self, "mode", self.mode in hogwild.MODES, f"choose one of: {', '.join(hogwild.MODES)}")
        boolean(self, "processes")
        integer(self, "epochs")
        number(self, "step_size", positive=True)
        require(self, "beta", is_number(self.beta) and 0 < self.beta <= 1, "must be a number in (0, 1]")
        number(self, "l2")
        integer(self, "chunk")


@dataclass(frozen=True)
class HogwildExperiment(_Experiment):
    """An ``asyncps hogwild`` experiment: top-level keys, then [data] and [hogwild]."""

    examples: ClassVar[tuple[str, str]] = ("hogwild.threads=1", "data.options.num_features=1000")  # as Config's
    name: str = "hogwild"        # the run directory is <out_dir>/<name>
    seed: int = 0                # one seed for the data set, the initial parameters and the epochs' orders
    out_dir: str = "runs"        # where run directories are made
    data: HogwildDataConfig = field(default_factory=HogwildDataConfig)
    hogwild: HogwildConfig = field(default_factory=HogwildConfig)


# -- reading ---------------------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config in the TOML file ``path`` (None: the defaults), with ``key=value`` overrides applied."""
    return load(Config, path, overrides)


def load_hogwild_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                        ) -> HogwildExperiment:
    """:func:`load_config` for ``asyncps hogwild``."""
    return load(HogwildExperiment, path, overrides)


# -- writing ---------------------------------------------------------------------
def to_toml(config: Config | HogwildExperiment) -> str:
    """The fully resolved config as TOML; ``load_config`` (or ``load_hogwild_config``) reads it back to an
    equal one."""
    return tomli_w.dumps(asdict(config))
