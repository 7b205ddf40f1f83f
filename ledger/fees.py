"""The fee schedule: what a transaction pays, in LND minor units, from its sender.

fee = ceil((bytes × byte_price + gas_used × gas_price) / FEE_SCALE)

- bytes: the signed transaction's size on the wire, as it sits in a block forever.
- gas_used: the kind's fixed gas (`NATIVE_GAS` here, the application's table for its
  kinds), plus for `deploy` the verification and storage of its code by size, plus
  whatever the contract VM burned, storage writes included (`STORAGE_GAS_PER_BYTE` for
  every byte a contract's storage grows by). A transaction that fails pays for the gas it
  burned up to the failure; one that runs out of gas pays its whole limit.
- gas_price: chosen by the sender in the body (`gas_price`), at least the chain's
  `min_gas_price`; byte_price: the chain's. Both come from the genesis (`Ledger.genesis`'s
  `fees`), in thousandths of a minor unit (FEE_SCALE), so prices can be well under one
  unit a gas without floats.

The most a transaction can pay — its bytes and `gas_limit` (fixed gas plus the VM budget
it may burn) at its gas price — is reserved from the sender before it runs and what it did
not use is returned, so whatever the transaction does with its balance, the fee is paid.
Fees go to FEES_ADDRESS, an account no key controls: burned, but still counted among the
balances, so money stays conserved to the unit.
"""
from __future__ import annotations

from . import keys
from .tx import DEFAULT_GAS_PRICE, MAX_GAS_PRICE as MAX_PRICE

FEE_SCALE = 1_000                 # prices are in 1/1000 of a minor unit
DEFAULT_MIN_GAS_PRICE = DEFAULT_GAS_PRICE   # 1: 0.001 minor unit a gas; 1M gas is 10.00 LND
DEFAULT_BYTE_PRICE = 10           # 0.01 minor unit a byte (a transfer, 260 B: 0.04 LND)

# Fixed gas of the ledger's native kinds; what they cost to check and apply (signature
# verification included). call and deploy add what the VM burns, up to their `gas`.
NATIVE_GAS = {"transfer": 1_000, "create_multisig": 2_000, "deploy": 5_000, "call": 2_000}
VERIFY_GAS_PER_BYTE = 30          # deploy: the verifier's time by code size (~26 measured)
STORAGE_GAS_PER_BYTE = 20         # each byte added to a contract's storage (code included)
DEPLOY_GAS_PER_BYTE = VERIFY_GAS_PER_BYTE + STORAGE_GAS_PER_BYTE

FEES_ADDRESS = keys.derive_address(b"fees", b"burned")
# A user contract's wake-up is paid when it is scheduled: the gas of the tick it will get
# (ledger.TICK_GAS), so ten thousand wake-ups cost what ten thousand calls would.
WAKE_GAS = 200_000


def fee(size: int, gas: int, gas_price: int, byte_price: int) -> int:
    """The fee of a transaction of `size` bytes that used `gas`: rounded up to a unit."""
    return -(-(size * byte_price + gas * gas_price) // FEE_SCALE)


def check_prices(params: dict) -> dict:
    """The genesis fee parameters, with defaults; ValueError names a bad one."""
    known = {"min_gas_price": DEFAULT_MIN_GAS_PRICE, "byte_price": DEFAULT_BYTE_PRICE}
    unknown = set(params) - set(known)
    if unknown:
        raise ValueError(f"unknown fee parameters {sorted(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    out = {**known, **params}
    for name, v in out.items():
        if type(v) is not int or not 0 <= v <= MAX_PRICE:
            raise ValueError(f"fee parameter {name} must be an integer from 0 to {MAX_PRICE}")
    return out
