"""What a running contract may touch in the ledger: the VM's host, bound to one call.

Every write goes through the ledger's journaled tables, so when the VM traps the ledger
rolls the whole call back; nothing here buffers or undoes anything itself.
"""
from __future__ import annotations

from lendnet.contracts.vm import ContractError

from . import keys
from .fees import FEES_ADDRESS, STORAGE_GAS_PER_BYTE, WAKE_GAS, fee

MAX_STORED_INT = 2**63 - 1
MIN_STORED_INT = -(2**63)


class ContractHost:
    __slots__ = ("ledger", "height", "time", "caller", "self_address", "value", "_addr")

    def __init__(self, ledger, address: str, caller: str, value: int):
        self.ledger = ledger
        self.height = ledger.height
        self.time = ledger.time
        self.caller = caller.encode()
        self._addr = address
        self.self_address = address.encode()
        self.value = value

    def storage_get(self, key: bytes):
        return self.ledger.state.storage.get((self._addr, key))

    def storage_put(self, key: bytes, value) -> int:
        """Store, and return the gas the VM charges for it: STORAGE_GAS_PER_BYTE for
        each byte the contract's storage grows by (a new row: its key and value; a
        rewritten one: what its value grew by). Freed bytes are not refunded."""
        if type(value) is int and not MIN_STORED_INT <= value <= MAX_STORED_INT:
            raise ContractError("stored integers must fit in 64 bits")
        storage = self.ledger.state.storage
        row = (self._addr, key)
        old = storage.get(row)
        grown = _size(value) - (_size(old) if old is not None else -len(key))
        storage.put(row, value)
        return STORAGE_GAS_PER_BYTE * grown if grown > 0 else 0

    def storage_del(self, key: bytes) -> None:
        self.ledger.state.storage.delete((self._addr, key))

    def balance(self, addr: bytes) -> int:
        return self.ledger.balance(_address(addr))

    def pay(self, to: bytes, amount: int) -> None:
        if amount < 0:
            raise ContractError("cannot pay a negative amount")
        if amount:
            if self.ledger.balance(self._addr) < amount:
                raise ContractError(f"contract balance too low to pay {amount}")
            self.ledger.move(self._addr, _address(to), amount)

    def emit(self, name: str, values: list) -> None:
        self.ledger.record_event(self._addr, name, values)

    def wake(self, t: int) -> int:
        """Arm (or clear) this contract's wake-up. A user contract's future tick is paid
        now (the application's duties are the chain's own): run by a transaction, as
        WAKE_GAS more gas at its price; run by a tick (no transaction, no payer), from
        the contract's own balance at the chain's minimum price. A contract that cannot
        pay fails, and its wake-up with it."""
        led = self.ledger
        led.set_wake(self._addr, t)
        if not t or led.rules.duty(led, self._addr):
            return 0
        if self.caller:
            return WAKE_GAS
        cost = fee(0, WAKE_GAS, led.prices()[0], 0)
        if led.balance(self._addr) < cost:
            raise ContractError(f"a wake-up costs {cost} (the tick's gas, paid when "
                                f"scheduled); this contract holds {led.balance(self._addr)}")
        led.move(self._addr, FEES_ADDRESS, cost)
        return 0

    def release_liens(self) -> None:
        self.ledger.release_liens(self._addr)

    def seize_liens(self, to: bytes) -> None:
        self.ledger.seize_liens(self._addr, _address(to))


def _size(value) -> int:
    """A stored value's bytes, for the storage fee: an integer counts 8."""
    return len(value) if type(value) is bytes else 8


def _address(raw: bytes) -> str:
    try:
        s = raw.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        s = None
    if not keys.is_address(s):
        raise ContractError(f"{raw!r} is not an address")
    return s
