"""The API's limits against abusive clients, on a real node daemon (in this process,
a real socket on 127.0.0.1, a real store): request rates per client address, and blob
storage only for accounts of the chain, within a quota."""
from __future__ import annotations

import hashlib

import aiohttp

from lendnet.ledger.keys import Keypair
from lendnet.node.daemon import home as H
from lendnet.node.daemon.api import MAX_READERS_PER_CLIENT
from lendnet.node.daemon.blobs import QUOTA_BLOBS, sign_upload
from lendnet.node.daemon.daemon import Daemon
from lendnet.node.daemon.ratelimit import RateLimiter


async def _statuses(home, n: int) -> list[tuple[int, str | None, dict]]:
    d = Daemon(home)
    await d.start()
    try:
        out = []
        async with aiohttp.ClientSession() as s:
            for _ in range(n):
                async with s.get(f"http://127.0.0.1:{d.port}/v1/status") as r:
                    out.append((r.status, r.headers.get("Retry-After"), await r.json()))
        return out
    finally:
        await d.stop()


async def test_a_client_past_its_rate_gets_429_and_when_to_come_back(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(api_rate=1, api_burst=2, api_exempt=[]))
    got = await _statuses(tmp_path, 12)
    assert [s for s, _, _ in got[:2]] == [200, 200]           # the burst
    refused = [(retry, body) for s, retry, body in got if s == 429]
    assert refused, got                     # 12 requests take far less than 10 s here
    retry, body = refused[0]
    assert int(retry) >= 1 and body["code"] == "rate-limited" and "retry in" in body["error"]


async def test_the_nodes_own_machine_is_not_limited_unless_the_config_says(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(api_rate=1, api_burst=1))
    assert {s for s, _, _ in await _statuses(tmp_path, 8)} == {200}


def test_a_bucket_refills_at_its_rate_and_the_buckets_are_bounded():
    now = [0.0]
    lim = RateLimiter(rate=2, burst=4, clock=lambda: now[0], max_clients=3)
    assert [lim.wait("a") for _ in range(5)] == [0, 0, 0, 0, 1]
    now[0] += 0.5                                   # one token back
    assert lim.wait("a") == 0 and lim.wait("a") == 1
    for who in ("b", "c", "d", "e"):
        lim.wait(who)
    assert len(lim.buckets) == 3 and "a" not in lim.buckets
    assert lim.refused == 2


async def test_blobs_are_stored_only_for_accounts_of_the_chain_within_their_quota(tmp_path):
    H.init_home(tmp_path, H.NodeConfig())
    d = Daemon(tmp_path)
    await d.start()
    url = f"http://127.0.0.1:{d.port}/v1/blobs"
    funded = Keypair.from_name(H.DEMO_ACCOUNTS[0])        # the dev genesis funds it
    stranger = Keypair.generate()                          # no money, not registered
    chain = d.genesis.chain_id

    async def post(s, data: bytes, headers: dict) -> tuple[int, dict]:
        async with s.post(url, data=data, headers=headers) as r:
            return r.status, await r.json()
    try:
        async with aiohttp.ClientSession() as s:
            assert (await post(s, b"x", {}))[1]["code"] == "unsigned"
            forged = dict(sign_upload(funded, chain, b"y"))    # signed other bytes
            status, body = await post(s, b"x", forged)
            assert (status, body["code"]) == (401, "unsigned"), body
            status, body = await post(s, b"x", sign_upload(funded, "other-chain", b"x"))
            assert status == 401, body
            status, body = await post(s, b"x", sign_upload(stranger, chain, b"x"))
            assert (status, body["code"]) == (403, "unknown-account"), body
            stored = []
            for i in range(QUOTA_BLOBS + 1):
                data = b"doc %d" % i
                status, body = await post(s, data, sign_upload(funded, chain, data))
                stored.append(status)
            assert stored == [201] * QUOTA_BLOBS + [403] and body["code"] == "quota", body
            again = b"doc 0"                     # bytes already here cost no new space
            status, body = await post(s, again, sign_upload(funded, chain, again))
            assert status == 201 and body["hash"] == hashlib.sha256(again).hexdigest()
        assert d.blobs.usage(funded.address)[0] == QUOTA_BLOBS
    finally:
        await d.stop()


async def test_event_stream_readers_are_capped_per_client(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(api_exempt=[]))
    d = Daemon(tmp_path)
    await d.start()
    url = f"http://127.0.0.1:{d.port}/v1/events"
    try:
        async with aiohttp.ClientSession() as s:
            readers = [await s.ws_connect(url) for _ in range(MAX_READERS_PER_CLIENT)]
            try:
                async with s.get(url, headers={"Connection": "Upgrade",
                                               "Upgrade": "websocket",
                                               "Sec-WebSocket-Version": "13",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                 ) as r:
                    assert r.status == 503 and (await r.json())["code"] == "busy"
            finally:
                for ws in readers:
                    await ws.close()
    finally:
        await d.stop()


async def test_a_snapshot_chunk_costs_more_than_a_status_call(tmp_path):
    """A chunk is up to 1 MiB: it takes api.ROUTE_COST tokens, a status call one."""
    from lendnet.node.daemon.api import ROUTE_COST
    cost = ROUTE_COST["/v1/snapshots/{height}/chunks/{index}"]
    H.init_home(tmp_path, H.NodeConfig(api_rate=1, api_burst=2 * cost, api_exempt=[]))
    d = Daemon(tmp_path)
    await d.start()
    try:
        got = []
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(f"http://127.0.0.1:{d.port}/v1/snapshots/16/chunks/0") as r:
                    got.append((r.status, r.headers.get("Retry-After")))
        assert [st for st, _ in got] == [404, 404, 429], got     # the burst: two chunks
        assert int(got[2][1]) >= cost - 1, got                 # a chunk's tokens to wait
    finally:
        await d.stop()
    lim = RateLimiter(rate=1, burst=2, clock=lambda: 0.0)
    assert lim.wait("a", cost=5) == 0 and lim.wait("a") == 1   # a cost over the burst:
    # (capped at the burst, or that request could never go on)


async def test_lenders_books_cost_at_most_a_few_walks_a_block(tmp_path, monkeypatch):
    """Any address may be asked for as a lender, and each new one's book is a walk over
    every loan: past Books.FRESH_PER_HEIGHT in one height, a 503 until the next block,
    so a stranger's requests cost O(state) a few times a block, not each time."""
    from lendnet.ledger import portfolio
    monkeypatch.setattr(portfolio.Books, "FRESH_PER_HEIGHT", 2)
    walks = []
    original = portfolio.shared_views
    monkeypatch.setattr(portfolio, "shared_views",
                        lambda led, lender: walks.append(lender) or original(led, lender))
    H.init_home(tmp_path, H.NodeConfig(api_exempt=[]))
    d = Daemon(tmp_path)
    await d.start()
    try:
        got = []
        async with aiohttp.ClientSession() as s:
            for i in range(12):
                lender = "ln" + f"{i:040x}"
                async with s.get(f"http://127.0.0.1:{d.port}/v1/portfolio",
                                 params={"lender": lender}) as r:
                    got.append((r.status, (await r.json()).get("code")))
        assert (503, "busy") in got, got
        heights = d.node.height + 1              # a block between requests resets it
        assert len(walks) <= 2 * heights, (walks, heights)
    finally:
        await d.stop()


async def test_chunks_a_client_does_not_read_hold_bounded_memory_for_a_bounded_time(
        tmp_path, monkeypatch):
    """A chunk answer (up to 16 MiB) waits in the node's memory until the client reads
    it: one that never reads, over many connections, held a chunk each for ever. Now at
    most CHUNKS_SENDING_PER_CLIENT at once per client (then 429), and each is dropped
    after CHUNK_SEND_S."""
    import asyncio
    import socket
    from lendnet.node.daemon import api
    monkeypatch.setattr(api, "CHUNK_SEND_S", 1.0)
    H.init_home(tmp_path, H.NodeConfig(api_exempt=[]))
    d = Daemon(tmp_path)
    await d.start()
    big = b"x" * (8 << 20)                  # more than the sockets' buffers take
    d.store.get_chunk = lambda s, i: big
    socks = []

    def ask() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", d.port))
        s.sendall(b"GET /v1/snapshots/16/chunks/0 HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
        return s

    async def status_of(s: socket.socket) -> bytes:
        s.setblocking(False)
        line = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 64), 5)
        return line.split(b"\r\n")[0]
    try:
        asked = [ask() for _ in range(api.CHUNKS_SENDING_PER_CLIENT + 2)]
        got = sorted([(await status_of(s))[:12] for s in asked])
        assert got == [b"HTTP/1.1 200"] * api.CHUNKS_SENDING_PER_CLIENT + [
            b"HTTP/1.1 429"] * 2, got
        # the unread answers are dropped after CHUNK_SEND_S: a new request is served
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            got = await status_of(ask())
            if got.startswith(b"HTTP/1.1 200"):
                break
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.2)
    finally:
        for s in socks:
            s.close()
        await d.stop()
