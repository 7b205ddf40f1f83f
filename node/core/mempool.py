"""Transactions waiting for a block: bounded, per account in nonce order, deduplicated.

Admission checks what can be checked against the last committed state: shape, chain,
signature (verified once; the result stays cached on the transaction), and that the nonce
is neither used nor too far ahead. A block's proposer takes, account by account in order
of arrival, the run of consecutive nonces that follows the account's committed nonce.
"""
from __future__ import annotations

from lendnet.ledger.tx import SignedTx, TxError

MAX_TXS = 20_000
MAX_AHEAD = 64           # nonces an account may queue beyond its next one


class Mempool:
    def __init__(self, ledger, max_txs: int = MAX_TXS, max_ahead: int = MAX_AHEAD):
        self.ledger = ledger
        self.max_txs = max_txs
        self.max_ahead = max_ahead
        self.by_sender: dict[str, dict[int, SignedTx]] = {}   # insertion order = arrival
        self.ids: dict[bytes, SignedTx] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self.ids

    def add(self, tx: SignedTx) -> None:
        """Admit a parsed transaction, or raise TxError saying why not."""
        if tx.hash in self.ids:
            raise TxError("duplicate: already in the mempool", "duplicate")
        # The ledger's own rules (Ledger.check_tx), in two halves around the mempool's:
        # the cheap chain and nonce checks first, the signatures last.
        self.ledger.check_sequence(tx, self.max_ahead)
        queue = self.by_sender.get(tx.sender, {})
        if tx.nonce in queue:
            raise TxError(f"another transaction with nonce {tx.nonce} is already waiting",
                          "nonce-taken")
        if len(self.ids) >= self.max_txs:
            raise TxError(f"mempool is full ({self.max_txs} transactions)", "mempool-full")
        self.ledger.check_signers(tx)
        self.by_sender.setdefault(tx.sender, {})[tx.nonce] = tx
        self.ids[tx.hash] = tx

    def batch(self, max_txs: int, in_flight: set[bytes],
              max_bytes: int | None = None) -> list[SignedTx]:
        """Up to max_txs transactions of at most max_bytes together to propose next;
        `in_flight` holds the hashes of those already proposed in blocks not yet
        executed. An account's run stops at the first transaction that does not fit (a
        later nonce could not commit without it); other accounts' may still fit."""
        out: list[SignedTx] = []
        room = max_bytes if max_bytes is not None else 1 << 62
        for sender, queue in self.by_sender.items():
            nonce = self.ledger.account(sender)[1]
            while nonce in queue and len(out) < max_txs:
                tx = queue[nonce]
                if tx.hash not in in_flight:
                    if len(tx.raw) > room:
                        break
                    out.append(tx)
                    room -= len(tx.raw)
                nonce += 1
            if len(out) >= max_txs or room <= 0:
                break
        return out

    def evict_committed(self, senders) -> None:
        """Drop what the committed state has made stale (used nonces)."""
        for sender in senders:
            queue = self.by_sender.get(sender)
            if not queue:
                continue
            next_nonce = self.ledger.account(sender)[1]
            for nonce in [n for n in queue if n < next_nonce]:
                del self.ids[queue.pop(nonce).hash]
            if not queue:
                del self.by_sender[sender]

    def heads(self, limit: int) -> list[SignedTx]:
        """Each account's next transaction to commit, where it is waiting (at most
        `limit`): what the node passes on again when it has waited too long, in case the
        primary never received it — one missing nonce would hold up all after it."""
        out = []
        for sender, queue in self.by_sender.items():
            tx = queue.get(self.ledger.account(sender)[1])
            if tx is not None:
                out.append(tx)
                if len(out) >= limit:
                    break
        return out
