"""The ledger state kept in SQLite (ledger/state.py StoredTable, node/daemon/statedb.py)
behaves as the in-memory state: the same root, `get`, `len`, pages and whole-table walks
after any puts, deletes and rolled-back transactions, across flushes and reopening; a
node restarts from it without replay; damage to it is found and the node rebuilds it."""
from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from lendnet.ledger import codec
from lendnet.ledger.keys import Keypair
from lendnet.ledger.state import State, StateDamaged
from lendnet.node.core.node import Node
from lendnet.node.daemon import home as H, statedb
from lendnet.node.daemon.sqlstore import SQLiteStore

from .stored_chain import build_home

KEYS = ["a", "b", "c", "d", "e", "ab", "é", "z" * 40]
VALUES = {
    "accounts": st.tuples(st.integers(0, 10**12), st.integers(0, 5)),
    "storage": st.one_of(st.integers(-5, 5), st.binary(max_size=8)),
    "offers": st.fixed_dictionaries({"available": st.integers(0, 100),
                                     "tags": st.lists(st.text(max_size=3), max_size=2)}),
}
TABLES = sorted(VALUES)


def key_for(table: str, k: str):
    return (k, k.encode()) if table == "storage" else k


OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(TABLES), st.sampled_from(KEYS), st.data()),
    st.tuples(st.just("del"), st.sampled_from(TABLES), st.sampled_from(KEYS)),
    st.tuples(st.just("mark")),
    st.tuples(st.just("rollback")),
    st.tuples(st.sampled_from(["settle", "flush", "reopen"])),
    st.tuples(st.just("check")),
)


class Disk:
    """A stored state over a bare SQLite database with the store's schema."""

    def __init__(self, cache_rows: int) -> None:
        self.db = sqlite3.connect(":memory:", isolation_level=None)
        self.db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
        for statement in statedb.SCHEMA:
            self.db.execute(statement)
        self.cache_rows = cache_rows
        self.height = 0
        self.damage: list[str] = []

    def open(self) -> State:
        return State.open(statedb.SQLiteBacking(self.db, self.damage.append),
                          self.cache_rows)

    def flush(self, state: State) -> None:
        self.height += 1
        delta = state.delta(self.height)
        self.db.execute("BEGIN")
        statedb.write_delta(self.db, delta)
        self.db.execute("COMMIT")
        state.flushed()


def same(mem: State, disk: State) -> None:
    assert mem.root() == disk.root()
    for name in TABLES:
        a, b = mem.tables[name], disk.tables[name]
        assert len(a) == len(b)
        for k in KEYS:
            key = key_for(name, k)
            assert a.get(key) == b.get(key) and (key in a) == (key in b)
        assert list(a.items()) == list(b.items())
    for after in (None, "a", "b", "d"):
        for limit in (1, 2, 100):
            assert mem.offers.page(after, limit) == disk.offers.page(after, limit)
    assert mem.offers.page(None, 100, lambda v: v["available"] > 50, scan=3) == \
        disk.offers.page(None, 100, lambda v: v["available"] > 50, scan=3)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, min_size=20, max_size=60), st.sampled_from([1, 3, 1000]), st.data())
def test_stored_state_behaves_as_the_in_memory_one(ops, cache_rows, data):
    disk = Disk(cache_rows)
    mem, stored = State(), disk.open()
    # some rows stored first, so that the operations meet rows on disk, pending and both
    for name in TABLES:
        for k in data.draw(st.lists(st.sampled_from(KEYS), max_size=5)):
            value = data.draw(VALUES[name])
            for s in (mem, stored):
                s.tables[name].put(key_for(name, k), value)
    mem.settle()
    stored.settle()
    disk.flush(stored)
    marks: list[tuple[int, int]] = []
    for op in ops:
        kind = op[0]
        if kind == "put":
            _, name, k, data = op
            value = data.draw(VALUES[name])
            for s in (mem, stored):
                s.tables[name].put(key_for(name, k), value)
        elif kind == "del":
            _, name, k = op
            for s in (mem, stored):
                s.tables[name].delete(key_for(name, k))
        elif kind == "mark":
            marks.append((mem.mark(), stored.mark()))
        elif kind == "rollback" and marks:
            m, s_ = marks.pop()
            mem.rollback(m)
            stored.rollback(s_)
        elif kind in ("settle", "flush", "reopen"):
            marks.clear()
            mem.settle()
            stored.settle()
            if kind != "settle":
                disk.flush(stored)
            if kind == "reopen":
                stored = disk.open()
        if kind in ("check", "flush", "reopen"):
            # (not after every operation: a root rehashes what changed since the last
            # one, and many buckets at once must work too)
            same(mem, stored)
    same(mem, stored)
    assert disk.damage == []


def test_many_buckets_rehashed_at_once_with_a_small_cache():
    # More dirty buckets in one rehash than the leaf cache holds (cache_rows=1: 2
    # buckets), with rows enough (5,000 in 65,536 buckets) that some share a bucket
    # with rows not written this time.
    disk, mem = Disk(1), State()
    state = disk.open()
    keys = [f"k{i}" for i in range(5_000)]
    for s in (mem, state):
        for k in keys:
            s.accounts.put(k, (1, 0))
        s.settle()
    disk.flush(state)
    for round_ in range(3):
        state = disk.open() if round_ != 1 else state
        for s in (mem, state):
            for k in keys[round_::7]:
                s.accounts.put(k, (2 + round_, 0))
            s.settle()
        assert state.root() == mem.root()
        disk.flush(state)
    assert disk.damage == []


def test_a_damaged_row_or_bucket_is_found_on_use():
    disk = Disk(1000)
    state = disk.open()
    for k in KEYS:
        state.accounts.put(k, (len(k), 0))
    state.settle()
    disk.flush(state)
    root = state.root()
    # a value changed under its leaf: found when it is read
    disk.db.execute("UPDATE state_rows SET value = ? WHERE key = ?",
                    (codec.encode([7, 0]), codec.encode("c")))
    state = disk.open()
    assert state.root() == root                    # opening checks hashes only
    with pytest.raises(StateDamaged, match="does not hash to its leaf"):
        state.accounts.get("c")
    # a leaf changed with it: found when its bucket is next rehashed
    disk.db.execute("UPDATE state_rows SET leaf = ? WHERE key = ?",
                    (codec.digest(codec.encode("c") + codec.encode([7, 0])),
                     codec.encode("c")))
    state = disk.open()
    with pytest.raises(StateDamaged, match="does not hash to the bucket hash"):
        state.accounts.delete("c")
        state.root()
    assert len(disk.damage) == 2


# --- a node over its stored state ---------------------------------------------------------

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("state_disk")
    built = build_home(path, 250)
    assert built["height"] > 10
    return path


def start(home):
    store = SQLiteStore(str(home / "node.db"), state_cache_rows=64)
    kp = Keypair.from_name("verify-validator-1")
    return store, Node(H.load_genesis(home), kp, store, 0)


def test_node_reopens_its_stored_state_and_rebuilds_a_damaged_one(home):
    store, node = start(home)
    try:
        assert node.recovery == [f"opened the stored state at height {store.height}: "
                                 "replayed 0 blocks"]
        top = store.get_block(store.height)[2]
        assert node.ledger.state_root() == top
        assert node.ledger.total_money() == node.ledger.supply
        rich = max(node.ledger.state.accounts.items(), key=lambda kv: kv[1][0])[0]
        # a damaged bucket hash: the opened root is not the block's, so rebuilt
        store._db.execute("UPDATE state_buckets SET hash = zeroblob(32) WHERE tbl = 1"
                          " AND bucket = (SELECT min(bucket) FROM state_buckets"
                          " WHERE tbl = 1)")
        node = Node(node.genesis, Keypair.from_name("verify-validator-1"), store, 0)
        assert node.recovery[0].startswith("the stored state's root is not the one")
        assert node.ledger.state_root() == top
        # a damaged row: found when read, recorded, and the next start rebuilds
        store.close()
        store, node = start(home)
        assert node.recovery[-1].endswith("replayed 0 blocks")
        kb = codec.encode(rich)
        store._db.execute("UPDATE state_rows SET value = ? WHERE tbl = 1 AND key = ?",
                          (codec.encode([1, 0]), kb))
        store.close()
        store, node = start(home)
        with pytest.raises(StateDamaged):
            node.ledger.balance(rich)
        store.close()
        store, node = start(home)
        assert node.recovery[0].startswith("the stored state was found damaged")
        assert node.ledger.state_root() == top and node.ledger.balance(rich) > 1
        store.close()
        store, node = start(home)
        assert node.recovery[-1].endswith("replayed 0 blocks")
    finally:
        store.close()


def test_the_cache_size_comes_from_the_node_config(tmp_path):
    H.init_home(tmp_path, H.NodeConfig(state_cache_rows=5_000))
    assert H.load_config(tmp_path).state_cache_rows == 5_000
    cfg = json.loads((tmp_path / "config.json").read_text())
    for bad in (10, "many", 10**9):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, "state_cache_rows": bad}))
        with pytest.raises(H.HomeError, match="state_cache_rows must be an integer"):
            H.load_config(tmp_path)


async def test_a_damaged_row_a_client_reads_halts_the_node_and_the_restart_rebuilds(home):
    """An API read is where a stranger finds damage first: the node answers 503 in the
    API's shape, stops (exit code 3) as it does when execution finds it, and the next
    start rebuilds the state."""
    import aiohttp
    from lendnet.node.daemon.daemon import Daemon
    store, node = start(home)
    rich = max(node.ledger.state.accounts.items(), key=lambda kv: kv[1][0])[0]
    store._db.execute("UPDATE state_rows SET value = ? WHERE tbl = 1 AND key = ?",
                      (codec.encode([1, 0]), codec.encode(rich)))
    store.close()
    d = Daemon(home)
    await d.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{d.port}/v1/accounts/{rich}") as r:
                status, body = r.status, await r.json(content_type=None)
        assert status == 503 and body["code"] == "state-damaged", (status, body)
        assert d.exit_code == 3 and d.stopping.is_set()
    finally:
        await d.stop()
    store, node = start(home)
    try:
        assert node.recovery[0].startswith("the stored state was found damaged")
        assert node.ledger.balance(rich) > 1
    finally:
        store.close()
