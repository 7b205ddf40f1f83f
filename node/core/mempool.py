"""Transactions waiting for a block: bounded, paid for, per account in nonce order.

Admission checks what can be checked against the last committed state: shape, chain,
that the nonce is neither used nor too far ahead, a gas price at least the chain's
minimum, that the sender's balance covers the most this transaction and all it already
has waiting may pay in fees (`Ledger.check_fee`), a cap per account, and last the
signatures (verified once; the result stays cached on the transaction). So a key
without money cannot queue anything, and one account cannot hold more than
`max_per_account` places.

When the pool is full, a transaction paying a higher gas price takes the place of the
cheapest one waiting (the last nonce of its account, so no gap opens; the newest of
equal price goes first); one paying the same or less is refused. A block's proposer
takes transactions by gas price, highest first, each account's in nonce order from its
committed nonce. After each block the accounts it touched are checked again: used
nonces go, and so do transactions their sender can no longer pay for.

A transaction behind a nonce gap (an earlier nonce of its account is neither committed
nor waiting) can never be proposed; it expires `gap_expiry_ms` after it arrived. The
core has no clock: the time is the `now` the shell passes to the node's events
(milliseconds; virtual in the simulator), see `Node.tick`.
"""
from __future__ import annotations

import heapq

from lendnet.ledger.ledger import TX_GAS_ROOM, USER_VM_KINDS, USER_VM_ROOM
from lendnet.ledger.tx import SignedTx, TxError

MAX_TXS = 20_000
MAX_AHEAD = 64           # nonces an account may queue beyond its next one
MAX_PER_ACCOUNT = 64     # transactions one account may have waiting
MAX_DROPPED = 4_096      # recent transactions remembered with why they left uncommitted
GAP_EXPIRY_MS = 60_000   # a transaction behind a nonce gap is dropped after this long


class Mempool:
    def __init__(self, ledger, max_txs: int = MAX_TXS, max_ahead: int = MAX_AHEAD,
                 max_per_account: int = MAX_PER_ACCOUNT, gap_expiry_ms: int = GAP_EXPIRY_MS):
        self.ledger = ledger
        self.max_txs = max_txs
        self.max_ahead = max_ahead
        self.max_per_account = max_per_account
        self.gap_expiry_ms = gap_expiry_ms
        self.by_sender: dict[str, dict[int, SignedTx]] = {}   # insertion order = arrival
        self.ids: dict[bytes, SignedTx] = {}
        self.reserved: dict[str, int] = {}           # sender -> max fees of its waiting txs
        self._info: dict[bytes, tuple[int, int, int]] = {}   # hash -> (max fee, arrived, seq)
        self._seq = 0
        # Eviction candidates, cheapest first: (gas price, -seq, sender, nonce, hash). Lazy:
        # an entry counts only while its transaction waits as its account's last nonce;
        # an account's new last nonce is pushed whenever its old one goes.
        self._tails: list[tuple] = []
        self.expired = 0
        self.evicted = 0
        # Why each recent transaction left without committing (hash hex -> (why, code)),
        # the newest MAX_DROPPED: a client waiting on one learns it will never commit
        # (and, for a nonce another took, that it may sign again with the next).
        self.dropped: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self.ids

    def add(self, tx: SignedTx, now: int = 0) -> None:
        """Admit a parsed transaction, or raise TxError saying why not."""
        if tx.hash in self.ids:
            raise TxError("duplicate: already in the mempool", "duplicate")
        # The ledger's own rules (Ledger.check_tx), in two halves around the mempool's:
        # the cheap chain and nonce checks first, the signatures last.
        self.ledger.check_sequence(tx, self.max_ahead)
        sender = tx.sender
        queue = self.by_sender.get(sender, {})
        if tx.nonce in queue:
            raise TxError(f"another transaction with nonce {tx.nonce} is already waiting",
                          "nonce-taken")
        if len(queue) >= self.max_per_account:
            raise TxError(f"account {sender} already has {len(queue)} transactions waiting, "
                          f"the most one account may", "account-full")
        most = self.ledger.check_fee(tx, self.reserved.get(sender, 0))
        victim = None
        if len(self.ids) >= self.max_txs:
            victim = self._cheapest()
            price = tx.body["gas_price"]
            if victim is None or victim.sender == sender or \
                    victim.body["gas_price"] >= price:
                raise TxError(f"mempool is full ({self.max_txs} transactions) and none "
                              f"waiting pays a gas price under {price}", "mempool-full")
        self.ledger.check_signers(tx)
        if victim is not None:
            self._remove(victim)
            self._drop(victim, f"pushed out of a full mempool by a transaction paying gas "
                               f"price {price}", "mempool-full")
            self._pushtail(victim.sender)
            self.evicted += 1
        self._seq += 1
        self.by_sender.setdefault(sender, {})[tx.nonce] = tx
        self.ids[tx.hash] = tx
        self._info[tx.hash] = (most, now, self._seq)
        self.reserved[sender] = self.reserved.get(sender, 0) + most
        if tx.nonce == max(self.by_sender[sender]):
            heapq.heappush(self._tails, (tx.body["gas_price"], -self._seq, sender, tx.nonce,
                                         tx.hash))
        if len(self._tails) > 2 * len(self.ids) + 1024:
            self._rebuild_tails()

    def batch(self, max_txs: int, in_flight: set[bytes],
              max_bytes: int | None = None) -> list[SignedTx]:
        """Up to max_txs transactions of at most max_bytes together to propose next,
        highest gas price first (then longest waiting), each account's in nonce order;
        `in_flight` holds the hashes of those already proposed in blocks not yet
        executed. An account's run stops at the first transaction that does not fit (a
        later nonce could not commit without it); other accounts' may still fit. Gas is
        packed by each transaction's whole limit into TX_GAS_ROOM, so every one finds
        its gas when the block runs (validators refuse a block that asks for more)."""
        out: list[SignedTx] = []
        room = max_bytes if max_bytes is not None else 1 << 62
        gas_room, vm_room, vm_price = TX_GAS_ROOM, USER_VM_ROOM, self.ledger.vm_price()
        info, led = self._info, self.ledger
        heads: list[tuple] = []

        def head(sender, queue, nonce):
            while nonce in queue:
                tx = queue[nonce]
                if tx.hash not in in_flight:
                    return (-tx.body["gas_price"], info[tx.hash][2], sender, nonce)
                nonce += 1
            return None

        for sender, queue in self.by_sender.items():
            first = head(sender, queue, led.account(sender)[1])
            if first is not None:
                heads.append(first)
        heapq.heapify(heads)
        while heads and len(out) < max_txs and room > 0:
            _, _, sender, nonce = heapq.heappop(heads)
            queue = self.by_sender[sender]
            tx = queue[nonce]
            gas = led.gas_limit(tx)
            vm = gas if tx.kind in USER_VM_KINDS else 0
            if len(tx.raw) > room or gas > gas_room or vm > vm_room or (
                    vm and tx.body["gas_price"] < vm_price):
                continue                       # this account's run stops here
            out.append(tx)
            room -= len(tx.raw)
            gas_room -= gas
            vm_room -= vm
            following = head(sender, queue, nonce + 1)
            if following is not None:
                heapq.heappush(heads, following)
        return out

    def evict_committed(self, txs) -> None:
        """Drop what a committed block made stale: its own transactions (one a block
        held but could not include is not proposed again: its sender signs anew), used
        nonces, and the transactions their sender's balance no longer covers the fees
        of (from the first that it does not: those after it could not commit without
        it)."""
        led = self.ledger
        for tx in txs:
            if tx.hash in self.ids:
                self._remove(self.ids[tx.hash])
        for sender in {tx.sender for tx in txs}:
            queue = self.by_sender.get(sender)
            if not queue:
                continue
            bal, next_nonce = led.account(sender)
            for nonce in [n for n in queue if n < next_nonce]:
                self._drop(queue[nonce], f"nonce {nonce} of {sender} was used by another "
                                         f"transaction in the chain", "nonce-used")
                self._remove(queue[nonce])
            if not queue:
                continue
            reserved, over = 0, None
            for nonce in sorted(queue):
                reserved += self._info[queue[nonce].hash][0]
                if reserved > bal:
                    over = nonce
                    break
            if over is not None:
                for nonce in [n for n in queue if n >= over]:
                    self._drop(queue[nonce], f"{sender}'s balance no longer covers the fees "
                                             f"of its transactions from nonce {over}",
                               "cannot-pay")
                    self._remove(queue[nonce])
            self._pushtail(sender)

    def expire(self, now: int) -> int:
        """Drop the transactions that have waited behind a nonce gap for gap_expiry_ms;
        how many."""
        led, cutoff, gone = self.ledger, now - self.gap_expiry_ms, 0
        for sender in list(self.by_sender):
            queue = self.by_sender[sender]
            nonce = led.account(sender)[1]
            while nonce in queue:
                nonce += 1
            stale = [n for n in queue if n > nonce and self._info[queue[n].hash][1] <= cutoff]
            for n in stale:
                self._drop(queue[n], f"waited {self.gap_expiry_ms} ms behind a missing nonce "
                                     f"{nonce} of {sender}", "nonce-ahead")
                self._remove(queue[n])
            if stale:
                gone += len(stale)
                self._pushtail(sender)
        self.expired += gone
        return gone

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

    # --- internals ---------------------------------------------------------------------

    def _drop(self, tx: SignedTx, why: str, code: str) -> None:
        self.dropped[tx.id] = (why, code)
        if len(self.dropped) > MAX_DROPPED:
            del self.dropped[next(iter(self.dropped))]

    def _remove(self, tx: SignedTx) -> None:
        sender = tx.sender
        queue = self.by_sender[sender]
        del queue[tx.nonce]
        del self.ids[tx.hash]
        most = self._info.pop(tx.hash)[0]
        left = self.reserved[sender] - most
        if queue:
            self.reserved[sender] = left
        else:
            del self.by_sender[sender]
            del self.reserved[sender]

    def _pushtail(self, sender: str) -> None:
        queue = self.by_sender.get(sender)
        if queue:
            nonce = max(queue)
            tx = queue[nonce]
            heapq.heappush(self._tails, (tx.body["gas_price"], -self._info[tx.hash][2],
                                         sender, nonce, tx.hash))

    def _cheapest(self) -> SignedTx | None:
        tails = self._tails
        while tails:
            _, _, sender, nonce, h = tails[0]
            queue = self.by_sender.get(sender)
            if h in self.ids and queue is not None and nonce == max(queue):
                return self.ids[h]
            heapq.heappop(tails)
        return None

    def _rebuild_tails(self) -> None:
        self._tails = []
        for sender in self.by_sender:
            self._pushtail(sender)
