"""`lendnet node verify-chain`: replay a node's stored chain from genesis and check it.

For every stored block, in order, from a fresh ledger built from the home's genesis:
- the block is well formed and its transactions are the ones its header commits to
  (txs_root), so a changed transaction is caught even before it is executed;
- its header links to the previous block's hash;
- its commit certificate holds a quorum of the genesis validators' COMMITs for it (the
  same check a full node makes of a block a peer hands over, `M.check_commit_cert`);
- the state root its header certifies for an earlier height (exec_root) is the one the
  replay reached there;
- executing it reproduces the state root stored with it.

The first failure stops the replay: the state after a wrong block means nothing. Blocks
below --from-height are still executed (the state there can only be rebuilt by replay
until snapshots exist) and their roots compared, but their certificates, hash links and
certified roots are not checked, which is where the time of the checks goes.

A store that does not reach back to genesis (a pruned or state-synced node's: its base,
store.py) cannot be replayed from it. There the replay starts from the oldest stored
snapshot whose block is kept: the snapshot is restored and checked against the root
stored with its block (which the headers after it certify, exec_root), the kept blocks
up to it are checked but not executed (their state is gone), and every block after it
is checked and executed as above. The summary says where it began ("from").
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lendnet.consensus import messages as M
from lendnet.ledger import codec, lending, snapshot
from lendnet.ledger import tx as txm
from lendnet.ledger.ledger import BlockError
from lendnet.node.core.store import StoreError

from . import home as H
from .chainreader import ChainReader


@dataclass
class Mismatch(Exception):
    """The first block whose stored form the replay does not reproduce."""
    height: int
    what: str                       # block, prev, certificate, exec_root, txs, root
    detail: str
    block_hash: bytes | None        # None if the block could not even be decoded
    expected: bytes | None = None   # what the chain says (stored or certified)
    got: bytes | None = None        # what the replay computed

    def __str__(self) -> str:
        where = f"block {self.height}" + (f" (hash {self.block_hash.hex()})"
                                          if self.block_hash else "")
        diff = "" if self.expected is None else \
            f": expected {self.expected.hex()}, got {_hex(self.got)}"
        return f"{where}: {self.detail}{diff}"

    def to_json(self) -> dict:
        return {"ok": False, "height": self.height, "what": self.what,
                "detail": self.detail, "block_hash": _hex(self.block_hash),
                "expected": _hex(self.expected), "got": _hex(self.got)}


def _hex(b) -> str | None:
    return b.hex() if type(b) is bytes else None if b is None else repr(b)


def verify_chain(home: Path, from_height: int = 1, to_height: int | None = None) -> dict:
    """Replay and check heights 1..to_height (default: all stored) — or, on a store that
    does not reach back to genesis, the heights after its oldest usable snapshot
    (`_start`); the summary, or Mismatch at the first wrong block. HomeError /
    StoreError if it cannot be read."""
    genesis = H.load_genesis(home)
    config = genesis.config()
    vals = config.validators
    # Roots reached, for the exec_root check: a header may certify one at most
    # 2 * window heights back (the replica refuses an older one), so no more are kept.
    keep = 2 * config.window + 1
    txs_total = 0
    with ChainReader(Path(home) / "node.db") as reader:
        last = reader.height if to_height is None else to_height
        if last > reader.height:
            raise StoreError(f"--to-height {last} is above the {reader.height} blocks stored")
        if from_height > max(last, 1):
            raise StoreError(f"--from-height {from_height} is above the last height "
                             f"checked ({last})")
        started = time.perf_counter()
        start, ledger, skipped = _start(reader, genesis, last)
        if start == 0:
            roots, prev = {0: ledger.state_root()}, M.GENESIS_HASH
        else:
            roots, prev = _kept_roots(reader, start, keep, vals, from_height)
        for h, rows in reader.blocks(start + 1, last):
            d, block, root = _check_block(h, rows, prev, roots, vals, h >= from_height,
                                          reader.base)
            got = _execute(ledger, h, block, d)
            txs_total += len(block["txs"])
            if got != root:
                raise Mismatch(h, "root", "the replayed state root differs from the "
                               "stored one", d, expected=root, got=got)
            prev, roots[h] = d, got
            roots.pop(h - keep, None)
        seconds = time.perf_counter() - started
        running = reader.running
    return {"ok": True, "home": str(home), "height": last, "from_height": from_height,
            # where the replay began: genesis, or a stored snapshot (a pruned store)
            "from": "snapshot" if start else "genesis", "snapshot": start or None,
            "snapshots_skipped": skipped, "first_block": reader.base + 1,
            "blocks": last - start, "txs": txs_total, "seconds": round(seconds, 3),
            "tx_per_s": round(txs_total / seconds) if seconds > 0 else None,
            "root": roots[last].hex(),
            "node_running": running}


def _start(reader: ChainReader, genesis, last: int) -> tuple[int, object, list]:
    """Where the replay begins: genesis on a store that holds every block; else the
    oldest stored snapshot whose block is kept (the one with the most blocks after it to
    check), restored and checked against its block's stored root — a newer one if that
    is damaged. (height, ledger there, [{height, why} of each snapshot passed over]).
    StoreError if no snapshot can be used."""
    if reader.base == 0:
        return 0, lending.genesis(genesis.chain_id, genesis.balances, genesis.time,
                                  genesis.fees, genesis.lending), []
    usable = sorted(s for s in reader.snapshot_heights() if reader.base < s <= last)
    skipped = []
    for s in usable:
        ((_, (_, _, root_row)),) = reader.blocks(s, s)
        try:
            root = codec.decode(root_row, max_size=len(root_row))
            got = reader.snapshot(s)
            if got is None:
                raise snapshot.SnapshotError("it is gone")
            state = snapshot.restore(got[0], got[1], root)
            return s, lending.from_state(genesis.chain_id, state, s), skipped
        except ValueError as e:                  # SnapshotError, EncodingError, bad meta
            skipped.append({"height": s, "why": str(e)})
    raise StoreError(
        f"this store keeps blocks from height {reader.base + 1} only (pruned or "
        f"state-synced) and has no usable snapshot from there up to height {last}"
        + (" (passed over: " + "; ".join(f"{k['height']}: {k['why']}" for k in skipped)
           + ")" if skipped else "") + ": verify an archive node's store instead")


def _kept_roots(reader: ChainReader, start: int, keep: int, vals: M.Validators,
                from_height: int) -> tuple[dict, bytes]:
    """Check the kept blocks up to the snapshot's (not executed: the state before the
    snapshot is gone) as far as they can be — well formed, linked, certified — and
    return the roots stored with the last `keep` of them, which the headers after the
    snapshot certify (exec_root), and the snapshot block's hash."""
    roots: dict[int, bytes] = {}
    prev = None                                  # the first kept block's parent is gone
    for h, rows in reader.blocks(reader.base + 1, start):
        prev, _, root = _check_block(h, rows, prev, None, vals, h >= from_height,
                                     reader.base)
        roots[h] = root
        roots.pop(h - keep, None)
    return roots, prev


def _check_block(h: int, rows: tuple, prev: bytes | None, roots: dict | None,
                 vals: M.Validators, full: bool, base: int = 0) -> tuple[bytes, dict, bytes]:
    """Everything about stored block h but its execution; returns its hash, the block
    and the stored root. prev None: the parent is not stored (pruned), so the link is not
    checked; roots None: nor is the certified root (no replayed state to compare with);
    a certified root at or below `base` (the store's, see store.py) is not stored."""
    try:
        block, cert, root = (codec.decode(b, max_size=len(b)) for b in rows)
    except codec.EncodingError as e:
        raise Mismatch(h, "block", f"a stored row cannot be decoded: {e}", None) from None
    try:
        M.check_block(block)               # shape, bounds, and txs_root over the txs
    except M.MessageError as e:
        d = _safe_hash(block)
        raise Mismatch(h, "block", str(e), d) from None
    header = block["header"]
    d = M.block_hash(header)
    if header["height"] != h:
        raise Mismatch(h, "block", f"its header says height {header['height']}", d)
    if type(root) is not bytes or len(root) != 32:
        raise Mismatch(h, "root", "the stored state root is not 32 bytes", d)
    if not full:
        return d, block, root
    if prev is not None and header["prev"] != prev:
        raise Mismatch(h, "prev", "its header does not link to the previous block's hash",
                       d, expected=prev, got=header["prev"])
    try:
        M.check_commit_cert(cert, h, d, vals)
    except M.MessageError as e:
        raise Mismatch(h, "certificate", str(e), d) from None
    eh = header["exec_height"]
    if roots is None or (eh <= base and eh not in roots):
        return d, block, root
    if eh not in roots:
        raise Mismatch(h, "exec_root", f"its header certifies the root at height {eh}, "
                       f"further back than any block may", d)
    if header["exec_root"] != roots[eh]:
        raise Mismatch(h, "exec_root", f"the state root its header certifies for height "
                       f"{eh} is not the one the replay reached there", d,
                       expected=header["exec_root"], got=roots[eh])
    return d, block, root


def _safe_hash(block) -> bytes | None:
    try:
        return M.block_hash(block["header"])
    except (TypeError, KeyError, codec.EncodingError):
        return None


def _execute(ledger, h: int, block: dict, d: bytes) -> bytes:
    """Apply block h as a node does (`Node._apply`): its signatures are taken as checked,
    since a quorum of validators prepared it only after checking them."""
    txs = []
    for i, raw in enumerate(block["txs"]):
        try:
            tx = txm.parse(raw)
        except txm.TxError as e:
            raise Mismatch(h, "txs", f"transaction {i} cannot be parsed: {e}", d) from None
        if tx.verified is None:
            tx.verified = True
        txs.append(tx)
    try:
        return ledger.apply_block(h, block["header"]["time"], txs, strict=False).state_root
    except BlockError as e:
        raise Mismatch(h, "block", f"the ledger refuses it: {e}", d) from None
