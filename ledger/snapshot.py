"""Snapshots: the state as a manifest and a series of chunks that check against its root.

The state root (state.py) is built from group hashes: every table's rows fall into 256
groups (by crc32 of the encoded key), a group's hash covers its buckets' leaves, a
table's hash its non-empty groups, the root every table in order. So:

* The **manifest** lists, for each table in `State.TABLES` order, the hash of each of
  its non-empty groups, and the root. Recomputing the root from these hashes alone must
  give the certified root (`check_manifest`): after that, every group hash in it is as
  trustworthy as the root.
* A **chunk** is canonical msgpack `[VERSION, root, sections]`, at most `max_bytes`. A
  section is `[table, group, part, final, rows]`, rows `[[key, value], ...]` in the
  order the hash covers them (bucket, then encoded key). Whole groups are packed into a
  chunk while they fit, in (table order, group) order; each is `part` 0, `final` true,
  and is checked on arrival against its manifest hash.
* A group too big for one chunk is **split**: its rows, in the same order, go into
  chunks of one section each, parts 0, 1, ... with `final` true on the last. A part is
  accepted if it is consistent so far (its rows belong to the group and continue in
  order after the previous part's last row, its part number is the next one); the group
  hash is checked when the final part arrives. A bad part is therefore detected at the
  latest at its group's end, and the whole group (its parts so far are dropped) is
  refused naming its table and group: the caller fetches that group again, from
  another peer.
* The `root` in every chunk names its snapshot, so a chunk of another snapshot is
  refused before its rows are looked at.

Telling which peer is bad: a chunk of whole groups is checked on its own, so the peer
that served a refused one is the culprit. A split group is checked only at its end, so
a state-sync client should fetch all of one group's parts from the same peer (or, when
its final part fails, suspect every peer that served a part).

Everything that comes from a peer is bounded: manifest shape, chunk bytes, sections and
rows per chunk, key and row sizes, parts of a split group, and the bytes of all split
groups held until their final parts are checked.
"""
from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from . import codec
from .state import _BUCKETS, _GROUP_SHIFT, TUPLE_VALUES, State, thaw

VERSION = 1
GROUPS = _BUCKETS >> _GROUP_SHIFT          # 256
DEFAULT_CHUNK_BYTES = 1 << 20              # what `chunks` packs by default
MAX_CHUNK_BYTES = 16 << 20                 # the most a reader takes from a peer in one chunk
MIN_CHUNK_BYTES = 512
MAX_SECTIONS = 4_096                       # sections in one chunk
MAX_ROWS = 65_536                          # rows in one section (codec's array bound)
MAX_KEY_BYTES = 1_024                      # one encoded key
MAX_ROW_BYTES = 1 << 20                    # one encoded key plus value
MAX_PARTS = 65_536                         # parts of one split group
MAX_PENDING_BYTES = 256 << 20              # rows of split groups held until they are checked


class SnapshotError(ValueError):
    """A manifest or chunk that does not check against the certified root."""


# --- making a snapshot -------------------------------------------------------------------

def _table_hash(name: str, groups: Iterable[tuple[int, bytes]]) -> bytes:
    # The same as Table.root(): the name, then each non-empty group in index order.
    h = hashlib.sha256(name.encode())
    for g, gh in groups:
        h.update(g.to_bytes(2, "big") + gh)
    return h.digest()


def _root(table_hashes: Iterable[bytes]) -> bytes:
    # The same as State.root().
    h = hashlib.sha256(b"lendnet-state-v1")
    for th in table_hashes:
        h.update(th)
    return h.digest()


def manifest(state: State) -> dict:
    """{"version", "root", "tables": [[name, [[group, hash], ...]], ...]} in TABLES order,
    groups ascending; only non-empty groups are listed."""
    tables = []
    for name in State.TABLES:
        hashes = state.tables[name].group_hashes()
        tables.append([name, [[g, hashes[g]] for g in sorted(hashes)]])
    return {"version": VERSION, "root": state.root(), "tables": tables}


def _bucket(kb: bytes) -> int:
    return zlib.crc32(kb) & (_BUCKETS - 1)


def _array_header(n: int) -> bytes:
    # msgpack's shortest array header, as the canonical encoding writes it
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _group_rows(state: State, name: str) -> Iterator[tuple[int, list[tuple[int, bytes, bytes]]]]:
    """(group, [(bucket, encoded key, encoded [key, value])]) in group order, rows in the
    hash's order: streamed from `Table.items()` (root order), one group held at a time."""
    encode = codec.encode
    g_now = -1
    rows: list[tuple[int, bytes, bytes]] = []
    for key, value in state.tables[name].items():
        kb = encode(key)
        b = _bucket(kb)
        row = b"\x92" + kb + encode(value)
        if len(kb) > MAX_KEY_BYTES or len(row) > MAX_ROW_BYTES:
            raise SnapshotError(f"table {name}: a row of {len(row)} bytes (key {len(kb)}) "
                                f"is over the snapshot's limits")
        if b >> _GROUP_SHIFT != g_now:
            if rows:
                yield g_now, rows
            g_now, rows = b >> _GROUP_SHIFT, []
        rows.append((b, kb, row))
    if rows:
        yield g_now, rows


def _section(name: str, g: int, part: int, final: bool, rows: list[bytes]) -> bytes:
    return (b"\x95" + codec.encode(name) + codec.encode(g) + codec.encode(part)
            + codec.encode(final) + _array_header(len(rows)) + b"".join(rows))


def _chunk(root: bytes, sections: list[bytes]) -> bytes:
    return (b"\x93" + codec.encode(VERSION) + codec.encode(root)
            + _array_header(len(sections)) + b"".join(sections))


# What a chunk and a section add around their rows, at most: headers, version, root,
# table name, group, part, final flag.
_CHUNK_OVERHEAD = 1 + 1 + 34 + 5
_SECTION_OVERHEAD = 1 + 32 + 3 + 5 + 1 + 5


def chunks(state: State, max_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """The snapshot's chunks, each at most `max_bytes` (see the module docstring for the
    packing rule). SnapshotError if one row cannot fit in a chunk that size, or if the
    state changes before the last chunk is made."""
    if not MIN_CHUNK_BYTES <= max_bytes <= MAX_CHUNK_BYTES:
        raise SnapshotError(f"chunk size {max_bytes} is outside "
                            f"{MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}")
    root = state.root()
    room = max_bytes - _CHUNK_OVERHEAD
    sections: list[bytes] = []
    used = 0
    for name in State.TABLES:
        # This is a generator: a caller that applies a block between two chunks would
        # get a mix of two states. The root is checked to be the one the chunks name
        # before each table and after the last.
        if state.root() != root:
            raise SnapshotError("the state changed while its snapshot was being made")
        for g, rows in _group_rows(state, name):
            size = _SECTION_OVERHEAD + sum(len(r[2]) for r in rows)
            if size <= room and len(rows) <= MAX_ROWS:
                if used + size > room or len(sections) >= MAX_SECTIONS:
                    yield _chunk(root, sections)
                    sections, used = [], 0
                sections.append(_section(name, g, 0, True, [r[2] for r in rows]))
                used += size
                continue
            # Too big for one chunk: the pending small groups go first, then this
            # group's parts, one chunk each.
            if sections:
                yield _chunk(root, sections)
                sections, used = [], 0
            parts: list[list[bytes]] = [[]]
            part_used = _SECTION_OVERHEAD
            for _, _, row in rows:
                if _SECTION_OVERHEAD + len(row) > room:
                    raise SnapshotError(f"table {name} group {g}: a row of {len(row)} bytes "
                                        f"does not fit in a {max_bytes}-byte chunk")
                if part_used + len(row) > room or len(parts[-1]) >= MAX_ROWS:
                    parts.append([])
                    part_used = _SECTION_OVERHEAD
                parts[-1].append(row)
                part_used += len(row)
            for i, part in enumerate(parts):
                yield _chunk(root, [_section(name, g, i, i == len(parts) - 1, part)])
    if state.root() != root:
        raise SnapshotError("the state changed while its snapshot was being made")
    if sections:
        yield _chunk(root, sections)


# --- checking one ------------------------------------------------------------------------

def _manifest_groups(m: Any) -> tuple[bytes, dict[tuple[str, int], bytes]]:
    """The manifest's root and (table, group) -> hash, once its shape is checked."""
    if type(m) is not dict or set(m) != {"version", "root", "tables"}:
        raise SnapshotError("the manifest is not a {version, root, tables} map")
    if type(m["version"]) is not int or m["version"] != VERSION:
        raise SnapshotError(f"manifest version {m['version']!r}, this node reads {VERSION}")
    root, tables = m["root"], m["tables"]
    if type(root) is not bytes or len(root) != 32:
        raise SnapshotError("the manifest's root is not 32 bytes")
    if type(tables) is not list or len(tables) != len(State.TABLES):
        raise SnapshotError(f"the manifest must list the {len(State.TABLES)} tables")
    out: dict[tuple[str, int], bytes] = {}
    for entry, name in zip(tables, State.TABLES):
        if type(entry) is not list or len(entry) != 2 or entry[0] != name:
            raise SnapshotError(f"the manifest's tables are not {State.TABLES} in order "
                                f"(expected {name})")
        groups = entry[1]
        if type(groups) is not list or len(groups) > GROUPS:
            raise SnapshotError(f"table {name}: the manifest's groups are not a list of at "
                                f"most {GROUPS}")
        prev = -1
        for pair in groups:
            if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int
                    or not prev < pair[0] < GROUPS or type(pair[1]) is not bytes
                    or len(pair[1]) != 32):
                raise SnapshotError(f"table {name}: manifest group entry after {prev} is not "
                                    f"[ascending index < {GROUPS}, 32-byte hash]")
            prev = pair[0]
            out[(name, pair[0])] = pair[1]
    return root, out


def check_manifest(m: Any, root: bytes) -> None:
    """SnapshotError unless the manifest is well formed and its group hashes give `root`
    (the state root a certificate committed)."""
    mroot, _ = _manifest_groups(m)
    got = _root(_table_hash(name, [(g, h) for g, h in groups])
                for name, groups in m["tables"])
    if got != mroot:
        raise SnapshotError(f"the manifest's group hashes give root {got.hex()}, not the "
                            f"root it states {mroot.hex()}")
    if mroot != root:
        raise SnapshotError(f"the manifest is of state root {mroot.hex()}, not the "
                            f"certified root {root.hex()}")


def _key(obj, name: str, g: int):
    """A row's key as the ledger holds it; SnapshotError for one no table can hold (a
    map, or a list with a map in it, is not hashable: no state has such a key)."""
    key = thaw(obj)
    try:
        hash(key)
    except TypeError:
        raise SnapshotError(f"table {name} group {g}: a key that cannot be one") from None
    return key


class Assembly:
    """Checks a snapshot's chunks as they arrive, in any order, against its manifest
    (checked first with `check_manifest`), and keeps the rows it has verified."""

    def __init__(self, m: dict, max_chunk_bytes: int = MAX_CHUNK_BYTES,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.root, self.expected = _manifest_groups(m)
        self.max_chunk_bytes = max_chunk_bytes
        self.max_pending_bytes = max_pending_bytes
        self.rows: dict[str, dict] = {name: {} for name in State.TABLES}
        # table -> bucket -> encoded key -> leaf, of the verified rows: the restored
        # tables take them rather than hash every row a second time
        self.leaves: dict[str, dict[int, dict[bytes, bytes]]] = {
            name: {} for name in State.TABLES}
        self.done: set[tuple[str, int]] = set()
        # a split group in progress: (table, group) -> its parts so far
        self._partial: dict[tuple[str, int], dict] = {}
        self._spent = False

    def missing(self) -> list[tuple[str, int]]:
        return sorted(set(self.expected) - self.done,
                      key=lambda tg: (State.TABLES.index(tg[0]), tg[1]))

    def in_progress(self) -> list[tuple[str, int]]:
        """The split groups some of whose parts, but not the final one, were added."""
        return sorted(self._partial)

    def forget(self, completed: list[tuple[str, int, dict]]) -> None:
        """Take back groups `add` returned as completed: their rows are right (they
        checked), but a state-sync client that finds the chunks around them out of
        place fetches them again, and would otherwise be refused them as duplicates."""
        for name, g, rows in completed:
            self.done.discard((name, g))
            table = self.rows[name]
            for k in rows:
                table.pop(k, None)
            leaves = self.leaves[name]
            for b in [b for b in leaves if b >> _GROUP_SHIFT == g]:
                del leaves[b]

    def drop_partial(self) -> None:
        """Forget the split groups in progress: a state-sync client that refuses one of
        their parts fetches them again from their first part."""
        self._partial.clear()

    def add(self, data: bytes) -> list[tuple[str, int, dict]]:
        """Check one chunk; keep its rows; return the groups it completed, each with its
        rows (key -> value). SnapshotError, naming the table and group, if it does not
        check: a chunk that fails adds nothing, and a split group that fails (or is
        interrupted by a part out of turn) is dropped whole, to be fetched again."""
        if type(data) is not bytes or len(data) > self.max_chunk_bytes:
            raise SnapshotError(f"a chunk must be bytes of at most {self.max_chunk_bytes}")
        try:
            obj = codec.decode(data, max_size=self.max_chunk_bytes)
        except codec.EncodingError as e:
            raise SnapshotError(f"chunk is not canonical msgpack: {e}") from None
        if type(obj) is not list or len(obj) != 3 or type(obj[0]) is not int \
                or obj[0] != VERSION:
            raise SnapshotError(f"chunk is not [version {VERSION}, root, sections]")
        if obj[1] != self.root:
            raise SnapshotError(f"chunk is of another snapshot (root "
                                f"{obj[1].hex() if type(obj[1]) is bytes else obj[1]!r}, "
                                f"expected {self.root.hex()})")
        sections = obj[2]
        if type(sections) is not list or not 0 < len(sections) <= MAX_SECTIONS:
            raise SnapshotError(f"chunk must hold 1 to {MAX_SECTIONS} sections")
        verified: list[tuple] = []   # (table, group, rows, leaves), kept once the chunk checks
        seen: set[tuple[str, int]] = set()
        for sec in sections:
            got = self._check_section(sec, alone=len(sections) == 1)
            if got[:2] in seen:
                raise SnapshotError(f"table {got[0]} group {got[1]}: twice in one chunk")
            seen.add(got[:2])
            verified.append(got)
        completed = []
        for name, g, rows, leaves in verified:
            if rows is not None:
                self.rows[name].update(rows)
                self.leaves[name].update(leaves)
                self.done.add((name, g))
                completed.append((name, g, rows))
        return completed

    def _check_section(self, sec, alone: bool):
        if type(sec) is not list or len(sec) != 5:
            raise SnapshotError("a section is not [table, group, part, final, rows]")
        name, g, part, final, rows = sec
        if type(name) is not str or type(g) is not int or (name, g) not in self.expected:
            raise SnapshotError(f"table {name!r} group {g!r} is not in the manifest")
        tg = (name, g)
        if tg in self.done:
            raise SnapshotError(f"table {name} group {g}: already restored (a duplicate)")
        if type(part) is not int or type(final) is not bool:
            raise SnapshotError(f"table {name} group {g}: part or final flag malformed")
        if (part or not final) and not alone:
            raise SnapshotError(f"table {name} group {g}: a part of a split group must be "
                                f"alone in its chunk")
        if type(rows) is not list or not 0 < len(rows) <= MAX_ROWS:
            raise SnapshotError(f"table {name} group {g}: a section holds 1 to {MAX_ROWS} rows")
        prev = self._partial.get(tg)
        expected_part = prev["next"] if prev else 0
        if part != expected_part:
            self._partial.pop(tg, None)
            raise SnapshotError(f"table {name} group {g}: part {part}, expected "
                                f"{expected_part}")
        try:
            state = prev or {"next": 0, "last": (-1, b""), "leaves": {}, "rows": {},
                             "bytes": 0}
            self._check_rows(name, g, rows, state)
            if not final:
                if state["next"] + 1 >= MAX_PARTS:
                    raise SnapshotError(f"table {name} group {g}: more than {MAX_PARTS} parts")
                state["next"] += 1
                self._partial[tg] = state
                return name, g, None, None
            got = _group_hash(state["leaves"])
            if got != self.expected[tg]:
                raise SnapshotError(f"table {name} group {g}: its rows hash to {got.hex()}, "
                                    f"the manifest says {self.expected[tg].hex()}")
        except SnapshotError:
            self._partial.pop(tg, None)
            raise
        self._partial.pop(tg, None)
        return name, g, state["rows"], state["leaves"]

    def _check_rows(self, name: str, g: int, rows: list, state: dict) -> None:
        # decode() found the whole chunk canonical, so each part packs back to its own
        # bytes without another canonical walk.
        encode = codec.pack_canonical
        last = state["last"]
        leaves: dict[int, dict[bytes, bytes]] = state["leaves"]
        out: dict = state["rows"]
        tuple_value = name in TUPLE_VALUES
        for row in rows:
            if type(row) is not list or len(row) != 2:
                raise SnapshotError(f"table {name} group {g}: a row is not [key, value]")
            kb, vb = encode(row[0]), encode(row[1])
            if len(kb) > MAX_KEY_BYTES or len(kb) + len(vb) + 1 > MAX_ROW_BYTES:
                raise SnapshotError(f"table {name} group {g}: a row over the size limits")
            b = _bucket(kb)
            if b >> _GROUP_SHIFT != g:
                raise SnapshotError(f"table {name} group {g}: a row of group "
                                    f"{b >> _GROUP_SHIFT}")
            if (b, kb) <= last:
                raise SnapshotError(f"table {name} group {g}: rows out of order or repeated")
            last = (b, kb)
            leaves.setdefault(b, {})[kb] = hashlib.sha256(kb + vb).digest()
            state["bytes"] += len(kb) + len(vb)
            out[_key(row[0], name, g)] = thaw(row[1]) if tuple_value else row[1]
        # Every split group in progress counts, not just this one: a peer could start
        # many and finish none.
        others = sum(p["bytes"] for tg, p in self._partial.items() if tg != (name, g))
        if others + state["bytes"] > self.max_pending_bytes:
            raise SnapshotError(f"table {name} group {g}: split groups not yet checked would "
                                f"hold over {self.max_pending_bytes} bytes")
        state["last"] = last

    def state(self) -> State:
        """The restored State, once every group in the manifest is in; SnapshotError
        naming the first missing group otherwise, or if the rows do not give the root."""
        if self._spent:
            raise SnapshotError("this assembly's state was taken already")
        missing = self.missing()
        if missing:
            name, g = missing[0]
            raise SnapshotError(f"{len(missing)} groups missing, first table {name} "
                                f"group {g}")
        self._spent = True          # the tables now own the rows and leaves
        st = State()
        for name in State.TABLES:
            st.tables[name].load(self.rows[name], self.leaves[name])
        if st.root() != self.root:          # the group checks make this a formality
            raise SnapshotError("the restored state does not give the manifest's root")
        return st


def _group_hash(leaves: dict[int, dict[bytes, bytes]]) -> bytes:
    # As Table._rehash: a bucket covers its leaves in key order (the rows came in that
    # order, so the dict holds them in it), a group its non-empty buckets in index order.
    return hashlib.sha256(b"".join(
        b.to_bytes(2, "big") + hashlib.sha256(b"".join(leaves[b].values())).digest()
        for b in sorted(leaves))).digest()


def check_chunk(m: dict, data: bytes, assembly: Assembly | None = None) -> list:
    """The rows, as (table, key, value), of the groups this chunk completes, once each
    group's hash recomputed from its rows equals the manifest's; a part of a split group
    completes nothing until its final part (pass the same `assembly` for every chunk of
    a snapshot). SnapshotError, naming the table and group, otherwise."""
    asm = assembly or Assembly(m)
    return [(name, k, v) for name, _, rows in asm.add(data) for k, v in rows.items()]


def restore(m: dict, chunk_iter: Iterable[bytes], root: bytes) -> State:
    """The State the manifest and chunks describe, checked against `root`: the root a
    certificate committed (required: a manifest's own root proves nothing). Refuses a
    chunk that does not check, an extra or duplicate one, and a missing one."""
    check_manifest(m, root)
    asm = Assembly(m)
    for data in chunk_iter:
        asm.add(data)
    if asm._partial:
        name, g = min(asm._partial)
        raise SnapshotError(f"table {name} group {g}: its final part is missing")
    return asm.state()
