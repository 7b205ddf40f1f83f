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
"""
from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from sortedcontainers import SortedList

from . import codec

_MISSING = object()
_BUCKETS = 1 << 16
_GROUP_SHIFT = 8


class Table:
    __slots__ = ("name", "rows", "order", "_state", "_on_set", "_leaves", "_groups",
                 "_group_hash", "_dirty", "_root")

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
        if self._on_set:
            self._on_set(key, value)

    def delete(self, key) -> None:
        rows = self.rows
        if key in rows:
            self._state.journal.append((self, key, rows.pop(key)))
            if self.order is not None:
                self.order.remove(key)
            self._dirty[key] = None
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
            b = zlib.crc32(kb) & (_BUCKETS - 1)
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
        dirty_groups: dict[int, None] = {}
        groups = self._groups
        for b in dirty_buckets:
            g = b >> _GROUP_SHIFT
            group = groups.get(g)
            if group is None:
                group = groups[g] = {}
            bucket = leaves.get(b)
            if bucket:
                group[b] = hashlib.sha256(b"".join(bucket[k] for k in sorted(bucket))).digest()
            else:
                leaves.pop(b, None)
                group.pop(b, None)
            dirty_groups[g] = None
        for g in dirty_groups:
            group = groups[g]
            if group:
                self._group_hash[g] = hashlib.sha256(
                    b"".join(b.to_bytes(2, "big") + group[b] for b in sorted(group))).digest()
            else:
                del groups[g]
                self._group_hash.pop(g, None)


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

    def __init__(self, on_wake: Callable[[Any, Any], None] | None = None) -> None:
        self.journal: list = []
        self.tables = {name: Table(name, self, on_wake if name == "wakes" else None,
                                   ordered=name in self.LISTED)
                       for name in self.TABLES}
        for name, table in self.tables.items():
            setattr(self, name, table)

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
