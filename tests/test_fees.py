"""The fee rules: failures pay for the gas they burned and count toward the block,
deploy pays by code size, storage by the byte, money conserved to the unit."""
from __future__ import annotations

from lendnet.contracts.asm import assemble
from lendnet.ledger import fees
from lendnet.ledger.ledger import BLOCK_GAS_LIMIT
from lendnet.ledger.tx import MAX_CALL_GAS

from .chain import Chain

LOOP = assemble('arg 0\npushb "init"\neq\njnz done\nloop:\njmp loop\ndone:\nstop')
WRITE = assemble('arg 0\npushb "init"\neq\njnz done\npushb "k"\narg 0\nsput\ndone:\nstop')


def deployed(c: Chain, code: bytes) -> str:
    c.do("alice", "deploy", code=code, args=[], gas=10_000)
    return sorted(c.ledger.state.contracts.rows)[-1]


def test_a_failing_loop_pays_its_gas_and_fills_the_block():
    c = Chain()
    loop = deployed(c, LOOP)
    before = c.balance("bob")
    calls = [c.tx("bob", "call", contract=loop, args=[b"go"], amount=0, gas=MAX_CALL_GAS)
             for _ in range(25)]
    res = c.block(*calls, strict=False)
    ran = [r for r in res.receipts if r.nonce_used]
    # each burned its whole budget and paid for it; then the block's gas ran out
    fixed = fees.NATIVE_GAS["call"]
    assert len(ran) == BLOCK_GAS_LIMIT // (fixed + MAX_CALL_GAS) >= 3
    assert all(not r.ok and "out of gas" in r.error and r.gas == fixed + MAX_CALL_GAS
               for r in ran)
    assert all(r.fee == fees.fee(len(calls[0].raw), r.gas, 1, 10) for r in ran)
    assert ran[0].fee >= MAX_CALL_GAS // 1_000                 # 5.00 LND a loop
    rest = res.receipts[len(ran):]
    assert "the block has left" in rest[0].error          # (and those after it: nonce)
    assert all(not r.nonce_used and r.fee == 0 for r in rest)
    assert c.balance("bob") == before - sum(r.fee for r in ran)
    assert c.ledger.total_money() == c.ledger.supply


def test_deploy_pays_for_its_code_by_size():
    c = Chain()
    small = c.block(c.tx("alice", "deploy", code=LOOP, args=[], gas=1_000)).receipts[0]
    big_code = assemble("\n".join(["push 1\npop"] * 300) + "\nstop")
    big = c.block(c.tx("alice", "deploy", code=big_code, args=[], gas=1_000)).receipts[0]
    assert big.gas - small.gas >= (len(big_code) - len(LOOP)) * fees.DEPLOY_GAS_PER_BYTE
    assert big.fee > small.fee
    # rejected code pays for its verification too
    bad = c.try_do("alice", "deploy", code=b"\x01\xff", args=[], gas=1_000)
    assert not bad.ok and bad.nonce_used and bad.gas == fees.NATIVE_GAS["deploy"] + 2 * 50


def test_storage_pays_per_byte_it_grows_by():
    c = Chain()
    store = deployed(c, WRITE)

    def write(value: bytes):
        return c.block(c.tx("bob", "call", contract=store, args=[value], amount=0,
                            gas=200_000)).receipts[0]
    first = write(b"x" * 100)                  # a new row: key (1) + value (100)
    same = write(b"y" * 100)                   # rewritten, no bigger: no storage fee
    grown = write(b"z" * 1_100)                # 1,000 bytes more
    assert first.gas - same.gas == 101 * fees.STORAGE_GAS_PER_BYTE
    assert grown.gas - same.gas >= 1_000 * fees.STORAGE_GAS_PER_BYTE
    assert c.ledger.total_money() == c.ledger.supply


def test_a_sender_that_cannot_pay_is_not_includable_and_nothing_runs():
    c = Chain({"lender": 10**7, "alice": 10**7, "bob": 5})
    loop = deployed(c, LOOP)
    r = c.try_do("bob", "call", contract=loop, args=[b"go"], amount=0, gas=MAX_CALL_GAS)
    assert not r.nonce_used and r.gas == 0 and r.fee == 0 and "cannot pay" in r.error
    assert c.ledger.account(c.addr("bob")) == (5, 0)


def test_zero_prices_charge_nothing():
    c = Chain(fee_params={"min_gas_price": 0, "byte_price": 0})
    r = c.block(c.tx("alice", "transfer", to=c.addr("bob"), amount=1, gas_price=0)).receipts[0]
    assert r.ok and r.fee == 0 and c.ledger.fees_collected() == 0
