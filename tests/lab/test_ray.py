"""The ray backend: joining a head that `ray start` started, and failures.

Actors are killed from the backend's ``watch`` callback, at a step the test
chooses, while the run is known to be far from its end: the victim computes
40x slower than the others (a per-worker delay slowdown), or there are many
steps left. The golden equivalences run on Ray in test_golden.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import pytest
import ray
import torch

from asyncps import optim
from asyncps.lab.cli.main import main
from asyncps.lab.backends.grpc import free_ports
from asyncps.lab.config import load_config, to_toml
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.lab.runner import Run, finish
from asyncps.ps import ApplyEach, ShardClosed
from asyncps.ps.ray_server import ShardActor
from asyncps.ps.recovery import RecoveryPlan

RAY = Path(sys.executable).parent / "ray"  # the venv's: the head's workers then import asyncps too
SLOW_WORKER_1 = 'delays.compute={kind = "constant", seconds = 0.005, slowdown = {"1" = 40.0}}'


def lines(run_dir: Path, kind: str) -> list[dict]:
    return [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m["kind"] == kind]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def run_watched(tmp_path, watch, *overrides) -> tuple[Path, Experiment]:
    """``asyncps run --backend ray`` with a ``watch`` callback on the records streamed back."""
    from asyncps.lab.backends.ray import RayBackend

    config = load_config(None, [f"out_dir={tmp_path}", "backend=ray", *overrides])
    experiment = Experiment.build(config)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(to_toml(config))
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        dense, tables = Run(experiment, metrics, RayBackend(experiment, metrics, watch), progress=False).execute()
    finish(config, run_dir, metrics.start, dense, tables)
    return run_dir, experiment


# -- joining a cluster -------------------------------------------------------------------------
# First in the module: no Ray runs in this process yet.
def test_asyncps_run_joins_a_head_started_with_ray_start(tmp_path):
    port = free_ports(1)[0]
    # Token authentication, which `ray start` turns on, must be asked for when joining by address.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    temp_dir = tempfile.mkdtemp(prefix="asyncps-ray-")  # short: Ray's socket paths must fit in 107 bytes
    # --block: this process owns the head, and stopping it stops exactly this Ray (`ray stop` would stop
    # every Ray on the machine, the other tests' included).
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--port", str(port), "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--num-cpus=2", "--temp-dir", temp_dir],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        for line in head.stdout:  # the head says so once it serves
            if "will now block" in line:
                break
        else:
            pytest.fail(f"ray start exited with {head.wait()}")
        threading.Thread(target=head.stdout.read, daemon=True).start()  # a full pipe would stall the head
        done = subprocess.run([sys.executable, "-m", "asyncps.lab.cli", "run", "--backend", "ray", "--ray-address",
                               f"127.0.0.1:{port}", "--no-progress", "--set", f"out_dir={tmp_path}",
                               "--set", "cluster.workers=2", "--set", "cluster.shards=1", "--set", "train.epochs=1",
                               "--set", "name=joined"],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        run_dir = tmp_path / "joined"
        for name in ("config.toml", "metrics.jsonl", "summary.json", "model.pt", "loss.png"):
            assert (run_dir / name).exists(), name
        assert 'address = "127.0.0.1:' in (run_dir / "config.toml").read_text()
        result = summary(run_dir)
        assert result["train_steps"] == 2 * Experiment.build(load_config(run_dir / "config.toml")).steps
        assert result["updates"] == result["train_steps"]  # every step's push applied on shard 0
        assert {m["worker"] for m in lines(run_dir, "train")} == {0, 1}
        assert "run directory" in done.stdout
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_an_address_where_no_head_answers_says_what_to_do(tmp_path, capsys):
    port = free_ports(1)[0]
    code = main(["run", "--backend", "ray", "--ray-address", f"127.0.0.1:{port}", "--no-progress",
                 "--set", f"out_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"Invalid ray.address = '127.0.0.1:{port}': no Ray head answers there" in err
    assert "ray start --head" in err


def test_ray_address_is_for_the_ray_backend_only(tmp_path, capsys):
    assert main(["run", "--ray-address", "127.0.0.1:6379", "--set", f"out_dir={tmp_path}"]) == 2
    assert "Invalid --ray-address: it is for the ray backend" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("ray.address=nowhere", r"Invalid config value ray.address = 'nowhere' \(must be HOST:PORT"),
    ("ray.worker_cpus=-1", r"Invalid config value ray.worker_cpus = -1 \(must be a number >= 0\)"),
    ("recovery.checkpoint_every=0.5", r"Invalid config value recovery.checkpoint_every = 0.5 \(must be an integer >= 0\)"),
    ("recovery.durability=disk", r"Invalid config value recovery.durability = 'disk' \(choose one of: fsync, log, none\)"),
    ("recovery.durability=log,recovery.checkpoint_every=0", r"Invalid config value recovery.durability = 'log' \(needs "
     r"recovery.checkpoint_every >= 1: the journal is cut at each checkpoint\)"),
])
def test_ray_and_recovery_config_refusals_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, override.split(","))


def test_a_run_the_cluster_cannot_place_is_refused_at_once(tmp_path, ray_session):
    with pytest.raises(ValueError, match=r"asks the Ray cluster for 402 CPUs \(4 workers x ray.worker_cpus = 100, "
                                         r"2 shards x ray.shard_cpus = 1\) and it has 2"):
        run_watched(tmp_path, None, "ray.worker_cpus=100", "ray.shard_cpus=1")


# -- failures ------------------------------------------------------------------------------------
def kill_worker_1_after_its_first_step(killed: list):
    def watch(run, worker, record):
        if worker == 1 and record["kind"] == "train" and not killed:
            killed.append(record["step"])
            ray.kill(run.workers[1])
    return watch


def test_a_dead_worker_leaves_an_asynchronous_run_to_the_others(tmp_path, ray_session):
    killed = []
    run_dir, experiment = run_watched(tmp_path, kill_worker_1_after_its_first_step(killed), "cluster.workers=3",
                                      "cluster.shards=1", "train.epochs=2", "train.eval_every=20", SLOW_WORKER_1)
    steps = Counter(m["worker"] for m in lines(run_dir, "train"))
    assert killed and steps[0] == steps[2] == experiment.steps
    assert steps[1] < experiment.steps  # it died early: 40x slower, it had most of its steps ahead
    events = summary(run_dir)["events"]
    assert any(re.fullmatch(r"worker 1 died: .* \(2 of 3 workers remain\)", e) for e in events), events
    assert [m["message"] for m in lines(run_dir, "event")] == events
    assert summary(run_dir)["final"]["test_accuracy"] > 0.5


def test_sync_without_backup_workers_stops_with_a_clear_error_when_a_worker_dies(tmp_path, ray_session):
    with pytest.raises(RuntimeError, match=r"worker 1 died, and protocol 'sync' needs 2 live workers \(1 remain\) "
                                           r"\(set protocol.options.backup_workers"):
        run_watched(tmp_path, kill_worker_1_after_its_first_step([]), "protocol.name=sync", "cluster.workers=2",
                    "cluster.shards=1", "train.epochs=2", SLOW_WORKER_1)
    events = [m["message"] for m in lines(tmp_path / "quickstart", "event")]
    assert events[0].startswith("worker 1 died") and "the run stopped" in events[1]


def test_sync_with_a_backup_worker_goes_on_without_a_dead_worker(tmp_path, ray_session):
    run_dir, experiment = run_watched(tmp_path, kill_worker_1_after_its_first_step([]), "protocol.name=sync",
                                      "protocol.options={backup_workers = 1}", "cluster.workers=2",
                                      "cluster.shards=1", "train.epochs=2", SLOW_WORKER_1)
    assert summary(run_dir)["updates"] == experiment.steps  # every round was applied
    assert any(e.startswith("worker 1 died") for e in summary(run_dir)["events"])


def test_a_killed_shard_is_restarted_from_its_checkpoint_and_training_goes_on(tmp_path, ray_session):
    killed = []

    def kill_shard_1(run, worker, record):
        # One worker: shard 1 checkpoints at versions 25 and 50 exactly. A push
        # that arrived at version 28..35 is past the first and far from the
        # second: the crash loses a few updates.
        if record["kind"] == "push" and record["shard"] == 1 and 28 <= record["version"] <= 35 and not killed:
            killed.append(record["version"])
            ray.kill(run.shards[1], no_restart=False)

    run_dir, experiment = run_watched(tmp_path, kill_shard_1, "cluster.workers=1", "cluster.shards=2",
                                      "train.epochs=2", "train.eval_every=10", "recovery.checkpoint_every=25",
                                      'delays.compute={kind = "constant", seconds = 0.02}')
    assert killed
    events = summary(run_dir)["events"]
    restarts = [re.fullmatch(r"shard 1 was restarted by Ray; it resumed from its checkpoint at version (\d+)", e)
                for e in events]
    resumed = int(next(m for m in restarts if m).group(1))
    assert resumed == 25
    # Its clock went back to the checkpoint's: the versions from there to the crash were had twice.
    versions = Counter(m["version"] for m in lines(run_dir, "push") if m["shard"] == 1)
    assert versions[resumed] == 2
    assert all(versions[v] == 1 for v in range(resumed))
    # The updates between the checkpoint and the crash were acknowledged, then lost, and the summary says so.
    shards = summary(run_dir)["shards"]
    assert shards["1"]["lost"] == sum(1 for n in versions.values() if n == 2) > 0
    assert shards["0"]["lost"] == 0 and shards["1"]["applied"] == shards["1"]["acknowledged"]
    assert len(lines(run_dir, "train")) == experiment.steps  # training went on to the end
    saved = torch.load(run_dir / "checkpoints" / "shard-1.pt", weights_only=True)
    assert saved["shard"]["version"] >= resumed


# -- the actor shells, without Ray ------------------------------------------------------------------
def test_a_restarted_shard_counts_versions_of_its_earlier_life_as_current(tmp_path):
    def start():
        return ShardActor(0, torch.zeros(4).numpy(), {}, ApplyEach(optim.SGD(lr=1.0)), RecoveryPlan(str(tmp_path), 2),
                          "run")

    first = start()
    grad = torch.ones(4).numpy()
    for v in range(3):
        _, _, _, life = first.push(grad, None, v, worker=0, life=None)
    assert first.status()["version"] == 3  # saved at version 2
    again = start()  # what Ray does after a crash
    assert again.status()["resumed"] == (2, 0) and again.life.token != life
    read, version, applied, _ = again.push(grad, None, 3, worker=0, life=life)  # read at 3, in the earlier life
    assert (read, version, applied) == (2, 2, True)
    values, version, _ = again.pull(reader=0, min_version=9, life=life)  # waits for no version of the earlier life
    assert version == 3 and values.tolist() == [-3.0] * 4
    with pytest.raises(ValueError, match="Invalid read_version"):  # a version of this life is still checked
        again.push(grad, None, 9, worker=0, life=again.life.token)
    again.close()
    with pytest.raises(ShardClosed, match="the run is over"):
        again.push(grad, None, 3, worker=0, life=again.life.token)


def test_with_a_journal_a_killed_shard_actor_loses_no_acknowledged_update(tmp_path, ray_session):
    killed = []

    def kill_shard_1(run, worker, record):  # past the checkpoint at 25: pushes only the journal holds
        if record["kind"] == "push" and record["shard"] == 1 and 28 <= record["version"] <= 35 and not killed:
            killed.append(record["version"])
            ray.kill(run.shards[1], no_restart=False)

    run_dir, experiment = run_watched(tmp_path, kill_shard_1, "cluster.workers=1", "cluster.shards=2",
                                      "train.epochs=2", "train.eval_every=10", "recovery.checkpoint_every=25",
                                      "recovery.durability=log", 'delays.compute={kind = "constant", seconds = 0.02}')
    assert killed
    resumed = [e for e in summary(run_dir)["events"] if e.startswith("shard 1 was restarted by Ray")]
    replayed = re.fullmatch(r"shard 1 was restarted by Ray; it resumed from its checkpoint at version 25, "
                            r"then replayed (\d+) logged pushes", resumed[0])
    assert replayed and int(replayed.group(1)) >= killed[0] + 1 - 25
    shards = summary(run_dir)["shards"]
    assert shards["1"]["lost"] <= 0 and shards["0"]["lost"] == 0  # (a push retried across the crash may count twice)
    assert len(lines(run_dir, "train")) == experiment.steps
