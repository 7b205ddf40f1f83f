"""The two stores: one interface (every behavioural test runs on both, and a property
test checks they agree on any sequence of writes), and what only the disk store must do:
survive reopening and kill -9, refuse a second opener, report a damaged chain."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lendnet.ledger import codec
from lendnet.node.daemon.sqlstore import CACHE_BLOCKS, SQLiteStore
from lendnet.node.core.store import MemoryStore, StoreError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def txh(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def receipt(raw: bytes, ok=True, nonce_used=True, gas=7) -> dict:
    return {"tx": txh(raw), "ok": ok, "error": None if ok else "refused", "gas": gas,
            "nonce_used": nonce_used}


def block(h: int, txs=()) -> dict:
    return {"header": {"height": h}, "txs": list(txs)}


def enc(obj) -> bytes:
    return codec.encode(obj)


def enc_records(records: dict) -> list:
    """Records as comparable bytes: the disk store gives lists where tuples went in."""
    return sorted((enc(k), enc(v)) for k, v in records.items())


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request, tmp_path):
    """open_store() opens the store; calling it again after close() reopens it. The
    memory store "reopens" as itself, as the simulator keeps it across a crash."""
    opened = []

    def open_store():
        if request.param == "memory":
            opened[:] = opened or [MemoryStore()]
            return opened[0]
        opened.append(SQLiteStore(str(tmp_path / "node.db")))
        return opened[-1]

    yield open_store
    for s in opened:
        s.close()


# --- both stores ----------------------------------------------------------------------

def test_records_round_trip_and_gc(open_store):
    s = open_store()
    for h in (1, 2, 3):
        s.put_record(("vote", "commit", 0, h), bytes([h]) * 32)
    s.put_record(("vote", "prepared", 1, 3), ({"block": b"x"}, [b"p1", b"p2"]))   # a tuple
    s.put_record(("view",), 4)
    s.put_record(("checkpoint",), (2, []))
    s.put_record(("evidence", "equivocate", 1, 1_767_225_600_000), [b"m1", b"m2"])
    got = s.load_records()
    assert all(type(k) is tuple for k in got)
    assert got[("vote", "prepared", 1, 3)] in (({"block": b"x"}, [b"p1", b"p2"]),
                                               [{"block": b"x"}, [b"p1", b"p2"]])
    before = dict(got)
    s.put_record(("gc",), 2)                 # votes up to height 2 go; ("gc",) is not kept
    got = s.load_records()
    assert ("gc",) not in got
    assert sorted(k for k in got if k[0] == "vote") == [("vote", "commit", 0, 3),
                                                         ("vote", "prepared", 1, 3)]
    for k in got:
        assert enc(got[k]) == enc(before[k])
    s.put_record(("view",), 5)               # a later put replaces
    assert s.load_records()[("view",)] == 5


def test_put_records_applies_in_order(open_store):
    s = open_store()
    s.put_records([(("vote", "prepare", 0, 1), b"a"), (("gc",), 1),
                   (("vote", "commit", 0, 1), b"b"), (("view",), 1), (("view",), 2)])
    assert enc_records(s.load_records()) == enc_records(
        {("vote", "commit", 0, 1): b"b", ("view",): 2})
    s.put_records([])                        # nothing to do is fine


def test_put_records_is_all_or_nothing(open_store):
    s = open_store()
    s.put_record(("view",), 1)
    batch = [(("vote", "commit", 0, 1), b"a"), (("gc",), 5),
             (("view",), 0.5),                                   # a float: no encoding
             (("vote", "commit", 0, 9), b"b")]
    with pytest.raises(codec.EncodingError, match="float"):
        s.put_records(batch)
    assert enc_records(s.load_records()) == enc_records({("view",): 1})


def test_a_batch_of_records_and_blocks_is_one_write(open_store):
    # What one turn of the daemon's loop produced: votes and two executed blocks.
    s = open_store()
    s.put_batch([(("vote", "commit", 0, 1), b"a"), (("view",), 2)],
                [(1, block(1, [b"t1"]), [b"c1"], b"r" * 32, [receipt(b"t1")]),
                 (2, block(2), [], b"s" * 32)])
    assert s.height == 2 and s.tx_location(txh(b"t1"))["height"] == 1
    assert enc_records(s.load_records()) == enc_records(
        {("vote", "commit", 0, 1): b"a", ("view",): 2})
    # A batch with one bad part (block 5 does not follow 3) writes none of its parts.
    with pytest.raises(ValueError, match="height 5 is not the next height 4"):
        s.put_batch([(("view",), 3)], [(3, block(3, [b"t3"]), [], b"t" * 32,
                                        [receipt(b"t3")]),
                                       (5, block(5), [], b"u" * 32)])
    assert s.height == 2 and s.get_block(3) is None and s.tx_location(txh(b"t3")) is None
    assert s.load_records()[("view",)] == 2
    s.put_batch()                                  # nothing to do is fine
    assert s.height == 2


@pytest.mark.parametrize("key, value, why", [
    (["view"], 1, "tuple"),
    ((), 1, "tuple"),
    (("view", 1.0), 1, "tuple"),
    (("view", True), 1, "tuple"),
    (("vote", "commit", 0), b"", "vote key"),
    (("vote", "commit", 0, "1"), b"", "vote key"),
    (("gc",), "3", "int height"),
    (("view", 2**64), 1, "64-bit"),
])
def test_bad_records_are_refused(open_store, key, value, why):
    s = open_store()
    with pytest.raises(ValueError, match=why):
        s.put_record(key, value)
    assert s.load_records() == {}


def test_blocks_receipts_and_tx_location(open_store):
    s = open_store()
    assert s.height == 0 and s.get_block(1) is None and s.get_block(0) is None
    s.put_block(1, block(1, [b"t1", b"t2"]), [b"c1"], b"r" * 32,
                [receipt(b"t1"), receipt(b"t2", ok=False, gas=3)])
    s.put_block(2, block(2), [], b"s" * 32)
    s.put_block(3, block(3, [b"t3"]), [b"c3"], b"t" * 32, [receipt(b"t3")])
    assert s.height == 3
    assert enc(s.get_block(1)) == enc((block(1, [b"t1", b"t2"]), [b"c1"], b"r" * 32))
    assert enc(s.get_block(3)) == enc((block(3, [b"t3"]), [b"c3"], b"t" * 32))
    assert s.get_block(4) is None
    assert s.tx_location(txh(b"t1")) == {"height": 1, "index": 0, "ok": True,
                                         "error": None, "gas": 7, "nonce_used": True}
    assert s.tx_location(txh(b"t2")) == {"height": 1, "index": 1, "ok": False,
                                         "error": "refused", "gas": 3, "nonce_used": True}
    assert s.tx_location(txh(b"t3"))["height"] == 3
    assert s.tx_location(txh(b"nope")) is None


def test_heights_are_written_in_order(open_store):
    s = open_store()
    with pytest.raises(ValueError, match="not the next height 1"):
        s.put_block(2, block(2), [], b"r" * 32)
    s.put_block(1, block(1), [], b"r" * 32)
    for h in (1, 3, 0, "2"):
        with pytest.raises(ValueError, match="not the next height 2"):
            s.put_block(h, block(2), [], b"r" * 32)
    with pytest.raises(ValueError, match="1 transactions but 2 receipts"):
        s.put_block(2, block(2, [b"t"]), [], b"r" * 32, [receipt(b"t"), receipt(b"u")])
    assert s.height == 1 and s.get_block(2) is None


def test_a_refused_block_writes_nothing(open_store):
    s = open_store()
    bad = receipt(b"t")
    bad["gas"] = 1.5
    with pytest.raises(codec.EncodingError):
        s.put_block(1, block(1, [b"t"]), [], b"r" * 32, [bad])
    assert s.height == 0 and s.get_block(1) is None and s.tx_location(txh(b"t")) is None
    s.put_block(1, block(1, [b"t"]), [], b"r" * 32, [receipt(b"t")])    # still usable
    assert s.height == 1


def test_index_keeps_the_block_where_the_tx_used_its_nonce(open_store):
    s = open_store()
    s.put_block(1, block(1, [b"t"]), [], b"r" * 32, [receipt(b"t", False, False)])
    s.put_block(2, block(2, [b"u", b"t"]), [], b"r" * 32,
                [receipt(b"u"), receipt(b"t")])
    s.put_block(3, block(3, [b"t"]), [], b"r" * 32, [receipt(b"t", False, False)])
    assert (s.tx_location(txh(b"t"))["height"], s.tx_location(txh(b"t"))["index"]) == (2, 1)
    s.put_block(4, block(4, [b"v"]), [], b"r" * 32, [receipt(b"v", False, False)])
    s.put_block(5, block(5, [b"v"]), [], b"r" * 32, [receipt(b"v", False, False)])
    assert s.tx_location(txh(b"v"))["height"] == 4                # else the first


def test_reopen_keeps_everything(open_store):
    s = open_store()
    s.put_records([(("vote", "commit", 0, 1), b"d"), (("checkpoint",), (1, [b"p"]))])
    s.put_block(1, block(1, [b"t"]), [b"c"], b"r" * 32, [receipt(b"t")])
    records, blk, loc = s.load_records(), s.get_block(1), s.tx_location(txh(b"t"))
    s.close()
    s.close()                                # closing twice is harmless
    s = open_store()
    assert s.height == 1
    assert enc_records(s.load_records()) == enc_records(records)
    assert enc(s.get_block(1)) == enc(blk)
    assert s.tx_location(txh(b"t")) == loc
    s.put_block(2, block(2), [], b"r" * 32)  # and carries on from where it was


# --- the disk store only --------------------------------------------------------------

def test_a_second_opener_is_refused(tmp_path):
    path = str(tmp_path / "node.db")
    s = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="already open in this process"):
            SQLiteStore(path)
        child = subprocess.run(
            [sys.executable, "-c", "import sys\n"
             "from lendnet.node.daemon.sqlstore import SQLiteStore\n"
             "try:\n    SQLiteStore(sys.argv[1])\nexcept Exception as e:\n    print(e)",
             path], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert child.stdout.strip() == (f"store {path} is in use by another process "
                                        f"(pid {os.getpid()})"), child.stderr
    finally:
        s.close()
    SQLiteStore(path).close()                # released on close


def test_a_missing_block_is_reported_on_open(tmp_path):
    path = str(tmp_path / "node.db")
    s = SQLiteStore(path)
    for h in (1, 2, 3):
        s.put_block(h, block(h), [], b"r" * 32)
    s.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM blocks WHERE height = 2")
    db.close()
    with pytest.raises(StoreError, match=f"store {path} is corrupt: block 2 is missing"):
        SQLiteStore(path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM blocks WHERE height = 1")
    db.close()
    with pytest.raises(StoreError, match="block 1 is missing"):   # not "already open":
        SQLiteStore(path)                                          # a failed open unlocks


def test_not_a_database(tmp_path):
    path = tmp_path / "node.db"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match=f"store {path} cannot be opened"):
        SQLiteStore(str(path))


def test_a_failed_write_rolls_back(tmp_path, monkeypatch):
    s = SQLiteStore(str(tmp_path / "node.db"))
    try:
        def broken_gc(db, height):
            raise RuntimeError("disk on fire")
        monkeypatch.setattr(s, "_gc", broken_gc)
        with pytest.raises(RuntimeError, match="disk on fire"):
            s.put_records([(("view",), 1), (("gc",), 1)])  # ("view",) written, then fails
        assert s.load_records() == {}
        s.put_record(("view",), 2)           # no transaction was left open
        assert s.load_records() == {("view",): 2}
    finally:
        s.close()


def test_schema_stats_and_cache(tmp_path):
    path = str(tmp_path / "node.db")
    s = SQLiteStore(path)
    try:
        for h in range(1, CACHE_BLOCKS + 11):
            s.put_block(h, block(h, [b"%d" % h]), [], b"r" * 32, [receipt(b"%d" % h)])
        s.put_record(("view",), 1)
        for h in range(1, s.height + 1):
            assert s.get_block(h)[0]["header"]["height"] == h
        assert len(s._cache) == CACHE_BLOCKS
        stats = s.stats()
        assert stats["blocks"] == CACHE_BLOCKS + 10 and stats["records"] == 1
        assert stats["bytes"] > 0
    finally:
        s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (1,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = "
                                         "'table'")} == {"blocks", "records", "txs", "meta",
                                                         "snapshots", "snapshot_chunks",
                                                         "state_rows", "state_buckets",
                                                         "state_counts"}
    db.close()


# --- the two stores agree on any sequence of writes ------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(codec.MIN_INT, codec.MAX_INT)
            | st.binary(max_size=6) | st.text(max_size=6))
_values = st.recursive(_scalars, lambda inner: (
    st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3)), max_leaves=8)
_keys = (st.tuples(st.just("vote"), st.sampled_from(["prepare", "commit", "prepared"]),
                   st.integers(0, 2), st.integers(0, 6))
         | st.sampled_from([("view",), ("checkpoint",)])
         | st.tuples(st.just("evidence"), st.text(max_size=2), st.integers(-3, 3)))
_records = (st.tuples(_keys, _values)
            | st.tuples(st.just(("gc",)), st.integers(0, 6)))
_TXS = [b"tx%d" % i for i in range(5)]
_ops = st.lists(st.one_of(
    st.tuples(st.just("record"), _records),
    st.tuples(st.just("records"), st.lists(_records, max_size=4)),
    st.tuples(st.just("block"), st.tuples(
        st.sampled_from([1, 1, 1, 1, 0, 2]),               # height offset: 1 is right
        st.lists(st.tuples(st.sampled_from(_TXS), st.booleans(), st.booleans()),
                 max_size=3)))), max_size=12)


def _apply(store, op) -> str:
    kind, arg = op
    try:
        if kind == "record":
            store.put_record(*arg)
        elif kind == "records":
            store.put_records(arg)
        else:
            offset, txs = arg
            h = store.height + offset
            store.put_block(h, block(h, [raw for raw, _, _ in txs]), [b"cert"],
                            hashlib.sha256(b"%d" % h).digest(),
                            [receipt(raw, ok, used) for raw, ok, used in txs])
    except ValueError as e:
        return type(e).__name__
    return "ok"


def _view(store) -> tuple:
    return (store.height, enc_records(store.load_records()),
            [enc(store.get_block(h)) for h in range(store.height + 2)],
            [enc(store.tx_location(txh(raw))) for raw in _TXS])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
def test_both_stores_agree(ops):
    mem = MemoryStore()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "node.db")
        disk = SQLiteStore(path)
        try:
            assert [_apply(mem, op) for op in ops] == [_apply(disk, op) for op in ops]
            assert _view(mem) == _view(disk)
        finally:
            disk.close()
        disk = SQLiteStore(path)             # and the same after reopening
        try:
            assert _view(mem) == _view(disk)
        finally:
            disk.close()


# --- kill -9 ---------------------------------------------------------------------------

# Writes as a validator does: its vote for h, then block h; every 50 blocks a checkpoint
# and the garbage collection of the votes below it, together. Prints each height done.
_CHILD = r"""
import hashlib, sys
from lendnet.node.daemon.sqlstore import SQLiteStore
s = SQLiteStore(sys.argv[1])
for h in range(s.height + 1, 100_001):
    tx = h.to_bytes(8, "big") * 4
    s.put_record(("vote", "commit", 0, h), hashlib.sha256(tx).digest())
    s.put_block(h, {"header": {"height": h}, "txs": [tx]}, [],
                hashlib.sha256(b"root %d" % h).digest(),
                [{"tx": hashlib.sha256(tx).hexdigest(), "ok": True, "error": None,
                  "gas": h, "nonce_used": True}])
    if h % 50 == 0:
        s.put_records([(("checkpoint",), [h, []]), (("gc",), h)])
    print(h, flush=True)
"""


def run_until_killed(argv: list[str], lines: int, errfile: str, timeout: float = 60) -> int:
    """Run a writer child (`python -c argv...`, printing each height it has finished),
    SIGKILL it once it has reported `lines` heights (it is writing the next ones
    meanwhile); return the last height it reported. A hung child fails the test after
    `timeout` s, and the child is gone when this returns, whatever happened."""
    last = None
    with open(errfile, "w+") as err:
        child = subprocess.Popen([sys.executable, "-c", *argv], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=err, text=True)
        watchdog = threading.Timer(timeout, child.kill)
        watchdog.start()
        try:
            for _ in range(lines):
                line = child.stdout.readline()
                if not line:
                    break
                last = int(line)
            child.send_signal(signal.SIGKILL)
        finally:
            watchdog.cancel()
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
        err.seek(0)
        assert last is not None and child.returncode == -signal.SIGKILL, err.read()
    return last


def test_kill_9_loses_no_committed_write(tmp_path):
    path = str(tmp_path / "node.db")
    for lines in (37, 211, 400):             # three kills, each resuming the same store
        reported = run_until_killed([_CHILD, path], lines, str(tmp_path / "child.err"))
        s = SQLiteStore(path)
        try:
            assert s.height >= reported
            for h in range(1, s.height + 1):
                blk, cert, root = s.get_block(h)
                assert blk["header"]["height"] == h and len(root) == 32
                for i, raw in enumerate(blk["txs"]):
                    loc = s.tx_location(txh(raw))
                    assert (loc["height"], loc["index"], loc["gas"]) == (h, i, h)
            records = s.load_records()
            low = records.get(("checkpoint",), [0, []])[0]
            assert low == s.height // 50 * 50 or low == s.height // 50 * 50 - 50
            # each vote was written before its block: all since the checkpoint are
            # there, and at most one beyond the chain (the block it was about to write)
            votes = sorted(k[3] for k in records if k[0] == "vote")
            assert votes in (list(range(low + 1, s.height + 1)),
                             list(range(low + 1, s.height + 2)))
        finally:
            s.close()


# --- a store that does not start at genesis: state sync's base, pruning ----------------

@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_store_can_start_after_a_base_and_forget_old_blocks(kind, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "s.db"))
    try:
        block = lambda h: {"header": {"height": h}, "txs": [b"x"]}   # noqa: E731
        with pytest.raises(ValueError, match="not the next height 1"):
            store.put_block(5, block(5), [], b"r")
        store.put_batch(blocks=[(5, block(5), [], b"r5")], base=4)
        assert (store.base, store.height) == (4, 5)
        assert store.get_block(4) is None and store.get_block(5)[2] == b"r5"
        with pytest.raises(ValueError, match="only before its first block"):
            store.put_batch(base=9)
        for h in range(6, 11):
            store.put_block(h, block(h), [], b"r%d" % h,
                            [{"tx": f"t{h}", "nonce_used": True}])
        assert store.tx_location("t6")["height"] == 6
        with pytest.raises(ValueError, match="keeps at least the last one"):
            store.prune(11)
        assert store.prune(8) == 3
        assert (store.base, store.height) == (7, 10)
        assert store.get_block(7) is None and store.get_block(8) is not None
        assert store.tx_location("t6") is None and store.tx_location("t8") is not None
        assert store.prune(3) == 0 and store.base == 7
        if kind == "sqlite":                     # the base outlives the process
            store.close()
            store = SQLiteStore(str(tmp_path / "s.db"))
            assert (store.base, store.height) == (7, 10)
            assert store.stats()["blocks"] == 3
    finally:
        store.close()
