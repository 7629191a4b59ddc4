"""The sim backend: deterministic virtual time, and staleness you can compute by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncps.lab.config import load_config
from asyncps.lab.runner import run
from asyncps.lab.backends.sim import VirtualTime

ROOT = Path(__file__).parents[2]


def sim_run(tmp_path, *overrides, name="sim"):
    config = load_config(None, ["backend=sim", f"out_dir={tmp_path}", f"name={name}", "train.eval_every=100",
                                *overrides])
    return run(config, progress=False)


def pushes(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == "push"]


LOGNORMAL = ["delays.compute={kind = 'lognormal', median = 0.01, sigma = 0.5}",
             "delays.push={kind = 'lognormal', median = 0.002, sigma = 0.8}",
             "delays.pull={kind = 'exponential', mean = 0.001}"]


def test_the_same_config_and_seed_give_a_byte_identical_metrics_file(tmp_path):
    first = sim_run(tmp_path, "train.epochs=2", *LOGNORMAL, name="a")
    second = sim_run(tmp_path, "train.epochs=2", *LOGNORMAL, name="b")
    other_seed = sim_run(tmp_path, "train.epochs=2", "seed=1", *LOGNORMAL, name="c")
    assert (first / "metrics.jsonl").read_bytes() == (second / "metrics.jsonl").read_bytes()
    assert (first / "metrics.jsonl").read_bytes() != (other_seed / "metrics.jsonl").read_bytes()


def test_k_workers_with_constant_compute_settle_into_round_robin(tmp_path):
    k = 4
    run_dir = sim_run(tmp_path, f"cluster.workers={k}", "cluster.shards=1", "train.epochs=1",
                      "delays.compute={kind = 'constant', seconds = 0.01}")
    recorded = pushes(run_dir)
    # The first round reads version 0 everywhere (staleness 0, 1, ..., k-1); from then
    # on each worker pulls right after its own push and the other k-1 push in between.
    assert [p["staleness"] for p in recorded[:k]] == list(range(k))
    assert {p["staleness"] for p in recorded[k:]} == {k - 1}


def test_a_ten_times_slower_worker_misses_what_the_others_push_meanwhile(tmp_path):
    k, slow = 4, 3
    run_dir = sim_run(tmp_path, f"cluster.workers={k}", "cluster.shards=1", "train.epochs=10",
                      "delays.compute={kind = 'constant', seconds = 0.015625, slowdown = {'3' = 10.0}}")
    recorded = pushes(run_dir)
    slow_pushes = [p for p in recorded if p["worker"] == slow]
    fast_pushes = [p for p in recorded if p["worker"] != slow]
    fast_end = fast_pushes[-1]["time"]
    # Compute takes 1/64 s (exact in binary, so instants that tie really tie).
    # Between the slow worker's pull and its push (10/64 s) each of the k-1 fast
    # workers pushes every 1/64 s: 10 pushes each. The slow push was scheduled
    # first, so it goes before the fast pushes of the same instant: 10 (k-1).
    # Its first push misses one round fewer (everyone started at version 0), and
    # once the fast workers have spent their steps it runs alone, at staleness 0.
    assert slow_pushes[0]["staleness"] == 9 * (k - 1)
    steady = [p["staleness"] for p in slow_pushes[1:] if p["time"] <= fast_end - 10 / 64]
    assert len(steady) >= 5 and set(steady) == {10 * (k - 1)}
    assert {p["staleness"] for p in slow_pushes if p["time"] > fast_end + 10 / 64} == {0}
    # A fast worker misses the other fast ones' pushes, and at most one slow push.
    assert {p["staleness"] for p in fast_pushes[k:]} <= {k - 2, k - 1}


def test_replaying_the_recorded_trace_reproduces_the_run(tmp_path):
    original = sim_run(tmp_path, "train.epochs=1", *LOGNORMAL, name="original")
    trace = original / "trace.jsonl"
    assert trace.exists()
    replay = sim_run(tmp_path, "train.epochs=1", name="replay",
                     *[f"delays.{event}={{kind = 'trace', path = '{trace}'}}" for event in ("compute", "pull", "push")])
    assert (original / "metrics.jsonl").read_bytes() == (replay / "metrics.jsonl").read_bytes()


def test_the_64_worker_straggler_experiment_runs(tmp_path):
    config = load_config(ROOT / "experiments" / "stragglers64.toml", [f"out_dir={tmp_path}", "train.epochs=2"])
    assert config.cluster.workers == 64 and config.backend == "sim"
    run_dir = run(config, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["staleness"]["count"] == summary["pushes"] > 0
    assert summary["staleness"]["max"] > 60  # the 10x stragglers miss many updates
    assert (run_dir / "staleness.png").exists()


def test_scheduler_reports_a_deadlock_instead_of_hanging():
    sim = VirtualTime()

    async def waits_forever():
        await sim.wait_until(lambda: False)

    sim.spawn(waits_forever(), "lonely worker")
    with pytest.raises(RuntimeError, match="simulation deadlock at t=0: lonely worker"):
        sim.run(on_idle=lambda: None)


def test_an_ssp_run_counts_an_update_a_clock_and_loses_none_while_the_fast_run_s_clocks_ahead(tmp_path):
    # Every push is applied on arrival; only the one completing the slowest worker's clock makes a
    # version, so the pushes marked applied still add up to each shard's version.
    s = 2
    run_dir = sim_run(tmp_path, "protocol.name=ssp", f"protocol.options={{staleness = {s}}}", "cluster.workers=3",
                      "cluster.shards=2", "train.epochs=1",
                      "delays.compute={kind = 'constant', seconds = 0.015625, slowdown = {'2' = 4.0}}")
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = summary["train_steps"] // 3
    assert summary["shards"] == {str(shard): {"acknowledged": 3 * steps, "applied": steps, "lost": 0}
                                 for shard in range(2)}
    for worker in range(3):
        # The version a worker's push at clock c was computed from, in clocks every worker completed.
        read = [p["version"] - p["staleness"] for p in pushes(run_dir) if (p["worker"], p["shard"]) == (worker, 0)]
        lead = [clock - version for clock, version in enumerate(read)]
        assert max(lead) == (s if worker < 2 else 0), worker  # the fast workers ran s clocks ahead, no more


def test_every_evaluation_carries_the_staleness_of_the_pushes_since_the_previous_one(tmp_path):
    run_dir = sim_run(tmp_path, "train.epochs=2", "train.eval_every=20", *LOGNORMAL)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [i for i, m in enumerate(records) if m["kind"] == "eval"]
    assert len(evals) > 3
    previous = -1
    for i in evals:
        window = [m["staleness"] for m in records[previous + 1:i] if m["kind"] == "push"]
        summary = records[i]["staleness"]
        assert summary["count"] == len(window)
        if window:
            assert summary["max"] == max(window)
            assert summary["mean"] == pytest.approx(sum(window) / len(window))
        previous = i


def test_virtual_time_is_called_virtual_time_on_the_console_in_the_summary_and_on_the_plots(tmp_path, capsys):
    from asyncps.lab.cli.main import main
    from asyncps.lab.reports.rundir import load_run, seconds

    assert main(["run", "--no-progress", "--set", f"out_dir={tmp_path}", "--set", "backend=sim",
                 "--set", "train.epochs=1"]) == 0
    run_dir = tmp_path / "quickstart"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["clock"] == "virtual"
    assert f"updates in {summary['run_time']:.1f} s of virtual time;" in capsys.readouterr().out
    assert seconds([load_run(run_dir)]) == "virtual time (s)"  # every time axis of its plots
