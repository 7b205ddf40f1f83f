"""State sync: a new node takes a peer's snapshot instead of replaying the chain.

What a peer serves, and why a snapshot it proves can be trusted: snapproof.py.

**Fetching.** Every peer is asked for its snapshots; the highest height that some peer
can prove is taken (a peer whose proof does not verify, or disagrees with its own
listing, is avoided, and another peer's proof, then the height below, tried). Chunks are
fetched from every peer that lists that snapshot as the proof has it (root and chunk
count), round-robin, IN_FLIGHT at once, and added in index order (`InOrder`): each must
check against the manifest (`snapshot.Assembly`) and continue the manifest's groups
exactly where the previous chunk ended (chunks are packed in that order, a split
group's parts consecutive), and the last must end them; at most AHEAD chunks wait to be
added. A chunk that does not check or is out of place may be its server's fault or the
previous chunk's (which may have ended early, or begun a split group that does not
exist): both are taken back. If one peer served both, it is logged once with the reason
and avoided for the rest of the sync; if two, both are fetched again from one peer,
which answers for them next time. A peer that fails STRIKES requests (timeouts, errors,
answers over the bounds; a 429 is waited out) is avoided too, and what it had to serve
is fetched from the others. If the chosen snapshot cannot be had after all, the peer
that proved it is avoided and another peer's proof of the same height is tried.

**The result** goes to the empty store in one transaction: block s (its header certified
by the proof, its certificate checked too), the blocks s+1..e if any, the snapshot at s
(the chunks as received: every one checked), and base s-1. The node is then built over
the store as at any start (`Node` restores snapshot s and replays s+1..e) and follows
the chain from there as a full node does. Block s's transactions are not in the
transaction index (their receipts come from executing s, which this node did not).

**When no peer can serve a good snapshot** (none offered, none proven, every source
avoided) `sync` returns None and the daemon falls back, with a WARNING, to block-by-block
sync from genesis (certificates are checked there too, so this is slower, not less
safe). A young chain has no snapshot yet, and replaying it is then quick.

Every answer is bounded before it is decoded: the listing (OFFERS_BYTES, MAX_OFFERS),
the proof (PROOF_BYTES), a chunk (`snapshot.MAX_CHUNK_BYTES`), blocks (`M.MAX_MSG_BYTES`),
and each request in time (REQUEST_TIMEOUT).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from lendnet.consensus import messages as M
from lendnet.ledger import codec, lending, snapshot
from lendnet.ledger import tx as txm
from lendnet.ledger.ledger import BlockError

from .snapproof import MAX_CHUNKS, Certified, ProofError, check_proof

log = logging.getLogger("lendnet.statesync")

MAX_OFFERS = 16                    # snapshots in one peer's listing
OFFERS_BYTES = 64 << 10            # the listing's JSON
PROOF_BYTES = M.MAX_MSG_BYTES      # manifest (<= 13 tables x 256 groups) + headers + cert
IN_FLIGHT = 4                      # chunk requests at once
AHEAD = 16                         # chunks fetched but not yet checked, at most
STRIKES = 3                        # failed requests before a peer is avoided
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=20)
PROGRESS_S = 2.0                   # a progress line at most this often
BUSY_TRIES, BUSY_WAIT_S = 5, 5     # a peer's 429s waited out: how often, how long each
RETRY_AFTER = re.compile(r"[0-9]{1,9}")    # a 429's Retry-After, whole seconds


class PeerFailed(Exception):
    """A request to a peer that failed: not an answer to judge, no answer at all."""


@dataclass(eq=False)
class Peer:
    addr: str                                  # host:port
    offers: dict = field(default_factory=dict)  # height -> (root, chunks) it lists
    strikes: int = 0
    avoided: str | None = None                 # why, once avoided


@dataclass
class Synced:
    height: int
    chunks: int
    bytes: int
    seconds: float
    replayed: int                              # blocks s+1..e replayed to check the root
    avoided: dict[str, str]                    # peer -> why


class NoSource(Exception):
    """Every peer that offers the snapshot is avoided."""


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise PeerFailed(f"{what}: {resp.content_length} bytes, over the {limit}-byte limit")
    data = bytearray()
    async for piece in resp.content.iter_chunked(1 << 16):
        data += piece
        if len(data) > limit:
            raise PeerFailed(f"{what}: over the {limit}-byte limit")
    return bytes(data)


class InOrder:
    """A snapshot's chunks added to an `Assembly` in index order, and who to blame when
    one does not fit.

    `snapshot.chunks` packs groups in the manifest's order, and a split group's parts
    are consecutive chunks; so each chunk's groups must continue exactly where the
    previous chunk's ended, and the last chunk must end the manifest. A *unit* is one
    chunk of whole groups, or the chunks of one split group. A unit that does not check,
    or is out of place, may be its server's fault or the previous unit's (which may have
    ended early, or begun a split that does not exist): both are taken back, and their
    servers are the suspects."""

    def __init__(self, manifest: dict, n: int):
        self.asm = snapshot.Assembly(manifest)
        self.order = self.asm.missing()        # every group, in the manifest's order
        self.n = n
        self.pos = 0                           # groups in place so far
        self.chunks: list[bytes] = []          # added, in order
        self.bytes = 0
        self.unit: tuple[int, set] = (0, set())            # the unit being added
        self.prev: tuple[int, set, list] | None = None     # the last one added whole

    @property
    def next(self) -> int:
        return len(self.chunks)

    def add(self, data: bytes, peer) -> tuple[int, set, str] | None:
        """Add chunk `next`: None if it checks and is in place; else (the first chunk to
        fetch again, the suspects, why), everything from that chunk on taken back."""
        i = self.next
        try:
            completed = self.asm.add(data)
        except snapshot.SnapshotError as e:
            completed, why = [], f"chunk {i}, which does not check: {e}"
        else:
            why = self._misplaced(i, completed)
            if why:
                self.asm.forget(completed)
        start, servers = self.unit[0], self.unit[1] | {peer}
        if why is None:
            self.chunks.append(data)
            self.bytes += len(data)
            if completed:
                self.pos += len(completed)
                self.prev, self.unit = (start, servers, completed), (i + 1, set())
            else:
                self.unit = (start, servers)
            return None
        self.asm.drop_partial()
        if self.prev is not None:
            pstart, pservers, pcompleted = self.prev
            self.asm.forget(pcompleted)
            self.pos -= len(pcompleted)
            start, servers = pstart, servers | pservers
        self.prev, self.unit = None, (start, set())
        self.bytes -= sum(map(len, self.chunks[start:]))
        del self.chunks[start:]
        return start, servers, why

    def _misplaced(self, i: int, completed: list) -> str | None:
        names = [(t, g) for t, g, _ in completed]
        progress = self.asm.in_progress()
        expected = self.order[self.pos] if self.pos < len(self.order) else None
        if names and names != self.order[self.pos:self.pos + len(names)]:
            return (f"chunk {i}, out of place: its groups begin at {names[0]}, the next in "
                    f"the manifest is {expected}")
        if names and progress:
            return (f"chunk {i}, out of place: it completes groups while the split group "
                    f"{progress[0]} has not ended")
        if not names and progress != [expected]:
            return (f"chunk {i}, out of place: a part of {progress}, the next group in the "
                    f"manifest is {expected}")
        if i == self.n - 1 and self.pos + len(names) != len(self.order):
            return (f"chunk {i}, the last of {self.n}, yet "
                    f"{len(self.order) - self.pos - len(names)} groups are missing")
        return None


class StateSync:
    """One state sync of an empty store from `peers` (host:port each)."""

    def __init__(self, peers: list[str], chain_id: str, vals: M.Validators, window: int):
        self.peers = [Peer(a) for a in dict.fromkeys(peers)]
        self.chain_id, self.vals, self.window = chain_id, vals, window
        self._turn = 0
        self.http: aiohttp.ClientSession | None = None

    # --- the peers --------------------------------------------------------------------

    def avoid(self, peer: Peer, why: str) -> None:
        if peer.avoided is None:
            peer.avoided = why
            log.warning("state sync: avoiding peer %s for the rest of the sync: %s",
                        peer.addr, why)

    def strike(self, peer: Peer, why: str) -> None:
        peer.strikes += 1
        log.info("state sync: peer %s failed a request (%d of %d): %s", peer.addr,
                 peer.strikes, STRIKES, why)
        if peer.strikes >= STRIKES:
            self.avoid(peer, f"{STRIKES} failed requests, the last: {why}")

    async def _get(self, peer: Peer, path: str, limit: int) -> bytes:
        """The body of a 200 answer, at most `limit` bytes; PeerFailed otherwise. A 429
        (the peer's per-client rate limit) is not a failure: its Retry-After is waited
        out (BUSY_WAIT_S at most) up to BUSY_TRIES times."""
        for _ in range(BUSY_TRIES):
            try:
                async with self.http.get(f"http://{peer.addr}{path}") as resp:
                    if resp.status == 429:
                        # ASCII digits, few of them: str.isdigit() also takes '²' and
                        # 5,000 nines, on which int() raises
                        wait = resp.headers.get("Retry-After", "1")
                        wait = (min(int(wait), BUSY_WAIT_S) if RETRY_AFTER.fullmatch(wait)
                                else min(1, BUSY_WAIT_S))
                    elif resp.status != 200:
                        body = (await resp.content.read(512)).decode("utf-8", "replace")
                        raise PeerFailed(f"GET {path}: HTTP {resp.status} {body}")
                    else:
                        return await _read_bounded(resp, limit, f"GET {path}")
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise PeerFailed(f"GET {path}: {type(e).__name__} {e}") from None
            await asyncio.sleep(wait)
        raise PeerFailed(f"GET {path}: still rate-limited (429) after {BUSY_TRIES} tries")

    # --- the whole --------------------------------------------------------------------

    async def sync(self, store) -> Synced | None:
        """Fill the empty `store` from the best snapshot a peer can prove; None if none
        can be had (the caller falls back to block sync)."""
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as self.http:
            await asyncio.gather(*(self._list(p) for p in self.peers))
            heights = sorted({h for p in self.peers for h in p.offers}, reverse=True)
            if not heights:
                log.warning("state sync: no peer offers a snapshot")
            for s in heights:
                got = None
                # Another peer's proof of the same height, while the last one's snapshot
                # proved bad (its proof peer avoided, so each peer is tried once).
                while got is None and (cert := await self._prove(s)) is not None:
                    try:
                        got = await self._fetch(cert)
                    except NoSource as e:
                        # (it is one of the sources: its chunk count is the sources')
                        self.avoid(cert.peer, f"the snapshot at height {s} it proved could "
                                              f"not be had: {e}")
                if got is None:
                    continue
                chunks, nbytes, blocks, replayed = got
                store.put_batch(blocks=blocks, snapshots=[(s, cert.manifest, chunks)],
                                base=s - 1)
                return Synced(s, len(chunks), nbytes, time.monotonic() - started,
                              replayed, {p.addr: p.avoided for p in self.peers
                                         if p.avoided})
        return None

    async def _list(self, peer: Peer) -> None:
        try:
            body = json.loads(await self._get(peer, "/v1/snapshots", OFFERS_BYTES))
        except PeerFailed as e:
            self.strike(peer, str(e))
            return
        except (ValueError, RecursionError) as e:   # (json nests by recursion)
            self.avoid(peer, f"its snapshot listing is not JSON: {e}")
            return
        listed = body.get("snapshots") if type(body) is dict else None
        if type(listed) is not list or len(listed) > MAX_OFFERS:
            self.avoid(peer, f"its snapshot listing is not {{snapshots: [at most "
                             f"{MAX_OFFERS}]}}")
            return
        for o in listed:
            try:
                h, root = o["height"], bytes.fromhex(o["root"])
            except (TypeError, KeyError, ValueError):
                h, root = None, b""
            if type(h) is not int or h < 1 or len(root) != 32:
                self.avoid(peer, f"its snapshot listing has a bad entry {o!r:.200}")
                peer.offers.clear()
                return
            chunks = o.get("chunks")
            if type(chunks) is not int or not 1 <= chunks <= MAX_CHUNKS:
                self.avoid(peer, f"its snapshot listing has a bad chunk count {o!r:.200}")
                peer.offers.clear()
                return
            peer.offers[h] = (root, chunks)
        log.info("state sync: peer %s offers snapshots at %s", peer.addr,
                 sorted(peer.offers, reverse=True) or "no height")

    async def _prove(self, s: int) -> Certified | None:
        """The first proof of snapshot s that verifies, asking its peers in turn."""
        for peer in self.peers:
            if peer.avoided or s not in peer.offers:
                continue
            try:
                raw = await self._get(peer, f"/v1/snapshots/{s}", PROOF_BYTES)
            except PeerFailed as e:
                self.strike(peer, str(e))
                continue
            try:
                cert = check_proof(codec.decode(raw, PROOF_BYTES), s, self.vals, self.window)
            except (codec.EncodingError, ProofError) as e:
                self.avoid(peer, f"its proof of the snapshot at height {s} does not "
                                 f"verify: {e}")
                continue
            if peer.offers[s] != (cert.manifest["root"], cert.chunks):
                self.avoid(peer, f"its proof of the snapshot at height {s} does not agree "
                                 f"with its listing (root, chunk count)")
                continue
            cert.peer = peer
            log.info("state sync: chose the snapshot at height %d (%d chunks, root %s, "
                     "certified by block %d at height %d), proof from %s", s, cert.chunks,
                     cert.manifest["root"].hex()[:16], max(cert.hashes), cert.exec_height,
                     peer.addr)
            return cert
        log.warning("state sync: no peer proves its snapshot at height %d", s)
        return None

    def _sources(self, cert: Certified) -> list[Peer]:
        """The peers that list this snapshot as the proof has it: its root, its chunk
        count (a peer's own listing and proof must agree, `_prove`)."""
        want = (cert.manifest["root"], cert.chunks)
        return [p for p in self.peers if not p.avoided and p.offers.get(cert.height) == want]

    def _pick(self, cert: Certified, pinned: Peer | None) -> Peer:
        if pinned is not None and not pinned.avoided:
            return pinned
        sources = self._sources(cert)
        if not sources:
            raise NoSource("every peer that offers it is avoided")
        self._turn += 1
        return sources[self._turn % len(sources)]

    async def _chunk(self, peer: Peer, s: int, i: int) -> bytes:
        return await self._get(peer, f"/v1/snapshots/{s}/chunks/{i}",
                               snapshot.MAX_CHUNK_BYTES)

    async def _fetch(self, cert: Certified):
        """The snapshot's chunks, each checked; then the blocks to store. Returns
        (chunks, bytes, blocks, replayed), or None if the snapshot proved bad after all
        (its peer is avoided)."""
        s, n = cert.height, cert.chunks
        order = InOrder(cert.manifest, n)
        got: dict[int, tuple[bytes, Peer]] = {}  # fetched, not yet checked
        tasks: dict[asyncio.Task, tuple[int, Peer]] = {}
        retry: deque[int] = deque()
        pinned: dict[int, Peer] = {}             # chunks fetched again from one peer
        next_fetch = 0
        started = last_log = time.monotonic()
        log.info("state sync: fetching %d chunks of the snapshot at height %d from %s", n,
                 s, ", ".join(p.addr for p in self._sources(cert)))
        try:
            while order.next < n:
                while len(tasks) < IN_FLIGHT:
                    if retry:
                        i = retry.popleft()
                    elif next_fetch < min(n, order.next + AHEAD):
                        i, next_fetch = next_fetch, next_fetch + 1
                    else:
                        break
                    peer = self._pick(cert, pinned.get(i))
                    tasks[asyncio.create_task(self._chunk(peer, s, i))] = (i, peer)
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    i, peer = tasks.pop(t)
                    try:
                        data = t.result()
                    except PeerFailed as e:
                        self.strike(peer, str(e))
                        retry.append(i)
                        continue
                    if peer.avoided:                 # avoided while this was in flight
                        retry.append(i)
                        continue
                    got[i] = (data, peer)
                while order.next in got:
                    i = order.next
                    data, peer = got.pop(i)
                    bad = order.add(data, peer)
                    if bad is None:
                        pinned.pop(i, None)
                        continue
                    start, suspects, why = bad
                    if len(suspects) == 1:
                        self.avoid(peer, f"it served {why} (snapshot at height {s})")
                    else:
                        # The chunk, or the one before it, is wrong: fetch both from one
                        # peer, which then answers for them.
                        pool = self._sources(cert)
                        pool = [p for p in pool if p not in suspects] or pool
                        if not pool:
                            raise NoSource("every peer that offers it is avoided")
                        log.info("state sync: chunks %d..%d, served by %s, do not fit "
                                 "together (%s): fetching them again from %s", start, i,
                                 ", ".join(sorted(p.addr for p in suspects)), why,
                                 pool[0].addr)
                        for j in range(start, i + 1):
                            pinned[j] = pool[0]
                    for j in range(start, i + 1):
                        got.pop(j, None)
                        retry.append(j)
                    # what an avoided peer fetched ahead is fetched again
                    for j in [j for j, (_, p) in got.items() if p.avoided]:
                        del got[j]
                        retry.append(j)
                    break
                now = time.monotonic()
                if now - last_log >= PROGRESS_S:
                    last_log = now
                    log.info("state sync: %d/%d chunks, %d bytes, %.1f s", order.next, n,
                             order.bytes, now - started)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            state = order.asm.state()
        except snapshot.SnapshotError as e:         # every group placed: not expected
            raise NoSource(f"the chunks do not make the whole state: {e}") from None
        log.info("state sync: %d chunks, %d bytes checked in %.1f s; the state gives root "
                 "%s", n, order.bytes, time.monotonic() - started, state.root().hex()[:16])
        blocks = await self._blocks(cert, state)
        if blocks is None:
            return None
        return order.chunks, order.bytes, blocks, cert.exec_height - s

    async def _blocks(self, cert: Certified, state) -> list[tuple] | None:
        """Blocks s..e as the store takes them (each its certified one, with a checked
        certificate), and the replay of s+1..e on the restored state reaching the
        certified root; None (the sources avoided) if it does not."""
        s, e = cert.height, cert.exec_height
        raw: list[tuple[dict, list]] = []
        for peer in self._sources(cert):
            try:
                raw = await self._certified_blocks(peer, cert)
                break
            except PeerFailed as err:
                self.strike(peer, str(err))
            except (codec.EncodingError, M.MessageError, ValueError, TypeError,
                    KeyError) as err:
                self.avoid(peer, f"its blocks {s}..{e} are not the certified ones: {err}")
        if not raw:
            raise NoSource(f"no peer served the certified blocks {s}..{e}")
        out = [(s, raw[0][0], raw[0][1], cert.manifest["root"])]
        ledger = lending.from_state(self.chain_id, state, s)
        why = None
        for h, (block, c) in enumerate(raw[1:], s + 1):
            try:
                txs = [txm.parse(b) for b in block["txs"]]
                for tx in txs:                   # taken as checked, as Node._apply does
                    if tx.verified is None:
                        tx.verified = True
                result = ledger.apply_block(h, block["header"]["time"], txs, strict=False)
            except (txm.TxError, BlockError) as err:
                why = f"block {h} does not apply on it: {err}"
                break
            out.append((h, block, c, result.state_root,
                        [r.to_json() for r in result.receipts]))
        if why is None and ledger.state_root() != cert.exec_root:
            why = (f"replaying blocks {s + 1}..{e} on it reaches root "
                   f"{ledger.state_root().hex()}, not the certified {cert.exec_root.hex()}")
        if why is None:
            return out
        for p in self._sources(cert):
            self.avoid(p, f"its snapshot at height {s} is not the certified state: {why}")
        return None

    async def _certified_blocks(self, peer: Peer, cert: Certified) -> list[tuple[dict, list]]:
        """Blocks s..e from a peer's /v1/sync, each the certified one (its hash the
        proof's), its transactions its header's, its certificate a quorum's."""
        s, e = cert.height, cert.exec_height
        out: list[tuple[dict, list]] = []
        while s + len(out) <= e:
            h = s + len(out)
            entries = codec.decode(await self._get(
                peer, f"/v1/sync/{h}?count={min(256, e - h + 1)}", M.MAX_MSG_BYTES),
                M.MAX_MSG_BYTES)
            if type(entries) is not list or not entries:
                raise PeerFailed(f"GET /v1/sync/{h}: no blocks")
            for entry in entries[:e - h + 1]:
                block, c = entry
                M.check_block(block)
                d = M.block_hash(block["header"])
                if d != cert.hashes[s + len(out)]:
                    raise ValueError(f"block {s + len(out)} has hash {d.hex()}, the proof "
                                     f"certifies {cert.hashes[s + len(out)].hex()}")
                M.check_commit_cert(c, s + len(out), d, self.vals)
                out.append((block, c))
        return out
