"""Where a node keeps what must outlive it: committed blocks with their certificates and
state roots, the index of committed transactions, and the consensus records (votes) it
signed. Two stores with one interface:

- `MemoryStore` is the simulator's disk: it survives a simulated crash because the
  simulator keeps it while the node is rebuilt.
- `node.sqlstore.SQLiteStore` is the daemon's: a file that survives kill -9 and power loss.

Both refuse the same things (a record that has no canonical encoding, a block out of
order), so a simulated run cannot depend on something the disk store would reject. One
difference remains: `MemoryStore` returns the very objects it was given, the disk store
returns them decoded from canonical msgpack, in which a tuple becomes a list. Keys always
come back as tuples; callers must accept either form of a value (consensus unpacks
values positionally, which works on both).
"""
from __future__ import annotations

from lendnet.ledger import codec
from lendnet.ledger.state import State, StateDelta

SNAPSHOTS_KEPT = 2      # the latest, and one to fall back on if it is found damaged

# A store need not hold the chain from genesis. Its `base` is the height below its first
# block: 0 for an archive, which keeps every block; s - 1 for a node that began from a
# state-synced snapshot at height s (it stores block s for its header, certificate and
# root, and the snapshot as its state); and it rises as a pruned node forgets old blocks
# (`prune`). Heights base+1 .. height are all stored; below, `get_block` answers None.


class StoreError(Exception):
    """A store that cannot be used: locked by another process, corrupt, or too new."""


def check_record(key: tuple, value) -> tuple[bytes, bytes]:
    """Refuse a record either store could not keep faithfully; return it encoded.

    Keys are tuples of str/int (not bool: (True,) and (1,) are one key in a dict but two
    on disk). ("gc",) takes an int height, and a "vote" key is ("vote", type, view,
    height) because garbage collection compares its height."""
    if (type(key) is not tuple or not key
            or any(type(part) is not str and type(part) is not int for part in key)):
        raise ValueError(f"record key {key!r} is not a non-empty tuple of str and int")
    if key == ("gc",) and type(value) is not int:
        raise ValueError(f"the ('gc',) record takes an int height, not {value!r}")
    if key[0] == "vote" and (len(key) != 4 or type(key[3]) is not int):
        raise ValueError(f"vote key {key!r} is not ('vote', type, view, height)")
    return codec.encode(key), codec.encode(value)


def check_block(stored_height: int, height: int, block: dict, cert: list, root: bytes,
                receipts) -> tuple[bytes, bytes, bytes, list[bytes]]:
    """Refuse a block that is not the next one or whose receipts do not match its
    transactions; return block, cert, root and each receipt encoded."""
    if type(height) is not int or height != stored_height + 1:
        raise ValueError(f"block height {height!r} is not the next height "
                         f"{stored_height + 1}: blocks are stored in order")
    if receipts and len(receipts) != len(block["txs"]):
        raise ValueError(f"block {height} has {len(block['txs'])} transactions but "
                         f"{len(receipts)} receipts")
    for r in receipts:
        if type(r) is not dict or type(r.get("tx")) is not str \
                or type(r.get("nonce_used")) is not bool:
            raise ValueError(f"receipt {r!r} of block {height} has no tx hash (str) "
                             "and nonce_used (bool)")
    return (codec.encode(block), codec.encode(cert), codec.encode(root),
            [codec.encode(r) for r in receipts])


def check_base(blocks_stored: bool, base) -> int:
    """Refuse a base (see above) that cannot be set: only an empty store starts at one."""
    if type(base) is not int or base < 0:
        raise ValueError(f"store base {base!r} is not a height (an int >= 0)")
    if blocks_stored:
        raise ValueError("a store's base can be set only before its first block: use "
                         "prune() to forget old blocks")
    return base


def check_prune(base: int, height: int, keep_from) -> None:
    """Refuse a prune that would leave no block, or reach above the chain."""
    if type(keep_from) is not int or not 1 <= keep_from <= height:
        raise ValueError(f"cannot prune below height {keep_from!r}: the store holds "
                         f"blocks {base + 1}..{height}, and keeps at least the last one")


def check_snapshots(height: int, snapshots) -> list[tuple[int, bytes, list[bytes]]]:
    """Refuse a snapshot not at a stored (or now stored) height; return each as
    (height, encoded manifest, chunks). A snapshot is `(height, manifest, chunks)`,
    its chunks already bytes (ledger/snapshot.py `chunks`); it is checked against the
    block's root when it is read back, not here."""
    out = []
    for s in snapshots:
        h, m, cs = s
        if type(h) is not int or not 1 <= h <= height:
            raise ValueError(f"snapshot height {h!r} is not a stored height (1..{height})")
        cs = list(cs)
        if any(type(c) is not bytes for c in cs):
            raise ValueError(f"the snapshot at height {h} has a chunk that is not bytes")
        out.append((h, codec.encode(m), cs))
    return out


def location(height: int, index: int, receipt: dict) -> dict:
    """What `tx_location` answers: where the transaction is and its receipt."""
    return {"height": height, "index": index,
            **{k: v for k, v in receipt.items() if k != "tx"}}


# A transaction may appear in more than one block when all but one of them could not
# include it (its receipt says nonce_used=False): the index keeps the block where it
# used its nonce, or else the first block it appeared in. Both stores apply this rule.


class MemoryStore:
    def __init__(self):
        self.records: dict = {}                    # ("vote", t, v, h) / ("view",) / ...
        self.blocks: dict[int, tuple] = {}         # height -> (block, cert, state root)
        self.txs: dict[str, tuple] = {}            # tx hash hex -> (height, index, receipt)
        self.snapshots: dict[int, tuple] = {}      # height -> (manifest, chunks)
        self.base = 0                              # see check_base
        # The ledger state at `state_height` (None: none yet): table -> key -> value, as
        # the node's state held them when the store committed them.
        self.state_rows: dict[str, dict] = {}
        self.state_height: int | None = None

    # consensus records: written before the message they protect leaves the node
    def put_record(self, key: tuple, value) -> None:
        self.put_records([(key, value)])

    def put_records(self, items) -> None:
        """Several records at once, in order; all of them or, if one is refused, none."""
        self.put_batch(items)

    def put_batch(self, records=(), blocks=(), snapshots=(), base=None,
                  state=None) -> None:
        """Records (in order), blocks (put_block's arguments), snapshots
        (check_snapshots) and the state's changes up to the last block
        (ledger.state.StateDelta) at once, on an empty store after `base` (check_base)
        if given; all or none."""
        records = list(records)
        for key, value in records:                # check all before changing anything
            check_record(key, value)
        height = self.height if base is None else check_base(bool(self.blocks), base)
        for h, block, cert, root, *receipts in blocks:
            check_block(height, h, block, cert, root, receipts[0] if receipts else ())
            height = h
        snaps = check_snapshots(height, snapshots)
        if state is not None and (type(state) is not StateDelta or state.height != height):
            raise ValueError(f"the state delta {state!r} is not at the height the blocks "
                             f"stored with it end at ({height})")
        if base is not None:
            self.base = base
        for key, value in records:
            if key == ("gc",):
                for k in [k for k in self.records if k[0] == "vote" and k[3] <= value]:
                    del self.records[k]
            else:
                self.records[key] = value
        for h, block, cert, root, *receipts in blocks:
            self.blocks[h] = (block, cert, root)
            for i, r in enumerate(receipts[0] if receipts else ()):
                if r["nonce_used"] or r["tx"] not in self.txs:
                    self.txs[r["tx"]] = (h, i, dict(r))
        for h, m, cs in snaps:
            # Kept as read back from disk (the manifest decoded, tuples become lists),
            # so a simulated restart restores what the daemon's would.
            self.snapshots[h] = (codec.decode(m, max_size=len(m)), cs)
        for h in sorted(self.snapshots)[:-SNAPSHOTS_KEPT]:
            del self.snapshots[h]
        if state is not None:
            for name, rows in state.rows.items():
                kept = self.state_rows.setdefault(name, {})
                for key, value in rows.items():
                    if value is None:
                        kept.pop(key, None)
                    else:
                        kept[key] = value
            self.state_height = state.height

    def open_state(self) -> tuple[State | None, str]:
        """(the stored state, "") or (None, why not): a new in-memory State holding the
        stored rows (the simulator's states are small: this rehashes them all), which
        tracks its writes for the next put_batch."""
        if self.state_height is None:
            return None, "the store holds no state"
        if self.state_height != self.height:
            return None, (f"the stored state is at height {self.state_height}, the chain "
                          f"at {self.height}")
        state = State()
        for name, rows in self.state_rows.items():
            state.tables[name].load(rows)
        state.track()
        return state, ""

    def drop_state(self) -> None:
        """Forget the stored state, as a deleted or damaged state database leaves a
        store: the next node over it rebuilds the state from a snapshot (or genesis) and
        the blocks after it. The simulator's late restart does this to half its nodes."""
        self.state_rows, self.state_height = {}, None

    def put_state_base(self, height: int, state: State) -> None:
        """Replace the stored state with a copy of `state`'s rows at `height` (the
        stored chain's)."""
        if height != self.height:
            raise ValueError(f"a state base at height {height}, the chain is at "
                             f"{self.height}")
        self.state_rows = {name: dict(table.items()) for name, table in state.tables.items()}
        self.state_height = height

    def snapshot_heights(self) -> list[int]:
        """The heights of the snapshots kept, latest first."""
        return sorted(self.snapshots, reverse=True)

    def prune(self, keep_from: int) -> int:
        """Forget the blocks below `keep_from` and their transactions' index entries
        (check_prune); return how many blocks went. Snapshots stay."""
        check_prune(self.base, self.height, keep_from)
        gone = [h for h in range(self.base + 1, keep_from) if h in self.blocks]
        for h in gone:
            del self.blocks[h]
        for tx in [t for t, (h, _, _) in self.txs.items() if h < keep_from]:
            del self.txs[tx]
        self.base = max(self.base, keep_from - 1)
        return len(gone)

    def get_snapshot(self, height: int):
        """(manifest, chunks) of the snapshot at `height`, or None."""
        return self.snapshots.get(height)

    def snapshot_size(self, height: int) -> tuple[int, int] | None:
        """(chunks, bytes) of the snapshot at `height`, or None."""
        got = self.snapshots.get(height)
        return None if got is None else (len(got[1]), sum(map(len, got[1])))

    def get_chunk(self, height: int, index: int) -> bytes | None:
        """One chunk of the snapshot at `height` (what a peer serves), or None."""
        got = self.snapshots.get(height)
        return got[1][index] if got is not None and 0 <= index < len(got[1]) else None

    def load_records(self) -> dict:
        return dict(self.records)

    # the chain
    def put_block(self, height: int, block: dict, cert: list, root: bytes,
                  receipts=()) -> None:
        self.put_batch(blocks=[(height, block, cert, root, receipts)])

    def get_block(self, height: int):
        return self.blocks.get(height)

    def tx_location(self, tx_hash: str) -> dict | None:
        got = self.txs.get(tx_hash)
        return None if got is None else location(*got)

    @property
    def height(self) -> int:
        return max(self.blocks, default=self.base)

    def close(self) -> None:
        pass                                      # nothing to release
