"""State sync (node/daemon/statesync.py) against a hostile peer: a real aiohttp server on
127.0.0.1 (port from the OS) whose every answer is chosen to break the client. The sync
must end (None: the daemon falls back to block sync), avoid or strike the peer, write
nothing, and never raise."""
from __future__ import annotations

import logging

import pytest
from aiohttp import web

from lendnet.consensus import messages as M
from lendnet.ledger.keys import Keypair
from lendnet.node.core.store import MemoryStore
from lendnet.node.daemon import statesync

VALS = M.Validators("hostile", (Keypair.from_name("hostile-v").pubkey,))


async def _sync_from(handler, monkeypatch=None):
    """Sync an empty store from one peer answering every GET with `handler`."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        store = MemoryStore()
        sync = statesync.StateSync([f"127.0.0.1:{port}"], "hostile", VALS, 4)
        got = await sync.sync(store)
        return got, sync.peers[0], store
    finally:
        await runner.cleanup()


async def test_a_listing_nested_past_the_recursion_limit_is_refused_not_raised(caplog):
    async def listing(request):
        return web.Response(body=b"[" * 60_000, content_type="application/json")
    with caplog.at_level(logging.WARNING, logger="lendnet.statesync"):
        got, peer, store = await _sync_from(listing)
    assert got is None and store.height == 0
    assert peer.avoided and "not JSON" in peer.avoided, peer.avoided


@pytest.mark.parametrize("retry_after", ["²", "١٠", "9" * 5000])
async def test_a_429_with_a_retry_after_int_cannot_read_is_waited_briefly(retry_after,
                                                                          monkeypatch):
    monkeypatch.setattr(statesync, "BUSY_WAIT_S", 0)     # 0: each 429 waited out at once
    asked = []

    async def busy(request):
        if request.path == "/v1/snapshots":          # a listing, then 429s for its proof
            return web.json_response({"snapshots": [
                {"height": 16, "chunks": 1, "bytes": 1, "root": "ab" * 32}]})
        asked.append(request.path)
        return web.Response(status=429, headers={"Retry-After": retry_after})
    got, peer, store = await _sync_from(busy)
    assert got is None and store.height == 0
    assert len(asked) == statesync.BUSY_TRIES            # then given up on: one strike
    assert peer.strikes == 1 and not peer.avoided
