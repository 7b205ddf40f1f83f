"""Peer transport: authenticated WebSocket links between nodes, one per direction.

Each node dials every peer it is configured with and only *sends* on that link; what it
receives arrives on the links its peers dialled. So there is never a question of which
of two links to use, and a peer that restarts simply dials again.

Handshake (the dialler is the client):
    client -> HELLO  {chain, pubkey, nonce}
    server -> HELLO  {chain, pubkey, nonce,
                      sig = sign(DOMAIN | chain | b"server" | client nonce | client pubkey)}
    client -> PROOF  {sig = sign(DOMAIN | chain | b"client" | server nonce | server pubkey)}
Each side proves it holds the key it names, bound to the other's fresh nonce, so no one
can speak for a validator or replay an old handshake. After it, every frame is canonical
msgpack [kind, payload bytes], at most MAX_FRAME bytes; a malformed or oversized frame
closes the link (the sender is buggy or hostile) and is counted.

Outgoing frames wait in a bounded queue per peer: when a peer is slow or down its queue
fills and new frames to it are dropped (and counted) instead of stalling the node; the
consensus protocol retransmits what matters. Links redial with backoff.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Protocol

import aiohttp
from aiohttp import web
from lendnet.ledger import codec, keys

DOMAIN = b"lendnet/p2p-handshake\x00"
MAX_FRAME = 4 * 1024 * 1024 + 4096
QUEUE_FRAMES = 4_096
QUEUE_BYTES = 64 << 20           # and at most this much waiting for one peer
STATS = ("frames_in", "frames_out", "frames_dropped", "frames_unlinked", "bad_frames",
         "handshakes_failed", "frames_faulted")
KINDS = ("msg", "txs", "block")      # consensus message, transactions, committed block
HANDSHAKE_TIMEOUT = 5.0

log = logging.getLogger("lendnet.p2p")


class HandshakeError(Exception):
    pass


def _proof(chain: str, role: bytes, nonce: bytes, other: bytes) -> bytes:
    return DOMAIN + chain.encode() + b"\x00" + role + nonce + other


def _hello(chain: str, kp, nonce: bytes, extra: dict | None = None) -> bytes:
    return codec.encode({"chain": chain, "pubkey": kp.pubkey, "nonce": nonce, **(extra or {})})


def _parse_hello(data, chain: str, want_sig: bool) -> dict:
    if type(data) is not bytes or len(data) > 1024:
        raise HandshakeError("handshake frame must be a short binary frame")
    try:
        h = codec.decode(data)
    except codec.EncodingError as e:
        raise HandshakeError(f"handshake: {e}") from None
    fields = {"chain", "pubkey", "nonce"} | ({"sig"} if want_sig else set())
    if type(h) is not dict or set(h) != fields:
        raise HandshakeError(f"handshake fields must be {sorted(fields)}")
    if h["chain"] != chain:
        raise HandshakeError(f"peer is on chain {h['chain']!r}, this node on {chain!r}")
    if type(h["pubkey"]) is not bytes or len(h["pubkey"]) != 32 or \
            type(h["nonce"]) is not bytes or len(h["nonce"]) != 32:
        raise HandshakeError("handshake pubkey and nonce must be 32 bytes")
    return h


class LinkHook(Protocol):
    """Faults on this node's own links, for tests (node/harness/linkfaults.py): the
    transport asks it about every frame."""

    def copies(self, peer: str) -> list[int]:
        """The delay (ms) of each copy of a frame to send to `peer`; [] drops it."""
        ...

    def ignores(self, pubkey: bytes) -> bool:
        """Whether frames from this peer are dropped on arrival."""
        ...


class FrameQueue(asyncio.Queue):
    """Frames waiting for one link, bounded in count and in bytes: a peer that stops
    reading (paused, or hostile) costs at most QUEUE_BYTES, then its frames are dropped."""

    def __init__(self):
        super().__init__(QUEUE_FRAMES)
        self.bytes = 0

    def put_nowait(self, frame: bytes) -> None:
        if self.bytes + len(frame) > QUEUE_BYTES:
            raise asyncio.QueueFull
        super().put_nowait(frame)
        self.bytes += len(frame)

    def get_nowait(self) -> bytes:
        frame = super().get_nowait()
        self.bytes -= len(frame)
        return frame


class Transport:
    """Links to peers. `on_frame(kind, payload, peer_pubkey)` is called for every frame
    received from an authenticated peer."""

    def __init__(self, chain: str, kp: keys.Keypair, on_frame, stats: dict,
                 faults: LinkHook | None = None):
        self.chain = chain
        self.kp = kp
        self.on_frame = on_frame
        self.stats = stats
        self.out: dict[str, FrameQueue] = {}              # "host:port" -> frames to send
        self.peer_keys: dict[str, bytes] = {}             # "host:port" -> its pubkey, once known
        self.inbound: dict[bytes, int] = {}               # pubkey -> open inbound links
        self.inbound_out: dict[int, tuple] = {}           # link id -> (pubkey, frame queue)
        self._inbound_ws: set = set()
        self.links: dict[str, bool] = {}                  # "host:port" -> outbound link up
        self.faults = faults                              # test-only link faults, or None
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        for k in STATS:
            stats.setdefault(k, 0)

    # --- sending ----------------------------------------------------------------------

    async def start(self, peers: list[str]) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                             connect=3))
        for p in peers:
            self.out[p] = FrameQueue()
            self._tasks.append(asyncio.create_task(self._dial_forever(p)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Close the links peers dialled to us, or the server would wait for them.
        await asyncio.gather(*(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                               for ws in list(self._inbound_ws)), return_exceptions=True)
        if self._session:
            await self._session.close()

    def send(self, peer: str, kind: str, payload: bytes) -> None:
        if peer in self.out:
            self._put(peer, codec.encode([kind, payload]))

    def _put(self, peer: str, frame: bytes) -> None:
        if self.faults is None:
            self._enqueue(peer, frame)
            return
        delays = self.faults.copies(peer)
        if not delays:
            self.stats["frames_faulted"] += 1
        for delay in delays:
            if delay:
                asyncio.get_running_loop().call_later(delay / 1000, self._enqueue, peer, frame)
            else:
                self._enqueue(peer, frame)

    def _enqueue(self, peer: str, frame: bytes) -> None:
        if not self.links.get(peer):
            # Nothing is kept for a peer that is down: by the time it is back, what was
            # queued is stale (a restarted node was handed tens of thousands of gossiped
            # transactions it had long committed). Consensus recovers what it lost by
            # fetching, gossip by passing waiting transactions on again.
            self.stats["frames_unlinked"] += 1
            return
        try:
            self.out[peer].put_nowait(frame)
        except asyncio.QueueFull:
            self.stats["frames_dropped"] += 1         # a slow peer must not stall us

    def send_to_key(self, pubkey: bytes, kind: str, payload: bytes) -> bool:
        for peer, pk in self.peer_keys.items():
            if pk == pubkey:
                self.send(peer, kind, payload)
                return True
        return False

    def broadcast(self, kind: str, payload: bytes) -> None:
        frame = codec.encode([kind, payload])
        for peer in self.out:
            self._put(peer, frame)

    def push_inbound(self, kind: str, payload: bytes, skip: set) -> None:
        """Send on the links peers dialled to us (not to the keys in `skip`): how a full
        node nobody dials still hears of every committed block."""
        frame = None
        for pubkey, q in self.inbound_out.values():
            if pubkey in skip:
                continue
            frame = frame or codec.encode([kind, payload])
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:
                self.stats["frames_dropped"] += 1

    def connected(self) -> list[str]:
        return sorted(p for p, up in self.links.items() if up)

    async def _dial_forever(self, peer: str) -> None:
        backoff = 0.1
        while True:
            try:
                async with self._session.ws_connect(f"http://{peer}/p2p", max_msg_size=MAX_FRAME,
                                                    heartbeat=10) as ws:
                    await self._client_handshake(ws, peer)
                    self.links[peer] = True
                    backoff = 0.1
                    log.info("link to %s up", peer)
                    # Until either direction ends: the reader notices a dropped link even
                    # when there is nothing to send.
                    tasks = {asyncio.create_task(self._receive_frames(ws, self.peer_keys[peer])),
                             asyncio.create_task(self._send_frames(ws, self.out[peer]))}
                    try:
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                    for t in done:
                        if not t.cancelled() and t.exception() is not None:
                            log.debug("link to %s: %s", peer, t.exception())
            except asyncio.CancelledError:
                raise
            except HandshakeError as e:
                self.stats["handshakes_failed"] += 1
                log.warning("handshake with %s failed: %s", peer, e)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError) as e:
                log.debug("link to %s: %s", peer, e)
            if self.links.get(peer):
                log.info("link to %s down", peer)
            self.links[peer] = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 3.0)

    async def _client_handshake(self, ws, peer: str) -> None:
        nonce = os.urandom(32)
        await ws.send_bytes(_hello(self.chain, self.kp, nonce))
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise HandshakeError(f"peer closed during the handshake ({msg.type.name})")
        h = _parse_hello(msg.data, self.chain, want_sig=True)
        if not keys.verify(h["pubkey"], _proof(self.chain, b"server", nonce, self.kp.pubkey),
                           h["sig"]):
            raise HandshakeError("server's handshake signature does not verify")
        known = self.peer_keys.get(peer)
        if known is not None and known != h["pubkey"]:
            raise HandshakeError("peer presented a different key than before")
        self.peer_keys[peer] = h["pubkey"]
        sig = self.kp.sign(_proof(self.chain, b"client", h["nonce"], h["pubkey"]))
        await ws.send_bytes(codec.encode({"sig": sig}))

    async def _send_frames(self, ws, q: asyncio.Queue) -> None:
        """Write a link's queued frames until it closes (either direction of link)."""
        while not ws.closed:
            frame = await q.get()
            try:
                await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError) as e:   # closing under us: stop writing
                log.debug("link closed while writing: %s", e)
                return
            self.stats["frames_out"] += 1

    async def _receive_frames(self, ws, pubkey: bytes) -> None:
        """Hand every frame from an authenticated link on, until it ends; a malformed
        frame closes it (the sender is buggy or hostile)."""
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                return
            frame = self._parse_frame(msg.data)
            if frame is None:
                self.stats["bad_frames"] += 1
                await ws.close(code=aiohttp.WSCloseCode.UNSUPPORTED_DATA,
                               message=b"malformed frame")
                return
            if self.faults is not None and self.faults.ignores(pubkey):
                self.stats["frames_faulted"] += 1          # partitioned from this peer
                continue
            self.stats["frames_in"] += 1
            await self.on_frame(frame[0], frame[1], pubkey)

    # --- receiving --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The /p2p endpoint: authenticate the dialler, then hand its frames on."""
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=10)
        await ws.prepare(request)
        self._inbound_ws.add(ws)
        try:
            return await self._serve_link(ws, request)
        finally:
            self._inbound_ws.discard(ws)

    async def _serve_link(self, ws, request) -> web.WebSocketResponse:
        try:
            pubkey = await self._server_handshake(ws)
        except (TimeoutError, HandshakeError) as e:
            self.stats["handshakes_failed"] += 1
            log.warning("inbound handshake from %s failed: %s", request.remote, e)
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION,
                           message=str(e)[:100].encode())
            return ws
        self.inbound[pubkey] = self.inbound.get(pubkey, 0) + 1
        q = FrameQueue()
        self.inbound_out[id(ws)] = (pubkey, q)
        writer = asyncio.create_task(self._send_frames(ws, q))
        try:
            await self._receive_frames(ws, pubkey)
        finally:
            self.inbound[pubkey] -= 1
            del self.inbound_out[id(ws)]
            writer.cancel()
        return ws

    async def _server_handshake(self, ws) -> bytes:
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise HandshakeError("expected a binary HELLO")
        h = _parse_hello(msg.data, self.chain, want_sig=False)
        nonce = os.urandom(32)
        sig = self.kp.sign(_proof(self.chain, b"server", h["nonce"], h["pubkey"]))
        await ws.send_bytes(_hello(self.chain, self.kp, nonce, {"sig": sig}))
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY or len(msg.data) > 256:
            raise HandshakeError("expected a binary PROOF")
        try:
            proof = codec.decode(msg.data)
        except codec.EncodingError as e:
            raise HandshakeError(f"proof: {e}") from None
        if type(proof) is not dict or set(proof) != {"sig"} or type(proof["sig"]) is not bytes:
            raise HandshakeError("proof must be {sig}")
        if not keys.verify(h["pubkey"], _proof(self.chain, b"client", nonce, self.kp.pubkey),
                           proof["sig"]):
            raise HandshakeError("client's handshake signature does not verify")
        return h["pubkey"]

    @staticmethod
    def _parse_frame(data: bytes):
        try:
            frame = codec.decode(data, MAX_FRAME)
        except codec.EncodingError:
            return None
        if type(frame) is not list or len(frame) != 2 or frame[0] not in KINDS or \
                type(frame[1]) is not bytes:
            return None
        return frame
