"""A newcomer's inputs, as the ``asyncps`` command line meets them: each
mistake is one line on stderr that says what to fix, and exit code 2."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asyncps.lab.backends.grpc import free_ports
from asyncps.lab.backends.health import wait_until_serving
from asyncps.lab.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.toml")


def asyncps(*argv: str) -> subprocess.CompletedProcess:
    """The real program, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "asyncps.lab.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


SHARDS = ("Invalid config value cluster.shards = 20000 (the model has 9,610 parameters, and each shard should hold "
          "at least 100: use at most 96 shards)")


@pytest.mark.parametrize("backend", ["local", "sim", "ray"])
def test_more_shards_than_the_model_can_fill_are_refused_on_every_backend(backend, tmp_path, capfd):
    assert main(["run", "--backend", backend, "--no-progress", "--set", f"out_dir={tmp_path}",
                 "--set", "cluster.shards=20000", "--set", "train.epochs=0.01"]) == 2
    assert capfd.readouterr().err == f"asyncps run: error: {SHARDS}\n"
    assert not any(tmp_path.iterdir())


def test_a_shard_of_a_model_too_small_for_its_shards_is_refused(tmp_path, capfd):
    config = tmp_path / "many.toml"
    config.write_text("[cluster]\nshards = 20000\n")
    assert main(["serve", str(config), "--shard", "0", "--port", "0"]) == 2
    assert capfd.readouterr().err == f"asyncps serve: error: {SHARDS}\n"


def test_a_directory_as_config_names_a_file_in_it(tmp_path, capfd):
    (tmp_path / "b.toml").write_text("")
    (tmp_path / "a.toml").write_text("")
    assert main(["run", str(tmp_path)]) == 2
    assert capfd.readouterr().err == (f"asyncps run: error: Invalid config file: '{tmp_path}' (a directory: give one "
                                      f"of its files, e.g. {tmp_path / 'a.toml'})\n")


def test_a_directory_without_configs_asks_for_a_file(tmp_path, capfd):
    assert main(["run", str(tmp_path)]) == 2
    assert capfd.readouterr().err == (f"asyncps run: error: Invalid config file: '{tmp_path}' (a directory: give the "
                                      f"path of a TOML file)\n")


@pytest.mark.parametrize("holder", ["socket", "asyncps serve"])
def test_serve_on_a_port_in_use_says_so(holder, tmp_path):
    if holder == "socket":
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            second = asyncps("serve", QUICKSTART, "--shard", "1", "--port", str(port))
    else:
        port = free_ports(1)[0]
        first = subprocess.Popen([sys.executable, "-m", "asyncps.lab.cli", "serve", QUICKSTART, "--shard", "0",
                                  "--port", str(port)], stdout=subprocess.DEVNULL, cwd=ROOT)
        try:
            wait_until_serving(f"127.0.0.1:{port}", timeout=120, process=first)
            second = asyncps("serve", QUICKSTART, "--shard", "1", "--port", str(port))
        finally:
            first.terminate()
            first.wait(timeout=60)
    assert (second.returncode, second.stdout) == (2, "")
    assert second.stderr == (f"asyncps serve: error: port {port} on 127.0.0.1 is in use (stop what listens there, "
                             f"or choose another port)\n")


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_out_of_range(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", QUICKSTART, "--shard", "0", "--port", port])
    assert exit_.value.code == 2
    shown = port if port.lstrip("-").isdigit() else repr(port)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"asyncps serve: error: argument --port: expected a port number from 0 to 65535, got {shown}")


def test_work_with_no_shard_up_names_the_addresses_and_how_long_it_tried(tmp_path, capfd):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    assert main(["work", QUICKSTART, "--worker", "0", "--shards", ",".join(addresses), "--run-dir", str(tmp_path),
                 "--wait", "0.2"]) == 2
    assert capfd.readouterr().err == (f"asyncps work: error: Invalid --shards: no shard serving at {addresses[0]}, "
                                      f"{addresses[1]} (tried for 0.2 s; start each with asyncps serve, or fix the "
                                      f"address)\n")


def test_a_number_given_as_the_name_with_set_names_the_run(tmp_path, capfd):
    assert main(["run", "--backend", "sim", "--no-progress", "--set", f"out_dir={tmp_path}", "--set", "name=2024",
                 "--set", "train.epochs=0.05"]) == 0
    assert (tmp_path / "2024" / "summary.json").is_file()
    assert capfd.readouterr().err == ""


def test_a_number_as_the_name_in_a_file_asks_for_quotes(tmp_path, capfd):
    config = tmp_path / "dated.toml"
    config.write_text("name = 2024\n")
    assert main(["run", str(config)]) == 2
    assert capfd.readouterr().err == ('asyncps run: error: Invalid config value name = 2024 (must be a string: quote '
                                      'it, name = "2024")\n')


@pytest.mark.parametrize("alpha", ["1", "0.8"])
def test_a_pareto_delay_with_an_infinite_mean_is_refused(alpha, tmp_path, capfd):
    assert main(["run", "--no-progress", "--set", f"out_dir={tmp_path}", "--set", "train.epochs=0.05",
                 "--set", f"delays.compute={{kind = 'pareto', scale = 0.01, alpha = {alpha}}}"]) == 2
    assert capfd.readouterr().err == (
        f"asyncps run: error: Invalid delays.compute.alpha: {alpha} (must be a number > 1: at alpha <= 1 the mean "
        f"delay is infinite, and a few delays are long enough to stall a run; alpha = 1.5 is a heavy tail with a "
        f"finite mean)\n")
    assert not any(tmp_path.iterdir())
