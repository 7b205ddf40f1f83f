"""Waiting for a condition in tests that drive real processes: never a fixed sleep."""
from __future__ import annotations

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
