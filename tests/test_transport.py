"""The peer transport on real sockets (127.0.0.1, ports from the OS), in one process:
the handshake checks the configured key, frames are sealed on the wire, and the limits
and bans hold. Its links between real nodes are exercised in test_cluster_e2e."""
from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest
from aiohttp import web

from lendnet.ledger import codec, keys
from lendnet.node.daemon import transport as T

CHAIN = "lendnet-test"
SERVER = keys.Keypair.from_name("transport-server")
VALIDATOR = keys.Keypair.from_name("transport-validator")


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


async def _until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Node:
    """A Transport serving /p2p on a free port, recording the frames it is handed."""

    def __init__(self, kp=SERVER, validators=(VALIDATOR.pubkey,), clock=time.monotonic):
        self.got: list[tuple] = []
        self.stats: dict = {}
        self.t = T.Transport(CHAIN, kp, self._on_frame, self.stats,
                             validators=validators, clock=clock)

    async def _on_frame(self, kind, payload, peer):
        self.got.append((kind, payload, peer))

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/p2p", self.t.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        await self.t.stop()
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def _raw_link(port: int, kp):
    """A hand-driven dialler: (ws, session) after the handshake."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{port}/p2p", max_msg_size=T.MAX_FRAME) as ws:
            _, session = await T.client_handshake(ws, CHAIN, kp, SERVER.pubkey)
            yield ws, session


async def test_the_dialler_refuses_a_server_with_another_key_and_redials():
    async with Node() as server, Node(keys.Keypair.from_name("dialler")) as wrong, \
            Node(keys.Keypair.from_name("dialler2")) as right:
        impostor = keys.Keypair.from_name("impostor").pubkey
        await wrong.t.start([(server.addr, impostor)])
        await right.t.start([(server.addr, SERVER.pubkey)])
        await _until(lambda: wrong.stats["peers_wrong_key"] >= 2, what="two refusals")
        assert wrong.t.connected() == [] and server.addr not in wrong.t.peer_keys or \
            wrong.t.peer_keys[server.addr] == impostor
        await _until(lambda: right.t.connected() == [server.addr], what="the right link")
        right.t.send(server.addr, "msg", b"hello")
        await _until(lambda: server.got, what="a frame")
        assert server.got == [("msg", b"hello", right.t.kp.pubkey)]


def _ws_payloads(stream: bytes) -> list[bytes]:
    """The payloads of the WebSocket frames in one direction of a captured connection
    (after its HTTP upgrade), unmasked: what anyone on the path can read."""
    data = stream[stream.index(b"\r\n\r\n") + 4:]
    out = []
    while len(data) >= 2:
        masked, n, i = data[1] & 0x80, data[1] & 0x7F, 2
        if n == 126:
            n, i = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, i = int.from_bytes(data[2:10], "big"), 10
        mask = data[i:i + 4] if masked else b"\0\0\0\0"
        i += 4 if masked else 0
        out.append(bytes(b ^ mask[k % 4] for k, b in enumerate(data[i:i + n])))
        data = data[i + n:]
    return out


class _Tap:
    """A TCP relay that records every byte it passes on, each way."""

    def __init__(self, to_port: int):
        self.to_port = to_port
        self.up = bytearray()             # dialler -> server
        self.down = bytearray()           # server -> dialler
        self.tasks: set = set()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _relay(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.to_port)

        async def pipe(r, w, seen):
            try:
                while data := await r.read(65536):
                    seen += data
                    w.write(data)
                    await w.drain()
            finally:
                w.close()
        for t in (pipe(reader, up_w, self.up), pipe(up_r, writer, self.down)):
            task = asyncio.create_task(t)
            self.tasks.add(task)


async def test_frames_on_the_wire_are_sealed():
    secret, pushed = b"the quick brown fox pays back 12345 LND" * 3, b"block payload, private" * 3
    async with Node() as server, _Tap(server.port) as tap, \
            Node(VALIDATOR, validators=(VALIDATOR.pubkey,)) as dialler:
        await dialler.t.start([(f"127.0.0.1:{tap.port}", SERVER.pubkey)])
        await _until(lambda: dialler.t.connected(), what="the link")
        dialler.t.send(f"127.0.0.1:{tap.port}", "msg", secret)
        await _until(lambda: server.got, what="the frame")
        server.t.push_inbound("block", pushed, skip=set())
        await _until(lambda: dialler.got, what="the pushed frame")
        assert server.got == [("msg", secret, VALIDATOR.pubkey)]
        assert dialler.got == [("block", pushed, SERVER.pubkey)]
        up, down = _ws_payloads(tap.up), _ws_payloads(tap.down)
        assert VALIDATOR.pubkey in up[0] and SERVER.pubkey in down[0]   # the HELLOs
        assert not any(b"quick brown fox" in p for p in up[2:])
        assert not any(b"private" in p for p in down[1:])
        # Each frame is its plaintext plus the 16-byte MAC, nothing else (down[1] is the
        # server's WELCOME: an empty frame, sealed).
        assert len(up[2]) == len(codec.encode(["msg", secret])) + T.MAC_BYTES
        assert len(down[1]) == T.MAC_BYTES
        assert len(down[2]) == len(codec.encode(["block", pushed])) + T.MAC_BYTES


@pytest.mark.parametrize("how", ["tampered", "replayed", "unsealed"])
async def test_a_frame_that_does_not_authenticate_closes_the_link_and_bans(how):
    kp = keys.Keypair.from_name(f"tamperer-{how}")
    async with Node() as server:
        async with _raw_link(server.port, kp) as (ws, session):
            first = session.seal(codec.encode(["msg", b"fine"]))
            await ws.send_bytes(first)
            await _until(lambda: server.got, what="the first frame")
            if how == "tampered":
                box = bytearray(session.seal(codec.encode(["msg", b"fine too"])))
                box[-1] ^= 1
                await ws.send_bytes(bytes(box))
            elif how == "replayed":
                await ws.send_bytes(first)
            else:
                await ws.send_bytes(codec.encode(["msg", b"plain"]))
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and b"banned" in msg.extra.encode()
        assert len(server.got) == 1
        assert server.stats["frames_unauthentic"] == 1 and server.stats["peers_banned"] == 1
        with pytest.raises(T.HandshakeError, match="banned"):
            async with _raw_link(server.port, kp):
                pass
        assert server.stats["links_refused_banned"] == 1


async def test_inbound_limits_and_one_link_per_key(monkeypatch):
    monkeypatch.setattr(T, "MAX_INBOUND", 3)
    monkeypatch.setattr(T, "MAX_INBOUND_NONVALIDATOR", 2)
    other_validator = keys.Keypair.from_name("transport-validator-2")
    async with Node(validators=(VALIDATOR.pubkey, other_validator.pubkey)) as server, \
            contextlib.AsyncExitStack() as stack:
        a, b, c = (keys.Keypair.from_name(f"stranger-{i}") for i in range(3))
        ws_a, _ = await stack.enter_async_context(_raw_link(server.port, a))
        await stack.enter_async_context(_raw_link(server.port, b))
        await _until(lambda: len(server.t.inbound) == 2, what="two links")
        with pytest.raises(T.HandshakeError, match="non-validators full"):
            async with _raw_link(server.port, c):
                pass
        # A second link from a's key replaces the first.
        await stack.enter_async_context(_raw_link(server.port, a))
        msg = await ws_a.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and "replaced" in msg.extra
        assert server.stats["links_replaced"] == 1
        # A validator still gets in, up to the total.
        await stack.enter_async_context(_raw_link(server.port, VALIDATOR))
        await _until(lambda: len(server.t.inbound) == 3, what="three links")
        with pytest.raises(T.HandshakeError, match="inbound links full"):
            async with _raw_link(server.port, other_validator):
                pass
        assert server.stats["links_refused_full"] == 2


async def test_a_peer_that_does_not_read_is_dropped_at_the_byte_cap(monkeypatch):
    monkeypatch.setattr(T, "QUEUE_BYTES_NONVALIDATOR", 1 << 20)
    async with Node() as server:
        async with _raw_link(server.port, keys.Keypair.from_name("sleeper")) as (ws, _):
            await _until(lambda: server.t.inbound, what="the link")
            block = b"b" * 100_000
            pushed = 0
            deadline = time.monotonic() + 30
            while server.t.inbound and time.monotonic() < deadline:
                server.t.push_inbound("block", block, skip=set())   # it never reads
                pushed += 1
                await asyncio.sleep(0.001)
            assert not server.t.inbound, "the link was never closed"
            assert server.stats["links_overflowed"] == 1
            # What it left unread is bounded by the cap plus the sockets' buffers.
            assert pushed * len(block) < 200 << 20, pushed


async def test_strikes_ban_a_key_for_a_while():
    now = [1_000.0]
    async with Node(clock=lambda: now[0]) as server:
        kp = keys.Keypair.from_name("striker")
        async with _raw_link(server.port, kp) as (ws, session):
            await _until(lambda: server.t.inbound, what="the link")
            for _ in range(T.BAN_STRIKES - 1):
                assert not server.t.penalise(kp.pubkey, "a bad signature")
            assert server.t.inbound                       # not yet
            assert server.t.penalise(kp.pubkey, "a bad signature")
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and "banned" in msg.extra
        with pytest.raises(T.HandshakeError, match="banned"):
            async with _raw_link(server.port, kp):
                pass
        assert server.t.active_bans() == 1
        now[0] += T.BAN_SECONDS + 1                       # the ban runs out
        async with _raw_link(server.port, kp):
            await _until(lambda: server.t.inbound, what="the link again")
        assert server.t.active_bans() == 0


async def test_stalled_handshakes_are_bounded_per_address_and_in_time(monkeypatch):
    monkeypatch.setattr(T, "MAX_HANDSHAKING_PER_IP", 2)
    monkeypatch.setattr(T, "HANDSHAKE_TIMEOUT", 1.0)
    async with Node() as server, aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{server.port}/p2p"
        async with s.ws_connect(url) as w1, s.ws_connect(url) as w2:   # say nothing
            await _until(lambda: server.t._handshaking == 2, what="two handshakes")
            async with s.ws_connect(url) as w3:
                msg = await w3.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == "busy"
            for ws in (w1, w2):                      # then cut off at the deadline
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE
        await _until(lambda: server.t._handshaking == 0 and not server.t._handshaking_from,
                     what="the slots freed")
        async with _raw_link(server.port, keys.Keypair.from_name("patient")):
            await _until(lambda: server.t.inbound, what="a link once the slots are free")
