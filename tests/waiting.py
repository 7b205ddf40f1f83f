"""Waiting for a condition in tests that drive real processes: never a fixed sleep."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest


def until(cond, timeout: float, what: str, interval: float = 0.02):
    """cond()'s first truthy value, polled every `interval` s; the test fails naming
    `what` when `timeout` s pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(interval)


def same_chain(clients, height: int | None = None, timeout: float = 30.0) -> int:
    """Every node (a NodeClient each) reaches `height` (default: the highest any of them
    has now); their blocks and state roots there agree. Returns that height."""
    if height is None:
        height = max(c.status()["height"] for c in clients)
    for c in clients:
        c.wait_height(height, timeout)
    blocks = [c.get(f"/v1/blocks/{height}") for c in clients]
    assert len({(b["hash"], b["state_root"]) for b in blocks}) == 1, blocks
    return height


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a process a test started: SIGTERM, and SIGKILL if it is not gone within
    `grace` s. Its output is the caller's (a file, or read after)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
