"""Snapshots as a peer serves them, and the proof that makes one trustworthy to a node
that state-syncs from it (statesync.py).

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
"""
from __future__ import annotations

from dataclasses import dataclass

from lendnet.consensus import messages as M
from lendnet.ledger import snapshot

MAX_CHUNKS = 1 << 20               # chunks in one snapshot (a TiB at the default size)


class ProofError(ValueError):
    """A snapshot proof that does not verify."""


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
    `exec_height` (== height, or above: then blocks height+1..exec_height replay to it).
    `chunks` is the proof peer's word (nothing certifies it); `peer` who gave it."""
    height: int
    manifest: dict
    chunks: int
    hashes: dict[int, bytes]         # height -> certified block hash, height..h'
    exec_height: int
    exec_root: bytes
    peer: object = None


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
