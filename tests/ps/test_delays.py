"""``ps.delays``: each kind against its distribution, determinism per (worker,
event), slowdown, bandwidth, trace record and replay, the sleeping client, a
delayed local run, and every refusal's wording."""

from __future__ import annotations

import asyncio
import json
import math
import pickle

import numpy as np
import pytest
import torch

from asyncps import optim
from asyncps.lab.config import load_config
from asyncps.lab.runner import run
from asyncps.ps import ApplyEach, InProcessClient, Layout, make_shards
from asyncps.ps.delays import EVENTS, KINDS, NO_WAIT, DelayedClient, Delays, RealClock, TraceRecorder

DRAWS = 20_000
Z90 = 1.2815515655446004  # the standard normal's 90% quantile


def draws(delays: Delays, worker: int = 0, event: str = "compute", n: int = DRAWS, nbytes: int = 0) -> np.ndarray:
    return np.array([delays.sampler(worker, event)(nbytes) for _ in range(n)])


# -- each kind against its distribution --------------------------------------------------
DISTRIBUTIONS = [
    # (spec, {statistic: its exact value}); statistics over 20k seeded draws
    ({"kind": "constant", "seconds": 0.003}, {"min": 0.003, "max": 0.003}),
    ({"kind": "uniform", "low": 0.001, "high": 0.003}, {"mean": 0.002, "median": 0.002, "q90": 0.0028}),
    ({"kind": "exponential", "mean": 0.01}, {"mean": 0.01, "median": 0.01 * math.log(2), "q90": 0.01 * math.log(10)}),
    ({"kind": "lognormal", "median": 0.01, "sigma": 0.5},
     {"median": 0.01, "mean": 0.01 * math.exp(0.5 ** 2 / 2), "q90": 0.01 * math.exp(0.5 * Z90)}),
    # Pareto I, minimum scale: P(X > x) = (scale / x)^alpha
    ({"kind": "pareto", "scale": 0.01, "alpha": 2.5},
     {"min": 0.01, "median": 0.01 * 2 ** (1 / 2.5), "q90": 0.01 * 10 ** (1 / 2.5), "mean": 2.5 * 0.01 / 1.5}),
    ({"kind": "none"}, {"min": 0.0, "max": 0.0}),
]
STATISTICS = {"mean": np.mean, "median": np.median, "q90": lambda x: np.quantile(x, 0.9), "min": np.min, "max": np.max}


@pytest.mark.parametrize("spec, expected", DISTRIBUTIONS, ids=[row[0]["kind"] for row in DISTRIBUTIONS])
def test_each_kind_draws_from_its_distribution(spec, expected):
    samples = draws(Delays({"compute": spec}, seed=0, num_workers=1))
    assert samples.min() >= 0
    for name, value in expected.items():
        assert STATISTICS[name](samples) == pytest.approx(value, rel=0.03, abs=1e-12), name


ONE_AT_A_TIME = {  # numpy, one call per draw: what a seed's schedule of delays is
    "uniform": lambda rng: float(rng.uniform(0.001, 0.003)),
    "exponential": lambda rng: float(rng.exponential(0.01)),
    "lognormal": lambda rng: 0.01 * math.exp(0.5 * rng.standard_normal()),
    "pareto": lambda rng: 0.01 * (1.0 + rng.pareto(2.5)),
}


@pytest.mark.parametrize("spec", [spec for spec, _ in DISTRIBUTIONS if spec["kind"] in ONE_AT_A_TIME],
                         ids=list(ONE_AT_A_TIME))
def test_durations_are_numpys_draws_one_at_a_time(spec):
    """Sources take their draws from numpy a block at a time; the schedule is
    still exactly the seeded generator's numbers in order, across blocks."""
    delays = Delays({"push": spec}, seed=7, num_workers=3)
    rng = np.random.default_rng([7, 2, EVENTS.index("push")])
    assert draws(delays, worker=2, event="push", n=1_000).tolist() == [ONE_AT_A_TIME[spec["kind"]](rng)
                                                                         for _ in range(1_000)]


def test_uniform_stays_within_its_bounds():
    samples = draws(Delays({"pull": {"kind": "uniform", "low": 0.001, "high": 0.003}}), event="pull")
    assert 0.001 <= samples.min() and samples.max() <= 0.003


def test_bandwidth_is_latency_plus_the_message_size_over_the_bandwidth():
    delays = Delays({"push": {"kind": "bandwidth", "latency": 0.001, "bytes_per_second": 1e8}}, num_workers=2)
    assert delays.sampler(1, "push")(nbytes=0) == 0.001
    assert delays.sampler(1, "push")(nbytes=4_000_000) == pytest.approx(0.041)
    assert delays.sampler(0, "push")(nbytes=10**8) == pytest.approx(1.001)


def test_every_kind_is_a_row_above():
    tested = {spec["kind"] for spec, _ in DISTRIBUTIONS} | {"bandwidth", "trace"}
    assert tested == set(KINDS)


# -- determinism ---------------------------------------------------------------------------
SPECS = {"compute": {"kind": "lognormal", "median": 0.01, "sigma": 0.5},
         "pull": {"kind": "exponential", "mean": 0.002},
         "push": {"kind": "pareto", "scale": 0.001, "alpha": 1.5}}


def test_a_workers_sequence_does_not_depend_on_how_workers_interleave():
    alternating, one_then_other = Delays(SPECS, seed=3, num_workers=2), Delays(SPECS, seed=3, num_workers=2)
    seen = {(w, e): [] for w in (0, 1) for e in EVENTS}
    for _ in range(50):
        for worker in (0, 1):
            for event in EVENTS:
                seen[worker, event].append(alternating.sampler(worker, event)(0))
    for worker in (1, 0):
        for event in reversed(EVENTS):
            assert [one_then_other.sampler(worker, event)(0) for _ in range(50)] == seen[worker, event]


def test_the_same_seed_gives_the_same_durations_and_another_seed_others():
    a, b, c = (Delays(SPECS, seed=s, num_workers=3) for s in (7, 7, 8))
    for worker in range(3):
        for event in EVENTS:
            first = [a.sampler(worker, event)(0) for _ in range(20)]
            assert first == [b.sampler(worker, event)(0) for _ in range(20)]
            assert first != [c.sampler(worker, event)(0) for _ in range(20)]


def test_workers_and_events_draw_different_sequences():
    spec = {"kind": "exponential", "mean": 1.0}
    delays = Delays({"pull": spec, "push": spec}, seed=0, num_workers=2)
    sequences = [tuple(draws(delays, w, e, n=10)) for w in (0, 1) for e in ("pull", "push")]
    assert len(set(sequences)) == 4


def test_slowdown_multiplies_one_workers_durations():
    base = Delays({"compute": SPECS["compute"]}, seed=1, num_workers=4)
    slowed = Delays({"compute": {**SPECS["compute"], "slowdown": {"3": 10.0}}}, seed=1, num_workers=4)
    for worker in range(4):
        factor = 10.0 if worker == 3 else 1.0
        expected = draws(base, worker, n=100) * factor
        assert np.array_equal(draws(slowed, worker, n=100), expected)


def test_slowdown_applies_to_any_kind_and_takes_python_int_keys():
    delays = Delays({"push": {"kind": "bandwidth", "latency": 0.001, "bytes_per_second": 1e6, "slowdown": {1: 2.5}}},
                    num_workers=2)
    assert delays.sampler(0, "push")(1000) == pytest.approx(0.002)
    assert delays.sampler(1, "push")(1000) == pytest.approx(0.005)


@pytest.mark.parametrize("delays", [Delays(), Delays({}, seed=1, num_workers=4),
                                    Delays({"compute": {}, "pull": {}, "push": {}}, num_workers=2),
                                    Delays({"push": {"kind": "none", "slowdown": {"0": 3.0}}})],
                         ids=["defaults", "empty", "empty tables", "kind none"])
def test_no_spec_is_no_delay_and_not_active(delays):
    assert not delays.active
    assert not any(delays.is_active(event) for event in EVENTS)
    assert all(delays.sampler(0, event)(100) == 0.0 for event in EVENTS)


def test_active_names_the_events_that_take_time():
    delays = Delays({"push": {"kind": "constant", "seconds": 0.001}, "pull": {}})
    assert delays.active and delays.is_active("push") and not delays.is_active("pull")
    assert delays.sampler(0, "compute")(0) == 0.0 and delays.sampler(0, "push")(0) == 0.001


# -- traces --------------------------------------------------------------------------------
def write_trace(path, rows):
    path.write_text("".join(json.dumps(dict(zip(("worker", "event", "seconds"), row))) + "\n" for row in rows))
    return str(path)


def test_a_trace_replays_each_workers_rows_in_order_and_cycles(tmp_path):
    path = write_trace(tmp_path / "trace.jsonl", [(0, "push", 0.1), (1, "push", 0.5), (0, "pull", 9.0),
                                                  (0, "push", 0.2), (1, "pull", 8.0), (0, "push", 0.3)])
    delays = Delays({"push": {"kind": "trace", "path": path}, "pull": {"kind": "trace", "path": path}}, num_workers=2)
    assert [delays.sampler(0, "push")(0) for _ in range(7)] == [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1]
    assert [delays.sampler(1, "push")(0) for _ in range(2)] == [0.5, 0.5]
    assert (delays.sampler(0, "pull")(0), delays.sampler(1, "pull")(0)) == (9.0, 8.0)


def test_a_trace_pickles_with_its_place_in_the_replay(tmp_path):
    path = write_trace(tmp_path / "trace.jsonl", [(0, "push", 0.1), (0, "push", 0.2), (0, "push", 0.3)])
    delays = Delays({"push": {"kind": "trace", "path": path}}, num_workers=1)
    delays.sampler(0, "push")(0)
    copy = pickle.loads(pickle.dumps(delays))
    assert [copy.sampler(0, "push")(0) for _ in range(4)] == [0.2, 0.3, 0.1, 0.2]


def test_a_trace_ignores_blank_lines_and_rows_of_workers_beyond_the_run(tmp_path):
    path = tmp_path / "trace.jsonl"
    write_trace(path, [(0, "compute", 0.1), (5, "compute", 0.7)])
    path.write_text(path.read_text() + "\n\n")
    delays = Delays({"compute": {"kind": "trace", "path": str(path), "slowdown": {"0": 2.0}}}, num_workers=1)
    assert delays.sampler(0, "compute")(0) == 0.2


def test_recorded_durations_replay_exactly(tmp_path):
    drawn, recorder = Delays(SPECS, seed=5, num_workers=3), TraceRecorder()
    original = {(w, e): [] for w in range(3) for e in EVENTS}
    for step in range(40):  # interleaved as a run would draw them
        for worker in (step % 3, (step + 1) % 3):
            for event in EVENTS:
                seconds = drawn.sampler(worker, event)(0)
                recorder.durations(worker, event).append(seconds)
                original[worker, event].append(seconds)
    recorder.write(tmp_path / "trace.jsonl")
    replay = Delays({e: {"kind": "trace", "path": str(tmp_path / "trace.jsonl")} for e in EVENTS}, num_workers=3)
    for (worker, event), seconds in original.items():
        assert [replay.sampler(worker, event)(0) for _ in seconds] == seconds
        assert replay.sampler(worker, event)(0) == seconds[0]  # then it starts over


def test_the_written_trace_is_one_json_object_a_line(tmp_path):
    recorder = TraceRecorder()
    recorder.durations(0, "push").append(0.25)
    recorder.durations(1, "compute").append(1)
    recorder.write(tmp_path / "t.jsonl")
    assert (tmp_path / "t.jsonl").read_text() == ('{"worker": 0, "event": "push", "seconds": 0.25}\n'
                                                 '{"worker": 1, "event": "compute", "seconds": 1.0}\n')


# -- the delaying client ---------------------------------------------------------------------
class RecordingClock:
    """A clock that notes every wait and lets it pass at once."""

    def __init__(self):
        self.waited = []

    def sleep(self, seconds):
        self.waited.append(seconds)
        return NO_WAIT


def test_delayed_client_waits_each_messages_duration_on_its_clock_then_forwards():
    layout = Layout({"w": (3, 5), "b": (4,)}, {"emb": (11, 2)}, num_shards=2)
    shards = make_shards(layout, torch.zeros(19), {"emb": torch.zeros(11, 2)}, ApplyEach(optim.SGD(lr=0.1)))
    wire = {"kind": "bandwidth", "latency": 1.0, "bytes_per_second": 1.0}  # seconds = 1 + bytes
    delays = Delays({"pull": wire, "push": wire, "compute": {"kind": "constant", "seconds": 0.5}}, num_workers=2)
    clock, trace = RecordingClock(), TraceRecorder()
    client = DelayedClient(InProcessClient(layout, shards, worker=1), delays.samplers(1), clock, trace)

    async def one_step():
        read = await client.pull(torch.empty(19))
        client.compute()  # a gradient's time is owed to the next call
        pushes = await client.push(torch.ones(19), read)
        rows = torch.tensor([1, 4, 7])
        values, versions = await client.pull_rows("emb", rows)
        await client.push_rows("emb", rows, torch.ones(3, 2), versions)
        return pushes

    pushes = asyncio.run(one_step())
    # A message's size is its float32 values: 19 dense, 3 rows of 2.
    assert clock.waited == [1 + 19 * 4, 0.5 + 1 + 19 * 4, 1 + 3 * 2 * 4, 1 + 3 * 2 * 4]
    assert [p.worker for p in pushes] == [1, 1] and all(p.applied for p in pushes)
    assert all(shard.version == 2 for shard in shards)  # the dense push and the rows push were forwarded
    assert trace.durations(1, "compute") == [0.5] and len(trace.durations(1, "pull")) == 2


def test_the_real_clock_sleeps_on_the_event_loop_and_skips_waits_of_no_time():
    async def waits():
        start = asyncio.get_running_loop().time()
        await RealClock.sleep(0.05)
        return asyncio.get_running_loop().time() - start

    assert asyncio.run(waits()) >= 0.05
    assert RealClock.sleep(0) is NO_WAIT  # awaited, it returns without yielding to the loop


# -- a delayed local run ---------------------------------------------------------------------
def records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == kind]


def test_a_local_run_sleeps_its_delays_and_still_trains(tmp_path):
    config = load_config(None, [f"out_dir={tmp_path}", "train.epochs=1", "cluster.workers=2", "cluster.shards=1",
                                "delays.push={kind = 'constant', seconds = 0.005}",
                                "delays.compute={kind = 'constant', seconds = 0.005}"])
    run_dir = run(config, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert math.isfinite(summary["final"]["test_loss"])
    assert summary["final"]["test_loss"] <= records(run_dir, "eval")[0]["test_loss"]
    for worker in (0, 1):
        trains = [m["time"] for m in records(run_dir, "train") if m["worker"] == worker]
        pushes = [m["time"] for m in records(run_dir, "push") if m["worker"] == worker]
        assert len(pushes) == len(trains) > 10  # one shard: one push record per step
        # Each step sleeps 5 ms after its gradient and 5 ms before its push. From the
        # first step recorded to the last push: every push's sleep and all but the
        # first gradient's (0.9: the metrics' wall clock is not the sleeps' clock).
        assert pushes[-1] - trains[0] >= 0.9 * (len(pushes) + len(trains) - 1) * 0.005


# -- refusals --------------------------------------------------------------------------------
KIND_LIST = "['bandwidth', 'constant', 'exponential', 'lognormal', 'none', 'pareto', 'trace', 'uniform']"
OR_PLUGIN = ", or a plugin 'package.module:Name'"  # what a registry's refusal adds (optim.plugins)
TABLE_EXAMPLE = '{kind = "constant", seconds = 0.001}'
PARETO_ALPHA = ("must be a number > 1: at alpha <= 1 the mean delay is infinite, and a few delays are long enough "
                "to stall a run; alpha = 1.5 is a heavy tail with a finite mean")
ERRORS = [
    # (specs, num_workers, the whole message)
    ([1], 1, "Invalid delays: [1] (must be a table of event -> spec, e.g. "
             '{"push": {"kind": "constant", "seconds": 0.001}})'),
    ({"compte": {"kind": "none"}}, 1, "Invalid delay event: 'compte' (choose one of ['compute', 'pull', 'push'])"),
    ({"push": 0.002}, 1, f"Invalid delays.push: 0.002 (must be a table, e.g. {TABLE_EXAMPLE})"),
    ({"push": {"seconds": 1}}, 1, f"Invalid delays.push: {{'seconds': 1}} (needs a kind: choose one of {KIND_LIST})"),
    ({"push": {"kind": "gauss"}}, 1, f"Invalid delays.push.kind: 'gauss' (choose one of {KIND_LIST}{OR_PLUGIN})"),
    ({"push": {"kind": ["constant"]}}, 1,
     f"Invalid delays.push.kind: ['constant'] (choose one of {KIND_LIST}{OR_PLUGIN})"),
    ({"pull": {"kind": "lognormal", "median": 0.01}}, 1,
     "Invalid delays.pull.sigma: missing (a lognormal delay takes median, sigma)"),
    ({"pull": {"kind": "constant", "seconds": 0.01, "median": 0.01}}, 1,
     "Invalid option for delays.pull (a constant delay): 'median' (allowed options: ['seconds'])"),
    ({"pull": {"kind": "lognormal", "sigma": 0.5, "medain": 0.01}}, 1,
     "Invalid option for delays.pull (a lognormal delay): 'medain' (allowed options: ['median', 'sigma'])"),
    ({"pull": {"kind": "none", "seconds": 0}}, 1,
     "Invalid option for delays.pull (a none delay): 'seconds' (allowed options: [])"),
    ({"compute": {"kind": "constant", "seconds": -0.1}}, 1,
     "Invalid delays.compute.seconds: -0.1 (must be a number >= 0)"),
    ({"compute": {"kind": "constant", "seconds": "1ms"}}, 1,
     "Invalid delays.compute.seconds: '1ms' (must be a number >= 0)"),
    ({"compute": {"kind": "constant", "seconds": True}}, 1,
     "Invalid delays.compute.seconds: True (must be a number >= 0)"),
    ({"compute": {"kind": "constant", "seconds": math.inf}}, 1,
     "Invalid delays.compute.seconds: inf (must be a number >= 0)"),
    ({"compute": {"kind": "uniform", "low": -1, "high": 1}}, 1,
     "Invalid delays.compute.low: -1 (must be a number >= 0)"),
    ({"compute": {"kind": "uniform", "low": 0.2, "high": 0.1}}, 1,
     "Invalid delays.compute.high: 0.1 (must be >= low = 0.2)"),
    ({"compute": {"kind": "exponential", "mean": -0.01}}, 1,
     "Invalid delays.compute.mean: -0.01 (must be a number >= 0)"),
    ({"compute": {"kind": "lognormal", "median": -0.01, "sigma": 0.5}}, 1,
     "Invalid delays.compute.median: -0.01 (must be a number >= 0)"),
    ({"compute": {"kind": "lognormal", "median": 0.01, "sigma": 0}}, 1,
     'Invalid delays.compute.sigma: 0 (must be a number > 0: the spread (for none, use kind = "constant"))'),
    ({"compute": {"kind": "lognormal", "median": 0.01, "sigma": -0.5}}, 1,
     'Invalid delays.compute.sigma: -0.5 (must be a number > 0: the spread (for none, use kind = "constant"))'),
    ({"compute": {"kind": "pareto", "scale": -1, "alpha": 2}}, 1,
     "Invalid delays.compute.scale: -1 (must be a number >= 0)"),
    ({"compute": {"kind": "pareto", "scale": 0.01, "alpha": 0}}, 1,
     f"Invalid delays.compute.alpha: 0 ({PARETO_ALPHA})"),
    ({"pull": {"kind": "pareto", "scale": 0.01, "alpha": 1}}, 1,  # an infinite mean
     f"Invalid delays.pull.alpha: 1 ({PARETO_ALPHA})"),
    ({"push": {"kind": "bandwidth", "latency": -0.001, "bytes_per_second": 1e8}}, 1,
     "Invalid delays.push.latency: -0.001 (must be a number >= 0)"),
    ({"push": {"kind": "bandwidth", "latency": 0.001, "bytes_per_second": 0}}, 1,
     "Invalid delays.push.bytes_per_second: 0 (must be a number > 0: it divides the message size)"),
    ({"compute": {"kind": "bandwidth", "latency": 0.001, "bytes_per_second": 1e8}}, 1,
     "Invalid delays.compute.kind: 'bandwidth' (a computation sends no message: use bandwidth for pull or push)"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": 10.0}}, 4,
     'Invalid delays.push.slowdown: 10.0 (must be a table of worker = factor, e.g. {"3" = 10.0})'),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {"4": 10.0}}}, 4,
     "Invalid delays.push.slowdown worker: '4' (must be a worker index from 0 to 3: the run has 4 workers)"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {"-1": 10.0}}}, 4,
     "Invalid delays.push.slowdown worker: '-1' (must be a worker index from 0 to 3: the run has 4 workers)"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {"worker3": 10.0}}}, 4,
     "Invalid delays.push.slowdown worker: 'worker3' (must be a worker index from 0 to 3: the run has 4 workers)"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {True: 10.0}}}, 4,
     "Invalid delays.push.slowdown worker: True (must be a worker index from 0 to 3: the run has 4 workers)"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {"3": 0}}}, 4,
     "Invalid delays.push.slowdown.3: 0 (must be a number > 0 (1 is no slowdown))"),
    ({"push": {"kind": "constant", "seconds": 0.1, "slowdown": {"3": "10x"}}}, 4,
     "Invalid delays.push.slowdown.3: '10x' (must be a number > 0 (1 is no slowdown))"),
    ({"push": {"kind": "trace", "path": 3}}, 1, "Invalid delays.push.path: 3 (must be the path of a JSONL trace file)"),
    ({"push": {"kind": "trace", "path": "nowhere.jsonl"}}, 1,
     "Invalid delays.push.path: 'nowhere.jsonl' (no such file; TraceRecorder.write makes one)"),
]


@pytest.mark.parametrize("specs, num_workers, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_a_refused_spec_names_the_event_the_key_and_the_rule(specs, num_workers, message):
    with pytest.raises(ValueError) as caught:
        Delays(specs, seed=0, num_workers=num_workers)
    assert str(caught.value) == message


TRACE_ROW = '{"worker": <int >= 0>, "event": "compute" | "pull" | "push", "seconds": <number >= 0>}'
TRACE_ERRORS = [
    # (the file's lines, the whole message with {path} for the file)
    (['{"worker": 0, "event": "push", "seconds": 0.1}'],
     "Invalid delays.push.path: '{path}' (no 'push' rows for worker 1: a trace must cover all 2 workers)"),
    (['{"worker": 0, "event": "push", "seconds": 0.1}', '{"worker": 1, "event": "pull", "seconds": 0.1}'],
     "Invalid delays.push.path: '{path}' (no 'push' rows for worker 1: a trace must cover all 2 workers)"),
    (['{"worker": 0, "event": "push", "seconds": 0.1}', "not json"],
     "Invalid trace row: 'not json' ({path} line 2: each row is " + TRACE_ROW + ")"),
    (['{"worker": 0, "event": "push"}'],
     "Invalid trace row: '{\"worker\": 0, \"event\": \"push\"}' ({path} line 1: each row is " + TRACE_ROW + ")"),
    (['{"worker": -1, "event": "push", "seconds": 0.1}'],
     "Invalid trace row: '{\"worker\": -1, \"event\": \"push\", \"seconds\": 0.1}' ({path} line 1: each row is "
     + TRACE_ROW + ")"),
    (['{"worker": 0, "event": "send", "seconds": 0.1}'],
     "Invalid trace row: '{\"worker\": 0, \"event\": \"send\", \"seconds\": 0.1}' ({path} line 1: each row is "
     + TRACE_ROW + ")"),
    (['{"worker": 0, "event": "push", "seconds": -0.1}'],
     "Invalid trace row: '{\"worker\": 0, \"event\": \"push\", \"seconds\": -0.1}' ({path} line 1: each row is "
     + TRACE_ROW + ")"),
    (["[0, \"push\", 0.1]"], "Invalid trace row: '[0, \"push\", 0.1]' ({path} line 1: each row is " + TRACE_ROW + ")"),
]


@pytest.mark.parametrize("lines, message", TRACE_ERRORS, ids=[str(i) for i in range(len(TRACE_ERRORS))])
def test_a_refused_trace_names_the_file(tmp_path, lines, message):
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as caught:
        Delays({"push": {"kind": "trace", "path": str(path)}}, num_workers=2)
    assert str(caught.value) == message.replace("{path}", str(path))


CALL_ERRORS = [
    # (a call on Delays(SPECS, num_workers=2), the whole message)
    (lambda d: Delays(SPECS, seed=-1), "Invalid seed: -1 (seed must be an integer >= 0)"),
    (lambda d: Delays(SPECS, seed=1.5), "Invalid seed: 1.5 (seed must be an integer >= 0)"),
    (lambda d: Delays(SPECS, num_workers=0), "Invalid num_workers: 0 (num_workers must be an integer >= 1)"),
    (lambda d: d.sampler(2, "push"),
     "Invalid worker: 2 (must be in [0, 2): the delays were built for 2 workers)"),
    (lambda d: d.sampler(-1, "compute"),
     "Invalid worker: -1 (must be in [0, 2): the delays were built for 2 workers)"),
    (lambda d: d.sampler("0", "compute"),
     "Invalid worker: '0' (must be in [0, 2): the delays were built for 2 workers)"),
    (lambda d: d.sampler(0, "send"), "Invalid delay event: 'send' (choose one of ['compute', 'pull', 'push'])"),
    (lambda d: Delays().sampler(0, "send"), "Invalid delay event: 'send' (choose one of ['compute', 'pull', 'push'])"),
    (lambda d: d.is_active("send"), "Invalid delay event: 'send' (choose one of ['compute', 'pull', 'push'])"),
]


@pytest.mark.parametrize("call, message", CALL_ERRORS, ids=[str(i) for i in range(len(CALL_ERRORS))])
def test_a_refused_call_says_what_is_allowed(call, message):
    with pytest.raises(ValueError) as caught:
        call(Delays(SPECS, num_workers=2))
    assert str(caught.value) == message


def test_delays_pickle_with_their_place_in_each_stream():
    """Ray ships a run's Delays to its worker actors: a copy goes on drawing where the original stands."""
    delays = Delays({"push": {"kind": "lognormal", "median": 0.01, "sigma": 0.5}}, seed=3, num_workers=2)
    draws(delays, worker=1, event="push", n=40)  # part of the way into a block
    copy = pickle.loads(pickle.dumps(delays))
    assert draws(copy, worker=1, event="push", n=600).tolist() == draws(delays, worker=1, event="push", n=600).tolist()
