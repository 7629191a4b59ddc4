"""Ctrl-C on ``asyncps run``, as a terminal sends it: SIGINT to the program's
whole process group, in the middle of training, on every backend. The run
stops within seconds with one line and exit code 130, its directory says it
was interrupted, and no process of it is left."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncps.lab.config import load_config

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


def read_until(stream, pattern: bytes, timeout: float) -> bytes:
    """What ``stream`` gives until it matches ``pattern``: each read waits for
    the other process to write, so nothing polls."""
    seen, give_up = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not re.search(pattern, seen):
            assert selector.select(give_up - time.monotonic()), seen
            chunk = os.read(stream.fileno(), 1 << 16)
            assert chunk, seen  # the program ended before it trained
            seen += chunk
    return seen


def outlived(pids: set[int], timeout: float) -> list[int]:
    """The processes of ``pids`` still running after ``timeout`` seconds: each
    one's pidfd becomes readable when it exits, so this waits on events."""
    fds = {}
    for pid in pids:
        if running(pid):
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                pass  # gone meanwhile
    give_up = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and (left := give_up - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                selector.unregister(key.fd)
    for fd in fds:
        os.close(fd)
    return [pid for pid in fds.values() if running(pid)]


@pytest.mark.parametrize("backend", ["local", "sim", "grpc", "ray"])
def test_ctrl_c_stops_the_run_with_one_line_and_leaves_no_process(tmp_path, backend):
    overrides = [f"out_dir={tmp_path}", f"backend={backend}", *SLOW]
    run_dir = load_config(None, overrides).run_dir
    program = subprocess.Popen([sys.executable, "-m", "asyncps.lab.cli", "run", *(a for o in overrides for a in ("--set", o))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # Ray's settings: conftest.py
    try:
        # Training is under way once the bar shows an evaluation's accuracy (the first comes after
        # eval_every updates, once the backend has started everything).
        seen = read_until(program.stderr, rb"test_acc=", timeout=180)
        processes = descendants(program.pid)
        os.killpg(program.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        err = (seen + program.communicate(timeout=60)[1]).decode()
    finally:
        if program.poll() is None:
            os.killpg(program.pid, signal.SIGKILL)
    assert program.returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1] == "asyncps run: interrupted (Ctrl-C)", err
    assert json.loads((run_dir / "summary.json").read_text())["failed"] == "interrupted (Ctrl-C)"
    # A process whose parent has gone (multiprocessing's fork server) may take a moment to see it.
    left = outlived(processes, timeout=10)
    assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
