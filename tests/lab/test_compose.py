"""The docker-compose cluster as a newcomer meets it (issue 17): ``asyncps compose``
writes one service per shard and worker of the config, the repository's
docker-compose.yml is its file for the quickstart, README.md's commands are
docker-compose v1's and are what ``make compose-test`` runs, the build context
is the sources alone, and a container's log says how the run goes.

``make compose-test`` checks the rest on a Docker engine: that this machine's
docker0 outlives the test, and what it leaves behind."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from asyncps.lab.cli.cluster import progress_lines
from asyncps.lab.cli.compose import compose_file
from asyncps.lab.cli.main import main
from asyncps.lab.config import load_config

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
COMPOSE_TEST = ROOT / "deploy" / "compose-test.sh"
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (v1) not installed")


def write_config(tmp_path: Path, workers: int, shards: int) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(QUICKSTART.read_text().replace("workers = 4", f"workers = {workers}")
                    .replace("shards = 2", f"shards = {shards}").replace('"quickstart"', '"wide"'))
    return path


def services(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())["services"]  # merge keys (<<) resolved, as docker-compose does


def test_docker_compose_yml_is_what_asyncps_compose_writes_for_the_quickstart():
    written = compose_file(load_config(QUICKSTART), QUICKSTART, ROOT, ROOT)
    assert (ROOT / "docker-compose.yml").read_text() == written, \
        "run `asyncps compose experiments/quickstart.toml -o docker-compose.yml` at the repository's top"


def test_a_config_of_3_shards_and_5_workers_gets_a_service_for_each(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # where the image is built from
    out = tmp_path / "wide.yml"
    assert main(["compose", str(write_config(tmp_path, workers=5, shards=3)), "-o", str(out)]) == 0
    assert "3 shard(s), 5 worker(s) and the evaluator" in capsys.readouterr().err
    found = services(out)
    assert list(found) == ["shard0", "shard1", "shard2", *(f"worker{w}" for w in range(5)), "evaluator"]
    addresses = "shard0:50051,shard1:50051,shard2:50051"
    run_dir = "/runs/${ASYNCPS_RUN_NAME:-wide}"
    for i in range(3):
        assert found[f"shard{i}"]["command"][:5] == ["asyncps", "serve", "/config/experiment.toml", "--shard", str(i)]
        assert found[f"shard{i}"]["restart"] == "on-failure:3"
    for w in range(5):
        assert found[f"worker{w}"]["command"] == ["asyncps", "work", "/config/experiment.toml", "--worker", str(w),
                                                  "--shards", addresses, "--run-dir", run_dir]
        assert set(found[f"worker{w}"]["depends_on"]) == {"shard0", "shard1", "shard2"}
    assert found["evaluator"]["command"][-3:] == [addresses, "--run-dir", run_dir]
    # The image is built once, by one service, from the repository; the config is mounted from where it is.
    assert [name for name, service in found.items() if "build" in service] == ["shard0"]
    assert (out.parent / found["shard0"]["build"]["context"]).resolve() == ROOT
    assert found["worker0"]["volumes"][0] == "./cluster.toml:/config/experiment.toml:ro"
    assert (out.parent / found["worker0"]["volumes"][1].split(":")[0]).resolve() == ROOT / "runs"


@needs_compose
def test_docker_compose_v1_takes_the_file_of_3_shards_and_5_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "wide.yml"
    assert main(["compose", str(write_config(tmp_path, workers=5, shards=3)), "-o", str(out)]) == 0
    listed = subprocess.run(["docker-compose", "-f", str(out), "config", "--services"], capture_output=True,
                            text=True, check=True).stdout.split()  # needs no engine
    assert sorted(listed) == sorted(["shard0", "shard1", "shard2", *(f"worker{w}" for w in range(5)), "evaluator"])


def test_on_the_host_network_each_shard_has_a_port_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "host.yml"
    assert main(["compose", str(write_config(tmp_path, workers=2, shards=3)), "--host-network", "-o", str(out)]) == 0
    found = services(out)
    assert {service["network_mode"] for service in found.values()} == {"host"}
    for i in range(3):
        command = found[f"shard{i}"]["command"]
        assert command[command.index("--host") + 1:command.index("--port") + 2] == ["127.0.0.1", "--port",
                                                                                     str(50051 + i)]
        assert found[f"shard{i}"]["healthcheck"]["test"][-1] == f"127.0.0.1:{50051 + i}"
    assert "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053" in found["worker1"]["command"]


@pytest.mark.parametrize("args, cwd, message", [
    (["compose", "nowhere.toml"], ROOT, "asyncps compose: error: Invalid config file: 'nowhere.toml' (no such file)"),
    (["compose", str(QUICKSTART)], ROOT / "deploy",
     "asyncps compose: error: no deploy/Dockerfile in {cwd}: run asyncps compose at the repository's top"),
    (["compose", str(QUICKSTART), "-o", "missing/x.yml"], ROOT,
     "asyncps compose: error: no folder missing to write missing/x.yml in"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, cwd, message, monkeypatch, capsys):
    monkeypatch.chdir(cwd)
    assert main(args) == 2
    assert capsys.readouterr().err == message.format(cwd=cwd) + "\n"


def test_a_bad_cluster_size_is_the_configs_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["compose", str(write_config(tmp_path, workers=0, shards=2))]) == 2
    assert capsys.readouterr().err == ("asyncps compose: error: Invalid config value cluster.workers = 0 "
                                       "(must be an integer >= 1)\n")


# -- README.md's commands ---------------------------------------------------------------
def readme_commands() -> list[str]:
    """The commands of the first code block of README.md's docker-compose section, less their comments."""
    section = ROOT.joinpath("README.md").read_text().split("### Running a cluster with docker-compose", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_says_what_to_install_and_its_commands_are_what_compose_test_runs():
    commands = readme_commands()
    assert commands[0] == "apt-get install docker.io docker-compose"  # Debian's: Engine 20.10, docker-compose 1.29
    script = COMPOSE_TEST.read_text()
    assert "need+=(docker.io)" in script and "need+=(docker-compose)" in script
    code = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    missing = [command for command in commands[1:] if not any(command in line for line in code)]
    assert missing == [], "README.md's commands, as written, must be what deploy/compose-test.sh runs"


@needs_compose
def test_every_readme_docker_compose_command_is_one_docker_compose_v1_takes():
    calls = [shlex.split(call) for command in readme_commands()
             for call in re.findall(r"docker-compose [^)\"]*", command)]
    assert len(calls) >= 4
    for words in calls:
        usage = subprocess.run(["docker-compose", words[1], "--help"], capture_output=True, text=True)
        assert usage.returncode == 0 and "Usage:" in usage.stdout, (words, usage.stdout + usage.stderr)
        for option in (word for word in words[2:] if word.startswith("-")):
            assert re.search(rf"(^|[ ,]){re.escape(option)}\b", usage.stdout, re.M), (option, words)


# -- the image ----------------------------------------------------------------------------
def test_the_build_context_is_the_sources_alone():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*", "an allow-list: .venv, runs/ and deploy/.wheelhouse stay out of the build context"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {name.split(".")[1] for name in packages if name.count(".") == 1}  # asyncps.optim: optim/
    wanted = {f"!{folder}" for folder in folders} | {"!__init__.py", "!pyproject.toml", "!README.md"}
    assert {line for line in ignore if line.startswith("!")} == wanted


def test_the_image_is_built_with_no_package_index():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--no-index" in dockerfile and "index-url" not in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${DEPS_IMAGE}"]


# -- a container's log ----------------------------------------------------------------------
def test_the_evaluator_says_each_evaluation_and_event_in_a_line():
    lines = []
    tell = progress_lines(lines.append)
    tell("train", {"worker": 0, "step": 1})
    tell("eval", {"updates": 50, "val_loss": 0.5, "test_loss": 0.49213, "test_accuracy": 0.85521})
    tell("event", {"message": "shard 1 was restarted; it resumed from its checkpoint at version 400"})
    assert len(lines) == 2
    assert re.fullmatch(r"evaluator: \d+\.\d s, 50 updates: test_loss 0\.4921, test_accuracy 0\.8552", lines[0])
    assert lines[1] == "evaluator: shard 1 was restarted; it resumed from its checkpoint at version 400"
