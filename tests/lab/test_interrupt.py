"""Ctrl-C on ``asyncps run``, as a terminal sends it: SIGINT to the program's
whole process group, in the middle of training, on every backend. The run
stops within seconds with one line and exit code 130, its directory says it
was interrupted, and no process of it is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.config import load_config

# Each gradient takes 20 ms, and there are many: a run that is interrupted, not one that finishes first.
SLOW = ["train.epochs=200", "delays.compute={kind = 'constant', seconds = 0.02}", "train.eval_every=20"]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def trained(metrics: Path) -> bool:
    """Whether the run has recorded an evaluation after some updates."""
    try:
        lines = metrics.read_text().splitlines()
    except FileNotFoundError:
        return False
    return any(r["kind"] == "eval" and r.get("updates", 0) > 0 for r in map(json.loads, lines[:-1]))


@pytest.mark.parametrize("backend", ["local", "sim", "grpc", "ray"])
def test_ctrl_c_stops_the_run_with_one_line_and_leaves_no_process(tmp_path, backend):
    overrides = [f"out_dir={tmp_path}", f"backend={backend}", *SLOW]
    run_dir = load_config(None, overrides).run_dir
    program = subprocess.Popen([sys.executable, "-m", "lab.cli", "run", *(a for o in overrides for a in ("--set", o))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # Ray's settings: conftest.py
    try:
        give_up = time.monotonic() + 180
        while not trained(run_dir / "metrics.jsonl"):  # the other process's file: no event to wait on
            assert program.poll() is None and time.monotonic() < give_up, program.communicate()
            time.sleep(0.05)
        processes = descendants(program.pid)
        os.killpg(program.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = program.communicate(timeout=60)
    finally:
        if program.poll() is None:
            os.killpg(program.pid, signal.SIGKILL)
    assert program.returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1] == "asyncps run: interrupted (Ctrl-C)", err
    assert json.loads((run_dir / "summary.json").read_text())["failed"] == "interrupted (Ctrl-C)"
    # A process whose parent has gone (multiprocessing's fork server) may take a moment to see it.
    give_up = time.monotonic() + 10
    while (left := [pid for pid in processes if running(pid)]) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
