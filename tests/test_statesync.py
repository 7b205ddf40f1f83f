"""State sync (node/daemon/statesync.py) against real daemons in this process: real
aiohttp servers on 127.0.0.1, real stores. Two peers serve one chain (a lone validator's
store, and a copy of it behind a full node); one of them is bent by a test hook (a
middleware: no production code knows of it) to corrupt a chunk or a proof, and the
syncing node must notice, avoid it, and finish from the other with the certified root."""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lendnet.consensus import messages as M
from lendnet.ledger import codec, snapshot
from lendnet.ledger.keys import Keypair
from lendnet.ledger.state import State
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.store import MemoryStore
from lendnet.node.daemon import home as H
from lendnet.node.daemon import snapproof, statesync
from lendnet.node.daemon.daemon import Daemon
from lendnet.node.daemon.hooks import Hooks
from lendnet.node.daemon.sqlstore import SQLiteStore
from lendnet.node.harness.workload import LendingWorkload

from .stored_chain import T0, run_alone

CHAIN = "lendnet-statesync"
EVERY = 16                     # a snapshot every 16 blocks
CHUNK = 8_192                  # small chunks: many of them (contract code rows are ~2 KiB)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A lone validator's home with a stored chain whose snapshots have small chunks."""
    home = tmp_path_factory.mktemp("validator")
    kp = Keypair.from_name("statesync-validator")
    workload = LendingWorkload(CHAIN, 3, random.Random(3), 400)
    genesis = Genesis(CHAIN, T0, workload.balances(), (kp.pubkey,),
                      dict(H.DAEMON_PARAMS, snapshot_every=EVERY), lending=H.dev_lending())
    H.init_home(home, H.NodeConfig("127.0.0.1", 0, []), kp=kp, genesis=genesis)
    store = SQLiteStore(str(home / "node.db"))
    original = snapshot.chunks
    snapshot.chunks = functools.partial(original, max_bytes=CHUNK)
    try:
        run_alone(Node(genesis, kp, store, T0 * 1000), workload, 400)
    finally:
        snapshot.chunks = original
        store.close()
    return home, genesis


def _peer_home(root: Path, chain) -> Path:
    """A full node's home holding a copy of the validator's store."""
    src, genesis = chain
    home = root / "peer"
    H.init_home(home, H.NodeConfig("127.0.0.1", 0, []), genesis=genesis)
    shutil.copy(src / "node.db", home / "node.db")
    return home


def _bend(path: str, change):
    """A hook: a middleware that passes the answers to GET paths matching the regular
    expression `path` through `change(path, body) -> body`."""
    @web.middleware
    async def bent(request: web.Request, handler):
        resp = await handler(request)
        if re.fullmatch(path, request.path) and resp.status == 200:
            return web.Response(body=change(request.path, resp.body),
                                content_type=resp.content_type)
        return resp
    return Hooks(routes=lambda app: app.middlewares.append(bent))


def _flip_chunk(path: str, body: bytes) -> bytes:
    b = bytearray(body)
    b[-3] ^= 0x01                              # in a row's value: still msgpack, mostly
    return bytes(b)


def _forge_proof(path: str, body: bytes) -> bytes:
    # The certificate of another block: well formed, signed, not for this header.
    p = codec.decode(body, len(body))
    p["headers"][-1] = dict(p["headers"][-1], time=p["headers"][-1]["time"] + 1)
    return codec.encode(p)


async def _sync(tmp_path, chain, bent: Hooks, caplog, bend_store=None):
    src, genesis = chain
    good = Daemon(src)
    bad = Daemon(_peer_home(tmp_path, chain), bent)
    if bend_store is not None:
        bend_store(bad.store)
    await good.start()
    await bad.start()
    try:
        store = SQLiteStore(str(tmp_path / "new.db"))
        cfg = genesis.config()
        sync = statesync.StateSync([f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"],
                                   genesis.chain_id, cfg.validators, cfg.window)
        with caplog.at_level(logging.INFO, logger="lendnet.statesync"):
            got = await sync.sync(store)
        node = Node(genesis, Keypair.from_name("new"), store, T0 * 1000)
        return got, node, store, good, bad
    finally:
        await bad.stop()
        await good.stop()


async def test_a_peer_serving_a_bad_chunk_is_avoided_and_the_sync_finishes(tmp_path, chain,
                                                                         caplog):
    # (bent in its store: a chunk's answer is streamed, not a body a middleware rewrites)
    def bend(store):
        read = store.get_chunk
        store.get_chunk = lambda s, i: None if (c := read(s, i)) is None else _flip_chunk("", c)
    got, node, store, good, bad = await _sync(tmp_path, chain, Hooks(), caplog, bend)
    try:
        assert got is not None and got.chunks > 4, got
        s = got.height
        assert list(got.avoided) == [f"127.0.0.1:{bad.port}"], got.avoided
        assert "served chunk" in got.avoided[f"127.0.0.1:{bad.port}"]
        # the state is the certified one: the validator stored the same root there
        with _reopen(chain[0]) as v:
            assert node.ledger.state_root() == v.get_block(node.height)[2]
            assert store.get_block(s)[0] == v.get_block(s)[0]
        assert store.base == s - 1 and node.recovery[-1].startswith(
            f"restored the state from the snapshot at height {s}")
        assert sum("avoiding peer" in r.message for r in caplog.records) == 1
    finally:
        store.close()


async def test_a_peer_whose_proof_does_not_verify_is_refused(tmp_path, chain, caplog):
    bent = _bend(r"/v1/snapshots/\d+", _forge_proof)
    got, node, store, good, bad = await _sync(tmp_path, chain, bent, caplog)
    try:
        why = got.avoided[f"127.0.0.1:{bad.port}"]
        assert "proof" in why and "COMMITs" in why, why
        with _reopen(chain[0]) as v:
            assert node.ledger.state_root() == v.get_block(node.height)[2]
    finally:
        store.close()


class _reopen:
    """The validator's store, read after its daemon stopped."""

    def __init__(self, home: Path):
        self.store = SQLiteStore(str(home / "node.db"))

    def __enter__(self):
        return self.store

    def __exit__(self, *exc):
        self.store.close()


def test_a_proof_is_checked_link_by_link(chain):
    src, genesis = chain
    cfg = genesis.config()
    with _reopen(src) as store:
        s = store.snapshot_heights()[0]
        p = snapproof.proof(store, s, cfg.window)
    assert p is not None
    got = snapproof.check_proof(p, s, cfg.validators, cfg.window)
    assert got.height == s and got.exec_height >= s
    bad = [dict(p, height=s + 1),
           dict(p, chunks=0),
           dict(p, headers=p["headers"][:1]),
           dict(p, headers=[dict(p["headers"][0], time=1)] + p["headers"][1:]),
           dict(p, cert=[]),
           dict(p, manifest=dict(p["manifest"], root=bytes(32))),
           {k: v for k, v in p.items() if k != "cert"}]
    for b in bad:
        with pytest.raises(snapproof.ProofError):
            snapproof.check_proof(b, s, cfg.validators, cfg.window)


def test_a_memory_store_serves_chunks_as_the_disk_store_does(chain):
    src, _ = chain
    with _reopen(src) as disk:
        s = disk.snapshot_heights()[0]
        m, chunks = disk.get_snapshot(s)
        chunks = list(chunks)
        mem = MemoryStore()
        mem.put_batch(blocks=[(s, *disk.get_block(s))], snapshots=[(s, m, chunks)],
                      base=s - 1)
        for st in (disk, mem):
            assert st.snapshot_size(s) == (len(chunks), sum(map(len, chunks)))
            assert [st.get_chunk(s, i) for i in range(len(chunks))] == chunks
            assert st.get_chunk(s, len(chunks)) is None and st.get_chunk(s + 1, 0) is None
        assert snapproof.offers(mem) == snapproof.offers(disk)[:1]


async def test_a_root_certified_above_the_snapshot_is_reached_by_replaying_to_it(chain):
    # A pipelined chain may certify no root at s itself, only at a later e: the blocks
    # s+1..e are fetched, matched to the certified headers and replayed on the restored
    # state, which must reach the certified root at e. (The lone validator's chain
    # certifies every height, so the certified view is made from its store here.)
    src, genesis = chain
    cfg = genesis.config()
    with _reopen(src) as v:
        s = v.snapshot_heights()[0]
        e = s + 2
        m, chunks = v.get_snapshot(s)
        chunks = list(chunks)
        hashes = {h: M.block_hash(v.get_block(h)[0]["header"]) for h in range(s, e + 1)}
        root_e = v.get_block(e)[2]
    good = Daemon(src)
    await good.start()
    try:
        for exec_root, ok in ((root_e, True), (bytes(32), False)):
            cert = snapproof.Certified(s, m, len(chunks), hashes, e, exec_root)
            sync = statesync.StateSync([f"127.0.0.1:{good.port}"], genesis.chain_id,
                                       cfg.validators, cfg.window)
            sync.peers[0].offers[s] = (m["root"], len(chunks))
            state = snapshot.restore(m, chunks, m["root"])
            async with aiohttp.ClientSession() as sync.http:
                blocks = await sync._blocks(cert, state)
            if ok:
                assert [b[0] for b in blocks] == [s, s + 1, s + 2] and blocks[-1][3] == root_e
                assert sync.peers[0].avoided is None
            else:
                assert blocks is None and "not the certified" in sync.peers[0].avoided
    finally:
        await good.stop()


# --- who is blamed: InOrder on a state whose groups are split over chunks ---------------

def _split_state():
    st = State()
    for i in range(1_000):           # a few a group: several groups to a chunk
        st.tables["accounts"].put(f"ln{i:040x}", (i, 0))
    for i in range(12_000):          # ~47 a group: over a 1 KiB chunk, split
        st.tables["lenders"].put(f"ln{i:040x}", 1)
    m = snapshot.manifest(st)
    cs = list(snapshot.chunks(st, max_bytes=1_024))
    return m, cs


def _sections(chunk: bytes) -> list:
    return codec.decode(chunk, len(chunk))[2]


@pytest.fixture(scope="module")
def split():
    m, cs = _split_state()
    parts = [i for i, c in enumerate(cs) if len(_sections(c)) == 1 and not _sections(c)[0][3]]
    assert parts, "no split group: the test state is too small"
    return m, cs, parts


def _feed(order: statesync.InOrder, cs: list, who) -> list:
    out = []
    while order.next < len(cs) and not out:
        i = order.next
        got = order.add(cs[i], who(i))
        if got is not None:
            out.append(got)
    return out


def test_chunks_in_order_from_several_peers_make_the_state(split):
    m, cs, _ = split
    order = statesync.InOrder(m, len(cs))
    assert _feed(order, cs, lambda i: "AB"[i % 2]) == []
    assert order.asm.state().root() == m["root"] and order.chunks == cs


def test_a_bad_last_part_of_a_split_group_from_one_peer_blames_it(split):
    m, cs, parts = split
    first = parts[0]
    last = first + 1
    while not _sections(cs[last])[0][3]:       # the group's final part
        last += 1
    bad = list(cs)
    sec = _sections(cs[last])
    sec[0][4][-1][1] = 2                       # a changed value in the final part
    bad[last] = codec.encode([snapshot.VERSION, m["root"], sec])
    order = statesync.InOrder(m, len(cs))
    got = _feed(order, bad, lambda i: "L")
    assert got and got[0][1] == {"L"} and "does not check" in got[0][2]
    assert got[0][0] < first + 1 and order.next == got[0][0]
    # mixed peers: both suspected, and everything from the previous unit taken back
    order = statesync.InOrder(m, len(cs))
    got = _feed(order, bad, lambda i: "L" if i == last else "A")
    assert got[0][1] == {"A", "L"}
    assert _feed(order, cs, lambda i: "A") == [] and order.asm.state().root() == m["root"]


def test_a_chunk_that_leaves_out_groups_is_found_at_the_next_one(split):
    m, cs, _ = split
    i = next(i for i, c in enumerate(cs) if len(_sections(c)) >= 2)
    short = list(cs)
    short[i] = codec.encode([snapshot.VERSION, m["root"], _sections(cs[i])[:-1]])
    order = statesync.InOrder(m, len(cs))
    got = _feed(order, short, lambda j: "L" if j == i else "B")
    assert got[0][1] == {"L", "B"} and "out of place" in got[0][2], got
    assert order.next == i                     # L's chunk taken back, B's too
    assert _feed(order, cs, lambda j: "B") == [] and order.asm.state().root() == m["root"]
    # the same from one peer: it alone is blamed; and a last chunk that ends early
    order = statesync.InOrder(m, len(cs))
    assert _feed(order, short, lambda j: "L")[0][1] == {"L"}
    order = statesync.InOrder(m, len(cs) - 1)
    got = _feed(order, cs[:-1], lambda j: "L")
    assert got and "groups are missing" in got[0][2]


async def test_a_peer_that_keeps_timing_out_is_avoided(tmp_path, chain, caplog, monkeypatch):
    @web.middleware
    async def slow(request: web.Request, handler):
        if "/chunks/" in request.path:
            await asyncio.sleep(1.0)           # past the (shortened) request timeout
        return await handler(request)
    monkeypatch.setattr(statesync, "REQUEST_TIMEOUT", aiohttp.ClientTimeout(total=0.2))
    got, node, store, good, bad = await _sync(
        tmp_path, chain, Hooks(routes=lambda app: app.middlewares.append(slow)), caplog)
    try:
        why = got.avoided[f"127.0.0.1:{bad.port}"]
        assert f"{statesync.STRIKES} failed requests" in why and "Timeout" in why, why
        with _reopen(chain[0]) as v:
            assert node.ledger.state_root() == v.get_block(node.height)[2]
    finally:
        store.close()


async def test_the_snapshot_listing_decodes_each_manifest_once_not_per_request(chain):
    """GET /v1/snapshots is open to strangers: its manifests (up to ~230 KiB each) are
    decoded when the kept snapshots change, not on every request."""
    src, _ = chain
    d = Daemon(src)
    await d.start()
    try:
        reads = []
        original = d.store.get_snapshot
        d.store.get_snapshot = lambda h: reads.append(h) or original(h)
        async with aiohttp.ClientSession() as s:
            listings = []
            for _ in range(10):
                async with s.get(f"http://127.0.0.1:{d.port}/v1/snapshots") as r:
                    listings.append(await r.json())
        kept = d.store.snapshot_heights()
        assert [o["height"] for o in listings[-1]["snapshots"]] == kept and kept
        # once each, not 10 times (twice if the validator took a snapshot meanwhile)
        assert set(kept) <= set(reads) and len(reads) <= 2 * len(kept), reads
    finally:
        await d.stop()
