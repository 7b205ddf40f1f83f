"""The peer transport's own bounds (its links are exercised end to end in
test_cluster_e2e)."""
from __future__ import annotations

import asyncio

import pytest

from lendnet.node.daemon import transport as T


def test_a_peer_that_stops_reading_costs_a_bounded_number_of_bytes(monkeypatch):
    monkeypatch.setattr(T, "QUEUE_BYTES", 10_000)
    q = T.FrameQueue()
    for _ in range(9):
        q.put_nowait(b"x" * 1_000)
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(b"x" * 1_001)                  # over the bytes, under the count
    q.put_nowait(b"x" * 1_000)
    assert q.bytes == 10_000 and q.qsize() == 10
    assert asyncio.run(q.get()) == b"x" * 1_000     # what leaves is no longer counted
    assert q.bytes == 9_000
    q.put_nowait(b"y" * 1_000)
