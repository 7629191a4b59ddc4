"""``lab.config``: defaults, files, ``--set`` overrides, the written TOML, and every refusal's wording."""

import dataclasses

from pathlib import Path

import pytest

from asyncps.lab.config import (Config, ClusterConfig, DataConfig, DelaysConfig, ModelConfig, ProtocolConfig, ServerConfig,
                        TrainConfig, load_config, to_toml)
from asyncps.optim import OPTIMIZERS

FULL = """\
name = "paper-fig3"
seed = 7
backend = "sim"
out_dir = "elsewhere"

[data]
dataset = "libsvm"
batch_size = "full"
curriculum = "easy_to_hard"
options = {path = "data/a9a.txt", zero_based = false}

[model]
name = "sparse_logreg"
options = {hidden = [64, 32], init = {scale = 0.01}}

[cluster]
workers = 16
shards = 3

[protocol]
name = "sync"
options = {n_fetch = 2, n_push = 3, warmstart_steps = 100}

[server]
optimizer = "adam"
options = {lr = 0.001, betas = [0.9, 0.99]}

[train]
epochs = 2.5
eval_every = 10
target_accuracy = 0.8
early_stopping = true
patience = 0
min_delta = 0.001

[delays.compute]
kind = "lognormal"
median = 0.01
sigma = 0.5
slowdown = { "3" = 10.0 }

[delays.push]
kind = "bandwidth"
latency = 0.001
bytes_per_second = 1e8
"""


def write(tmp_path, text: str, name: str = "config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- defaults and files ----------------------------------------------------------
def test_no_file_gives_the_documented_defaults():
    config = load_config(None)
    assert config == Config()
    assert (config.name, config.seed, config.backend, config.out_dir) == ("quickstart", 0, "local", "runs")
    assert config.data == DataConfig("digits", 32, "none", {})
    assert config.model == ModelConfig("mlp", {})
    assert config.cluster == ClusterConfig(workers=4, shards=2)
    assert config.protocol == ProtocolConfig("downpour", {})
    assert config.server == ServerConfig("adagrad", {"lr": 0.1})
    assert config.train == TrainConfig(30.0, 50, 0.95, False, 5, 0.0)
    assert config.delays == DelaysConfig(compute={}, pull={}, push={})  # no delay anywhere
    assert str(config.run_dir) == "runs/quickstart"


def test_the_quickstart_file_is_what_run_uses_without_a_config():
    assert load_config(Path(__file__).parents[2] / "experiments" / "quickstart.toml") == load_config(None)


def test_a_full_file_loads_every_key(tmp_path):
    config = load_config(write(tmp_path, FULL))
    assert (config.name, config.seed, config.backend, config.out_dir) == ("paper-fig3", 7, "sim", "elsewhere")
    assert config.data == DataConfig("libsvm", "full", "easy_to_hard", {"path": "data/a9a.txt", "zero_based": False})
    assert config.model.options == {"hidden": [64, 32], "init": {"scale": 0.01}}
    assert config.cluster == ClusterConfig(16, 3)
    assert config.protocol == ProtocolConfig("sync", {"n_fetch": 2, "n_push": 3, "warmstart_steps": 100})
    assert config.server == ServerConfig("adam", {"lr": 0.001, "betas": [0.9, 0.99]})
    assert config.train == TrainConfig(2.5, 10, 0.8, True, 0, 0.001)
    assert config.delays == DelaysConfig(
        compute={"kind": "lognormal", "median": 0.01, "sigma": 0.5, "slowdown": {"3": 10.0}},
        pull={},
        push={"kind": "bandwidth", "latency": 0.001, "bytes_per_second": 1e8})


TRACE_FILE = """\
[cluster]
workers = 2

[delays.pull]
kind = "trace"
path = "{path}"
"""


@pytest.mark.parametrize("text", [FULL, "", "[train]\nepochs = 3\n", TRACE_FILE],
                         ids=["full", "empty", "int-epochs", "trace"])
def test_to_toml_round_trips_through_load_config(tmp_path, text):
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"worker": 0, "event": "pull", "seconds": 0.1}\n{"worker": 1, "event": "pull", "seconds": 0.2}\n')
    config = load_config(write(tmp_path, text.replace("{path}", trace.as_posix())))
    written = write(tmp_path, to_toml(config), "resolved.toml")
    assert load_config(written) == config


def test_to_toml_is_fully_resolved():
    text = to_toml(load_config(None, ["cluster.workers=8"]))
    for line in ['name = "quickstart"', "[cluster]", "workers = 8", "shards = 2", "[server.options]", "lr = 0.1",
                 "eval_every = 50", "early_stopping = false"]:
        assert line in text.splitlines()


def test_a_section_in_the_file_replaces_defaults_key_by_key_and_options_whole(tmp_path):
    keeps = load_config(write(tmp_path, '[server]\noptimizer = "sgd"\n'))
    assert keeps.server == ServerConfig("sgd", {"lr": 0.1})
    replaced = load_config(write(tmp_path, "[server]\noptions = {momentum = 0.9}\n"))
    assert replaced.server == ServerConfig("adagrad", {"momentum": 0.9})
    assert load_config(write(tmp_path, "[cluster]\nworkers = 9\n")).cluster == ClusterConfig(9, 2)


def test_configs_are_frozen_and_validated_when_built_in_python():
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cluster.workers = 8
    with pytest.raises(ValueError, match=r"^Invalid config value cluster\.workers = 0 "):
        dataclasses.replace(config.cluster, workers=0)


# -- overrides -------------------------------------------------------------------
OVERRIDES = [
    # (--set, section.field, expected value)
    ("cluster.workers=8", "cluster.workers", 8),
    ("protocol.name=sync", "protocol.name", "sync"),              # unquoted: falls back to a string
    ('protocol.name="sync"', "protocol.name", "sync"),
    ("server.options.lr=0.1", "server.options", {"lr": 0.1}),
    ("server.options.momentum=0.9", "server.options", {"lr": 0.1, "momentum": 0.9}),  # keeps the default lr
    ("server.options={momentum = 0.9}", "server.options", {"momentum": 0.9}),          # a table replaces whole
    ("protocol.options.n_fetch=4", "protocol.options", {"n_fetch": 4}),
    ("model.options.init.scale=0.01", "model.options", {"init": {"scale": 0.01}}),     # nested, created
    ("data.batch_size=full", "data.batch_size", "full"),
    ("data.batch_size=128", "data.batch_size", 128),
    ("model.options.hidden=[64, 32]", "model.options", {"hidden": [64, 32]}),
    ("train.early_stopping=true", "train.early_stopping", True),
    ("train.epochs=0.5", "train.epochs", 0.5),
    ("train.min_delta=1e-3", "train.min_delta", 0.001),
    ("data.options={path = 'a9a.txt'}", "data.options", {"path": "a9a.txt"}),
    ("data.options.path=data/a9a.txt", "data.options", {"path": "data/a9a.txt"}),  # not TOML: the plain string
    ("seed=3", "seed", 3),
    (" name = sweep-1 ", "name", "sweep-1"),                      # spaces around key and value are dropped
    ("name=2024", "name", "2024"),                                # a key that holds a string takes the text
    ("name=true", "name", "true"),
    ('name="2024"', "name", "2024"),
    ("backend=sim", "backend", "sim"),
    ("delays.push={kind = 'constant', seconds = 0.002}", "delays.push", {"kind": "constant", "seconds": 0.002}),
    ("delays.compute={kind = 'none'}", "delays.compute", {"kind": "none"}),
    ("delays.pull={}", "delays.pull", {}),
]


@pytest.mark.parametrize("override, key, expected", OVERRIDES, ids=[row[0] for row in OVERRIDES])
def test_override(override, key, expected):
    value = load_config(None, [override])
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


def test_delay_specs_are_open_tables_built_key_by_key():
    config = load_config(None, ["delays.push.kind=constant", "delays.push.seconds=0.002",
                                "delays.compute.kind=pareto", "delays.compute.scale=0.01", "delays.compute.alpha=2.5",
                                "delays.compute.slowdown.3=10.0"])
    assert config.delays.push == {"kind": "constant", "seconds": 0.002}
    assert config.delays.compute == {"kind": "pareto", "scale": 0.01, "alpha": 2.5, "slowdown": {"3": 10.0}}
    assert config.delays.specs() == {"compute": config.delays.compute, "pull": {}, "push": config.delays.push}


def test_a_delays_table_in_the_file_replaces_the_default_whole_and_overrides_add_to_it(tmp_path):
    path = write(tmp_path, '[delays.push]\nkind = "lognormal"\nmedian = 0.01\nsigma = 0.5\n')
    config = load_config(path, ["delays.push.slowdown={ '0' = 2.0 }"])
    assert config.delays.push == {"kind": "lognormal", "median": 0.01, "sigma": 0.5, "slowdown": {"0": 2.0}}
    assert config.delays.compute == {} and config.delays.pull == {}


def test_overrides_apply_over_the_file_in_order(tmp_path):
    config = load_config(write(tmp_path, FULL), ["cluster.workers=2", "cluster.workers=5", "server.options.lr=0.5"])
    assert config.cluster == ClusterConfig(5, 3)
    assert config.server.options == {"lr": 0.5, "betas": [0.9, 0.99]}
    assert config.name == "paper-fig3"


# -- refusals --------------------------------------------------------------------
TRAIN_KEYS = ("clip_norm, clip_value, early_stopping, epochs, eval_every, min_delta, noise_eta, noise_gamma, patience, "
              "target_accuracy")
TOP_KEYS = "backend, cluster, data, delays, model, name, out_dir, protocol, ray, recovery, seed, server, train"
OR_PLUGIN = ", or a plugin 'package.module:Name'"  # what a registry's refusal adds (optim.plugins)
ERRORS = [
    # (file text or None, overrides, the whole message)
    ("[train]\nepochz = 3\n", [],
     f"Invalid config key 'train.epochz': unknown key (known keys in [train]: {TRAIN_KEYS})"),
    (None, ["train.epochz=3"],
     f"Invalid config key 'train.epochz': unknown key (known keys in [train]: {TRAIN_KEYS})"),
    ("epochs = 3\n", [], f"Invalid config key 'epochs': unknown key (known top-level keys: {TOP_KEYS})"),
    ("[cluster]\nworkers = 4\nseed = 1\n", [],
     "Invalid config key 'cluster.seed': unknown key (known keys in [cluster]: shards, workers; "
     "top-level keys like 'seed' go before the first [section])"),
    (None, ["cluster.workerz=8"], "Invalid config key 'cluster.workerz': unknown key (known keys in [cluster]: "
                                  "shards, workers)"),
    (None, ["optimizer=adam"], f"Invalid config key 'optimizer': unknown key (known top-level keys: {TOP_KEYS})"),
    (None, ["cluster.workers=0"], "Invalid config value cluster.workers = 0 (must be an integer >= 1)"),
    (None, ["cluster.shards=2.0"], "Invalid config value cluster.shards = 2.0 (must be an integer >= 1)"),
    (None, ["cluster.workers=true"], "Invalid config value cluster.workers = True (must be an integer >= 1)"),
    (None, ["data.dataset=imagenet"], "Invalid config value data.dataset = 'imagenet' (choose one of: cifar10, "
                                      "digits, fashion_mnist, libsvm, matrix_completion, mnist, "
                                      f"sparse_synthetic{OR_PLUGIN})"),
    ("[data]\ndataset = [1]\n", [], "Invalid config value data.dataset = [1] (choose one of: cifar10, digits, "
                                 f"fashion_mnist, libsvm, matrix_completion, mnist, sparse_synthetic{OR_PLUGIN})"),
    (None, ["data.batch_size=0"], "Invalid config value data.batch_size = 0 (must be an integer >= 1 or 'full')"),
    (None, ["data.batch_size=all"],
     "Invalid config value data.batch_size = 'all' (must be an integer >= 1 or 'full')"),
    (None, ["data.curriculum=hard"],
     "Invalid config value data.curriculum = 'hard' (choose one of: easy_to_hard, mixed, none)"),
    (None, ["data.options=3"], "Invalid config value data.options = 3 (must be a table, e.g. {num_features = 1000})"),
    (None, ["model.name=resnet"], "Invalid config value model.name = 'resnet' (choose one of: cnn, "
                                  f"matrix_factorization, mlp, softmax, sparse_logreg{OR_PLUGIN})"),
    (None, ["model.options=[64]"],
     "Invalid config value model.options = [64] (must be a table, e.g. {hidden = [64], batch_norm = false})"),
    (None, ["protocol.name=downpoor"], "Invalid config value protocol.name = 'downpoor' (choose one of: dcasgd, "
                                       f"downpour, dtadagrad, eamsgd, easgd, ssp, sync{OR_PLUGIN})"),
    (None, ["protocol.options=1"],
     "Invalid config value protocol.options = 1 (must be a table, e.g. {n_fetch = 1, n_push = 1})"),
    (None, ["server.optimizer=adamm"],
     f"Invalid config value server.optimizer = 'adamm' (choose one of: {', '.join(sorted(OPTIMIZERS))}{OR_PLUGIN})"),
    (None, ["server.options=0.1"], "Invalid config value server.options = 0.1 (must be a table, e.g. {lr = 0.1})"),
    ('[train]\nepochs = "ten"\n', [], "Invalid config value train.epochs = 'ten' (must be a positive number)"),
    (None, ["train.epochs=0"], "Invalid config value train.epochs = 0 (must be a positive number)"),
    (None, ["train.epochs=inf"], "Invalid config value train.epochs = inf (must be a positive number)"),
    (None, ["train.eval_every=0"], "Invalid config value train.eval_every = 0 (must be an integer >= 1)"),
    (None, ["train.target_accuracy=0"],
     "Invalid config value train.target_accuracy = 0 (must be a number in (0, 1])"),
    (None, ["train.target_accuracy=95"],
     "Invalid config value train.target_accuracy = 95 (must be a number in (0, 1])"),
    (None, ["train.early_stopping=yes"],
     "Invalid config value train.early_stopping = 'yes' (must be true or false)"),
    (None, ["train.patience=-1"], "Invalid config value train.patience = -1 (must be an integer >= 0)"),
    (None, ["train.min_delta=-0.1"], "Invalid config value train.min_delta = -0.1 (must be a number >= 0)"),
    (None, ["name=a/b"], "Invalid config value name = 'a/b' (must be a directory name: not empty, no '/')"),
    (None, ["name=''"], "Invalid config value name = '' (must be a directory name: not empty, no '/')"),
    (None, ["name=.."], "Invalid config value name = '..' (must be a directory name: not empty, no '/')"),
    (None, ["seed=-1"], "Invalid config value seed = -1 (must be an integer >= 0)"),
    (None, ["backend=k8s"], "Invalid config value backend = 'k8s' (choose one of: grpc, local, ray, sim)"),
    (None, ["out_dir=''"], "Invalid config value out_dir = '' (must be a non-empty path)"),
    ("data = 3\n", [], "Invalid config value data = 3 (must be a table: [data])"),
    (None, ["train=1"], "Invalid config value train = 1 (must be a table: [train])"),
    (None, ["cluster.workers"],
     "Invalid --set override: 'cluster.workers' (expected key=value, e.g. cluster.workers=8)"),
    (None, ["cluster..workers=1"],
     "Invalid --set override: 'cluster..workers=1' (expected a dotted key, e.g. server.options.lr=0.1)"),
    (None, ["=1"], "Invalid --set override: '=1' (expected a dotted key, e.g. server.options.lr=0.1)"),
    (None, ["seed.x=1"], "Invalid --set override: 'seed.x=1' (seed is a value, not a table)"),
    (None, ["cluster.workers.x=1"], "Invalid --set override: 'cluster.workers.x=1' (cluster.workers is a value, "
                                    "not a table)"),
    ("[foo]\nx = 1\n", ["foo.x=2"], f"Invalid config key 'foo': unknown key (known top-level keys: {TOP_KEYS})"),
    # [delays]: the tables' shape here, their contents by ps.delays (every message tested in tests/ps/test_delays.py)
    (None, ["delays.pushh.kind=constant"],
     "Invalid config key 'delays.pushh': unknown key (known keys in [delays]: compute, pull, push)"),
    (None, ["delays.push=0.002"],
     "Invalid config value delays.push = 0.002 (must be a table, e.g. {kind = \"constant\", seconds = 0.001})"),
    (None, ["delays.push.seconds=0.002"],
     "Invalid delays.push: {'seconds': 0.002} (needs a kind: choose one of ['bandwidth', 'constant', "
     "'exponential', 'lognormal', 'none', 'pareto', 'trace', 'uniform'])"),
    (None, ["delays.push.kind=gauss"], "Invalid delays.push.kind: 'gauss' (choose one of ['bandwidth', 'constant', "
                                       "'exponential', 'lognormal', 'none', 'pareto', 'trace', "
                                       f"'uniform']{OR_PLUGIN})"),
    ("[delays.push]\nkind = 'lognormal'\nmedian = 0.01\nsigma = 0\n", [],
     "Invalid delays.push.sigma: 0 (must be a number > 0: the spread (for none, use kind = \"constant\"))"),
    (None, ["delays.push.kind=constant"],
     "Invalid delays.push.seconds: missing (a constant delay takes seconds)"),
    (None, ["delays.compute={kind = 'constant', seconds = 0.01, slowdown = {'4' = 2.0}}"],
     "Invalid delays.compute.slowdown worker: '4' (must be a worker index from 0 to 3: the run has 4 workers)"),
    (None, ["cluster.workers=8", "delays.compute={kind = 'constant', seconds = 0.01, slowdown = {'4' = 2.0}}",
            "cluster.workers=4"],
     "Invalid delays.compute.slowdown worker: '4' (must be a worker index from 0 to 3: the run has 4 workers)"),
    (None, ["delays.pull={kind = 'trace', path = 'nowhere.jsonl'}"],
     "Invalid delays.pull.path: 'nowhere.jsonl' (no such file; TraceRecorder.write makes one)"),
]


@pytest.mark.parametrize("text, overrides, message", ERRORS, ids=[f"{i}" for i in range(len(ERRORS))])
def test_refusal_names_the_key_and_what_is_allowed(tmp_path, text, overrides, message):
    path = write(tmp_path, text) if text is not None else None
    with pytest.raises(ValueError) as caught:
        load_config(path, overrides)
    assert str(caught.value) == message


def test_malformed_toml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, 'name = "x"\n\n[cluster]\nworkers = = 4\n', "broken.toml")
    with pytest.raises(ValueError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"Invalid config file {path}: ")
    assert "line 4" in message and message.endswith("(fix the TOML syntax there)")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"^Invalid config file: '.*nowhere\.toml' \(no such file\)$"):
        load_config(tmp_path / "nowhere.toml")


def test_a_warm_start_longer_than_worker_0s_updates_is_refused_rather_than_a_one_worker_run():
    from asyncps.lab.experiment import Experiment

    steps = Experiment.build(load_config(None, ["cluster.workers=32"])).steps  # worker 0 pushes every step
    assert Experiment.build(load_config(None, ["cluster.workers=32", f"protocol.options.warmstart_steps={steps}"]))
    with pytest.raises(ValueError) as refused:
        Experiment.build(load_config(None, ["cluster.workers=32", f"protocol.options.warmstart_steps={steps + 1}"]))
    assert str(refused.value) == (
        f"Invalid config [protocol]: Invalid warmstart_steps: {steps + 1} (worker 0 makes {steps} updates in this run, "
        f"a push every 1 of its {steps} steps, and the other workers would wait for the rest until the run ends, "
        f"never training: use at most {steps})")


def test_options_that_toml_cannot_write_are_refused_so_every_config_toml_re_runs():
    from asyncps import optim
    from asyncps.lab.config import Config, ServerConfig

    with pytest.raises(ValueError) as refused:
        Config(server=ServerConfig(options={"lr": optim.StepDecay(0.1, 10)}))
    assert str(refused.value) == (
        "Invalid config value server.options = {'lr': StepDecay(lr=0.1, step_size=10, gamma=0.1)} (must hold only "
        "numbers, strings, booleans, lists and tables, so that the run's config.toml re-runs it: a learning-rate "
        'schedule is a table, e.g. server.schedule = {kind = "step", step_size = 100})')


@pytest.mark.parametrize("override, message", [
    ("data.batch_schedule={factor = 0.5, epochs = [2]}", "its factor must be a number >= 1"),
    ("data.batch_schedule={factor = 2}", "needs exactly the keys factor and epochs, e.g. {factor = 2, epochs = [10, 20]}"),
    ("data.batch_schedule={factor = 2, epochs = [3, 2]}", "its epochs must be a list of increasing integers >= 1"),
])
def test_a_bad_batch_schedule_says_what_to_fix(override, message):
    with pytest.raises(ValueError) as refused:
        load_config(None, [override])
    assert str(refused.value).endswith(f"({message})")
