"""The ledger: applies blocks of signed transactions to the state, deterministically.

`apply_block(height, time, txs)` is a pure function of (state, block): it runs the
contracts that asked to be woken by this block's chain time, then each transaction in
order. A transaction either applies whole, or fails and changes nothing but its sender's nonce
and the fee it paid (its writes are journaled and rolled back), or — not includable at all:
wrong chain, nonce or signature, a fee its sender cannot pay, more gas than the block has
left — changes nothing; its receipt says which and why. Money moves only through `move`
(and into and out of escrow, and fees into `fees.FEES_ADDRESS`), so balances plus escrow
always equal the supply minted at genesis. The fee schedule is in `fees.py`.

This is the generic ledger: accounts, money, multisig, contracts, transaction dispatch and
blocks. It knows nothing of lending. An application built on it (lendnet's is
`lending.RULES`; `lending.genesis` builds the lendnet ledger) hands it a `Rules` at
construction: its transaction kinds and what the ledger must ask it. The application
imports this module, never the other way round.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lendnet.contracts.vm import BytecodeError, ContractError, Program, execute

from . import codec, fees, keys
from .host import ContractHost
from .state import State
from .tx import MAX_CALL_GAS, SignedTx, TxError

# What one block may execute, in gas. Sized from measured time, not guessed: on the
# 2-core test machine the VM runs 1,000,000 gas of its cheapest loop in 70-85 ms, so a
# block is at most about 0.3 s of contract work on every node, whoever pays for it (at
# 20,000,000 a block of paid `jmp` loops took seconds and stalled the chain). Ordinary
# blocks use a fraction: 500 repayments are about 1.5 M, 500 transfers 0.5 M.
BLOCK_GAS_LIMIT = 4_000_000
TICK_GAS = fees.WAKE_GAS       # one wake-up's gas, at most: what scheduling it paid
# The application's duties (a loan's deadlines) run first in every block, with gas of
# their own, so no user can crowd them out; user contracts' wake-ups come next, within a
# share of the block's gas, then the transactions with the rest. A wake-up that does not
# fit this block waits for the next: none is dropped for want of room.
DUTY_GAS = BLOCK_GAS_LIMIT
USER_WAKE_GAS = BLOCK_GAS_LIMIT // 4
# A block's transactions may ask for this much gas together (their limits summed): what
# is left when user wake-ups took their whole share, so every transaction a block holds
# finds its gas when it runs. Proposers pack to it; validators refuse more (check_txs).
TX_GAS_ROOM = BLOCK_GAS_LIMIT - USER_WAKE_GAS
# Of that, what user contracts' calls and deploys may ask for together: their VM work is
# the costly kind (1,000,000 gas is 70-85 ms of CPU on every node), so it gets a share,
# and transfers and lending always find the rest, however much contract work is queued.
USER_VM_ROOM = 600_000
USER_VM_KINDS = ("call", "deploy")
# The price of that share rises while blocks use more than half of it and falls back
# to the chain's minimum when they use less, by at most an eighth a block (EIP-1559's
# base fee): a flood of paid contract work costs more and more the longer it lasts.
VM_TARGET = USER_VM_ROOM // 2
MAX_TICKS_PER_BLOCK = 10_000   # wake-ups run per block and class (stale entries skipped)
DUTY_RETRY_S = 3_600           # a duty that failed is tried again this much chain time later


class BlockError(ValueError):
    """A block that cannot be applied as proposed (wrong height, time, or a bad transaction)."""


class InvariantError(RuntimeError):
    """A bug: the state was about to break an invariant (money out of nothing). Raised,
    never asserted, so the check holds under `python -O` too."""


@dataclass
class Receipt:
    tx: str
    ok: bool
    error: str | None = None
    gas: int = 0                 # gas charged: the kind's fixed gas plus what the VM burned
    nonce_used: bool = True      # False when the transaction could not be included at all
    fee: int = 0                 # minor units paid by the sender (fees.py)

    def to_json(self):
        return {"tx": self.tx, "ok": self.ok, "error": self.error, "gas": self.gas,
                "nonce_used": self.nonce_used, "fee": self.fee}


@dataclass
class BlockResult:
    height: int
    time: int
    state_root: bytes
    receipts: list = field(default_factory=list)
    events: list = field(default_factory=list)


Handler = Callable[["Ledger", SignedTx, dict], None]


def _nothing(*_) -> None:
    return None


def _never(*_) -> bool:
    return False


def _no_escrow(led: Ledger) -> int:
    return 0


@dataclass(frozen=True)
class Rules:
    """What an application adds to the generic ledger, given to it at construction.

    Each hook takes the Ledger first. Those called while a block applies write through the
    ledger's journaled tables, so they roll back with a failed transaction. The defaults
    are a ledger with no application.
    """
    handlers: Mapping[str, Handler] = field(default_factory=dict)   # kind -> (led, tx, body)
    # Write the application's genesis records (after accounts and meta, before settling).
    genesis: Callable[[Ledger], None] = _nothing
    # Every contract event, after it is recorded: (led, contract, name, values).
    on_event: Callable[[Ledger, str, str, list], None] = _nothing
    # Refuse (TxError) a `call` transaction to a contract the application drives itself.
    check_call: Callable[[Ledger, str], None] = _nothing
    # Whether a contract's wake-ups are the application's duties (run first, own gas).
    duty: Callable[[Ledger, str], bool] = _never
    # Money the application holds in escrow, outside every balance (see total_money).
    escrowed: Callable[[Ledger], int] = _no_escrow
    # A contract releases or seizes the liens on what is pledged to it (the VM's host ops):
    # (led, holder) and (led, holder, to).
    release_liens: Callable[[Ledger, str], None] = _nothing
    seize_liens: Callable[[Ledger, str, str], None] = _nothing
    # After a contract's run succeeds (a transaction's, a tick's, or one run by another
    # hook): (led, contract). The run's VM execution is over, so the hook may run
    # contracts itself, this one included (lending: a loan that has just defaulted draws
    # its guarantees; what a shared loan paid its pool is split among the lenders).
    after_run: Callable[[Ledger, str], None] = _nothing
    # The fee schedule of the application's kinds: kind -> (fixed gas, the most gas its
    # contract runs may burn). Every kind in `handlers` needs an entry.
    gas: Mapping[str, tuple[int, int]] = field(default_factory=dict)


PLAIN = Rules()     # the ledger alone: native kinds, no escrow, no liens


class Ledger:
    def __init__(self, chain_id: str, rules: Rules):
        self.chain_id = chain_id
        self.rules = rules
        both = set(NATIVE_HANDLERS) & set(rules.handlers)
        if both:
            raise ValueError(f"the application redefines native kinds {sorted(both)}")
        self.handlers: dict[str, Handler] = {**NATIVE_HANDLERS, **rules.handlers}
        unpriced = sorted(set(rules.handlers) - set(rules.gas))
        if unpriced:
            raise ValueError(f"the application's kinds {unpriced} have no gas in Rules.gas")
        self._on_event = rules.on_event
        # Indexes over the `wakes` table, (time, address): the duties and user wake-ups.
        self._duties: list = []
        self._user_wakes: list = []
        self.state = State(on_wake=self._on_wake)
        self.height = 0
        self.time = 0
        self.events: list = []        # this block's events, in order
        self._tx_id: str | None = None
        # The block gas a running transaction may reach: its gas limit, so that no
        # contract run (nested ones in hooks included) can take it past what it reserved.
        self._tx_gas_end = BLOCK_GAS_LIMIT
        self._block_gas = 0
        self._block_fees = 0          # this block's fees, paid into FEES_ADDRESS at its end

    # --- genesis ----------------------------------------------------------------------

    @classmethod
    def genesis(cls, chain_id: str, balances: dict[str, int], time: int = 0, *,
                rules: Rules, fee_params: dict | None = None) -> Ledger:
        """A ledger at height 0. `rules` is required: a ledger built without the
        application's rules would be another chain (see `lending.genesis`). `fee_params`:
        min_gas_price and byte_price (fees.py; defaults for those not given)."""
        prices = fees.check_prices(fee_params or {})
        led = cls(chain_id, rules)
        st = led.state
        supply = 0
        for addr in sorted(balances):
            amount = balances[addr]
            if not keys.is_address(addr) or type(amount) is not int or amount < 0:
                raise ValueError(f"bad genesis balance {addr!r}: {amount!r}")
            st.accounts.put(addr, (amount, 0))
            supply += amount
        for k, v in (("chain", chain_id), ("supply", supply), ("time", time), ("height", 0),
                     *sorted(prices.items())):
            st.meta.put(k, v)
        led.time = time
        rules.genesis(led)
        st.settle()
        return led

    @classmethod
    def from_state(cls, chain_id: str, rules: Rules, state: State,
                   height: int | None = None) -> Ledger:
        """A ledger over a state that was not built here (a restored snapshot): its
        height and time are the ones the state's `meta` records (they are in the root;
        `height`, if given, is the certified block's, and must be the same), and the
        wake-up heaps are rebuilt from the `wakes` table. `rules` are the chain's
        (`lending.RULES` for lendnet; its genesis hook is not run again)."""
        if state.journal:
            raise ValueError("the state has a transaction open")
        meta = state.meta
        if meta.get("chain") != chain_id:
            raise ValueError(f"the state is of chain {meta.get('chain')!r}, not {chain_id!r}")
        at, time = meta.get("height"), meta.get("time")
        if type(at) is not int or type(time) is not int or at < 0 or time < 0:
            raise ValueError(f"the state's meta has no valid height and time "
                             f"({at!r}, {time!r})")
        if height is not None and at != height:
            raise ValueError(f"the state is at height {at}, not {height}")
        led = cls(chain_id, rules)
        state.wakes.set_hook(led._on_wake)
        led.state = state
        led.height, led.time = at, time
        # In key order, as _compact_wakes does: the heaps hold exactly the live
        # wake-ups, with none of the stale entries the original's may still hold.
        # O(live wake-ups): the heaps stay in memory (they are O(scheduled contracts)).
        for addr, at in sorted(state.wakes.items()):
            led._on_wake(addr, at)
        return led

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is running (else the block's wake-ups are): work whose
        gas the transaction's limit did not reserve waits for a wake-up."""
        return self._tx_id is not None

    # --- accounts and money -----------------------------------------------------------

    def account(self, addr: str) -> tuple[int, int]:
        return self.state.accounts.get(addr, (0, 0))

    def balance(self, addr: str) -> int:
        return self.state.accounts.get(addr, (0, 0))[0]

    def move(self, src: str, dst: str, amount: int) -> None:
        """The one way money changes hands; callers check funds first, this checks again."""
        accounts = self.state.accounts
        bal, nonce = accounts.get(src, (0, 0))
        if not 0 < amount <= bal:
            raise InvariantError(f"move of {amount} would overdraw {src} (balance {bal})")
        accounts.put(src, (bal - amount, nonce))
        bal, nonce = accounts.get(dst, (0, 0))
        accounts.put(dst, (bal + amount, nonce))

    def debit_to_escrow(self, src: str, amount: int) -> None:
        bal, nonce = self.account(src)
        if not 0 < amount <= bal:
            raise InvariantError(f"escrow of {amount} would overdraw {src} (balance {bal})")
        self.state.accounts.put(src, (bal - amount, nonce))

    def credit_from_escrow(self, dst: str, amount: int) -> None:
        bal, nonce = self.account(dst)
        self.state.accounts.put(dst, (bal + amount, nonce))

    def record(self, table: str, key: str, what: str) -> dict:
        """A row a transaction names, or TxError("no <what> <key>")."""
        row = self.state.tables[table].get(key)
        if row is None:
            raise TxError(f"no {what} {key}")
        return row

    def require_funds(self, addr: str, amount: int) -> None:
        bal = self.balance(addr)
        if bal < amount:
            raise TxError(f"insufficient funds: balance {bal}, needs {amount}")

    def total_money(self) -> int:
        """Balances plus what the application holds in escrow: must always equal the
        supply. O(accounts + offers + sales): a whole-state check (the simulator's
        checker, benchmarks; the API caches it per height)."""
        return (sum(b for _, (b, _) in self.state.accounts.items())
                + self.rules.escrowed(self))

    @property
    def supply(self) -> int:
        return self.state.meta.get("supply")

    def fees_collected(self) -> int:
        """Every fee paid so far: burned, but counted in `total_money`."""
        return self.balance(fees.FEES_ADDRESS)

    # --- fees (the schedule is in fees.py) ----------------------------------------------

    def prices(self) -> tuple[int, int]:
        """The chain's (min_gas_price, byte_price), fixed at genesis."""
        meta = self.state.meta
        return meta.get("min_gas_price", 0), meta.get("byte_price", 0)

    def vm_price(self) -> int:
        """The least gas price a contract call or deploy may offer now (VM_TARGET)."""
        return self.state.meta.get("vm_price", self.prices()[0])

    def _next_vm_price(self, used: int) -> None:
        """After a block whose calls and deploys used `used` gas: the next price."""
        price, floor = self.vm_price(), self.prices()[0]
        if used > VM_TARGET:
            price += max(1, price * (used - VM_TARGET) // VM_TARGET // 8)
        elif used < VM_TARGET:
            price = max(floor, price - max(1, price * (VM_TARGET - used) // VM_TARGET // 8))
        if price != self.vm_price():
            self.state.meta.put("vm_price", price)

    def fixed_gas(self, tx: SignedTx) -> int:
        """The gas a transaction pays whatever it does: its kind's, and for deploy the
        verification and storage of its code by size."""
        kind = tx.kind
        if kind in fees.NATIVE_GAS:
            gas = fees.NATIVE_GAS[kind]
            if kind == "deploy":
                gas += len(tx.body["code"]) * fees.DEPLOY_GAS_PER_BYTE
            return gas
        return self.rules.gas[kind][0]

    def gas_limit(self, tx: SignedTx) -> int:
        """The most gas a transaction can be charged: its fixed gas and the VM budget."""
        kind = tx.kind
        if kind == "deploy" or kind == "call":
            return self.fixed_gas(tx) + min(tx.body["gas"], MAX_CALL_GAS)
        if kind in fees.NATIVE_GAS:
            return fees.NATIVE_GAS[kind]
        fixed, budget = self.rules.gas[kind]
        return fixed + budget

    def max_fee(self, tx: SignedTx) -> int:
        """The most this transaction can pay: what is reserved from its sender."""
        return fees.fee(len(tx.raw), self.gas_limit(tx), tx.body["gas_price"],
                        self.prices()[1])

    def check_fee(self, tx: SignedTx, reserved: int = 0) -> int:
        """Refuse (TxError) a gas price under the minimum (for a call or deploy, under
        the contract price now: vm_price), or a sender that cannot pay this
        transaction's maximum fee on top of `reserved`; return that maximum."""
        min_price = self.prices()[0]
        if tx.body["gas_price"] < min_price:
            raise TxError(f"gas price {tx.body['gas_price']} is under the chain's minimum "
                          f"{min_price}", "fee-too-low")
        if tx.kind in USER_VM_KINDS and tx.body["gas_price"] < self.vm_price():
            raise TxError(f"gas price {tx.body['gas_price']} is under the {self.vm_price()} "
                          f"contract work costs now (it rises while blocks are full of "
                          f"it)", "fee-too-low")
        most = self.max_fee(tx)
        bal = self.balance(tx.sender)
        if bal < reserved + most:
            raise TxError(f"cannot pay the fee: balance {bal}, needs {reserved + most}"
                          + (f" ({reserved} for the transactions waiting before it)"
                             if reserved else ""), "cannot-pay")
        return most

    # --- blocks -----------------------------------------------------------------------

    def apply_block(self, height: int, time: int, txs: list[SignedTx],
                    strict: bool = True) -> BlockResult:
        """Apply one block. With strict, any failing transaction rejects the whole block
        (and the state is left exactly as before); without, failures are receipts."""
        if height != self.height + 1:
            raise BlockError(f"block height {height} does not follow {self.height}")
        if type(time) is not int or time < self.time:
            raise BlockError(f"block time {time} is before the chain time {self.time}")
        saved = (self.height, self.time)
        self.state.settle()
        self.height, self.time = height, time
        self.events = []
        self._block_gas = self._block_fees = 0
        meta = self.state.meta
        meta.put("height", height)
        meta.put("time", time)
        self._run_wakes()
        receipts = []
        for tx in txs:
            r = self.apply_tx(tx, _in_block=True)
            if strict and not r.ok:
                self.state.rollback(0)
                self.height, self.time = saved
                raise BlockError(f"transaction {r.tx} failed: {r.error}")
            receipts.append(r)
        self._next_vm_price(sum(r.gas for t, r in zip(txs, receipts)
                                if t.kind in USER_VM_KINDS))
        if self._block_fees:
            pool = self.account(fees.FEES_ADDRESS)
            self.state.accounts.put(fees.FEES_ADDRESS, (pool[0] + self._block_fees, pool[1]))
        self.state.settle()
        return BlockResult(height, time, self.state.root(), receipts, self.events)

    def state_root(self) -> bytes:
        return self.state.root()

    # --- transactions -----------------------------------------------------------------

    def check_tx(self, tx: SignedTx) -> None:
        """Stateful checks before execution: chain, nonce, signatures and authority."""
        self.check_sequence(tx)
        self.check_signers(tx)

    def check_sequence(self, tx: SignedTx, ahead: int = 1) -> None:
        """The chain and the nonce: the sender's next one, or (the mempool, which holds
        an account's later transactions too) up to `ahead - 1` beyond it. Cheap, so it
        comes before any signature is checked."""
        if tx.body["chain"] != self.chain_id:
            raise TxError(f"transaction is for chain {tx.body['chain']!r}, this is "
                          f"{self.chain_id!r}", "wrong-chain")
        expected = self.account(tx.sender)[1]
        if tx.nonce < expected:
            raise TxError(f"nonce {tx.nonce} already used (next is {expected})", "nonce-used")
        if tx.nonce >= expected + ahead:
            raise TxError(f"nonce {tx.nonce} is ahead of the account's next nonce {expected}"
                          + (f" by {ahead} or more" if ahead > 1 else ""), "nonce-ahead")

    def check_signers(self, tx: SignedTx) -> None:
        """Every signature valid, and they are the ones the sending account requires."""
        if not tx.verify_signatures():
            raise TxError("bad signature", "bad-signature")
        self.check_authority(tx)

    def check_authority(self, tx: SignedTx) -> None:
        """Are the (valid) signatures the ones the sending account requires?"""
        policy = self.state.multisigs.get(tx.sender)
        if policy is None:
            if len(tx.sigs) != 1 or keys.address_of(tx.sigs[0][0]) != tx.sender:
                raise TxError(f"not signed by the key of {tx.sender}", "unauthorised")
        else:
            threshold, members = policy
            if any(pk not in members for pk in tx.signers()):
                raise TxError("signed by a key that is not a member of this multisig account",
                              "unauthorised")
            if len(tx.sigs) < threshold:
                raise TxError(f"multisig account needs {threshold} signatures, has "
                              f"{len(tx.sigs)}", "unauthorised")

    def apply_tx(self, tx: SignedTx, _in_block: bool = False) -> Receipt:
        """Apply one transaction. One that is not includable (wrong chain, nonce,
        signature or signer; a gas price under the minimum, a sender that cannot pay its
        maximum fee, a gas limit over what the block has left) changes nothing. One
        that is includable pays its fee, and if it fails — too little money, a refused
        loan, a contract that traps — changes nothing else but its sender's nonce: it
        was sequenced, so it cannot be replayed, and the sender's later transactions
        are not stuck behind it. Its gas counts toward the block's either way."""
        if not _in_block:
            raise RuntimeError("transactions are applied inside apply_block")
        st = self.state
        try:
            self.check_tx(tx)
            limit = self.gas_limit(tx)
            if limit > BLOCK_GAS_LIMIT - self._block_gas:
                raise TxError(f"gas limit {limit} is over the {BLOCK_GAS_LIMIT - self._block_gas}"
                              " the block has left", "block-full")
            most = self.check_fee(tx)
        except TxError as e:
            return Receipt(tx.id, False, str(e), nonce_used=False)
        # The most it can pay is taken before it runs (outside the journal mark, so a
        # failure keeps it taken); what it did not use comes back after.
        sender = tx.sender
        bal, nonce = self.account(sender)
        st.accounts.put(sender, (bal - most, nonce + 1))
        mark, n_events = st.mark(), len(self.events)
        self._tx_id = tx.id
        fixed = self.fixed_gas(tx)
        gas_before = self._block_gas
        self._tx_gas_end = gas_before + limit
        self._block_gas += fixed             # so a contract run sees the block's gas left
        error = None
        try:
            self.handlers[tx.kind](self, tx, tx.body)
        except (TxError, ContractError) as e:
            st.rollback(mark)
            del self.events[n_events:]
            error = str(e)
        finally:
            self._tx_id = None
            self._tx_gas_end = BLOCK_GAS_LIMIT
        gas = self._block_gas - gas_before
        if gas > limit:
            raise InvariantError(f"transaction {tx.id} used {gas} gas, over its limit {limit}")
        paid = fees.fee(len(tx.raw), gas, tx.body["gas_price"], self.prices()[1])
        bal, nonce = self.account(sender)
        st.accounts.put(sender, (bal + most - paid, nonce))
        self._block_fees += paid              # into FEES_ADDRESS once, at the block's end
        return Receipt(tx.id, error is None, error, gas, True, paid)

    # --- contracts --------------------------------------------------------------------

    def run_contract(self, address: str, args: list, caller: str, value: int,
                     gas: int) -> object:
        """Run a contract instance; raises ContractError (the caller rolls back). The gas
        it burns, success or not, counts toward the block's (and the transaction's fee)."""
        inst = self.state.contracts.get(address)
        program = Program.load(self.state.code.get(inst["code"]))
        limit = min(gas, BLOCK_GAS_LIMIT - self._block_gas,
                    self._tx_gas_end - self._block_gas)
        if limit <= 0:
            raise ContractError("block gas limit reached" if self._tx_id is None else
                                "the transaction's gas limit is reached")
        try:
            out = execute(program, ContractHost(self, address, caller, value), args, limit)
        except ContractError as e:
            self._block_gas += e.gas_used or 0
            raise
        self._block_gas += out.gas_used
        self.rules.after_run(self, address)
        return out.value

    def create_contract(self, address: str, code_hash: str, creator: str) -> None:
        if address in self.state.contracts:
            raise TxError(f"contract {address} already exists")
        self.state.contracts.put(address, {"code": code_hash, "creator": creator,
                                           "created": self.time})

    def record_event(self, contract: str, name: str, values: list) -> None:
        event = {"height": self.height, "time": self.time, "tx": self._tx_id,
                 "contract": contract, "name": name, "values": list(values)}
        self.events.append(event)
        self._on_event(self, contract, name, values)

    # --- chain-time wake-ups ----------------------------------------------------------

    def set_wake(self, address: str, t: int) -> None:
        if t:
            self.state.wakes.put(address, t)
        else:
            self.state.wakes.delete(address)

    def _on_wake(self, address, t) -> None:
        # The heaps index the `wakes` table; stale entries are skipped on pop and
        # compacted away (_compact_wakes) before they can outnumber the live ones.
        if t:
            heap = self._duties if self.rules.duty(self, address) else self._user_wakes
            heapq.heappush(heap, (t, address))

    def _run_wakes(self) -> None:
        """Tick every contract whose wake-up time this block's chain time has reached:
        the duties first, with gas of their own, then user contracts' within their share
        of the block (what they use counts toward it)."""
        self._compact_wakes()
        self._run_due(self._duties, DUTY_GAS, duty=True)
        self._block_gas = 0                        # the duties' gas is not the block's
        self._run_due(self._user_wakes, USER_WAKE_GAS, duty=False)

    def _run_due(self, heap: list, budget: int, duty: bool) -> None:
        wakes = self.state.wakes
        ran = 0
        while ran < MAX_TICKS_PER_BLOCK:
            if not heap or heap[0][0] > self.time or budget - self._block_gas < TICK_GAS:
                return                        # (no room for a whole tick: the next block)
            t, addr = heapq.heappop(heap)
            if wakes.get(addr) != t:
                # Superseded or cleared since it was pushed. Not counted: which stale
                # entries a heap holds depends on its history, and a ledger restored
                # from a snapshot has none, so counting them would make what runs
                # depend on more than the state. There are at most about as many as
                # live ones (_compact_wakes), each a cheap pop.
                continue
            ran += 1
            mark, n_events = self.state.mark(), len(self.events)
            wakes.delete(addr)
            try:
                self.run_contract(addr, [b"tick"], "", 0, TICK_GAS)
            except ContractError as e:
                # It had all its gas, so this is the contract's own failure. A user
                # contract that cannot tick must not wake every block forever: its
                # wake-up is cleared. A duty is never dropped: it is tried again later.
                self.state.rollback(mark)
                del self.events[n_events:]
                self.set_wake(addr, self.time + DUTY_RETRY_S if duty else 0)
                self.record_event(addr, "tick_failed", [str(e).encode()[:200]])

    def _compact_wakes(self) -> None:
        """Rebuild the heaps from the table when stale entries (wake-ups moved or
        cleared) pass the live ones: their memory stays in proportion to the table."""
        wakes = self.state.wakes
        if len(self._duties) + len(self._user_wakes) <= 2 * len(wakes) + 1_024:
            return
        self._duties, self._user_wakes = [], []
        for addr, at in sorted(wakes.items()):
            self._on_wake(addr, at)

    # --- liens (called by contracts through the host; the application keeps them) -------

    def release_liens(self, holder: str) -> None:
        self.rules.release_liens(self, holder)

    def seize_liens(self, holder: str, to: str) -> None:
        self.rules.seize_liens(self, holder, to)


# --- native transaction kinds -----------------------------------------------------------

def _transfer(led: Ledger, tx, b) -> None:
    led.require_funds(tx.sender, b["amount"])
    if b["to"] == tx.sender:
        raise TxError("cannot transfer to the sending account")
    led.move(tx.sender, b["to"], b["amount"])


def multisig_address(threshold: int, members) -> str:
    """The address of the M-of-N account these members create (any order)."""
    return keys.derive_address(b"multisig", codec.encode([threshold, sorted(members)]))


def _create_multisig(led: Ledger, tx, b) -> None:
    members = sorted(b["members"])
    address = multisig_address(b["threshold"], members)
    if address in led.state.multisigs:
        raise TxError(f"multisig account {address} already exists")
    if address in led.state.accounts:
        raise TxError(f"address {address} is already in use")
    led.state.multisigs.put(address, (b["threshold"], tuple(members)))
    led.state.accounts.put(address, (0, 0))
    led.record_event(address, "multisig_created", [b["threshold"], len(members)])


def _deploy(led: Ledger, tx, b) -> None:
    try:
        program = Program.load(b["code"])
    except BytecodeError as e:
        raise TxError(f"deploy: code rejected by the verifier: {e}") from None
    code_hash = program.code_hash.hex()
    if code_hash not in led.state.code:
        led.state.code.put(code_hash, b["code"])
    address = keys.derive_address(b"contract", tx.hash)
    led.create_contract(address, code_hash, tx.sender)
    led.run_contract(address, [b"init", *b["args"]], tx.sender, 0, b["gas"])


def _call(led: Ledger, tx, b) -> None:
    address = b["contract"]
    if address not in led.state.contracts:
        raise TxError(f"no contract at {address}")
    led.rules.check_call(led, address)
    if b["amount"]:
        led.require_funds(tx.sender, b["amount"])
        led.move(tx.sender, address, b["amount"])
    led.run_contract(address, list(b["args"]), tx.sender, b["amount"],
                     min(b["gas"], MAX_CALL_GAS))


NATIVE_HANDLERS: dict[str, Handler] = {
    "transfer": _transfer,
    "create_multisig": _create_multisig,
    "deploy": _deploy,
    "call": _call,
}
