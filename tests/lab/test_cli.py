"""``asyncps`` end to end: the files ``visualize`` writes, and its usage errors."""

import json
import sys

import pytest
from PIL import Image

from asyncps.lab.cli.main import main


def test_visualize_writes_pictures_animations_and_trajectories(tmp_path, capsys):
    out = tmp_path / "viz"
    assert main(["visualize", "--out", str(out), "--steps", "12", "--optimizers", "sgd,adam,adadelta"]) == 0

    for surface in ("beale", "saddle"):
        with Image.open(out / f"{surface}.png") as png:
            png.verify()
        with Image.open(out / f"{surface}.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames == 13  # steps 0..12, one frame each
            gif.seek(gif.n_frames - 1)
            gif.load()
    record = json.loads((out / "trajectories.json").read_text())
    assert record["steps"] == 12
    for surface in record["surfaces"].values():
        assert list(surface["optimizers"]) == ["sgd", "adam", "adadelta"]
        assert all(len(o["path"]) == 13 for o in surface["optimizers"].values())

    printed = capsys.readouterr().out
    assert "beale: 12 steps" in printed and "saddle: 12 steps" in printed and "Adadelta" in printed


def test_visualize_one_surface_without_gifs(tmp_path):
    assert main(["visualize", "--out", str(tmp_path), "--steps", "3", "--surface", "saddle", "--no-gif",
                 "--optimizers", "nag"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saddle.png", "trajectories.json"]


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "adam,adamm"], "unknown optimizer 'adamm'; choose from sgd, momentum, nag, adagrad,"),
    (["--optimizers", ","], "expected comma-separated optimizer names, got ','; choose from sgd,"),
    (["--surface", "rosenbrock"], "invalid choice: 'rosenbrock' (choose from 'beale', 'saddle', 'all')"),
    (["--steps", "0"], "expected a whole number >= 1, got 0"),
])
def test_visualize_usage_errors_name_what_is_allowed(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["visualize", "--out", str(tmp_path), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_health_says_not_serving_where_nothing_listens(capsys):
    from asyncps.lab.backends.grpc import free_ports

    port = free_ports(1)[0]
    assert main(["health", f"127.0.0.1:{port}"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_a_ray_run_where_ray_is_not_installed_says_what_to_install(tmp_path, monkeypatch, capsys):
    # The docker image leaves Ray out: its programs run the grpc backend.
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it would without the package
    for module in ("asyncps.lab.backends.ray", "asyncps.lab.backends.ray_worker"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["run", "--backend", "ray", "--set", f"out_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == ("asyncps run: error: Invalid backend 'ray' here: Ray is not installed (pip "
                                       "install 'ray>=2.9'; the docker image leaves it out, as its programs run the "
                                       "grpc backend)\n")
