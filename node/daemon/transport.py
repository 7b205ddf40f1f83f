"""Peer transport: authenticated, encrypted WebSocket links between nodes.

Each node dials every peer it is configured with and only *sends* its own traffic on
that link; what it receives arrives on the links its peers dialled (plus committed
blocks pushed to the full nodes that dialled it). So there is never a question of which
of two links to use, and a peer that restarts simply dials again.

Handshake (the dialler is the client; every field a fixed-size byte string):
    client -> HELLO  C = {chain, pubkey, nonce, eph}
    server -> HELLO  S = {chain, pubkey, nonce, eph,
                          sig = sign(DOMAIN | chain | "server" | H(C, S without sig))}
    client -> PROOF  {sig = sign(DOMAIN | chain | "client" | H(C, S))}
    server -> WELCOME  an empty frame sealed under the new keys (or a close saying why
                       the link is refused: banned, inbound links full)
`eph` is a fresh X25519 key of each side, `nonce` 32 fresh bytes. Each signature covers
the whole transcript so far — both nonces, both identity keys, both ephemeral keys — so
neither side can be impersonated, an old handshake cannot be replayed, and the ephemeral
keys are bound to the identities; WELCOME confirms both derived the same keys. The
dialler knows the key it expects (peers are `pubkey@host:port`) and refuses a server
that presents another one.

Both then derive one key per direction, BLAKE2b keyed with the X25519 shared secret over
H(C, S), personalised "c2s"/"s2c". Every later frame is sealed with XSalsa20-Poly1305
(libsodium's secretbox) under its direction's key, with the frame's number in that
direction as the nonce: the nonce is never sent, so a replayed, dropped, reordered or
altered frame fails authentication, and the link is closed and its peer banned. Forward
secrecy comes from the ephemeral keys, which live only in the handshake. The plaintext
is canonical msgpack [kind, payload bytes]; a frame on the wire (ciphertext: plaintext
plus a 16-byte MAC) is at most MAX_FRAME bytes.

Bounds: at most MAX_INBOUND inbound links, MAX_INBOUND_NONVALIDATOR of them from keys
that are not validators of the genesis, MAX_HANDSHAKING handshakes in progress, one
inbound link per key (a new one replaces the old: a restarted peer must get back in at
once), MAX_HANDSHAKING_PER_IP handshakes from one address, each done within
HANDSHAKE_TIMEOUT. Outgoing frames wait in a bounded queue per link; a peer that lets it pass its
byte (or frame) cap is not reading, and its link is closed. A peer that sends a
malformed or unauthentic frame, or BAN_STRIKES messages with invalid signatures, is
disconnected and its key banned for BAN_SECONDS: its links are refused, and a banned
configured peer is not dialled until the ban ends. Links redial with backoff.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Protocol

import aiohttp
import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
from aiohttp import web
from lendnet.ledger import codec, keys

DOMAIN = b"lendnet/p2p-handshake/2\x00"
MAX_FRAME = 4 * 1024 * 1024 + 4096       # bytes on the wire (the ciphertext)
MAC_BYTES = sodium.crypto_secretbox_MACBYTES
QUEUE_FRAMES = 4_096                     # frames waiting for one link, at most
QUEUE_BYTES = 64 << 20                   # bytes waiting for a validator's link, at most
QUEUE_BYTES_NONVALIDATOR = 8 << 20       # ... for anyone else's (a full node, a stranger)
MAX_INBOUND = 64                         # inbound links in all
MAX_INBOUND_NONVALIDATOR = 16            # inbound links from keys not in the genesis
MAX_HANDSHAKING = 32                     # inbound handshakes in progress
MAX_HANDSHAKING_PER_IP = 8               # ... from one address (all of them cannot hog it)
BAN_SECONDS = 600.0                      # how long a misbehaving peer's key is refused
BAN_STRIKES = 3                          # invalid signatures from one key before a ban
MAX_TRACKED = 10_000                     # banned keys and keys with strikes remembered
STATS = ("frames_in", "frames_out", "frames_dropped", "frames_unlinked", "bad_frames",
         "handshakes_failed", "frames_faulted", "frames_unauthentic", "peers_wrong_key",
         "peers_banned", "peer_strikes", "links_refused_banned", "links_refused_full",
         "links_replaced", "links_overflowed")
KINDS = ("msg", "txs", "block")      # consensus message, transactions, committed block
HANDSHAKE_TIMEOUT = 5.0
BACKOFF_S = (0.1, 3.0)                   # redial: first wait, longest wait

log = logging.getLogger("lendnet.p2p")


class HandshakeError(Exception):
    pass


class WrongKey(HandshakeError):
    """The dialled address answered with another key than the one configured for it."""


class Unauthentic(Exception):
    """A frame that does not open under the link's key and next nonce."""


def _transcript(*parts: bytes) -> bytes:
    return nacl.hash.blake2b(b"".join(len(p).to_bytes(4, "big") + p for p in parts),
                             digest_size=32, person=b"lendnet-p2p-th",
                             encoder=nacl.encoding.RawEncoder)


def _proof(chain: str, role: bytes, transcript: bytes) -> bytes:
    return DOMAIN + chain.encode() + b"\x00" + role + transcript


def _hello(chain: str, pubkey: bytes, nonce: bytes, eph: bytes,
           extra: dict | None = None) -> bytes:
    return codec.encode({"chain": chain, "pubkey": pubkey, "nonce": nonce, "eph": eph,
                         **(extra or {})})


def _parse_hello(data, chain: str, want_sig: bool) -> dict:
    if type(data) is not bytes or len(data) > 1024:
        raise HandshakeError("handshake frame must be a short binary frame")
    try:
        h = codec.decode(data)
    except codec.EncodingError as e:
        raise HandshakeError(f"handshake: {e}") from None
    fields = {"chain", "pubkey", "nonce", "eph"} | ({"sig"} if want_sig else set())
    if type(h) is not dict or set(h) != fields:
        raise HandshakeError(f"handshake fields must be {sorted(fields)}")
    if h["chain"] != chain:
        raise HandshakeError(f"peer is on chain {h['chain']!r}, this node on {chain!r}")
    if any(type(h[k]) is not bytes or len(h[k]) != 32 for k in ("pubkey", "nonce", "eph")):
        raise HandshakeError("handshake pubkey, nonce and eph must be 32 bytes")
    if want_sig and (type(h["sig"]) is not bytes or len(h["sig"]) != 64):
        raise HandshakeError("handshake sig must be 64 bytes")
    return h


class Session:
    """One link's frame protection: a key and a frame counter per direction."""

    def __init__(self, send_key: bytes, recv_key: bytes):
        self._send_key, self._recv_key = send_key, recv_key
        self.sent = 0
        self.received = 0

    @classmethod
    def derive(cls, eph_secret: bytes, their_eph: bytes, transcript: bytes,
               client: bool) -> Session:
        try:
            shared = sodium.crypto_scalarmult(eph_secret, their_eph)
        except nacl.exceptions.CryptoError:        # a low-order point: no shared secret
            raise HandshakeError("peer's ephemeral key is not usable") from None
        c2s, s2c = (nacl.hash.blake2b(transcript, digest_size=32, key=shared, person=p,
                                      encoder=nacl.encoding.RawEncoder)
                    for p in (b"lendnet-p2p-c2s", b"lendnet-p2p-s2c"))
        return cls(c2s, s2c) if client else cls(s2c, c2s)

    def seal(self, plain: bytes) -> bytes:
        nonce = self.sent.to_bytes(24, "little")
        self.sent += 1
        return sodium.crypto_secretbox_easy(plain, nonce, self._send_key)

    def open(self, box: bytes) -> bytes:
        try:
            plain = sodium.crypto_secretbox_open_easy(box, self.received.to_bytes(24, "little"),
                                                      self._recv_key)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, TypeError):
            raise Unauthentic(f"frame {self.received} does not authenticate") from None
        self.received += 1
        return plain


async def client_handshake(ws, chain: str, kp: keys.Keypair,
                           expect: bytes | None = None) -> tuple[bytes, Session]:
    """Run the dialler's side of the handshake on an open WebSocket: the server's key
    (WrongKey if `expect` is given and it is another) and the link's Session."""
    nonce, eph_secret = os.urandom(32), os.urandom(32)
    c = _hello(chain, kp.pubkey, nonce, sodium.crypto_scalarmult_base(eph_secret))
    await ws.send_bytes(c)
    msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
    if msg.type != aiohttp.WSMsgType.BINARY:
        why = f": {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
        raise HandshakeError(f"peer closed during the handshake ({msg.type.name}{why})")
    h = _parse_hello(msg.data, chain, want_sig=True)
    if expect is not None and h["pubkey"] != expect:
        raise WrongKey(f"it presented key {h['pubkey'].hex()}, configured {expect.hex()}")
    unsigned = _hello(chain, h["pubkey"], h["nonce"], h["eph"])
    if not keys.verify(h["pubkey"], _proof(chain, b"server", _transcript(c, unsigned)),
                       h["sig"]):
        raise HandshakeError("server's handshake signature does not verify")
    th = _transcript(c, msg.data)
    await ws.send_bytes(codec.encode({"sig": kp.sign(_proof(chain, b"client", th))}))
    session = Session.derive(eph_secret, h["eph"], th, client=True)
    msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)      # WELCOME, or a refusal
    if msg.type != aiohttp.WSMsgType.BINARY:
        why = f": {msg.extra}" if msg.type == aiohttp.WSMsgType.CLOSE and msg.extra else ""
        raise HandshakeError(f"peer refused the link ({msg.type.name}{why})")
    try:
        if session.open(msg.data) != b"":
            raise Unauthentic("WELCOME must be empty")
    except Unauthentic as e:
        raise HandshakeError(f"peer's WELCOME: {e}") from None
    return h["pubkey"], session


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
    """Frames waiting for one link, bounded in count and in bytes: QueueFull past
    either (the link's owner then closes it: that peer is not reading)."""

    def __init__(self, max_bytes: int | None = None):
        super().__init__(QUEUE_FRAMES)
        self.max_bytes = QUEUE_BYTES if max_bytes is None else max_bytes
        self.bytes = 0

    def put_nowait(self, frame: bytes) -> None:
        if self.bytes + len(frame) > self.max_bytes:
            raise asyncio.QueueFull
        super().put_nowait(frame)
        self.bytes += len(frame)

    def get_nowait(self) -> bytes:
        frame = super().get_nowait()
        self.bytes -= len(frame)
        return frame


class Link:
    """An authenticated link to one peer, either direction, while it is up."""

    def __init__(self, ws, pubkey: bytes, session: Session, max_bytes: int,
                 name: str, abort=None):
        self.ws = ws
        self.pubkey = pubkey
        self.session = session
        self.queue = FrameQueue(max_bytes)
        self.name = name                  # for the log: "host:port" or "inbound from ..."
        self.abort = abort                # drops the connection at once (no close frame)
        self.ended = asyncio.Event()
        self.why = ""
        self.rude = False                 # ended for misbehaving: no polite close

    def end(self, why: str, rude: bool = False) -> None:
        if not self.ended.is_set():
            self.why, self.rude = why, rude
            self.ended.set()


class Transport:
    """Links to peers. `on_frame(kind, payload, peer_pubkey)` is called for every frame
    received from an authenticated peer. `validators` are the genesis's keys: their
    links get the larger queue and are not counted against the non-validator limit."""

    def __init__(self, chain: str, kp: keys.Keypair, on_frame, stats: dict,
                 faults: LinkHook | None = None, validators=(), clock=time.monotonic):
        self.chain = chain
        self.kp = kp
        self.on_frame = on_frame
        self.stats = stats
        self.validators = frozenset(validators)
        self.clock = clock
        self.dial: dict[str, bytes | None] = {}           # "host:port" -> key configured
        self.peer_keys: dict[str, bytes] = {}             # "host:port" -> its key, once known
        self.outbound: dict[str, Link] = {}               # "host:port" -> link, while up
        self.inbound: dict[bytes, Link] = {}              # pubkey -> the link it dialled
        self.banned: dict[bytes, float] = {}              # pubkey -> banned until (clock)
        self.strikes: dict[bytes, tuple[int, float]] = {}  # pubkey -> (count, since)
        self._handshaking = 0
        self._handshaking_from: dict[str, int] = {}       # remote address -> handshakes
        self._inbound_ws: set = set()
        self.faults = faults                              # test-only link faults, or None
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        for k in STATS:
            stats.setdefault(k, 0)

    # --- bans -------------------------------------------------------------------------

    def banned_for(self, pubkey: bytes) -> float:
        """Seconds left of this key's ban (0: not banned)."""
        until = self.banned.get(pubkey)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self.banned[pubkey]
            return 0.0
        return left

    def active_bans(self) -> int:
        return sum(1 for k in list(self.banned) if self.banned_for(k))

    def ban(self, pubkey: bytes, why: str) -> None:
        """Disconnect this peer and refuse its key for BAN_SECONDS."""
        self.banned.pop(pubkey, None)
        self.banned[pubkey] = self.clock() + BAN_SECONDS
        while len(self.banned) > MAX_TRACKED:              # the oldest ban goes first
            del self.banned[next(iter(self.banned))]
        self.strikes.pop(pubkey, None)
        self.stats["peers_banned"] += 1
        log.warning("banned peer %s for %d s: %s", pubkey.hex(), BAN_SECONDS, why)
        for link in [*self.outbound.values(), *self.inbound.values()]:
            if link.pubkey == pubkey:
                link.end(f"banned: {why}")

    def penalise(self, pubkey: bytes, why: str) -> bool:
        """This peer sent what only a buggy or hostile node sends (an invalid
        signature): its BAN_STRIKES-th such thing within BAN_SECONDS bans it. True if
        it is banned now (the caller stops reading what it sent)."""
        self.stats["peer_strikes"] += 1
        if self.banned_for(pubkey):
            return True
        now = self.clock()
        count, since = self.strikes.pop(pubkey, (0, now))
        if now - since > BAN_SECONDS:
            count, since = 0, now
        if count + 1 >= BAN_STRIKES:
            self.ban(pubkey, why)
            return True
        self.strikes[pubkey] = (count + 1, since)
        while len(self.strikes) > MAX_TRACKED:
            del self.strikes[next(iter(self.strikes))]
        return False

    # --- sending ----------------------------------------------------------------------

    async def start(self, peers: list[tuple[str, bytes | None]]) -> None:
        """Dial each (host:port, its key or None) for as long as the transport runs."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                             connect=3))
        for addr, pubkey in peers:
            self.dial[addr] = pubkey
            if pubkey is None:
                log.warning("peer %s is configured without its key: the first key it "
                            "presents is taken unchecked (give it as PUBKEY@%s)", addr, addr)
            else:
                self.peer_keys[addr] = pubkey
            self._tasks.append(asyncio.create_task(self._dial_forever(addr)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Close the links peers dialled to us, or the server would wait for them.
        for link in list(self.inbound.values()):
            link.end("stopping")
        await asyncio.gather(*(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                               for ws in list(self._inbound_ws)), return_exceptions=True)
        if self._session:
            await self._session.close()

    def send(self, peer: str, kind: str, payload: bytes) -> None:
        if peer in self.dial:
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
        link = self.outbound.get(peer)
        if link is None:
            # Nothing is kept for a peer that is down: by the time it is back, what was
            # queued is stale (a restarted node was handed tens of thousands of gossiped
            # transactions it had long committed). Consensus recovers what it lost by
            # fetching, gossip by passing waiting transactions on again.
            self.stats["frames_unlinked"] += 1
            return
        self._offer(link, frame)

    def _offer(self, link: Link, frame: bytes) -> None:
        if link.ended.is_set():
            self.stats["frames_dropped"] += 1
            return
        if len(frame) + MAC_BYTES > MAX_FRAME:
            self.stats["frames_dropped"] += 1        # the peer would refuse it: a bug here
            log.error("not sending a %d-byte frame (over MAX_FRAME)", len(frame))
            return
        try:
            link.queue.put_nowait(frame)
        except asyncio.QueueFull:
            # A peer this far behind is not reading (paused, or hostile): what waits for
            # it is bounded by closing its link, not by dropping frames forever.
            self.stats["links_overflowed"] += 1
            self.stats["frames_dropped"] += 1
            log.warning("closing the link %s: %d frames (%d bytes) wait for it unread",
                        link.name, link.queue.qsize(), link.queue.bytes)
            link.end("not reading", rude=True)

    def send_to_key(self, pubkey: bytes, kind: str, payload: bytes) -> bool:
        for peer, pk in self.peer_keys.items():
            if pk == pubkey:
                self.send(peer, kind, payload)
                return True
        return False

    def broadcast(self, kind: str, payload: bytes) -> None:
        frame = codec.encode([kind, payload])
        for peer in self.dial:
            self._put(peer, frame)

    def push_inbound(self, kind: str, payload: bytes, skip: set) -> None:
        """Send on the links peers dialled to us (not to the keys in `skip`): how a full
        node nobody dials still hears of every committed block."""
        frame = None
        for pubkey, link in list(self.inbound.items()):
            if pubkey in skip:
                continue
            frame = frame or codec.encode([kind, payload])
            self._offer(link, frame)

    def connected(self) -> list[str]:
        return sorted(self.outbound)

    def _queue_cap(self, pubkey: bytes) -> int:
        return QUEUE_BYTES if pubkey in self.validators else QUEUE_BYTES_NONVALIDATOR

    async def _dial_forever(self, peer: str) -> None:
        backoff = BACKOFF_S[0]
        while True:
            known = self.peer_keys.get(peer)
            wait = self.banned_for(known) if known is not None else 0.0
            if wait:
                await asyncio.sleep(wait)
            try:
                async with self._session.ws_connect(f"http://{peer}/p2p", max_msg_size=MAX_FRAME,
                                                    heartbeat=10) as ws:
                    pubkey, session = await client_handshake(ws, self.chain, self.kp, known)
                    if self.banned_for(pubkey):
                        raise HandshakeError("its key is banned here")
                    self.peer_keys[peer] = pubkey
                    conn = ws._response.connection
                    link = Link(ws, pubkey, session, self._queue_cap(pubkey), peer,
                                abort=conn.transport.abort if conn and conn.transport
                                else None)
                    self.outbound[peer] = link
                    backoff = BACKOFF_S[0]
                    log.info("link to %s up", peer)
                    try:
                        await self._run_link(link)
                    finally:
                        del self.outbound[peer]
                    log.info("link to %s down%s", peer, f": {link.why}" if link.why else "")
            except asyncio.CancelledError:
                raise
            except WrongKey as e:
                self.stats["peers_wrong_key"] += 1
                self.stats["handshakes_failed"] += 1
                log.warning("refused the peer at %s: %s", peer, e)
            except HandshakeError as e:
                self.stats["handshakes_failed"] += 1
                log.warning("handshake with %s failed: %s", peer, e)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError) as e:
                log.debug("link to %s: %s", peer, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _run_link(self, link: Link) -> None:
        """Until either direction ends, or the link is ended (banned, not reading,
        replaced): the reader notices a dropped link even when there is nothing to
        send."""
        tasks = {asyncio.create_task(self._receive_frames(link)),
                 asyncio.create_task(self._send_frames(link)),
                 asyncio.create_task(link.ended.wait())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                log.debug("link %s: %s", link.name, t.exception())
        if link.rude and link.abort is not None:
            link.abort()                 # a misbehaving peer gets no orderly close
        elif not link.ws.closed:
            try:
                await asyncio.wait_for(link.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY,
                                                     message=link.why[:100].encode()), 2)
            except (TimeoutError, ConnectionError, RuntimeError):
                if link.abort is not None:
                    link.abort()

    async def _send_frames(self, link: Link) -> None:
        """Seal and write a link's queued frames, in order, until it closes."""
        ws, q = link.ws, link.queue
        while not ws.closed:
            frame = await q.get()
            try:
                await ws.send_bytes(link.session.seal(frame))
            except (ConnectionError, RuntimeError) as e:   # closing under us: stop writing
                log.debug("link closed while writing: %s", e)
                return
            self.stats["frames_out"] += 1

    async def _receive_frames(self, link: Link) -> None:
        """Open and hand on every frame of an authenticated link, until it ends. A frame
        that is unauthentic (altered, replayed, out of order), malformed or too big ends
        the link and bans its peer: only a buggy or hostile node sends one."""
        async for msg in link.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                # A protocol violation (too big, a bad opcode) or a text frame is the
                # peer's doing; any other error is the connection's (a peer killed
                # mid-frame) and no reason to ban.
                if msg.type == aiohttp.WSMsgType.TEXT or (
                        msg.type == aiohttp.WSMsgType.ERROR
                        and isinstance(msg.data, aiohttp.WebSocketError)):
                    self.stats["bad_frames"] += 1
                    self.ban(link.pubkey, f"sent a bad frame ({msg.type.name}: "
                                          f"{str(msg.data)[:80]})")
                return
            try:
                plain = link.session.open(msg.data)
            except Unauthentic as e:
                self.stats["frames_unauthentic"] += 1
                self.ban(link.pubkey, str(e))
                return
            frame = self._parse_frame(plain)
            if frame is None:
                self.stats["bad_frames"] += 1
                self.ban(link.pubkey, "sent a malformed frame")
                return
            if self.faults is not None and self.faults.ignores(link.pubkey):
                self.stats["frames_faulted"] += 1          # partitioned from this peer
                continue
            self.stats["frames_in"] += 1
            await self.on_frame(frame[0], frame[1], link.pubkey)
            if link.ended.is_set():
                return

    # --- receiving --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The /p2p endpoint: authenticate the dialler, admit it if there is room, then
        hand its frames on."""
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=10)
        await ws.prepare(request)
        ip = request.remote or ""
        if self._handshaking >= MAX_HANDSHAKING or \
                self._handshaking_from.get(ip, 0) >= MAX_HANDSHAKING_PER_IP:
            self.stats["links_refused_full"] += 1
            await ws.close(code=aiohttp.WSCloseCode.TRY_AGAIN_LATER, message=b"busy")
            return ws
        self._inbound_ws.add(ws)
        try:
            return await self._serve_link(ws, request, ip)
        finally:
            self._inbound_ws.discard(ws)

    def _refusal(self, pubkey: bytes, authenticated: bool) -> str | None:
        """Why a link from this key is not admitted now, or None."""
        left = self.banned_for(pubkey)
        if left:
            self.stats["links_refused_banned"] += 1
            return f"banned for {left:.0f} s more"
        others = [k for k in self.inbound if k != pubkey]
        if authenticated and len(others) >= MAX_INBOUND:
            self.stats["links_refused_full"] += 1
            return f"inbound links full ({MAX_INBOUND})"
        if pubkey not in self.validators and sum(
                1 for k in others if k not in self.validators) >= MAX_INBOUND_NONVALIDATOR:
            self.stats["links_refused_full"] += 1
            return f"inbound links from non-validators full ({MAX_INBOUND_NONVALIDATOR})"
        return None

    async def _serve_link(self, ws, request, ip: str) -> web.WebSocketResponse:
        self._handshaking += 1
        self._handshaking_from[ip] = self._handshaking_from.get(ip, 0) + 1
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):     # the whole of it
                pubkey, session = await self._server_handshake(ws)
            why = self._refusal(pubkey, authenticated=True)
            if why:
                raise HandshakeError(why)
        except (TimeoutError, HandshakeError) as e:
            self.stats["handshakes_failed"] += 1
            log.warning("inbound handshake from %s failed: %s", request.remote,
                        e if str(e) else f"not done within {HANDSHAKE_TIMEOUT} s")
            await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION,
                           message=str(e)[:100].encode())
            return ws
        finally:
            self._handshaking -= 1
            self._handshaking_from[ip] -= 1
            if not self._handshaking_from[ip]:
                del self._handshaking_from[ip]
        try:
            await ws.send_bytes(session.seal(b""))              # WELCOME: admitted
        except (ConnectionError, RuntimeError):
            return ws
        old = self.inbound.get(pubkey)
        if old is not None:
            self.stats["links_replaced"] += 1
            old.end("replaced by a newer link from the same key")
        transport = request.transport
        link = Link(ws, pubkey, session, self._queue_cap(pubkey),
                    f"from {request.remote} ({pubkey.hex()[:16]})",
                    abort=transport.abort if transport is not None else None)
        self.inbound[pubkey] = link
        try:
            await self._run_link(link)
        finally:
            if self.inbound.get(pubkey) is link:
                del self.inbound[pubkey]
        return ws

    async def _server_handshake(self, ws) -> tuple[bytes, Session]:
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise HandshakeError("expected a binary HELLO")
        c = msg.data
        h = _parse_hello(c, self.chain, want_sig=False)
        why = self._refusal(h["pubkey"], authenticated=False)  # only its own key suffers
        if why:
            raise HandshakeError(why)
        nonce, eph_secret = os.urandom(32), os.urandom(32)
        eph = sodium.crypto_scalarmult_base(eph_secret)
        unsigned = _hello(self.chain, self.kp.pubkey, nonce, eph)
        sig = self.kp.sign(_proof(self.chain, b"server", _transcript(c, unsigned)))
        s = _hello(self.chain, self.kp.pubkey, nonce, eph, {"sig": sig})
        await ws.send_bytes(s)
        msg = await ws.receive(timeout=HANDSHAKE_TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY or len(msg.data) > 256:
            raise HandshakeError("expected a binary PROOF")
        try:
            proof = codec.decode(msg.data)
        except codec.EncodingError as e:
            raise HandshakeError(f"proof: {e}") from None
        if type(proof) is not dict or set(proof) != {"sig"} or type(proof["sig"]) is not bytes:
            raise HandshakeError("proof must be {sig}")
        th = _transcript(c, s)
        if not keys.verify(h["pubkey"], _proof(self.chain, b"client", th), proof["sig"]):
            raise HandshakeError("client's handshake signature does not verify")
        return h["pubkey"], Session.derive(eph_secret, h["eph"], th, client=False)

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
