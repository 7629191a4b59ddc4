"""``asyncps run --backend grpc`` as users meet it: with a token, and with a process killed mid-run.
Every shard and worker is a real process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from asyncps.lab.backends.grpc import GrpcBackend
from asyncps.lab.cli.main import main
from asyncps.lab.backends.health import wait_until_serving
from asyncps.lab.config import load_config, to_toml
from asyncps.lab.experiment import Experiment
from asyncps.lab.metrics import Metrics
from asyncps.lab.runner import Run, finish
from asyncps.protos import ps_pb2, ps_pb2_grpc

# Each gradient takes 20 ms: a worker trains for seconds, long enough to be killed in the middle.
SLOW = ["backend=grpc", "train.epochs=12", "delays.compute={kind = 'constant', seconds = 0.02}"]
KILL_AT = 10  # updates applied before the kill: every worker is training, and far from done


def records(run_dir, kind: str) -> list[dict]:
    return [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m["kind"] == kind]


def test_a_run_on_shards_that_want_a_token_sends_it_everywhere_and_says_what_it_starts(tmp_path, monkeypatch,
                                                                                          capsys):
    # The servers, the workers and this process's evaluator all read ASYNCPS_TOKEN.
    monkeypatch.setenv("ASYNCPS_TOKEN", "s3cret")
    overrides = [f"out_dir={tmp_path}", "backend=grpc", "cluster.workers=2", "train.epochs=1"]
    assert main(["run", *(a for o in overrides for a in ("--set", o))]) == 0
    run_dir = tmp_path / "quickstart"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train_steps"] == 2 * Experiment.build(load_config(None, overrides)).steps
    assert (run_dir / "model.pt").exists()
    err = capsys.readouterr().err
    assert "quickstart: starting 2 shard and 2 worker processes" in err  # never silent
    total = summary["train_steps"]
    assert f"| {total}/{total} [" in err  # the workers' steps, read from their processes' records


@dataclass
class Killed:
    """What a run with a process killed mid-run left."""

    experiment: Experiment
    run_dir: Path
    backend: GrpcBackend
    failure: RuntimeError | None
    seconds: float

    def left_no_process(self) -> bool:
        return all(process.poll() is not None for process in self.backend.workers + self.backend.servers)


def run_and_kill(tmp_path, overrides: list[str], victim: Callable[[GrpcBackend], object]) -> Killed:
    """A gRPC run in which ``victim(backend)``'s process gets SIGKILL in the middle of training."""
    config = load_config(None, [f"out_dir={tmp_path}", *SLOW, *overrides])
    experiment = Experiment.build(config)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(to_toml(config))
    killed, failure = threading.Event(), None
    with Metrics(run_dir / "metrics.jsonl") as metrics:
        backend = GrpcBackend(experiment, metrics)
        attempt = Run(experiment, metrics, backend, progress=False)
        killer = threading.Thread(target=kill_when_trained, args=(backend.addresses[0], lambda: victim(backend),
                                                                  killed))
        killer.start()
        started = time.monotonic()
        try:
            attempt.execute()
        except RuntimeError as err:
            failure = err
        seconds = time.monotonic() - started
        killer.join()
    finish(config, run_dir, metrics.start, *(attempt.final or (None, None)), failure=failure)
    assert killed.is_set()
    return Killed(experiment, run_dir, backend, failure, seconds)


def kill_when_trained(address: str, victim: Callable[[], object], killed: threading.Event) -> None:
    """SIGKILL ``victim()``'s process once the shard at ``address`` has applied
    ``KILL_AT`` updates: the shard's own versioned wait says when, no polling."""
    wait_until_serving(address, timeout=120)
    with grpc.insecure_channel(address) as channel:
        list(ps_pb2_grpc.ParameterServerStub(channel).Pull(ps_pb2.PullRequest(min_version=KILL_AT), timeout=120))
    os.kill(victim().pid, signal.SIGKILL)
    killed.set()


def test_a_killed_worker_process_leaves_an_asynchronous_run_to_the_others(tmp_path):
    done = run_and_kill(tmp_path, ["cluster.workers=3"], lambda backend: backend.workers[1])
    assert done.failure is None
    died = [e["message"] for e in records(done.run_dir, "event") if "died" in e["message"]]
    assert died == ["worker 1 died: its process was killed by SIGKILL (2 of 3 workers remain)"]
    steps = {w: len([r for r in records(done.run_dir, "train") if r["worker"] == w]) for w in range(3)}
    assert steps[0] == steps[2] == done.experiment.steps and steps[1] < done.experiment.steps  # the others finished
    assert json.loads((done.run_dir / "summary.json").read_text())["train_steps"] == sum(steps.values())
    assert done.seconds < 300  # the run ended with its workers, not at a 600 s deadline
    assert done.left_no_process()


def shards_of(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["shards"]


def test_a_killed_shard_process_is_restarted_from_its_checkpoint_and_the_run_counts_what_was_lost(tmp_path):
    done = run_and_kill(tmp_path, ["cluster.workers=2", "recovery.checkpoint_every=4"],
                        lambda backend: backend.servers[1])
    assert done.failure is None
    events = [e["message"] for e in records(done.run_dir, "event")]
    assert events[0] == "shard 1 died: its process was killed by SIGKILL; restarting it (1 of 3 restarts)"
    resumed = re.fullmatch(r"shard 1 was restarted; it resumed from its checkpoint at version (\d+)", events[1])
    assert resumed and int(resumed.group(1)) % 4 == 0 and int(resumed.group(1)) >= KILL_AT - 4
    shards = shards_of(done.run_dir)
    versions = records(done.run_dir, "final")[0]["shard_versions"]
    assert shards["1"]["lost"] == shards["1"]["applied"] - versions[1] >= 0  # the pushes since its checkpoint
    assert shards["0"]["lost"] == 0
    assert json.loads((done.run_dir / "summary.json").read_text())["train_steps"] == 2 * done.experiment.steps
    assert (done.run_dir / "model.pt").exists()
    assert done.left_no_process()


def test_with_a_journal_a_killed_shard_loses_no_acknowledged_push(tmp_path):
    done = run_and_kill(tmp_path, ["cluster.workers=2", "recovery.checkpoint_every=4", "recovery.durability=log"],
                        lambda backend: backend.servers[1])
    assert done.failure is None
    resumed = [e["message"] for e in records(done.run_dir, "event") if "restarted;" in e["message"]]
    assert len(resumed) == 1 and re.fullmatch(r"shard 1 was restarted; it resumed from its checkpoint at version \d+"
                                              r"(, then replayed \d+ logged pushes)?", resumed[0])
    shards = shards_of(done.run_dir)
    versions = records(done.run_dir, "final")[0]["shard_versions"]
    for s in ("0", "1"):  # every acknowledged update is in the final parameters (a retried push may count twice)
        assert shards[s]["lost"] <= 0 and versions[int(s)] >= shards[s]["applied"]
    assert done.left_no_process()


def test_a_shard_that_dies_with_no_restarts_left_ends_the_run_at_once_with_a_summary_that_says_so(tmp_path):
    done = run_and_kill(tmp_path, ["cluster.workers=2", "recovery.max_restarts=0"], lambda backend: backend.servers[1])
    assert str(done.failure) == "shard 1 died: its process was killed by SIGKILL"
    summary = json.loads((done.run_dir / "summary.json").read_text())
    assert summary["failed"] == "RuntimeError: shard 1 died: its process was killed by SIGKILL"
    assert "shard 1 died: its process was killed by SIGKILL" in summary["events"]
    assert not (done.run_dir / "model.pt").exists()  # shard 1's values went with it
    assert done.seconds < 120  # seen at once, not at a 600 s deadline
    assert done.left_no_process()


def test_a_synchronous_run_that_loses_a_worker_stops_with_an_error_naming_it(tmp_path):
    done = run_and_kill(tmp_path, ["cluster.workers=2", "protocol.name=sync"], lambda backend: backend.workers[1])
    assert str(done.failure) == ("the run stopped: worker 1 died, and protocol 'sync' needs 2 live workers "
                                 "(1 remain) (set protocol.options.backup_workers to go on without failed workers)")
    assert json.loads((done.run_dir / "summary.json").read_text())["failed"].startswith("RuntimeError: the run")
    assert done.left_no_process()
