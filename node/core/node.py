"""A full node without I/O: mempool, PBFT replica and ledger, wired together.

The daemon and the simulator both run this object; they differ only in how bytes reach
it (real sockets or a simulated network), what `now` is (wall clock or virtual), and the
store behind it. Events in — `submit` (a client's transaction; the shell gossips what it
admits), `receive_tx` (one gossiped by a peer), `deliver` (a consensus message), `tick` —
and the replica's effects out. The votes and executed blocks an event produces wait in
the node until the shell calls `flush`, which writes all of them in one store
transaction; a shell must flush before it carries out any effect, so no vote leaves the
process unrecorded. The simulator flushes after every event; the daemon once per turn
of its loop, however many events that turn held (group commit).
"""
from __future__ import annotations

import hashlib
import logging

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from lendnet.consensus import messages as M
from lendnet.consensus.effects import Committed, Evidence, Persist
from lendnet.consensus.replica import Config, Replica
from lendnet.ledger import lending, snapshot, tx as txm
from lendnet.ledger.ledger import TX_GAS_ROOM, USER_VM_KINDS, USER_VM_ROOM, BlockResult

from .mempool import MAX_TXS, Mempool
from .store import StoreError

# Parsed transactions kept by their bytes: enough for a full mempool and the blocks in
# flight, so a transaction is parsed and its signature checked once. It is most of a
# node's memory (about 1.4 KiB a transfer), so no bigger than that.
TX_CACHE = 2 * MAX_TXS
EVIDENCE_KEPT = 16                 # evidence records kept per (kind, validator)
NONCES_IN_FLIGHT = 1 << 62         # a proposal's nonces may run any way ahead of execution
EXPIRY_SWEEP_MS = 1_000            # how often the mempool drops what waited behind a gap

log = logging.getLogger("lendnet.node")


@dataclass
class Genesis:
    chain_id: str
    time: int
    balances: dict
    validators: tuple                    # public keys, in replica-index order
    params: dict = field(default_factory=dict)   # consensus Config overrides
    fees: dict = field(default_factory=dict)     # min_gas_price, byte_price (ledger/fees.py)
    lending: dict = field(default_factory=dict)  # rate cap, appraisers, registrars (lending.py)

    def config(self, quorum_override: int | None = None, leaders: tuple = ()) -> Config:
        """The consensus configuration; ValueError if a parameter is unknown or out of
        range. `quorum_override` and `leaders` are for tests (a broken quorum; a leader
        schedule for the first views)."""
        vals = M.Validators(self.chain_id, tuple(self.validators), quorum_override, leaders)
        known = set(Config.__dataclass_fields__) - {"validators", "genesis_time"}
        unknown = set(self.params) - known
        if unknown:
            raise ValueError(f"unknown consensus parameters {sorted(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        cfg = Config(validators=vals, genesis_time=self.time, **self.params)
        cfg.check()
        return cfg



def evidence_record(e: Evidence) -> tuple[tuple, list]:
    """The store record that keeps a validator's conflicting messages: keyed by what
    they are (the same evidence found twice is one record), written with the votes."""
    msgs = [M.encode(m) for m in e.messages if m is not None]
    digest = hashlib.sha256(b"".join(msgs)).hexdigest()
    return ("evidence", e.kind, e.replica, digest), msgs


class Node:
    def __init__(self, genesis: Genesis, keypair, store, now: int,
                 config: Config | None = None):
        self.genesis = genesis
        self.store = store
        self.config = config or genesis.config()
        self.vals = self.config.validators
        self.index = (self.vals.pubkeys.index(keypair.pubkey)
                      if keypair.pubkey in self.vals.pubkeys else None)
        self.ledger = lending.genesis(genesis.chain_id, genesis.balances, genesis.time,
                                      genesis.fees, genesis.lending)
        # The latest time a shell passed in (ms): when a transaction arrived, for the
        # mempool's expiry of those behind a nonce gap (swept every EXPIRY_SWEEP_MS).
        self.now = now
        self._swept = now
        self._txs: dict[bytes, txm.SignedTx] = {}          # raw -> parsed, bounded
        self._recent: dict[int, tuple] = {0: ({"time": genesis.time}, M.GENESIS_HASH,
                                              self.ledger.state_root())}
        self.rejected_messages = 0
        self._unsaved_records: list[tuple] = []       # written by flush()
        self._unsaved_blocks: list[tuple] = []
        self._unsaved_snapshots: list[tuple] = []
        self._results: dict[int, BlockResult] = {}    # executed, its Committed not yet out
        # Recover: open the state the store keeps at its height, checked against the
        # root stored with that block; replay nothing. Else (an older store, or a stored
        # state that does not check) from the latest good snapshot or genesis, replaying
        # the blocks after it, and write the result to the store as its state. What
        # happened is in `recovery` (and logged).
        self.recovery: list[str] = []
        self._stores_state = hasattr(store, "open_state")
        # Where the state came from: "store" (opened, nothing replayed), or "snapshot" or
        # "genesis" and the blocks after it replayed. The simulator counts it, to show
        # its restarts take each path.
        self.started_from = "store"
        if not (self._stores_state and self._open_stored_state()):
            start = self._restore_snapshot()
            self.started_from = "snapshot" if start else "genesis"
            if start < store.base:
                raise StoreError(f"the store keeps blocks from height {store.base + 1} only "
                                 f"(pruned or state-synced) and has no usable snapshot at "
                                 f"or after {store.base}: the state cannot be rebuilt; start "
                                 f"this node again with --state-sync")
            self.mempool = Mempool(self.ledger)   # (empty: replay only evicts from it)
            for h in range(start + 1, store.height + 1):
                block, cert, root = store.get_block(h)
                if self._apply(h, block).state_root != root:
                    raise StoreError(f"stored block {h} replays to another state root "
                                     f"than the one recorded with it: the store is damaged")
            if self._stores_state:
                store.put_state_base(store.height, self.ledger.state)
                if not self._open_stored_state(rebuilt=True):
                    raise StoreError("the state just written to the store does not open "
                                     "to its root: the store is damaged")
        self.mempool = Mempool(self.ledger)
        records = store.load_records()
        # Evidence kept per (kind, validator): enough to show any court, bounded however
        # much a faulty validator signs (the shell still counts every case it reports).
        self.evidence_kept = Counter(k[1:3] for k in records if k[0] == "evidence")
        self.replica = Replica(self.config, self.index, keypair, self, now,
                               records) if self.index is not None else None

    # --- the shell's events -----------------------------------------------------------

    def submit(self, raw: bytes) -> txm.SignedTx:
        """A client's transaction: admitted to the mempool (and gossiped) or TxError."""
        tx = self.parse(raw)
        self.mempool.add(tx, self.now)
        return tx

    def receive_tx(self, raw: bytes) -> bool:
        try:
            self.submit(raw)
        except txm.TxError:
            return False                  # duplicates and stale ones are normal in gossip
        return True

    def deliver(self, raw: bytes, now: int) -> list:
        try:
            msg = M.decode(raw, self.vals)
        except M.MessageError:
            self.rejected_messages += 1
            return []
        self.now = max(self.now, now)
        if self.replica is None:
            return []
        return self._persist(self.replica.deliver(msg, now, len(raw)))

    def tick(self, now: int) -> list:
        self.now = max(self.now, now)
        if now - self._swept >= EXPIRY_SWEEP_MS:
            self._swept = now
            self.mempool.expire(now)
        return self._persist(self.replica.tick(now)) if self.replica else []

    def _persist(self, effects: list) -> list:
        """Keep this event's Persist effects, and the messages of any Evidence, for the
        next flush; return the rest, which may be carried out once that flush is done,
        each Committed with its block's result."""
        for e in effects:
            if isinstance(e, Persist):
                self._unsaved_records.append((e.key, e.value))
            elif isinstance(e, Evidence) and \
                    self.evidence_kept[e.kind, e.replica] < EVIDENCE_KEPT:
                self.evidence_kept[e.kind, e.replica] += 1
                self._unsaved_records.append(evidence_record(e))
        return [replace(e, result=self._results.pop(e.height)) if type(e) is Committed
                else e for e in effects if type(e) is not Persist]

    def flush(self) -> None:
        """Write the records, blocks and snapshots of every event since the last flush
        in one store transaction (one fsync)."""
        if self._unsaved_records or self._unsaved_blocks:
            records, self._unsaved_records = self._unsaved_records, []
            blocks, self._unsaved_blocks = self._unsaved_blocks, []
            snaps, self._unsaved_snapshots = self._unsaved_snapshots, []
            if not self._stores_state:            # (a store without state works too)
                self.store.put_batch(records, blocks, snaps)
                return
            state = self.ledger.state
            delta = state.delta(self.ledger.height) if blocks else None
            self.store.put_batch(records, blocks, snaps, state=delta)
            if delta is not None:
                state.flushed()

    def follow(self, block: dict, cert: list):
        """A full node (not a validator) takes a committed block a peer passed on: if it
        is the next one, follows our chain and carries 2f+1 valid COMMITs for it, execute
        and store it. Returns the Committed effect, or None if it is not the next block
        (older, or a gap: catch-up through FETCH would fill it). Raises on a bad one."""
        M.check_block(block)
        h = block["header"]["height"]
        if h != self.height + 1:
            return None
        prev = self.block_hash(h - 1) if h > 1 else M.GENESIS_HASH
        if block["header"]["prev"] != prev:
            raise ValueError(f"block {h} does not follow this node's chain")
        M.check_commit_cert(cert, h, M.block_hash(block["header"]), self.vals)
        root = self.execute(h, block, cert)
        self.flush()
        return Committed(h, block, cert, root, self._results.pop(h))

    # --- the replica's application interface -------------------------------------------

    @property
    def height(self) -> int:
        return self.ledger.height

    def _recent_or_stored(self, h: int) -> tuple | None:
        got = self._recent.get(h)
        if got is None:
            stored = self.store.get_block(h)
            if stored is None:
                return None
            got = (stored[0]["header"], M.block_hash(stored[0]["header"]), stored[2])
        return got

    def block_hash(self, h: int) -> bytes | None:
        got = self._recent_or_stored(h)
        return None if got is None else got[1]

    def root_at(self, h: int) -> bytes | None:
        got = self._recent_or_stored(h)
        return None if got is None else got[2]

    def header_at(self, h: int) -> dict | None:
        got = self._recent_or_stored(h)
        return None if got is None else got[0]

    def get_block(self, h: int) -> tuple[dict, list] | None:
        for unsaved in self._unsaved_blocks:
            if unsaved[0] == h:
                return unsaved[1], unsaved[2]
        stored = self.store.get_block(h)
        return None if stored is None else (stored[0], stored[1])

    def pending_count(self) -> int:
        return len(self.mempool)

    def has_pending(self) -> bool:
        return any(self.ledger.account(s)[1] in q for s, q in self.mempool.by_sender.items())

    def make_txs(self, height: int, max_txs: int, max_bytes: int, exclude: set) -> list[bytes]:
        in_flight = {self.parse(raw).hash for raw in exclude}
        return [tx.raw for tx in self.mempool.batch(max_txs, in_flight, max_bytes)]

    def check_txs(self, raws: list[bytes], in_flight: Sequence[bytes] = ()) -> str | None:
        """Why these transactions may not be proposed on top of the executed state and
        the blocks `in_flight` between it and them; None if they may."""
        seen = {self.parse(raw).hash for raw in in_flight}
        gas = vm = 0
        for raw in raws:
            try:
                tx = self.parse(raw)
            except txm.TxError as e:
                return str(e)
            if tx.hash in seen:
                return f"transaction {tx.id} is already in this block or one in flight"
            seen.add(tx.hash)
            # The ledger's rules, as far as they can be judged before the blocks in
            # flight execute: the chain, no used nonce (any later one may be fine by
            # then), valid signatures. Whether they are the signatures the account needs
            # can change in flight (a multisig set up), so execution judges that.
            try:
                self.ledger.check_sequence(tx, ahead=NONCES_IN_FLIGHT)
            except txm.TxError as e:
                return f"transaction {tx.id}: {e}"
            if not tx.verify_signatures():
                return f"transaction {tx.id} has a bad signature"
            limit = self.ledger.gas_limit(tx)
            gas += limit
            # (Not the contract price: it moves block by block, and this replica's
            # executed state may be a block ahead of or behind the proposer's. A call
            # that offers too little when the block runs is not included and pays
            # nothing, like one whose sender can no longer pay.)
            vm += limit if tx.kind in USER_VM_KINDS else 0
            if gas > TX_GAS_ROOM or vm > USER_VM_ROOM:
                return (f"the transactions' gas limits pass what a block's transactions "
                        f"may ask for together ({TX_GAS_ROOM}; {USER_VM_ROOM} for contract "
                        f"calls and deploys)")
        return None

    def execute(self, h: int, block: dict, cert: list) -> bytes:
        result = self._apply(h, block)
        self._results[h] = result                 # until its Committed passes _persist
        self._unsaved_blocks.append((h, block, cert, result.state_root,
                                     [r.to_json() for r in result.receipts]))
        every = self.config.snapshot_every
        if every and h % every == 0:
            # Taken now, before the next block changes the state; written with this
            # block in the same store transaction, so a crash keeps both or neither.
            state = self.ledger.state
            self._unsaved_snapshots.append((h, snapshot.manifest(state),
                                            list(snapshot.chunks(state))))
        return result.state_root

    # --- internals --------------------------------------------------------------------

    def parse(self, raw: bytes) -> txm.SignedTx:
        tx = self._txs.get(raw)
        if tx is None:
            tx = txm.parse(raw)
            if len(self._txs) >= TX_CACHE:
                del self._txs[next(iter(self._txs))]
            self._txs[raw] = tx
        return tx

    def _open_stored_state(self, rebuilt: bool = False) -> bool:
        """Take the state the store keeps if its root is the one stored with the
        store's last block (the genesis root at height 0), and rebuild the recent
        heights' headers; False (said in `recovery`) if there is none or it does not
        check."""
        h = self.store.height
        state, why = self.store.open_state()
        if state is not None:
            expect = self.store.get_block(h)[2] if h else self._recent[0][2]
            if state.root() == expect:
                try:
                    ledger = lending.from_state(self.genesis.chain_id, state, h)
                except ValueError as e:           # a meta that does not fit the chain
                    why = f"the stored state does not fit this chain ({e})"
                else:
                    self.ledger = ledger
                    self._recent_from_store(h)
                    if not rebuilt:
                        self._note(f"opened the stored state at height {h}: replayed "
                                   "0 blocks", warn=False)
                    return True
            else:
                why = (f"the stored state's root is not the one stored with block {h}: "
                       "it is damaged")
        self._note(f"{why}: rebuilding it from a snapshot or genesis", warn=h > 0)
        return False

    def _recent_from_store(self, s: int) -> None:
        """What replay would have left in _recent: the last 4 windows' headers."""
        first = max(1, s - 4 * self.config.window + 1, self.store.base + 1)
        for h in range(first, s + 1):
            block, _, root = self.store.get_block(h)
            self._recent[h] = (block["header"], M.block_hash(block["header"]), root)

    def _restore_snapshot(self) -> int:
        """Replace the genesis ledger with the latest stored snapshot that checks
        against the root stored with its block, and rebuild the recent heights' headers
        from the store; return its height (0: none, replay from genesis). A damaged
        snapshot is not fatal: the one before it, or genesis, is used, and said so."""
        heights = self.store.snapshot_heights()
        for s in heights:
            if s > self.store.height:
                self._note(f"snapshot at height {s} is above the stored chain "
                           f"({self.store.height}): skipped")
                continue
            try:
                got = self.store.get_snapshot(s)
                if got is None:
                    raise snapshot.SnapshotError("it is gone")
                m, chunk_iter = got
                state = snapshot.restore(m, chunk_iter, self.store.get_block(s)[2])
                ledger = lending.from_state(self.genesis.chain_id, state, s)
            except ValueError as e:               # SnapshotError, or a bad meta
                self._note(f"snapshot at height {s} is damaged ({e}): falling back to "
                           f"{'an older snapshot' if s != heights[-1] else 'replay from genesis'}")
                continue
            self.ledger = ledger
            self._recent_from_store(s)
            self._note(f"restored the state from the snapshot at height {s}; "
                       f"replaying {self.store.height - s} blocks after it", warn=False)
            return s
        if heights:
            self._note("no usable snapshot: replaying the chain from genesis")
        return 0

    def _note(self, message: str, warn: bool = True) -> None:
        self.recovery.append(message)
        log.log(logging.WARNING if warn else logging.INFO, "%s", message)

    def _apply(self, h: int, block: dict) -> BlockResult:
        """Execute a committed block: one with 2f+1 COMMITs (or read back from our own
        store, where only such blocks go). Honest replicas prepare a block only after
        checking every signature in it (check_txs), and a commit quorum holds f+1 of
        them, so signatures not yet checked here are taken as checked: a node catching
        up or replaying its store spends no time re-verifying them."""
        txs = [self.parse(raw) for raw in block["txs"]]
        for tx in txs:
            if tx.verified is None:
                tx.verified = True
        result = self.ledger.apply_block(h, block["header"]["time"], txs, strict=False)
        self._recent[h] = (block["header"], M.block_hash(block["header"]), result.state_root)
        if h > 4 * self.config.window:            # (genesis stays: it is in no store)
            self._recent.pop(h - 4 * self.config.window, None)
        self.mempool.evict_committed(txs)
        return result
