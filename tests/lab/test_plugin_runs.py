"""Your own model, data and algorithm: the examples/ plugins run on every backend, every config key that
takes a registered name takes an import path (and refuses a bad one in a line naming the key), and
asyncps, started in a project directory, finds the project's package in every process it starts."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asyncps.lab.api import run
from asyncps.lab.backends.grpc import free_ports
from asyncps.lab.backends.grpc_processes import start_fork_server
from asyncps.lab.backends.health import wait_until_serving
from asyncps.lab.cli.compose import compose_file
from asyncps.lab.config import load_config
from asyncps.lab.experiment import Experiment
from asyncps.workers import MODELS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["model", "data", "protocol", "optimizer"]  # examples/<name>.toml
SHORT = {"train.epochs": 1, "cluster.workers": 2, "cluster.shards": 1, "train.eval_every": 5}


@pytest.fixture(scope="module")
def at_root():
    """The repository's top, the working directory: where ``examples`` is a package to import plugins from."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        yield


@pytest.fixture(scope="module")
def ray_at_root(at_root, request):
    # Ray puts the working directory of ray.init on its workers' sys.path: the actors import examples too.
    return request.getfixturevalue("ray_session")


@pytest.mark.parametrize("backend", ["local", "sim", "grpc", "ray"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_each_example_trains_on_every_backend(example, backend, at_root, tmp_path, request):
    if backend == "ray":
        request.getfixturevalue("ray_at_root")
    result = run(f"examples/{example}.toml", backend=backend,
                 overrides={**SHORT, "out_dir": str(tmp_path), "name": f"{example}-{backend}"})
    steps = Experiment.build(result.config).steps
    assert result.summary["train_steps"] == 2 * steps
    evals = result.records("eval")
    assert evals[-1]["test_loss"] < evals[0]["test_loss"]  # it learns
    assert load_config(result.dir / "config.toml") == result.config  # the run's config.toml runs it again


PLUGIN = ", or a plugin 'package.module:Name'"
REFUSALS = [
    ("model.name=nopkg.nets:Net", "Invalid config value model.name = 'nopkg.nets:Net' (no module named 'nopkg')"),
    ("model.name=examples.nope:Net",
     "Invalid config value model.name = 'examples.nope:Net' (no module named 'examples.nope')"),
    ("model.name=examples.nets:Foo", "Invalid config value model.name = 'examples.nets:Foo' (examples.nets has no Foo)"),
    ("model.name=examples.data:spirals", "Invalid config value model.name = 'examples.data:spirals' "
                                         "(examples.data:spirals is not a workers.Model subclass)"),
    ("model.name=asyncps.workers.model_base:Model",
     "Invalid config value model.name = 'asyncps.workers.model_base:Model' "
     "(asyncps.workers.model_base:Model does not define name (a workers.Model subclass must define name, init, loss, "
     "evaluate))"),
    ("model.name=examples.nets:", "Invalid config value model.name = 'examples.nets:' "
                                  "(an import path is 'package.module:Name')"),
    ("model.name=resnet", "Invalid config value model.name = 'resnet' (choose one of: cnn, matrix_factorization, "
                          f"mlp, softmax, sparse_logreg{PLUGIN})"),
    ("data.dataset=examples.data:np", "Invalid config value data.dataset = 'examples.data:np' (examples.data:np "
                                      "is not a data set loader, a function (rng, **options) -> workers.Dataset)"),
    ("data.dataset=examples.nets:SmallConvNet", "Invalid config value data.dataset = 'examples.nets:SmallConvNet' "
     "(examples.nets:SmallConvNet does not take rng: it is called as loader(rng, **options))"),
    ("protocol.name=examples.nets:SmallConvNet", "Invalid config value protocol.name = 'examples.nets:SmallConvNet' "
     "(examples.nets:SmallConvNet is not a protocols.Protocol subclass)"),
    ("protocol.name=asyncps.protocols.base:Protocol",
     "Invalid config value protocol.name = 'asyncps.protocols.base:Protocol' "
     "(asyncps.protocols.base:Protocol does not define name (a protocols.Protocol subclass must define name, server_rule, "
     "work))"),
    ("server.optimizer=examples.protocols:LazyDownpour", "Invalid config value server.optimizer = "
     "'examples.protocols:LazyDownpour' (examples.protocols:LazyDownpour is not an optim.Optimizer subclass)"),
    ("server.optimizer=nopkg:Lion", "Invalid config value server.optimizer = 'nopkg:Lion' (no module named 'nopkg')"),
    ("delays.push.kind=examples.optimizers:Lion", "Invalid delays.push.kind: 'examples.optimizers:Lion' "
     "(examples.optimizers:Lion is not a ps.delay_models.DelayModel subclass)"),
    ("delays.push.kind=asyncps.ps.delay_models:DelayModel",
     "Invalid delays.push.kind: 'asyncps.ps.delay_models:DelayModel' "
     "(asyncps.ps.delay_models:DelayModel does not define kind (a ps.delay_models.DelayModel subclass must define kind, "
     "sample or sampler or source))"),
    ("delays.push.kind=examples.delays:Nope", "Invalid delays.push.kind: 'examples.delays:Nope' "
                                              "(examples.delays has no Nope)"),
]


@pytest.mark.parametrize("override, message", REFUSALS, ids=[o for o, _ in REFUSALS])
def test_a_bad_plugin_is_refused_when_the_config_loads_in_a_line_naming_the_key(override, message, at_root):
    with pytest.raises(ValueError) as caught:
        load_config(None, [override])
    assert str(caught.value) == message


def test_easgds_local_optimizer_is_a_plugin_too(at_root):
    good = load_config(None, ["protocol.name=easgd", "protocol.options.optimizer=examples.optimizers:Lion",
                              "protocol.options.options={lr = 0.001}"])
    assert type(Experiment.build(good).protocol.local_optimizer()).__name__ == "Lion"
    bad = load_config(None, ["protocol.name=easgd", "protocol.options.optimizer=examples.optimizers:Adam"])
    with pytest.raises(ValueError) as caught:  # protocol.options are the protocol's to check, as it is built
        Experiment.build(bad)
    assert str(caught.value) == ("Invalid config [protocol]: Invalid optimizer name: 'examples.optimizers:Adam' "
                                 "(examples.optimizers has no Adam)")


def test_a_registered_name_works_as_before_and_so_does_one_registered_from_python(at_root, monkeypatch):
    assert Experiment.build(load_config(None, ["model.name=cnn", "train.epochs=1"])).model.name == "cnn"
    small = MODELS.interface.load("examples.nets:SmallConvNet")
    monkeypatch.setitem(MODELS, "small_convnet", small)
    assert isinstance(Experiment.build(load_config(None, ["model.name=small_convnet"])).model, small)


def test_compose_mounts_the_package_of_the_configs_plugins_where_the_containers_import_it(at_root):
    path = ROOT / "examples" / "protocol.toml"
    text = compose_file(load_config(path), path, ROOT, ROOT)
    assert "    - ./examples:/work/examples:ro   # the config's plugins: examples\n" in text
    assert text.count("/work/examples") == 1  # one mount, in the template every service uses


# -- a project directory of one's own, as a user has it -----------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A directory with a package ``mypkg`` (the examples' protocol and delay model) and a config naming them."""
    directory = tmp_path_factory.mktemp("project")
    (directory / "mypkg").mkdir()
    (directory / "mypkg" / "__init__.py").write_text("")
    for module in ("protocols", "delays"):
        shutil.copy(ROOT / "examples" / f"{module}.py", directory / "mypkg" / f"{module}.py")
    text = (ROOT / "examples" / "protocol.toml").read_text().replace("examples.", "mypkg.")
    (directory / "lazy.toml").write_text(text.replace("epochs = 10", "epochs = 1").replace("workers = 4", "workers = 2")
                                         .replace("shards = 2", "shards = 1"))
    return directory


def asyncps(*args: str) -> list[str]:
    # -P: the working directory is not on sys.path at start, as for the asyncps script (its own directory is)
    return [sys.executable, "-P", "-m", "asyncps.lab.cli", *args]


@pytest.mark.parametrize("backend", ["grpc", "ray"])  # forked processes; actors of a Ray the run starts itself
def test_asyncps_run_in_a_project_directory_finds_its_package_in_the_processes_it_starts(project, backend):
    done = subprocess.run(asyncps("run", "lazy.toml", "--backend", backend, "--set", f"name={backend}"), cwd=project,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((project / "runs" / backend / "summary.json").read_text())
    assert summary["train_steps"] > 0 and summary["failed"] is None


def test_the_grpc_backends_processes_import_the_package_wherever_their_fork_server_started(project, monkeypatch):
    start_fork_server()  # where this process is (or was, when it first ran on grpc): not the project directory
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        result = run("lazy.toml", backend="grpc", overrides={"name": "forks"})
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "mypkg"]:
            del sys.modules[name]
    assert result.summary["failed"] is None and result.summary["train_steps"] > 0


def test_asyncps_serve_work_and_evaluate_in_a_project_directory_import_its_package(project):
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    run_dir = project / "runs" / "cluster"
    serve = subprocess.Popen(asyncps("serve", "lazy.toml", "--shard", "0", "--port", str(port)), cwd=project,
                             stdout=subprocess.DEVNULL)
    try:
        wait_until_serving(address, timeout=120, process=serve)
        workers = [subprocess.Popen(asyncps("work", "lazy.toml", "--worker", str(w), "--shards", address,
                                            "--run-dir", str(run_dir)), cwd=project, stdout=subprocess.DEVNULL)
                   for w in range(2)]
        evaluate = subprocess.run(asyncps("evaluate", "lazy.toml", "--shards", address, "--run-dir", str(run_dir)),
                                  cwd=project, capture_output=True, text=True, timeout=600)
        assert [worker.wait(timeout=600) for worker in workers] == [0, 0]
        assert evaluate.returncode == 0, evaluate.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert json.loads((run_dir / "summary.json").read_text())["train_steps"] > 0


def test_a_plugin_missing_from_the_working_directory_is_the_configs_one_line_error(project, tmp_path):
    done = subprocess.run(asyncps("run", str(project / "lazy.toml")), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2
    assert done.stderr == ("asyncps run: error: Invalid config value protocol.name = 'mypkg.protocols:LazyDownpour' "
                           "(no module named 'mypkg')\n")
