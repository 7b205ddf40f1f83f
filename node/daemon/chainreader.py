"""Read a node's stored chain without writing anything: for `lendnet node verify-chain`,
which must work on a running node and leave a stopped one exactly as it was.

SQLite's `mode=ro` alone is not enough. Opening a WAL database read-only still creates
its -wal and -shm files when they are missing (a cleanly stopped node leaves neither),
so which way we open depends on the node's state, read from its lock (`SQLiteStore`
holds an exclusive flock on node.db.lock while it runs):

- running (lock held): `mode=ro`. The node's -wal and -shm exist; we read through them
  as any SQLite reader does, seeing each committed block.
- stopped, no -wal: `immutable=1`, which reads the file alone and creates nothing. We
  hold a shared lock meanwhile, so the node cannot start and change the file under us
  (its start is refused until we finish).
- stopped after a crash, -wal left behind: its commits are only in the WAL, so `mode=ro`
  (reading the WAL), again under the shared lock. SQLite then uses the -shm left by the
  crashed node (creating it if it is gone): an index of the WAL, never the chain's data.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from lendnet.node.core.store import StoreError

from .sqlstore import SCHEMA_VERSION, check_heights, read_snapshot, snapshot_heights

READ_CHUNK = 256          # blocks per query: a short read transaction, so a running
                          # node's WAL can still be checkpointed while we read


class ChainReader:
    def __init__(self, path: Path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise StoreError(f"{self.path} does not exist: the node has no store (it has "
                             f"never been started)")
        self._lock_fd: int | None = None
        self.running = self._shared_lock()
        try:
            self._db = self._open(immutable=not self.running
                                  and not os.path.exists(self.path + "-wal"))
        except BaseException:
            self._release()
            raise

    def _shared_lock(self) -> bool:
        """Whether the node is running (its lock is held). If not, hold a shared lock
        on PATH.lock until closed; a missing lock file is not created."""
        try:
            fd = os.open(self.path + ".lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)                          # the node holds it: it is running
            return True
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return False

    def _open(self, immutable: bool) -> sqlite3.Connection:
        uri = f"file:{quote(self.path)}?" + ("immutable=1" if immutable else "mode=ro")
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path} cannot be opened: {e}") from e
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise StoreError(f"store {self.path} has schema version "
                                 f"{row and row[0]!r}; this lendnet reads version "
                                 f"{SCHEMA_VERSION}")
            self.base, self.height = check_heights(db, self.path)
        except sqlite3.DatabaseError as e:        # not a database, or no such table
            db.close()
            raise StoreError(f"store {self.path} cannot be read: {e}") from e
        except BaseException:
            db.close()
            raise
        return db

    def blocks(self, first: int, last: int) -> Iterator[tuple[int, tuple[bytes, ...]]]:
        """(height, (block, cert, root) as stored bytes) for first..last, in order.
        Bytes, not values: the caller decodes, so a damaged row is its finding."""
        for low in range(first, last + 1, READ_CHUNK):
            high = min(last, low + READ_CHUNK - 1)
            rows = self._db.execute(
                "SELECT height, block, cert, root FROM blocks WHERE height BETWEEN ? AND ?"
                " ORDER BY height", (low, high)).fetchall()
            if [r[0] for r in rows] != list(range(low, high + 1)):
                raise StoreError(f"store {self.path}: blocks {low}..{high} are not all "
                                 f"there")
            for h, block, cert, root in rows:
                yield h, (block, cert, root)

    def snapshot_heights(self) -> list[int]:
        """The heights of the stored snapshots, latest first."""
        return snapshot_heights(self._db)

    def snapshot(self, height: int):
        """(manifest, chunks) of the snapshot at `height`, or None; the chunks are read
        as they are iterated, each in its own short read (as `blocks`)."""
        return read_snapshot(self._db, height)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)              # drops the shared lock
            self._lock_fd = None

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._release()

    def __enter__(self) -> ChainReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
