"""The ledger state in the daemon's SQLite file: `ledger.state.StateBacking` over the
store's connection, and the writes that keep it in step with the chain.

One row per ledger row, keyed (table, bucket, encoded key): the bucket (state.py's crc32
of the encoded key) leads the key, so a point read, the leaves of one bucket (what
rehashing a dirty bucket needs) and a walk in root order are all one primary-key range.
Each row keeps its leaf, so a read is checked against the hash the root covers without
another query; rows of the tables the API pages through (State.LISTED, str keys) also
keep their key as TEXT, indexed: SQLite compares TEXT bytewise (BINARY collation), and
UTF-8 byte order is code point order, which is Python's str order. The non-empty buckets'
hashes and each table's row count are stored too, so opening a state reads at most
65,536 hashes a table however big it is.

The state is written by `write_delta` inside the transaction that stores the block
(sqlstore.put_batch), and replaced wholesale by `write_base` (a state restored from a
snapshot, or rebuilt by replay). `meta` holds `state_height` (the height the stored
state is at: the store's height, or there is no usable state) and `state_damaged` (why
it must not be used, once a read found it inconsistent).
"""
from __future__ import annotations

from lendnet.ledger import codec
from lendnet.ledger.state import State, StateDamaged, StateDelta, bucket_of

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS state_rows (tbl INTEGER NOT NULL, bucket INTEGER NOT NULL,"
    " key BLOB NOT NULL, value BLOB NOT NULL, leaf BLOB NOT NULL, skey TEXT,"
    " PRIMARY KEY (tbl, bucket, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS state_rows_listed ON state_rows (tbl, skey)"
    " WHERE skey IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS state_buckets (tbl INTEGER NOT NULL, bucket INTEGER"
    " NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (tbl, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS state_counts (tbl INTEGER PRIMARY KEY, rows INTEGER"
    " NOT NULL)",
]

_TID = {name: i for i, name in enumerate(State.TABLES)}
_LISTED = frozenset(_TID[name] for name in State.LISTED)


class SQLiteBacking:
    """Reads of the stored state for `StoredTable`s, over the store's connection (one
    thread: the daemon's loop)."""

    def __init__(self, db, on_damage) -> None:
        self._db = db
        self._on_damage = on_damage            # records the damage durably (the store)

    def read(self, table: int, kb: bytes):
        return self._db.execute(
            "SELECT value, leaf FROM state_rows WHERE tbl = ? AND bucket = ? AND key = ?",
            (table, bucket_of(kb), kb)).fetchone()

    def bucket_leaves(self, table: int, buckets: list[int]):
        marks = ",".join("?" * len(buckets))
        return self._db.execute(
            f"SELECT bucket, key, leaf FROM state_rows WHERE tbl = ? AND bucket IN ({marks})"
            " ORDER BY bucket, key", (table, *buckets)).fetchall()

    def ordered(self, table: int, after: str | None, limit: int):
        if after is None:
            return self._db.execute(
                "SELECT skey, key, value, leaf FROM state_rows WHERE tbl = ? AND skey IS"
                " NOT NULL ORDER BY skey LIMIT ?", (table, limit)).fetchall()
        return self._db.execute(
            "SELECT skey, key, value, leaf FROM state_rows WHERE tbl = ? AND skey > ?"
            " ORDER BY skey LIMIT ?", (table, after, limit)).fetchall()

    def scan(self, table: int, after: tuple[int, bytes] | None, limit: int):
        if after is None:
            return self._db.execute(
                "SELECT bucket, key, value, leaf FROM state_rows WHERE tbl = ?"
                " ORDER BY bucket, key LIMIT ?", (table, limit)).fetchall()
        return self._db.execute(
            "SELECT bucket, key, value, leaf FROM state_rows WHERE tbl = ?"
            " AND (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT ?",
            (table, *after, limit)).fetchall()

    def bucket_hashes(self, table: int):
        return self._db.execute("SELECT bucket, hash FROM state_buckets WHERE tbl = ?",
                                (table,)).fetchall()

    def count(self, table: int) -> int:
        row = self._db.execute("SELECT rows FROM state_counts WHERE tbl = ?",
                               (table,)).fetchone()
        return row[0] if row else 0

    def damaged(self, message: str) -> None:
        self._on_damage(message)
        raise StateDamaged(message)


def _skey(tid: int, key):
    if tid not in _LISTED:
        return None
    if type(key) is not str:
        raise ValueError(f"table {State.TABLES[tid]} is paged in key order and takes str "
                         f"keys, not {key!r}")
    return key


def check_delta(height: int, delta) -> None:
    """Refuse a state delta that is not the state after the last block stored with it."""
    if not isinstance(delta, StateDelta):
        raise ValueError(f"state {delta!r} is not a StateDelta")
    if delta.height != height:
        raise ValueError(f"the state delta is at height {delta.height}, the blocks stored "
                         f"with it end at {height}")
    if delta.encoded is None and delta.rows:
        raise ValueError("the state delta has no encoded rows: it is of an in-memory "
                         "state (write a whole one with put_state_base)")


def write_delta(db, delta: StateDelta) -> None:
    """Write a stored state's changes (executemany: one statement per table and kind)."""
    for name, (rows, buckets) in (delta.encoded or {}).items():
        tid = _TID[name]
        db.executemany("INSERT OR REPLACE INTO state_rows VALUES (?, ?, ?, ?, ?, ?)",
                       [(tid, b, kb, vb, leaf, _skey(tid, key))
                        for key, kb, b, vb, leaf in rows if vb is not None])
        db.executemany("DELETE FROM state_rows WHERE tbl = ? AND bucket = ? AND key = ?",
                       [(tid, b, kb) for _, kb, b, vb, _ in rows if vb is None])
        db.executemany("INSERT OR REPLACE INTO state_buckets VALUES (?, ?, ?)",
                       [(tid, b, h) for b, h in buckets.items() if h is not None])
        db.executemany("DELETE FROM state_buckets WHERE tbl = ? AND bucket = ?",
                       [(tid, b) for b, h in buckets.items() if h is None])
        db.execute("INSERT OR REPLACE INTO state_counts VALUES (?, ?)",
                   (tid, delta.counts[name]))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('state_height', ?)", (delta.height,))


def write_base(db, height: int, state: State) -> None:
    """Replace the stored state with `state` (any backing but this store's own),
    streaming its rows: memory holds a batch, not a second copy."""
    encode = codec.encode
    for statement in ("DELETE FROM state_rows", "DELETE FROM state_buckets",
                      "DELETE FROM state_counts"):
        db.execute(statement)
    for name, table in state.tables.items():
        tid = _TID[name]

        def rows(table=table, tid=tid):
            for key, value in table.items():
                kb, vb = encode(key), encode(value)
                yield (tid, bucket_of(kb), kb, vb, codec.digest(kb + vb), _skey(tid, key))
        db.executemany("INSERT INTO state_rows VALUES (?, ?, ?, ?, ?, ?)", rows())
        db.executemany("INSERT INTO state_buckets VALUES (?, ?, ?)",
                       [(tid, b, h) for b, h in table.bucket_hashes()])
        db.execute("INSERT INTO state_counts VALUES (?, ?)", (tid, len(table)))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('state_height', ?)", (height,))
    db.execute("DELETE FROM meta WHERE key = 'state_damaged'")


def usable(db, height: int) -> str | None:
    """Why the stored state cannot be opened at the store's `height`, or None."""
    got = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('state_height',"
                          " 'state_damaged')").fetchall())
    if "state_damaged" in got:
        return f"the stored state was found damaged ({got['state_damaged']})"
    if "state_height" not in got:
        return "the store holds no state (it was written by an older lendnet)"
    if got["state_height"] != height:
        return (f"the stored state is at height {got['state_height']}, the chain at "
                f"{height}")
    return None
