"""A node restarts from the state its store keeps, replaying nothing (issue 19); without
one (an older store, or one found damaged) from its latest stored snapshot: the same
state, answers and next blocks as a node that replayed its chain from genesis; a damaged
snapshot falls back to the one before it, or to genesis; a daemon's store killed with
kill -9 at any moment, mid-write included, restarts to the root stored with its height
from its stored state, and from its snapshot when the stored state is taken away."""
from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.consensus import messages as M
from lendnet.ledger.keys import Keypair
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.shell import carry_out
from lendnet.node.core.store import SNAPSHOTS_KEPT, MemoryStore
from lendnet.node.daemon import home as H
from lendnet.node.daemon.sqlstore import SQLiteStore
from lendnet.node.harness.workload import LendingWorkload

from .stored_chain import Alone, _ahead
from .test_store import run_until_killed

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_225_600
CHAIN = "lendnet-restart"
KP = Keypair.from_name("restart-validator")


def make_genesis(seed: int, txs: int, every: int) -> tuple[Genesis, LendingWorkload]:
    workload = LendingWorkload(CHAIN, seed, random.Random(seed), txs)
    params = dict(H.DAEMON_PARAMS, snapshot_every=every)
    return Genesis(CHAIN, T0, workload.balances(), (KP.pubkey,), params,
                   lending=H.dev_lending()), workload


def drive(nodes: list[Node], workload: LendingWorkload, now: int, steps: int) -> int:
    """Run lone validators in lockstep: the same transactions and ticks to each."""
    shell, waiting = Alone(), []
    for _ in range(steps):
        fresh = waiting + workload.step(nodes[0].ledger)
        waiting = []
        for raw in fresh:
            took = [n.receive_tx(raw) for n in nodes]
            if not took[0] and _ahead(nodes[0], raw):
                waiting.append(raw)
        now += 25
        for n in nodes:
            carry_out(n, n.tick(now), shell)
    return now


def without_state(store: MemoryStore) -> MemoryStore:
    """A copy of the store as an older lendnet left it: no stored state, so a node
    restarts from a snapshot (or genesis) and replays."""
    other = copy.deepcopy(store)
    other.drop_state()
    return other


def without_snapshots(store: MemoryStore) -> MemoryStore:
    other = without_state(store)
    other.snapshots.clear()
    return other


NO_STATE = "the store holds no state: rebuilding it from a snapshot or genesis"


def answers(node: Node) -> dict:
    """What a client or peer can ask a node: every row of its state, its height,
    time and root, and the recent heights' headers, hashes and roots."""
    st_ = node.ledger.state
    return {"root": node.ledger.state_root(), "height": node.height,
            "time": node.ledger.time,
            "rows": {name: sorted(getattr(st_, name).items(), key=repr)
                     for name in st_.TABLES},
            "recent": [(node.header_at(h), node.block_hash(h), node.root_at(h))
                       for h in range(max(0, node.height - 70), node.height + 1)]}


@pytest.fixture(scope="module")
def built():
    genesis, workload = make_genesis(1, 300, 7)
    store = MemoryStore()
    node = Node(genesis, KP, store, T0 * 1000)
    now = drive([node], workload, T0 * 1000, 1_500)
    assert store.height >= 20 and len(store.snapshots) == SNAPSHOTS_KEPT
    assert max(store.snapshots) == store.height // 7 * 7
    return genesis, workload, store, now


def test_restart_from_stored_state_replays_nothing(built):
    genesis, _, store, now = built
    node = Node(genesis, KP, copy.deepcopy(store), now)
    assert node.recovery == [f"opened the stored state at height {store.height}: "
                             "replayed 0 blocks"]
    assert answers(node) == answers(Node(genesis, KP, without_snapshots(store), now))


def test_restart_from_snapshot_is_replay_from_genesis(built):
    genesis, workload, store, now = built
    a_store, b_store = without_state(store), without_snapshots(store)
    a = Node(genesis, KP, a_store, now)
    b = Node(genesis, KP, b_store, now)
    s = max(store.snapshots)
    assert a.recovery[-1].startswith(f"restored the state from the snapshot at height {s}")
    assert b.recovery == [NO_STATE]
    assert answers(a) == answers(b)
    assert a.ledger.state_root() == store.get_block(store.height)[2]
    # and the same next blocks: the same transactions and ticks to both
    more = LendingWorkload(CHAIN, 2, random.Random(2), 100)
    top = store.height
    drive([a, b], more, now, 400)
    assert a_store.height > top + 3
    for h in range(top + 1, a_store.height + 1):
        ablk, bblk = a_store.get_block(h), b_store.get_block(h)
        assert M.block_hash(ablk[0]["header"]) == M.block_hash(bblk[0]["header"])
        assert ablk[2] == bblk[2]
    assert answers(a) == answers(b)


def _damage(store: MemoryStore, h: int, what: str) -> None:
    m, cs = store.snapshots[h]
    if what == "chunk":
        bad = bytearray(cs[0])
        bad[len(bad) // 2] ^= 1
        store.snapshots[h] = (m, [bytes(bad)] + cs[1:])
    elif what == "missing":
        store.snapshots[h] = (m, cs[:-1] if len(cs) > 1 else [])
    else:
        m = copy.deepcopy(m)
        m["tables"][0][1][0][1] = bytes(32)
        store.snapshots[h] = (m, cs)


@pytest.mark.parametrize("what", ["chunk", "missing", "manifest"])
def test_damaged_snapshot_falls_back(built, what):
    genesis, _, store, now = built
    want = answers(Node(genesis, KP, without_snapshots(store), now))
    latest, older = sorted(store.snapshots, reverse=True)
    one = without_state(store)
    _damage(one, latest, what)
    node = Node(genesis, KP, one, now)
    assert node.recovery[0] == NO_STATE
    assert f"snapshot at height {latest} is damaged" in node.recovery[1]
    assert "an older snapshot" in node.recovery[1]
    assert node.recovery[2].startswith(f"restored the state from the snapshot at height {older}")
    assert answers(node) == want
    both = without_state(one)
    _damage(both, older, what)
    node = Node(genesis, KP, both, now)
    assert "replay from genesis" in node.recovery[2]
    assert node.recovery[-1] == "no usable snapshot: replaying the chain from genesis"
    assert answers(node) == want


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_keeps_the_latest_snapshots_in_its_block_transaction(tmp_path, built, kind):
    _, _, store, _ = built
    disk = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "node.db"))
    try:
        disk.put_batch(blocks=[(h, *store.get_block(h)) for h in range(1, 8)])
        with pytest.raises(ValueError, match="not a stored height"):
            disk.put_batch(blocks=[(8, *store.get_block(8))],
                           snapshots=[(9, {"version": 1}, [])])
        assert disk.height == 7 and disk.snapshot_heights() == []   # neither written
        with pytest.raises(ValueError, match="not bytes"):
            disk.put_batch(snapshots=[(7, {"version": 1}, ["text"])])
        for h in (2, 4, 6):
            disk.put_batch(snapshots=[(h, {"h": h}, [b"c%d" % h, b"d"])])
        disk.put_batch(records=[(("view",), 1)])       # records alone: none written
        assert disk.snapshot_heights() == [6, 4]
        m, cs = disk.get_snapshot(6)
        assert m == {"h": 6} and list(cs) == [b"c6", b"d"]
        assert disk.get_snapshot(2) is None
        if kind == "sqlite":
            assert disk._db.execute("SELECT count(*) FROM snapshot_chunks").fetchone()[0] == 4
    finally:
        disk.close()


def test_sqlite_restart_from_snapshot_and_fallback(tmp_path, built):
    genesis, _, store, now = built
    path = str(tmp_path / "node.db")
    disk = SQLiteStore(path)
    try:
        for h in range(1, store.height + 1):
            snaps = [(h, *store.snapshots[h])] if h in store.snapshots else []
            disk.put_batch(blocks=[(h, *store.get_block(h))], snapshots=snaps)
    finally:
        disk.close()
    want = answers(Node(genesis, KP, without_snapshots(store), now))
    disk = SQLiteStore(path)
    try:
        # a store an older lendnet wrote (no state): restored from its snapshot, and
        # the state written, so the next start opens it
        node = Node(genesis, KP, disk, now)
        assert node.recovery[0].startswith("the store holds no state")
        assert "restored" in node.recovery[1] and answers(node) == want
        node = Node(genesis, KP, disk, now)
        assert node.recovery == [f"opened the stored state at height {disk.height}: "
                                 "replayed 0 blocks"]
        assert answers(node) == want
        latest = disk.snapshot_heights()[0]
        disk._db.execute("UPDATE snapshot_chunks SET data = x'00' WHERE height = ?",
                         (latest,))
        disk._db.execute("DELETE FROM meta WHERE key = 'state_height'")
        node = Node(genesis, KP, disk, now)
        assert "damaged" in node.recovery[1] and answers(node) == want
    finally:
        disk.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10**6), st.sampled_from(["chunk", "manifest", "missing", "gone"]))
def test_any_damaged_chunk_byte_falls_back(built, seed, what):
    genesis, _, store, now = built
    latest = max(store.snapshots)
    one = without_state(store)
    m, cs = one.snapshots[latest]
    rng = random.Random(seed)
    if what == "chunk":
        i = rng.randrange(len(cs))
        bad = bytearray(cs[i])
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        one.snapshots[latest] = (m, cs[:i] + [bytes(bad)] + cs[i + 1:])
    elif what == "gone":
        one.snapshots[latest] = (m, [])
    else:
        _damage(one, latest, what)
    node = Node(genesis, KP, one, now)
    assert node.ledger.state_root() == store.get_block(store.height)[2]


# --- kill -9 ---------------------------------------------------------------------------

# A lone validator with a snapshot every `every` blocks, writing to its SQLite store as
# the daemon does; it prints each height once flushed. Killed at any moment (it writes
# without pause, so most kills land inside a write: block, state and snapshot), its
# store must restart to the root stored with its height, from the stored state with
# nothing replayed, and from the snapshot once the stored state is taken away. With
# every=1 each write holds a snapshot, so every kill lands in or between them.
_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[2])
from lendnet.node.core.node import Node
from lendnet.node.daemon.sqlstore import SQLiteStore
from tests.test_restart import KP, T0, drive, make_genesis
genesis, workload = make_genesis(int(sys.argv[3]), 100_000, int(sys.argv[4]))
store = SQLiteStore(sys.argv[1])
node = Node(genesis, KP, store, T0 * 1000)
now, last = T0 * 1000 + store.height * 1000, store.height
while True:
    now = drive([node], workload, now, 1)
    if store.height != last:
        last = store.height
        print(last, flush=True)
"""


def test_kill_9_at_any_moment_restarts_to_the_stored_root(tmp_path):
    # fresh stores: each child its own workload; each kill after a different count
    for i, (lines, every) in enumerate(((5, 3), (13, 1), (29, 3), (41, 1))):
        path = str(tmp_path / f"node{i}.db")
        reported = run_until_killed([_CHILD, path, str(ROOT), str(i + 1), str(every)], lines,
                                    str(tmp_path / "child.err"), timeout=120)
        genesis, _ = make_genesis(i + 1, 100_000, every)
        disk = SQLiteStore(path)
        try:
            assert disk.height >= reported
            heights = disk.snapshot_heights()
            assert heights and all(h % every == 0 for h in heights)
            assert len(heights) <= SNAPSHOTS_KEPT and heights[0] == disk.height // every * every
            node = Node(genesis, KP, disk, T0 * 1000)
            assert node.recovery == [f"opened the stored state at height {disk.height}: "
                                     "replayed 0 blocks"]
            assert node.ledger.state_root() == disk.get_block(disk.height)[2]
            disk._db.execute("DELETE FROM meta WHERE key = 'state_height'")
            node = Node(genesis, KP, disk, T0 * 1000)
            assert node.recovery[-1].startswith("restored the state from the snapshot")
            assert node.ledger.state_root() == disk.get_block(disk.height)[2]
        finally:
            disk.close()
        replayed = MemoryStore()                # and the same state as a full replay
        disk = SQLiteStore(path)
        try:
            for h in range(1, disk.height + 1):
                replayed.put_block(h, *disk.get_block(h))
            assert answers(Node(genesis, KP, replayed, T0 * 1000)) == \
                answers(Node(genesis, KP, disk, T0 * 1000))
        finally:
            disk.close()
