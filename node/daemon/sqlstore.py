"""The daemon's store: one SQLite file, with the interface of `node.store.MemoryStore`.

Durability is the point. A validator writes its votes before it sends them, so that a
restarted node never signs a conflicting one; every put is therefore one SQLite
transaction that is committed and fsynced (WAL journal, synchronous=FULL) before the call
returns, and survives kill -9 and power loss. A block, its certificate, its state root
and its transactions' receipts go in together or not at all.

Everything is stored as canonical msgpack (`ledger.codec`), and decoded with the same
canonical check as anything from the network, so a damaged row is an error rather than
a wrong value. One process owns a store: a second opener is refused by a lock file.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from collections import OrderedDict
from contextlib import contextmanager

from lendnet.ledger import codec
from lendnet.ledger.state import DEFAULT_CACHE_ROWS, State

from . import statedb
from lendnet.node.core.store import (SNAPSHOTS_KEPT, StoreError, check_base, check_block,
                                     check_prune, check_record, check_snapshots, location)

SCHEMA_VERSION = 1
CACHE_BLOCKS = 64                 # recent blocks kept decoded: peers catching up ask for them

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, block BLOB NOT NULL,"
    " cert BLOB NOT NULL, root BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS txs (hash TEXT PRIMARY KEY, height INTEGER NOT NULL,"
    " idx INTEGER NOT NULL, receipt BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
    # State snapshots (node.py): added to schema 1 without a version change, since a
    # store without them is read the same way (the node replays from genesis).
    "CREATE TABLE IF NOT EXISTS snapshots (height INTEGER PRIMARY KEY, manifest BLOB"
    " NOT NULL, chunks INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshot_chunks (height INTEGER NOT NULL, idx INTEGER"
    " NOT NULL, data BLOB NOT NULL, PRIMARY KEY (height, idx)) WITHOUT ROWID",
    # The ledger state (statedb.py), likewise added without a version change: a store
    # without it has no `state_height`, and the node rebuilds and writes it once.
    *statedb.SCHEMA,
]

# Every ("vote", t, v, h) key encodes as a 4-element array header then "vote", and SQLite
# orders BLOBs bytewise, so the vote records are exactly one range of the primary key.
_VOTES_FROM = b"\x94" + codec.encode("vote")
_VOTES_TO = _VOTES_FROM[:-1] + bytes([_VOTES_FROM[-1] + 1])


def decode_row(data: bytes):
    # Our own rows: no size limit, but still the canonical check, which catches damage.
    return codec.decode(data, max_size=len(data))


class SQLiteStore:
    def __init__(self, path: str, state_cache_rows: int = DEFAULT_CACHE_ROWS):
        self.path = str(path)
        self.state_cache_rows = state_cache_rows
        self._closed = False
        self._lock_fd = self._lock()
        try:
            self._db = self._open()
        except BaseException:
            os.close(self._lock_fd)              # closing the descriptor drops the lock
            raise
        self._cache: OrderedDict[int, tuple] = OrderedDict()

    # --- opening ----------------------------------------------------------------------

    def _lock(self) -> int:
        """Hold an exclusive lock on PATH.lock while open: two processes writing one
        chain (a node started twice) could each vote differently from the same history.
        flock is released by the kernel when the process dies, so a crash leaves no
        stale lock; the pid written in the file is only for the error message."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if holder == str(os.getpid()):
                raise StoreError(f"store {self.path} is already open in this process "
                                 f"(pid {holder})") from None
            raise StoreError(f"store {self.path} is in use by another process "
                             f"(pid {holder})") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open(self) -> sqlite3.Connection:
        created = not os.path.exists(self.path)
        try:
            # isolation_level=None: no implicit transactions, so each put is exactly the
            # BEGIN IMMEDIATE ... COMMIT that `_transaction` issues. One thread only
            # (sqlite3's default check_same_thread enforces it).
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path} cannot be opened: {e}") from e
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path}: SQLite would not use WAL mode "
                                 f"(journal_mode is {mode})")
            # FULL: the WAL is fsynced at every commit, so a commit survives power loss
            # (NORMAL would only survive a crash of this process). fullfsync makes that
            # fsync a real barrier on macOS; elsewhere it does nothing.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA fullfsync=ON")
            with self._transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                           (SCHEMA_VERSION,))
            version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(f"store {self.path} has schema version {version!r}; this "
                                 f"lendnet reads version {SCHEMA_VERSION}")
            self.base, self._height = check_heights(db, self.path)
            if created:                          # make the new file's name durable too
                _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except sqlite3.DatabaseError as e:       # e.g. "file is not a database"
            db.close()
            raise StoreError(f"store {self.path} cannot be opened: {e}") from e
        except BaseException:
            db.close()
            raise
        return db

    @contextmanager
    def _transaction(self, db=None):
        """One durable transaction: committed (and fsynced) on leaving, rolled back and
        the exception re-raised on any error, so no put is ever half written."""
        db = self._db if db is None else db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:            # COMMIT itself may have failed, or not
                db.execute("ROLLBACK")
            raise

    # --- consensus records ------------------------------------------------------------

    def put_record(self, key: tuple, value) -> None:
        self.put_records([(key, value)])

    def put_records(self, items) -> None:
        """Several records in one transaction (one fsync), applied in order."""
        self.put_batch(items)

    def put_batch(self, records=(), blocks=(), snapshots=(), base=None,
                  state=None) -> None:
        """Consensus records (applied in order), executed blocks — each a tuple of
        put_block's arguments — and state snapshots (store.check_snapshots) in one
        transaction with one fsync: the daemon writes all that one turn of its loop
        produced at once, which under load is many votes and blocks. All or nothing:
        anything refused refuses the whole batch, and a crash leaves a snapshot's block
        without it only if it left the block out too. `base`: an empty store's chain
        starts after that height (store.check_base). `state`: the ledger state's
        changes up to the last of these blocks (ledger.state.StateDelta of a state this
        store opened), written in the same transaction: the stored state is always at
        the stored chain's height."""
        # Encode and check all first, so nothing is refused halfway through.
        rows = [(key, value, *check_record(key, value)) for key, value in records]
        checked, height = [], self._height
        if base is not None:
            height = check_base(self._height > self.base, base)
        for h, block, cert, root, *receipts in blocks:
            receipts = receipts[0] if receipts else ()
            checked.append((h, receipts, check_block(height, h, block, cert, root,
                                                     receipts)))
            height = h
        snaps = check_snapshots(height, snapshots)
        if state is not None:
            statedb.check_delta(height, state)
        with self._transaction() as db:
            if base is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (base,))
            for key, value, k, v in rows:
                if key == ("gc",):
                    self._gc(db, value)
                else:
                    db.execute("INSERT OR REPLACE INTO records VALUES (?, ?)", (k, v))
            for h, receipts, (b, c, r, encoded) in checked:
                db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?)", (h, b, c, r))
                # see store.py: the block where the tx used its nonce wins, else the first
                db.executemany("INSERT OR REPLACE INTO txs VALUES (?, ?, ?, ?)",
                               [(rc["tx"], h, i, blob) for i, (rc, blob)
                                in enumerate(zip(receipts, encoded)) if rc["nonce_used"]])
                db.executemany("INSERT OR IGNORE INTO txs VALUES (?, ?, ?, ?)",
                               [(rc["tx"], h, i, blob) for i, (rc, blob)
                                in enumerate(zip(receipts, encoded)) if not rc["nonce_used"]])
            for h, m, cs in snaps:
                db.execute("DELETE FROM snapshot_chunks WHERE height = ?", (h,))
                db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                           (h, m, len(cs)))
                db.executemany("INSERT INTO snapshot_chunks VALUES (?, ?, ?)",
                               [(h, i, c) for i, c in enumerate(cs)])
            if snaps:                             # keep the latest SNAPSHOTS_KEPT
                old = [h for (h,) in db.execute(
                    "SELECT height FROM snapshots ORDER BY height DESC LIMIT -1 OFFSET ?",
                    (SNAPSHOTS_KEPT,))]
                for h in old:
                    db.execute("DELETE FROM snapshot_chunks WHERE height = ?", (h,))
                    db.execute("DELETE FROM snapshots WHERE height = ?", (h,))
            if state is not None:
                statedb.write_delta(db, state)
        self._height = height                     # only once committed
        if base is not None:
            self.base = base

    def prune(self, keep_from: int) -> int:
        """Forget the blocks below `keep_from` and their transactions' index entries, in
        one transaction (store.check_prune); return how many blocks went. Snapshots stay.
        The file does not shrink: SQLite reuses the freed pages for new blocks."""
        check_prune(self.base, self._height, keep_from)
        if keep_from <= self.base + 1:
            return 0
        with self._transaction() as db:
            gone = db.execute("DELETE FROM blocks WHERE height < ?", (keep_from,)).rowcount
            db.execute("DELETE FROM txs WHERE height < ?", (keep_from,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (keep_from - 1,))
        self.base = keep_from - 1
        for h in [h for h in self._cache if h < keep_from]:
            del self._cache[h]
        return gone

    # --- the ledger state (statedb.py) ----------------------------------------------------

    def open_state(self) -> tuple[State | None, str]:
        """(the stored ledger state at the store's height, "") or (None, why not). Cheap:
        bucket hashes and counts only. The caller checks its root against the block's."""
        why = statedb.usable(self._db, self._height)
        if why is not None:
            return None, why
        backing = statedb.SQLiteBacking(self._db, self._mark_state_damaged)
        return State.open(backing, self.state_cache_rows), ""

    def put_state_base(self, height: int, state: State) -> None:
        """Replace the stored state with `state` (in memory: restored from a snapshot,
        rebuilt by replay, or genesis) at `height`, which must be the stored chain's,
        in one transaction; refused if its root is not the one stored with that block."""
        if height != self._height:
            raise ValueError(f"a state base at height {height}, the chain is at "
                             f"{self._height}")
        if state.backing is not None:
            raise ValueError("the state base must be an in-memory state")
        if height and state.root() != self.get_block(height)[2]:
            raise ValueError(f"the state base's root is not the one stored with block "
                             f"{height}")
        with self._transaction() as db:
            statedb.write_base(db, height, state)

    def _mark_state_damaged(self, message: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('state_damaged', ?)",
                       (message[:500],))

    def _gc(self, db, height: int) -> None:
        """Forget the votes for heights up to a stable checkpoint: no view change can
        reach back past it. ("gc",) itself is an instruction, not a record."""
        keys = db.execute("SELECT key FROM records WHERE key >= ? AND key < ?",
                          (_VOTES_FROM, _VOTES_TO)).fetchall()
        db.executemany("DELETE FROM records WHERE key = ?",
                       [(k,) for (k,) in keys if decode_row(k)[3] <= height])

    def load_records(self) -> dict:
        return {tuple(decode_row(k)): decode_row(v)
                for k, v in self._db.execute("SELECT key, value FROM records")}

    # --- the chain ----------------------------------------------------------------------

    def put_block(self, height: int, block: dict, cert: list, root: bytes,
                  receipts=()) -> None:
        """The block, its certificate, the state root after it and its transactions'
        receipts, in one transaction. `receipts`: Receipt.to_json() of each transaction,
        in block order (or none, and then the block's transactions are not indexed)."""
        self.put_batch(blocks=[(height, block, cert, root, receipts)])

    def get_block(self, height: int):
        """(block, cert, root) or None. Shared with the cache: do not modify it."""
        got = self._cache.get(height)
        if got is not None:
            self._cache.move_to_end(height)
            return got
        row = self._db.execute("SELECT block, cert, root FROM blocks WHERE height = ?",
                               (height,)).fetchone()
        if row is None:
            return None
        got = tuple(decode_row(blob) for blob in row)
        self._cache[height] = got
        if len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)       # least recently used
        return got

    def snapshot_heights(self) -> list[int]:
        """The heights of the snapshots kept, latest first."""
        return snapshot_heights(self._db)

    def get_snapshot(self, height: int):
        """(manifest, chunks) of the snapshot at `height`, or None (`read_snapshot`)."""
        return read_snapshot(self._db, height)

    def snapshot_size(self, height: int) -> tuple[int, int] | None:
        """(chunks, bytes) of the snapshot at `height`, or None: what a peer is offered,
        without reading the chunks."""
        row = self._db.execute("SELECT s.chunks, (SELECT coalesce(sum(length(data)), 0)"
                               " FROM snapshot_chunks c WHERE c.height = s.height)"
                               " FROM snapshots s WHERE s.height = ?", (height,)).fetchone()
        return None if row is None else (row[0], row[1])

    def get_chunk(self, height: int, index: int) -> bytes | None:
        """One chunk of the snapshot at `height` (what a peer serves), or None."""
        return read_chunk(self._db, height, index)

    def tx_location(self, tx_hash: str) -> dict | None:
        row = self._db.execute("SELECT height, idx, receipt FROM txs WHERE hash = ?",
                               (tx_hash,)).fetchone()
        return row and location(row[0], row[1], decode_row(row[2]))

    @property
    def height(self) -> int:
        return self._height

    # --- housekeeping -------------------------------------------------------------------

    def stats(self) -> dict:
        """Counts, and the bytes on disk: the file plus its WAL, which holds the commits
        not yet copied back into the file."""
        (records,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal")
                   if os.path.exists(p))
        return {"blocks": self._height - self.base, "base": self.base, "records": records,
                "bytes": size}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cache.clear()
        try:
            self._db.close()
        finally:
            os.close(self._lock_fd)              # releases the lock


def snapshot_heights(db) -> list[int]:
    """The heights of the snapshots a store keeps, latest first."""
    return [h for (h,) in db.execute("SELECT height FROM snapshots ORDER BY height DESC")]


def read_snapshot(db, height: int):
    """(manifest, chunks) of a store's snapshot at `height`, or None. The chunks are read
    one at a time as they are iterated; a missing one ends them early, which restore
    refuses (a group missing). Shared by the store and verify-chain's reader."""
    row = db.execute("SELECT manifest, chunks FROM snapshots WHERE height = ?",
                     (height,)).fetchone()
    if row is None:
        return None
    return decode_row(row[0]), _chunks(db, height, row[1])


def _chunks(db, height: int, n: int):
    for i in range(n):
        got = read_chunk(db, height, i)
        if got is None:
            return
        yield got


def read_chunk(db, height: int, index: int) -> bytes | None:
    got = db.execute("SELECT data FROM snapshot_chunks WHERE height = ? AND idx = ?",
                     (height, index)).fetchone()
    return None if got is None else got[0]


def check_heights(db, path: str) -> tuple[int, int]:
    """The blocks after the store's base (see store.py) are replayed on start, so a
    missing one is fatal; say so now, naming it, rather than fail later on a None.
    Returns (base, height)."""
    got = db.execute("SELECT value FROM meta WHERE key = 'base'").fetchone()
    base = 0 if got is None else got[0]
    if type(base) is not int or base < 0:
        raise StoreError(f"store {path} is corrupt: its base height is {base!r}")
    n, low, high = db.execute(
        "SELECT count(*), min(height), max(height) FROM blocks").fetchone()
    if n == 0 or (low == base + 1 and high == base + n):
        return base, base + n
    if low <= base:
        raise StoreError(f"store {path} is corrupt: it holds a block at height "
                         f"{low}; its first is {base + 1}")
    missing = base + 1 if low > base + 1 else db.execute(
        "SELECT b.height + 1 FROM blocks b WHERE NOT EXISTS (SELECT 1 FROM blocks c"
        " WHERE c.height = b.height + 1) ORDER BY b.height LIMIT 1").fetchone()[0]
    raise StoreError(f"store {path} is corrupt: block {missing} is missing "
                     f"(it holds {n} blocks up to height {high})")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
