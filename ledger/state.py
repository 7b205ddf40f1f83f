"""Ledger state: named tables of canonical records, an undo journal, and the state root.

Records are immutable values (tuples, or dicts that are replaced, never mutated), so the
journal only has to remember the previous value of each key it overwrote: rolling back a
failed transaction restores those in reverse order.

The state root commits to every row of every table. Each row's leaf is
sha256(encode(key) + encode(value)); leaves fall into 65,536 buckets by crc32 of the key,
buckets into 256 groups; a bucket's hash covers its leaves in key order, a group's hash
its non-empty buckets, a table's hash its non-empty groups, and the root all tables in
their fixed order. Only what a block touched is rehashed, so the root costs time in
proportion to the block, not to the size of the state.

Two backings behind one interface:

- `Table` keeps every row, leaf and bucket hash in memory (the simulator, tests,
  benchmarks, and any state being assembled before it is stored).
- `StoredTable` keeps rows and leaves in a store (`StateBacking`, e.g. the daemon's
  SQLite file): memory holds a bounded LRU of decoded rows, the writes since the store
  last committed (several blocks' worth while catching up), and the bucket hashes (at
  most 65,536 per table). The root is defined the same way, so both give the same root
  for the same rows.

A node whose store keeps its state passes `State.delta()` to the store with the blocks
it commits, and then `State.flushed(delta)`: block and state reach the disk together.
"""
from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sortedcontainers import SortedList

from . import codec

_MISSING = object()
_GONE = object()        # StoredTable: a row deleted since the last flush, or known absent
_NO_GROUP: dict = {}
_BUCKETS = 1 << 16
_GROUP_SHIFT = 8
DEFAULT_CACHE_ROWS = 100_000     # decoded rows a StoredTable keeps, per table
_READ_BATCH = 512                # rows or buckets asked of the backing at once


class StateDamaged(Exception):
    """A stored row or leaf that does not hash to what the verified root covers. Not a
    ValueError or TxError: nothing in execution may take it for a transaction's failure."""


def bucket_of(kb: bytes) -> int:
    """The bucket of an encoded key."""
    return zlib.crc32(kb) & (_BUCKETS - 1)


def thaw(obj):
    """Decoding gives lists where the ledger put tuples; keys must be hashable again."""
    if type(obj) is not list:
        return obj
    if list not in map(type, obj):
        return tuple(obj)               # the common case: (balance, nonce), (addr, key)
    return tuple(thaw(x) for x in obj)


# Values the ledger stores as tuples (the rest keep decoding's lists and dicts): a row
# read back (from a snapshot or a store) must be the same Python value, not just the
# same bytes, or code that compares or concatenates it would behave differently.
TUPLE_VALUES = frozenset({"accounts", "multisigs"})


def _bucket_hash(leaves: Iterable[bytes]) -> bytes:
    """A bucket's hash: its leaves, in encoded-key order, concatenated."""
    return hashlib.sha256(b"".join(leaves)).digest()


class Table:
    __slots__ = ("name", "rows", "order", "_state", "_on_set", "_leaves", "_groups",
                 "_group_hash", "_dirty", "_root", "_changed")

    def __init__(self, name: str, state: State,
                 on_set: Callable[[Any, Any], None] | None = None,
                 ordered: bool = False) -> None:
        self.name = name
        self.rows: dict = {}
        # The keys in order, for tables anyone may page through (State.LISTED): a listing
        # walks it from a cursor instead of sorting the table for every request.
        self.order: SortedList | None = SortedList() if ordered else None
        self._state = state
        self._on_set = on_set          # called with (key, value) on put and on undo
        self._leaves: dict[int, dict[bytes, bytes]] = {}      # bucket -> key -> leaf
        self._groups: dict[int, dict[int, bytes]] = {}        # group -> bucket -> hash
        self._group_hash: dict[int, bytes] = {}
        self._dirty: dict = {}
        self._root: bytes | None = None     # the table's hash while nothing is dirty
        # Keys written since the store last took them (State.track), for a node whose
        # store keeps the state (MemoryStore); None: nobody asks (no cost).
        self._changed: dict | None = None

    def get(self, key, default=None):
        return self.rows.get(key, default)

    def __contains__(self, key):
        return key in self.rows

    def __len__(self):
        return len(self.rows)

    def put(self, key, value) -> None:
        rows = self.rows
        old = rows.get(key, _MISSING)
        if old is not _MISSING and type(old) is type(value) and old == value:
            return              # rewriting the same value: nothing to journal or rehash
        self._state.journal.append((self, key, old))
        rows[key] = value
        if old is _MISSING and self.order is not None:
            self.order.add(key)
        self._dirty[key] = None
        if self._changed is not None:
            self._changed[key] = None
        if self._on_set:
            self._on_set(key, value)

    def delete(self, key) -> None:
        rows = self.rows
        if key in rows:
            self._state.journal.append((self, key, rows.pop(key)))
            if self.order is not None:
                self.order.remove(key)
            self._dirty[key] = None
            if self._changed is not None:
                self._changed[key] = None
            if self._on_set:
                self._on_set(key, None)

    def _restore(self, key, old) -> None:
        there = key in self.rows
        if old is _MISSING:
            self.rows.pop(key, None)
            old = None
            if there and self.order is not None:
                self.order.remove(key)
        else:
            self.rows[key] = old
            if not there and self.order is not None:
                self.order.add(key)
        self._dirty[key] = None
        if self._changed is not None:
            self._changed[key] = None
        if self._on_set:
            self._on_set(key, old)

    def page(self, after=None, limit: int = 100, match: Callable[[Any], bool] | None = None,
             scan: int = 10_000) -> tuple[list, Any]:
        """Up to `limit` (key, value) rows in key order after `after` that `match`, looking
        at no more than `scan` rows; and the key to continue after (None: no more). The
        work is bounded whatever the table's size and however rare the matches."""
        assert self.order is not None, f"table {self.name} is not ordered"
        keys = (self.order.irange(after, inclusive=(False, False)) if after is not None
                else iter(self.order))
        out: list = []
        looked = 0
        last = None
        for key in keys:
            if len(out) >= limit or looked >= scan:
                return out, last
            looked += 1
            last = key
            value = self.rows[key]
            if match is None or match(value):
                out.append((key, value))
        return out, None

    def group_hashes(self) -> dict[int, bytes]:
        """Group index -> hash of every non-empty group, as the root covers them (what a
        snapshot's manifest lists)."""
        self.root()
        return dict(self._group_hash)

    def load(self, rows: dict, leaves: dict[int, dict[bytes, bytes]] | None = None) -> None:
        """Fill an empty table with rows from outside the journal (a restored snapshot):
        there is nothing to roll back to. Without `leaves` every row is rehashed at the
        next root(); with them (bucket -> encoded key -> leaf, which the caller computed
        from these very rows: ledger/snapshot.py does as it checks them) only the bucket
        and group hashes are."""
        if self.rows or self._state.journal:
            raise ValueError(f"table {self.name} is not empty, or a transaction is open")
        self.rows = dict(rows)
        if self.order is not None:
            self.order = SortedList(self.rows)
        self._root = None
        if leaves is None:
            self._dirty = dict.fromkeys(self.rows)
            return
        if sum(map(len, leaves.values())) != len(self.rows):
            raise ValueError(f"table {self.name}: leaves and rows differ in number")
        self._leaves = leaves
        self._rehash_buckets(sorted(leaves))

    def set_hook(self, on_set: Callable[[Any, Any], None] | None) -> None:
        """Who is told of every put and undo: a restored state is built before its ledger."""
        self._on_set = on_set

    def root(self) -> bytes:
        if self._dirty:
            self._rehash()
            self._root = None
        if self._root is None:
            h = hashlib.sha256(self.name.encode())
            for g in sorted(self._group_hash):
                h.update(g.to_bytes(2, "big") + self._group_hash[g])
            self._root = h.digest()
        return self._root

    def _rehash(self) -> None:
        encode, rows, leaves = codec.encode, self.rows, self._leaves
        dirty_buckets: dict[int, None] = {}
        for key in self._dirty:
            kb = encode(key)
            b = bucket_of(kb)
            bucket = leaves.get(b)
            if key in rows:
                if bucket is None:
                    bucket = leaves[b] = {}
                bucket[kb] = hashlib.sha256(kb + encode(rows[key])).digest()
            elif bucket is not None:
                bucket.pop(kb, None)
            dirty_buckets[b] = None
        self._dirty = {}
        self._rehash_buckets(dirty_buckets)

    def _rehash_buckets(self, dirty_buckets: Iterable[int]) -> None:
        leaves = self._leaves
        changed: dict[int, bytes | None] = {}
        for b in dirty_buckets:
            bucket = leaves.get(b)
            if bucket:
                changed[b] = _bucket_hash(bucket[k] for k in sorted(bucket))
            else:
                leaves.pop(b, None)
                changed[b] = None
        self._set_buckets(changed)

    def _set_buckets(self, changed: dict[int, bytes | None]) -> None:
        """Set these buckets' hashes (None: empty) and rehash their groups."""
        dirty_groups: dict[int, None] = {}
        groups = self._groups
        for b, h in changed.items():
            g = b >> _GROUP_SHIFT
            group = groups.get(g)
            if group is None:
                group = groups[g] = {}
            if h is None:
                group.pop(b, None)
            else:
                group[b] = h
            dirty_groups[g] = None
        for g in dirty_groups:
            group = groups[g]
            if group:
                self._group_hash[g] = hashlib.sha256(
                    b"".join(b.to_bytes(2, "big") + group[b] for b in sorted(group))).digest()
            else:
                del groups[g]
                self._group_hash.pop(g, None)

    def bucket_hashes(self) -> Iterator[tuple[int, bytes]]:
        """(bucket, hash) of every non-empty bucket: what a store keeps to open cheaply."""
        self.root()
        for group in self._groups.values():
            yield from group.items()

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value), in the order the root covers them (bucket, then encoded
        key). O(table): for snapshots and whole-table sums, never per transaction."""
        encode, rows = codec.encode, self.rows
        order = sorted((bucket_of(kb), kb, key) for key in rows for kb in (encode(key),))
        for _, _, key in order:
            yield key, rows[key]

    def changed_rows(self) -> dict:
        """key -> value (None: deleted) of every row written since the last flush."""
        rows = self.rows
        return {key: rows.get(key) for key in self._changed or ()}

    def flushed(self) -> None:
        if self._changed is not None:
            self._changed = {}


class StateBacking(Protocol):
    """Where a StoredTable's rows and leaves live (node/daemon/statedb.py for SQLite).
    Tables are named by their index in State.TABLES; rows by their encoded key."""

    def read(self, table: int, kb: bytes) -> tuple[bytes, bytes] | None:
        """(encoded value, leaf) of one row, or None."""

    def bucket_leaves(self, table: int, buckets: list[int]) -> list[tuple[int, bytes, bytes]]:
        """(bucket, encoded key, leaf) of every row in these buckets, by bucket then key."""

    def ordered(self, table: int, after: str | None,
                limit: int) -> list[tuple[str, bytes, bytes, bytes]]:
        """Up to `limit` rows of a table with str keys, in key order after `after`:
        (key, encoded key, encoded value, leaf)."""

    def scan(self, table: int, after: tuple[int, bytes] | None,
             limit: int) -> list[tuple[int, bytes, bytes, bytes]]:
        """Up to `limit` rows in root order after (bucket, encoded key):
        (bucket, encoded key, encoded value, leaf)."""

    def bucket_hashes(self, table: int) -> list[tuple[int, bytes]]:
        """(bucket, hash) of every non-empty bucket, as last stored."""

    def count(self, table: int) -> int:
        """Rows in the table, as last stored."""

    def damaged(self, message: str) -> None:
        """Record that the stored state cannot be trusted (the next start falls back to
        a snapshot or replay), then raise StateDamaged(message)."""


class StoredTable(Table):
    """A table whose rows live in a StateBacking. Reads go pending writes -> the LRU
    cache -> the backing; every row read from the backing is checked against its leaf,
    and every bucket read for rehashing against the bucket hash the store last
    committed, which the opened root covers: damage is found when it is touched, and
    reported (StateDamaged) rather than executed on."""

    __slots__ = ("_tid", "_backing", "_young", "_old", "_half", "_pending", "_enc",
                 "_pending_buckets", "_flushed_buckets", "_count", "_tuple_values",
                 "_leaf_cache", "_leaf_buckets", "_leaf_rows")

    def __init__(self, name: str, state: State, backing: StateBacking, cache_rows: int,
                 on_set: Callable[[Any, Any], None] | None = None,
                 ordered: bool = False) -> None:
        self.name = name
        self.order = None
        self._state = state
        self._on_set = on_set
        self._groups = {}
        self._group_hash = {}
        self._dirty = {}
        self._root = None
        self._changed = None
        self._tid = State.TABLES.index(name)
        self._tuple_values = name in TUPLE_VALUES
        self._backing = backing
        # The row cache, key -> value or _GONE: two generations of plain dicts (an
        # approximate LRU without bookkeeping on a hit, which is most reads). Writes go
        # to `_young` as well as `_pending`, so a hit needs one lookup; when `_young`
        # holds half the cache it becomes `_old` and the previous `_old` is dropped: at
        # most cache_rows rows, the recently used ones.
        self._young: dict = {}
        self._old: dict = {}
        self._half = max(1, cache_rows // 2)
        self._pending: dict = {}     # key -> value or _GONE: written since the last flush
        # For pending keys already rehashed: key -> (encoded key, bucket, encoded value
        # or None, leaf or None); and bucket -> encoded key -> leaf or None.
        self._enc: dict = {}
        self._pending_buckets: dict[int, dict[bytes, bytes | None]] = {}
        # The stored hash (None: empty) of each bucket rehashed since the last flush.
        self._flushed_buckets: dict[int, bytes | None] = {}
        # The stored leaves of recently rehashed buckets (bucket -> encoded key -> leaf),
        # already checked: a hot row's bucket is not read again every block. LRU, at
        # most cache_rows // 16 buckets holding about cache_rows leaves (_leaf_limit).
        self._leaf_cache: OrderedDict[int, dict[bytes, bytes]] = OrderedDict()
        self._leaf_buckets = max(2, cache_rows // 16)
        self._leaf_rows = cache_rows
        self._count = backing.count(self._tid)
        hashes: dict[int, bytes | None] = {}
        for b, h in backing.bucket_hashes(self._tid):
            hashes[b] = h
        self._set_buckets(hashes)

    # --- reads ------------------------------------------------------------------------

    def _current(self, key):
        """The row's value, or _GONE."""
        v = self._young.get(key, _MISSING)
        return self._miss(key) if v is _MISSING else v

    def _miss(self, key):
        """A key not in the young generation: pending (dropped from the cache, not yet
        written), old, or stored."""
        v = self._pending.get(key, _MISSING)
        if v is _MISSING:
            v = self._old.get(key, _MISSING)
            if v is _MISSING:
                return self._load(key)
        self._cache_put(key, v)
        return v

    def _load(self, key):
        """Read a row not pending nor cached from the backing (not even that when its
        bucket is empty there), check it against its leaf, and cache it."""
        kb = codec.encode(key)
        b = bucket_of(kb)
        flushed = self._flushed_buckets
        stored_hash = (flushed[b] if b in flushed
                       else self._groups.get(b >> _GROUP_SHIFT, _NO_GROUP).get(b))
        got = None if stored_hash is None else self._backing.read(self._tid, kb)
        if got is None:
            v = _GONE
        else:
            vb, leaf = got
            if hashlib.sha256(kb + vb).digest() != leaf:
                self._backing.damaged(f"table {self.name}: the stored row {key!r} does "
                                      "not hash to its leaf")
            v = codec.decode(vb, max_size=len(vb))
            if self._tuple_values:
                v = thaw(v)
        self._cache_put(key, v)
        return v

    def _cache_put(self, key, v) -> None:
        young = self._young
        young[key] = v
        if len(young) >= self._half:
            self._old, self._young = young, {}

    def get(self, key, default=None):
        # _current inlined: this is the ledger's hottest call
        v = self._young.get(key, _MISSING)
        if v is _MISSING:
            v = self._miss(key)
        return default if v is _GONE else v

    def __contains__(self, key):
        return self._current(key) is not _GONE

    def __len__(self):
        return self._count

    # --- writes -----------------------------------------------------------------------

    def put(self, key, value) -> None:
        old = self._current(key)
        if old is not _GONE and type(old) is type(value) and old == value:
            return
        self._state.journal.append((self, key, _MISSING if old is _GONE else old))
        self._pending[key] = value
        self._cache_put(key, value)
        if old is _GONE:
            self._count += 1
        self._dirty[key] = None
        if self._on_set:
            self._on_set(key, value)

    def delete(self, key) -> None:
        old = self._current(key)
        if old is not _GONE:
            self._state.journal.append((self, key, old))
            self._pending[key] = _GONE
            self._cache_put(key, _GONE)
            self._count -= 1
            self._dirty[key] = None
            if self._on_set:
                self._on_set(key, None)

    def _restore(self, key, old) -> None:
        there = self._current(key) is not _GONE
        if old is _MISSING:
            self._pending[key] = _GONE
            self._cache_put(key, _GONE)
            self._count -= there
            old = None
        else:
            self._pending[key] = old
            self._cache_put(key, old)
            self._count += not there
        self._dirty[key] = None
        if self._on_set:
            self._on_set(key, old)

    def load(self, rows: dict, leaves=None) -> None:
        raise TypeError(f"table {self.name} is stored: a whole state is written to the "
                        "store as a base (put_state_base), not loaded into it")

    # --- the root ---------------------------------------------------------------------

    def _rehash(self) -> None:
        encode, sha256 = codec.encode, hashlib.sha256
        pending, enc, pbuckets = self._pending, self._enc, self._pending_buckets
        dirty_buckets: dict[int, None] = {}
        for key in self._dirty:
            v = pending[key]
            kb = encode(key)
            b = bucket_of(kb)
            if v is _GONE:
                vb = leaf = None
            else:
                vb = encode(v)
                leaf = sha256(kb + vb).digest()
            enc[key] = (kb, b, vb, leaf)
            mine = pbuckets.get(b)
            if mine is None:
                mine = pbuckets[b] = {}
            mine[kb] = leaf
            dirty_buckets[b] = None
        self._dirty = {}
        groups, flushed = self._groups, self._flushed_buckets
        for b in dirty_buckets:                   # the stored hash, before it changes
            if b not in flushed:
                flushed[b] = groups.get(b >> _GROUP_SHIFT, _NO_GROUP).get(b)
        lcache = self._leaf_cache
        # (a bucket empty on disk is not read)
        wanted = [b for b in dirty_buckets if flushed[b] is not None and b not in lcache]
        stored: dict[int, list[tuple[bytes, bytes]]] = {}
        for i in range(0, len(wanted), _READ_BATCH):
            for b, kb, leaf in self._backing.bucket_leaves(self._tid,
                                                           wanted[i:i + _READ_BATCH]):
                stored.setdefault(b, []).append((kb, leaf))
        fresh: dict[int, dict[bytes, bytes]] = {}
        for b in wanted:
            on_disk = stored.get(b, ())
            got = _bucket_hash(leaf for _, leaf in on_disk) if on_disk else None
            if got != flushed[b]:
                self._backing.damaged(f"table {self.name}: stored bucket {b} does not "
                                      "hash to the bucket hash the root covers")
            fresh[b] = dict(on_disk)
        changed: dict[int, bytes | None] = {}
        for b in dirty_buckets:
            if flushed[b] is None:
                base: dict[bytes, bytes] = {}
            elif b in fresh:
                base = fresh[b]
            else:                                 # (cached: nothing is evicted until
                base = lcache[b]                  # every dirty bucket is merged)
                lcache.move_to_end(b)
            merged: dict[bytes, bytes | None] = dict(base)
            merged.update(pbuckets[b])
            live = [leaf for k in sorted(merged) if (leaf := merged[k]) is not None]
            changed[b] = _bucket_hash(live) if live else None
        limit = self._leaf_limit()
        for b, leaves in fresh.items():
            lcache[b] = leaves
            while len(lcache) > limit:
                lcache.popitem(last=False)
        self._set_buckets(changed)

    def _leaf_limit(self) -> int:
        """How many buckets the leaf cache may hold: cache_rows // 16, but no more than
        about cache_rows leaves at the table's mean bucket size. A bucket's leaves grow
        with the table (15 a bucket at 1,000,000 rows, 30 at 2,000,000), so a cap in
        buckets alone let the cache, and the node's memory, grow with the state."""
        n = self._count
        per_bucket = max(1, n // _BUCKETS)
        return max(2, min(self._leaf_buckets, self._leaf_rows // per_bucket))

    # --- walks ------------------------------------------------------------------------

    def _stored_value(self, kb: bytes, vb: bytes, leaf: bytes):
        if hashlib.sha256(kb + vb).digest() != leaf:
            self._backing.damaged(f"table {self.name}: a stored row does not hash to "
                                  "its leaf")
        v = codec.decode(vb, max_size=len(vb))
        return thaw(v) if self._tuple_values else v

    def _in_key_order(self, after) -> Iterator[tuple[Any, Any]]:
        """(key, value) in key order after `after`: the stored rows merged with the
        pending writes (which win). Only for tables with str keys (State.LISTED): SQLite
        orders UTF-8 TEXT bytewise, which is Python's str order."""
        assert after is None or type(after) is str, f"table {self.name}: key {after!r}"
        pending = self._pending
        assert all(type(k) is str for k in pending), f"table {self.name} has a non-str key"
        mine = sorted(k for k in pending if after is None or k > after)
        i, cursor = 0, after
        while True:
            batch = self._backing.ordered(self._tid, cursor, _READ_BATCH)
            for key, kb, vb, leaf in batch:
                while i < len(mine) and mine[i] < key:
                    if pending[mine[i]] is not _GONE:
                        yield mine[i], pending[mine[i]]
                    i += 1
                if i < len(mine) and mine[i] == key:
                    i += 1
                if key in pending:
                    if pending[key] is not _GONE:
                        yield key, pending[key]
                    continue
                yield key, self._stored_value(kb, vb, leaf)
            if len(batch) < _READ_BATCH:
                break
            cursor = batch[-1][0]
        for k in mine[i:]:
            if pending[k] is not _GONE:
                yield k, pending[k]

    def page(self, after=None, limit: int = 100, match: Callable[[Any], bool] | None = None,
             scan: int = 10_000) -> tuple[list, Any]:
        out: list = []
        looked = 0
        last = None
        for key, value in self._in_key_order(after):
            if len(out) >= limit or looked >= scan:
                return out, last
            looked += 1
            last = key
            if match is None or match(value):
                out.append((key, value))
        return out, None

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value) in root order (bucket, encoded key): the stored rows,
        streamed a batch at a time, merged with the pending writes. O(table)."""
        self.root()                        # every pending write has its encoding
        mine = sorted((b, kb, key) for key, (kb, b, _, _) in self._enc.items())
        pending = self._pending
        i, cursor = 0, None
        while True:
            batch = self._backing.scan(self._tid, cursor, _READ_BATCH)
            for b, kb, vb, leaf in batch:
                while i < len(mine) and mine[i][:2] < (b, kb):
                    key = mine[i][2]
                    if pending[key] is not _GONE:
                        yield key, pending[key]
                    i += 1
                if i < len(mine) and mine[i][:2] == (b, kb):
                    key = mine[i][2]
                    i += 1
                    if pending[key] is not _GONE:
                        yield key, pending[key]
                    continue
                value = self._stored_value(kb, vb, leaf)
                yield thaw(codec.decode(kb, max_size=len(kb))), value
            if len(batch) < _READ_BATCH:
                break
            cursor = (batch[-1][0], batch[-1][1])
        for _, _, key in mine[i:]:
            if pending[key] is not _GONE:
                yield key, pending[key]

    # --- flushing ---------------------------------------------------------------------

    def changed_rows(self) -> dict:
        return {k: (None if v is _GONE else v) for k, v in self._pending.items()}

    def encoded_changes(self) -> tuple[list, dict[int, bytes | None]]:
        """([(key, encoded key, bucket, encoded value or None, leaf or None), ...] of
        every pending write, {bucket: hash or None} of every bucket they changed)."""
        groups = self._groups
        buckets = {b: groups.get(b >> _GROUP_SHIFT, {}).get(b) for b in self._flushed_buckets}
        return [(key, *e) for key, e in self._enc.items()], buckets

    def flushed(self) -> None:
        """The store committed the pending writes: they become clean cached rows."""
        # (the pending values are in the row cache already, or were dropped from it)
        lcache = self._leaf_cache
        for b, leaves in self._pending_buckets.items():
            cached = lcache.get(b)
            if cached is None:
                if self._flushed_buckets.get(b, 1) is not None:
                    continue                  # not cached: read when next needed
                cached = lcache[b] = {}       # it was empty: now it is what we wrote
                while len(lcache) > self._leaf_limit():
                    lcache.popitem(last=False)
            for kb, leaf in leaves.items():
                if leaf is None:
                    cached.pop(kb, None)
                else:
                    cached[kb] = leaf
        self._pending = {}
        self._enc = {}
        self._pending_buckets = {}
        self._flushed_buckets = {}


@dataclass
class StateDelta:
    """What a store must write so that its state is the node's at `height`: each
    table's changed rows (key -> value, None: deleted), its row count, and for stored
    tables the rows encoded with their buckets and leaves and the changed bucket hashes
    (`encoded`: name -> (rows, buckets), present only for a StoredTable backing)."""
    height: int
    rows: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    encoded: dict[str, tuple[list, dict]] | None = None


class State:
    """All tables, the journal that makes a transaction all-or-nothing, and the root."""

    TABLES = ("meta", "accounts", "borrowers", "lenders", "offers", "applications",
              "loans", "assets", "code", "contracts", "storage", "multisigs",
              "history", "wakes", "sales", "identities", "bureau", "savings",
              "savings_pledges", "savings_accounts", "pools", "groups",
              "group_members", "group_credit", "guarantees")

    # The tables are set by name in __init__ (setattr over TABLES); declared here so that
    # type checkers see them. Keep in step with TABLES.
    meta: Table
    accounts: Table
    borrowers: Table
    lenders: Table
    offers: Table
    applications: Table
    loans: Table
    assets: Table
    code: Table
    contracts: Table
    storage: Table
    multisigs: Table
    history: Table
    wakes: Table
    sales: Table
    identities: Table     # address -> the identity a registrar attested (ledger/lending.py)
    bureau: Table         # loan -> what the credit bureau tracks of it
    savings: Table        # savings product (its agreement's address) -> its record
    savings_pledges: Table   # application id (or loan) -> the savings pledged to it
    savings_accounts: Table  # (product, owner) -> its active pledges, what to unlock
    pools: Table          # pool agreement address -> its shared funding (ledger/pools.py)
    groups: Table         # group -> its index record (ledger/groups.py)
    group_members: Table  # address -> the group it joined
    group_credit: Table   # subject -> what its groups' record adds to its score

    guarantees: Table     # guarantee address -> its index record (ledger/guarantees.py)

    # the API pages through these
    LISTED = ("offers", "applications", "loans", "sales", "groups", "guarantees")

    def __init__(self, on_wake: Callable[[Any, Any], None] | None = None,
                 backing: StateBacking | None = None,
                 cache_rows: int = DEFAULT_CACHE_ROWS) -> None:
        """An empty in-memory state; or, with `backing`, the state a store holds (see
        `open`), caching at most `cache_rows` decoded rows per table."""
        self.journal: list = []
        self.backing = backing
        if backing is None:
            self.tables = {name: Table(name, self, on_wake if name == "wakes" else None,
                                       ordered=name in self.LISTED)
                           for name in self.TABLES}
        else:
            self.tables = {name: StoredTable(name, self, backing, cache_rows,
                                             on_wake if name == "wakes" else None,
                                             ordered=name in self.LISTED)
                           for name in self.TABLES}
        for name, table in self.tables.items():
            setattr(self, name, table)

    @classmethod
    def open(cls, backing: StateBacking, cache_rows: int = DEFAULT_CACHE_ROWS) -> State:
        """The state a store holds. Opening reads only the bucket hashes and row counts
        (at most 65,536 hashes a table), whatever the size of the state; the caller
        checks `root()` against the certified root before trusting it."""
        return cls(backing=backing, cache_rows=cache_rows)

    def track(self) -> None:
        """Remember the keys written from now on, for `delta` (an in-memory state kept by
        a MemoryStore; a stored state always knows its pending writes)."""
        if self.backing is None:
            for table in self.tables.values():
                if table._changed is None:
                    table._changed = {}

    def delta(self, height: int) -> StateDelta:
        """What changed since the last `flushed`, for the store to write with the block
        at `height`. Only between transactions (nothing to roll back)."""
        if self.journal:
            raise ValueError("a transaction is open: its writes may still be undone")
        self.root()                      # every write rehashed (and, stored, encoded)
        d = StateDelta(height, encoded={} if self.backing is not None else None)
        for name, table in self.tables.items():
            rows = table.changed_rows() if (self.backing is not None
                                            or table._changed is not None) else {}
            if rows:
                d.rows[name] = rows
                d.counts[name] = len(table)
                if d.encoded is not None:
                    assert isinstance(table, StoredTable)
                    d.encoded[name] = table.encoded_changes()
        return d

    def flushed(self) -> None:
        """The store committed the last delta: start the next one."""
        for table in self.tables.values():
            table.flushed()

    def mark(self) -> int:
        return len(self.journal)

    def rollback(self, mark: int) -> None:
        journal = self.journal
        while len(journal) > mark:
            table, key, old = journal.pop()
            table._restore(key, old)

    def settle(self) -> None:
        """Forget the undo records: what is applied now stays."""
        self.journal.clear()

    def root(self) -> bytes:
        h = hashlib.sha256(b"lendnet-state-v1")
        for name in self.TABLES:
            h.update(self.tables[name].root())
        return h.digest()
