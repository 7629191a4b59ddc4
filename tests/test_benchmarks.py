"""The benchmarks' verdicts: a missed target is an exit code, not only a word
in the output (``make bench`` fails on it). No timing is measured here."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def timing():
    """benchmarks/timing.py, which the benchmarks import as a sibling script."""
    spec = importlib.util.spec_from_file_location("timing", BENCHMARKS / "timing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOAD = r"load average \d+\.\d\d, \d+\.\d\d, \d+\.\d\d \(1, 5, 15 min\) on \d+ CPUs"


def test_a_missed_target_makes_the_exit_code_1_and_the_load_average_is_printed(capsys):
    targets = timing().Targets()
    assert [targets.verdict(True), targets.verdict(False), targets.verdict(True)] == ["OK", "MISSED", "OK"]
    assert targets.report() == 1
    assert re.fullmatch(rf"2/3 targets met; {LOAD}\n", capsys.readouterr().out)


def test_targets_all_met_exit_0(capsys):
    targets = timing().Targets()
    targets.verdict(True)
    assert targets.report() == 0
    assert re.fullmatch(rf"1/1 targets met; {LOAD}\n", capsys.readouterr().out)


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*_bench.py")))
def test_every_benchmark_exits_with_its_verdicts(script):
    source = (BENCHMARKS / script).read_text()
    assert "targets.verdict(" in source and "return targets.report()" in source
    assert "'OK' if" not in source  # every verdict is counted
    assert re.search(r'if __name__ == "__main__":\n(.*\n)*    sys\.exit\((main\(\)|code)\)', source)
