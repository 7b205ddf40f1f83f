"""State sync: a new node takes a peer's snapshot instead of replaying the chain.

**What a peer serves** (node/daemon/api.py routes, all read from the store):

* `GET /v1/snapshots`: the snapshots it keeps, `{"snapshots": [{height, chunks, bytes,
  root}]}` (root: the state root the manifest names, hex; a claim, not a proof).
* `GET /v1/snapshots/{s}`: the **proof** that makes snapshot s trustworthy, canonical
  msgpack `{"height": s, "manifest", "chunks": n, "headers": [header s, ..., header h'],
  "cert": commit certificate of h'}`.
* `GET /v1/snapshots/{s}/chunks/{i}`: chunk i's bytes.

**The trust anchor.** The root a store keeps beside block s is that node's own
computation: nothing certifies it. What a quorum certifies is a block header, and a
header names the state root after an earlier height (`exec_height`, `exec_root`): the
proposer's executed state when it proposed. So the proof is the chain of headers from
s to the first later block h' whose exec_height e >= s, with h''s commit certificate
(2f+1 COMMITs of the genesis validators, `M.check_commit_cert`): the certificate makes
h' committed, each header's `prev` the hash of the one before, so every header in the
proof is the committed one, block s's included. A replica refuses a proposal whose
exec_height is more than 2*window below its height, so h' <= s + 2*window + 1: the proof
holds at most 2*window + 2 headers (a few KiB), and a node builds it from its store
without executing anything.

* e == s (the usual case: a proposer executes a block before the next proposal under
  light load): the certified root is h''s exec_root, and the manifest is checked
  against it before any chunk is fetched (`snapshot.check_manifest`).
* e > s (pipelined proposals skipped s): the manifest is checked for consistency with
  its own root, the chunks against the manifest, and then the certified blocks s+1..e
  (fetched from `/v1/sync`, each matched to its certified header) are replayed on the
  restored state: the root reached at e must be the certified exec_root. Only then is
  anything written to the store.

**Fetching.** Every peer is asked for its snapshots; the highest height that some peer
can prove is taken (a peer whose proof does not verify is avoided, and the height below
tried if nobody proves this one). Chunks are fetched from every peer that offers that
snapshot (the same root), round-robin, IN_FLIGHT at once, and checked in index order by
`snapshot.Assembly` (a group split across chunks must arrive part by part): at most
AHEAD chunks wait to be checked. A peer that serves a chunk that does not check, a
proof that does not verify, or that fails STRIKES requests (timeouts, errors, answers
over the bounds) is logged once with the reason and avoided for the rest of the sync;
its chunks are fetched again from the others. A split group is checked only at its
final part: if its parts came from one peer, that peer is the culprit; if from several,
none is blamed yet and the whole group is fetched again from one peer, which is then
the culprit if it fails again.

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
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from lendnet.consensus import messages as M
from lendnet.ledger import codec, lending, snapshot
from lendnet.ledger import tx as txm
from lendnet.ledger.ledger import BlockError

log = logging.getLogger("lendnet.statesync")

MAX_OFFERS = 16                    # snapshots in one peer's listing
OFFERS_BYTES = 64 << 10            # the listing's JSON
PROOF_BYTES = M.MAX_MSG_BYTES      # manifest (<= 13 tables x 256 groups) + headers + cert
MAX_CHUNKS = 1 << 20               # chunks in one snapshot (a TiB at the default size)
IN_FLIGHT = 4                      # chunk requests at once
AHEAD = 16                         # chunks fetched but not yet checked, at most
STRIKES = 3                        # failed requests before a peer is avoided
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=20)
PROGRESS_S = 2.0                   # a progress line at most this often
BUSY_TRIES, BUSY_WAIT_S = 5, 5     # a peer's 429s waited out: how often, how long each


class ProofError(ValueError):
    """A snapshot proof that does not verify."""


class PeerFailed(Exception):
    """A request to a peer that failed: not an answer to judge, no answer at all."""


# --- serving ------------------------------------------------------------------------------

def offers(store) -> list[dict]:
    """The snapshots this store keeps, latest first, as GET /v1/snapshots lists them."""
    out = []
    for h in store.snapshot_heights():
        size, got = store.snapshot_size(h), store.get_snapshot(h)
        if size is None or got is None:
            continue                                   # pruned away in between
        out.append({"height": h, "chunks": size[0], "bytes": size[1],
                    "root": got[0]["root"].hex()})
    return out


def proof(store, s: int, window: int) -> dict | None:
    """The proof for the snapshot at `s` (see the module docstring), or None if the store
    has no such snapshot, no longer holds block s, or holds no block yet that certifies
    a root at or after s."""
    got, size, first = store.get_snapshot(s), store.snapshot_size(s), store.get_block(s)
    if got is None or size is None or first is None:
        return None
    headers = [first[0]["header"]]
    for h in range(s + 1, min(store.height, s + 2 * window + 1) + 1):
        stored = store.get_block(h)
        if stored is None:
            return None
        headers.append(stored[0]["header"])
        if stored[0]["header"]["exec_height"] >= s:
            return {"height": s, "manifest": got[0], "chunks": size[0],
                    "headers": headers, "cert": stored[1]}
    return None


@dataclass
class Certified:
    """A verified proof: the snapshot at `height`, and the root certified at
    `exec_height` (== height, or above: then blocks height+1..exec_height replay to it)."""
    height: int
    manifest: dict
    chunks: int
    hashes: dict[int, bytes]         # height -> certified block hash, height..h'
    exec_height: int
    exec_root: bytes


def check_proof(obj, s: int, vals: M.Validators, window: int) -> Certified:
    """ProofError unless `obj` proves the snapshot at s against the genesis validators."""
    if type(obj) is not dict or set(obj) != {"height", "manifest", "chunks", "headers",
                                             "cert"}:
        raise ProofError("the proof is not a {height, manifest, chunks, headers, cert} map")
    if obj["height"] != s:
        raise ProofError(f"the proof is for height {obj['height']!r}, not {s}")
    n = obj["chunks"]
    if type(n) is not int or not 1 <= n <= MAX_CHUNKS:
        raise ProofError(f"chunk count {n!r} is not 1..{MAX_CHUNKS}")
    headers = obj["headers"]
    if type(headers) is not list or not 2 <= len(headers) <= 2 * window + 2:
        raise ProofError(f"the proof must hold 2 to {2 * window + 2} headers")
    hashes: dict[int, bytes] = {}
    prev = None
    for i, header in enumerate(headers):
        try:
            M.check_header(header)
        except M.MessageError as e:
            raise ProofError(f"header {i}: {e}") from None
        if header["height"] != s + i:
            raise ProofError(f"header {i} is of height {header['height']}, not {s + i}")
        if prev is not None and header["prev"] != prev:
            raise ProofError(f"header {s + i} does not link to the hash of header {s + i - 1}")
        prev = hashes[s + i] = M.block_hash(header)
    last = headers[-1]
    e = last["exec_height"]
    if e < s or any(h["exec_height"] >= s for h in headers[1:-1]):
        raise ProofError(f"the last header must be the first to certify a root at or "
                         f"after {s} (it certifies {e})")
    try:
        M.check_commit_cert(obj["cert"], last["height"], prev, vals)
    except M.MessageError as err:
        raise ProofError(f"block {last['height']}: {err}") from None
    m = obj["manifest"]
    try:
        # e > s: the manifest's root is certified only by the replay to e (sync)
        snapshot.check_manifest(m, last["exec_root"] if e == s else
                                m.get("root") if type(m) is dict else None)
    except snapshot.SnapshotError as err:
        raise ProofError(str(err)) from None
    return Certified(s, m, n, hashes, e, last["exec_root"])


# --- fetching -----------------------------------------------------------------------------

@dataclass(eq=False)
class Peer:
    addr: str                                  # host:port
    offers: dict = field(default_factory=dict)  # height -> root (bytes) it lists
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
                        wait = resp.headers.get("Retry-After", "1")
                        wait = min(int(wait), BUSY_WAIT_S) if wait.isdigit() else 1
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
                cert = await self._prove(s)
                if cert is None:
                    continue
                try:
                    got = await self._fetch(cert)
                except NoSource as e:
                    log.warning("state sync: snapshot at height %d: %s", s, e)
                    continue
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
        except ValueError as e:
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
            peer.offers[h] = root
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
            log.info("state sync: chose the snapshot at height %d (%d chunks, root %s, "
                     "certified by block %d at height %d), proof from %s", s, cert.chunks,
                     cert.manifest["root"].hex()[:16], max(cert.hashes), cert.exec_height,
                     peer.addr)
            return cert
        log.warning("state sync: no peer proves its snapshot at height %d", s)
        return None

    def _sources(self, cert: Certified) -> list[Peer]:
        root = cert.manifest["root"]
        return [p for p in self.peers if not p.avoided and p.offers.get(cert.height) == root]

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
        asm = snapshot.Assembly(cert.manifest)
        chunks: list[bytes] = []                 # checked, in order
        nbytes = 0
        got: dict[int, tuple[bytes, Peer]] = {}  # fetched, not yet checked
        tasks: dict[asyncio.Task, tuple[int, Peer]] = {}
        retry: deque[int] = deque()
        pinned: dict[int, Peer] = {}             # a split group fetched again from one peer
        next_fetch = next_add = 0
        split_from: int | None = None            # first chunk of a split group being added
        split_peers: set = set()
        started = last_log = time.monotonic()
        log.info("state sync: fetching %d chunks of the snapshot at height %d from %s", n,
                 s, ", ".join(p.addr for p in self._sources(cert)))
        try:
            while next_add < n:
                while len(tasks) < IN_FLIGHT:
                    if retry:
                        i = retry.popleft()
                    elif next_fetch < min(n, next_add + AHEAD):
                        i, next_fetch = next_fetch, next_fetch + 1
                    else:
                        break
                    peer = self._pick(cert, pinned.get(i))
                    tasks[asyncio.create_task(self._chunk(peer, s, i))] = (i, peer)
                if not tasks:
                    raise NoSource("nothing left to fetch it from")   # (not reached)
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
                while next_add in got:
                    data, peer = got.pop(next_add)
                    try:
                        completed = asm.add(data)
                    except snapshot.SnapshotError as e:
                        start = next_add if split_from is None else split_from
                        culprits = split_peers | {peer}
                        asm.drop_partial()
                        if len(culprits) == 1:
                            self.avoid(peer, f"served chunk {next_add} of the snapshot at "
                                             f"height {s}, which does not check: {e}")
                        else:
                            # parts of one group from several peers: fetch them all
                            # from one, which answers for them
                            honest = [p for p in self._sources(cert) if p not in culprits]
                            one = (honest or [p for p in self._sources(cert)] or [peer])[0]
                            log.info("state sync: a group split over chunks %d..%d, served "
                                     "by %s, does not check (%s): fetching it again from %s",
                                     start, next_add, ", ".join(p.addr for p in culprits),
                                     e, one.addr)
                            for j in range(start, next_add + 1):
                                pinned[j] = one
                        for j in range(start, next_add + 1):
                            got.pop(j, None)
                            retry.append(j)
                        nbytes -= sum(len(c) for c in chunks[start:])
                        del chunks[start:]
                        next_add, split_from, split_peers = start, None, set()
                        # what an avoided peer fetched ahead is fetched again
                        for j in [j for j, (_, p) in got.items() if p.avoided]:
                            del got[j]
                            retry.append(j)
                        break
                    chunks.append(data)
                    nbytes += len(data)
                    if completed:
                        split_from, split_peers = None, set()
                    else:
                        split_from = next_add if split_from is None else split_from
                        split_peers.add(peer)
                    pinned.pop(next_add, None)
                    next_add += 1
                now = time.monotonic()
                if now - last_log >= PROGRESS_S:
                    last_log = now
                    log.info("state sync: %d/%d chunks, %d bytes, %.1f s", next_add, n,
                             nbytes, now - started)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            state = asm.state()
        except snapshot.SnapshotError as e:         # every group checked: not expected
            raise NoSource(f"the chunks do not make the whole state: {e}") from None
        log.info("state sync: %d chunks, %d bytes checked in %.1f s; the state gives root "
                 "%s", n, nbytes, time.monotonic() - started, state.root().hex()[:16])
        blocks = await self._blocks(cert, state)
        if blocks is None:
            return None
        return chunks, nbytes, blocks, cert.exec_height - s

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
