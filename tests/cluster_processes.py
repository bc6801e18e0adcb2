"""Cluster daemons for the launcher tests (Ray, SLURM): free loopback ports, and stopping a
daemon with every process of the session it leads, whatever the test did."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a daemon started with start_new_session=True)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def stop_session(proc: subprocess.Popen, *, grace_s: float = 2.0) -> None:
    """SIGTERM to the daemon's process group, then SIGKILL to whatever of its session is left
    after ``grace_s`` (on SIGTERM, `ray start --block` drains for up to 30 s first)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    term_until, deadline = time.monotonic() + grace_s, time.monotonic() + grace_s + 10
    while (left := session_pids(proc.pid)) and time.monotonic() < deadline:
        if time.monotonic() > term_until:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    assert not session_pids(proc.pid), f"processes of {proc.args[0]} left running"
