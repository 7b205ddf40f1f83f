"""The mempool: only what its sender can pay for gets in, one account cannot crowd the
others out, a full pool keeps the best-paying, and what waits behind a nonce gap expires."""
from __future__ import annotations

import pytest

from lendnet.contracts.asm import assemble
from lendnet.ledger import tx as txm
from lendnet.ledger.keys import Keypair, derive_address
from lendnet.ledger.tx import TxError
from lendnet.node.core.mempool import GAP_EXPIRY_MS, MAX_PER_ACCOUNT, MAX_TXS, Mempool

from .chain import CHAIN, Chain

BOB = Keypair.from_name("bob").address


def transfer(kp, nonce, price=1, amount=1):
    return txm.sign(txm.build(kp, CHAIN, "transfer", nonce, to=BOB, amount=amount,
                              gas_price=price), [kp])


def refused(pool, tx, code, now=0):
    with pytest.raises(TxError) as e:
        pool.add(tx, now)
    assert e.value.code == code, str(e.value)
    return str(e.value)


def test_a_key_without_money_is_refused_before_its_signature_is_checked():
    c = Chain()
    pool = Mempool(c.ledger)
    junk = transfer(Keypair.from_name("nobody"), 0)
    assert "cannot pay the fee: balance 0" in refused(pool, junk, "cannot-pay")
    assert junk.verified is None                 # refused before any signature work
    assert len(pool) == 0


def test_gas_price_under_the_genesis_minimum_is_refused():
    c = Chain(fee_params={"min_gas_price": 5})
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    assert "under the chain's minimum 5" in refused(pool, transfer(alice, 0, price=4),
                                                    "fee-too-low")
    pool.add(transfer(alice, 0, price=5))


def test_the_balance_must_cover_every_waiting_transaction_s_most_fee():
    one_fee = Chain().ledger.max_fee(transfer(Keypair.from_name("alice"), 0))
    c = Chain({"alice": 2 * one_fee + 1, "bob": 0, "lender": 0})
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    pool.add(transfer(alice, 0))
    pool.add(transfer(alice, 1))
    assert "waiting before it" in refused(pool, transfer(alice, 2), "cannot-pay")
    assert pool.reserved[alice.address] == 2 * one_fee


def test_one_account_has_at_most_max_per_account_waiting():
    c = Chain()
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    for n in range(MAX_PER_ACCOUNT):
        pool.add(transfer(alice, n))
    # (the nonce window would refuse a 65th as too far ahead; a smaller cap shows itself)
    small = Mempool(c.ledger, max_per_account=3)
    for n in range(3):
        small.add(transfer(alice, n))
    refused(small, transfer(alice, 3), "account-full")
    small.add(transfer(c.keys["lender"], 0))     # other accounts still get in


def test_a_full_pool_evicts_the_cheapest_for_a_better_paying_transaction_only():
    c = Chain(names=("a", "b", "c", "d", "e"))
    a, b, cc, d, e = (c.keys[n] for n in "abcde")
    pool = Mempool(c.ledger, max_txs=3)
    pool.add(transfer(a, 0, price=2))
    pool.add(transfer(b, 0, price=1))
    pool.add(transfer(cc, 0, price=1))
    # the same price as the cheapest, or less: refused, nothing evicted
    refused(pool, transfer(d, 0, price=1), "mempool-full")
    assert len(pool) == 3 and pool.evicted == 0
    # more: the cheapest goes (of equal price, the newest: c's)
    better = transfer(d, 0, price=3)
    pool.add(better)
    assert better.hash in pool and pool.evicted == 1
    assert cc.address not in pool.by_sender and b.address in pool.by_sender
    pool.add(transfer(e, 0, price=2))            # b's goes now
    assert b.address not in pool.by_sender
    refused(pool, transfer(cc, 0, price=2), "mempool-full")   # 2 is the cheapest left


def test_eviction_takes_an_account_s_last_nonce_so_no_gap_opens():
    c = Chain(names=("a", "b"))
    a, b = c.keys["a"], c.keys["b"]
    pool = Mempool(c.ledger, max_txs=3)
    for n in range(3):
        pool.add(transfer(a, n, price=1))
    pool.add(transfer(b, 0, price=2))
    assert sorted(pool.by_sender[a.address]) == [0, 1]


def test_a_block_takes_the_highest_gas_price_first_in_each_account_s_nonce_order():
    c = Chain(names=("a", "b", "c"))
    a, b, cc = (c.keys[n] for n in "abc")
    pool = Mempool(c.ledger)
    a0, a1 = transfer(a, 0, price=1), transfer(a, 1, price=9)
    b0 = transfer(b, 0, price=3)
    c0, c1 = transfer(cc, 0, price=5), transfer(cc, 1, price=2)
    for t in (a0, a1, b0, c0, c1):
        pool.add(t)
    assert pool.batch(10, set()) == [c0, b0, c1, a0, a1]
    assert pool.batch(2, set()) == [c0, b0]
    assert pool.batch(10, {c0.hash}) == [b0, c1, a0, a1]


def test_a_transaction_behind_a_nonce_gap_expires():
    c = Chain()
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    head, gapped = transfer(alice, 0), transfer(alice, 2)
    pool.add(head, now=1_000)
    pool.add(gapped, now=1_000)
    assert pool.expire(1_000 + GAP_EXPIRY_MS - 1) == 0
    assert pool.expire(1_000 + GAP_EXPIRY_MS) == 1
    assert head.hash in pool and gapped.hash not in pool     # the head never expires
    assert pool.reserved[alice.address] == c.ledger.max_fee(head)
    # once the gap is filled nothing is behind one
    pool.add(transfer(alice, 1), now=100_000)
    pool.add(transfer(alice, 2), now=100_000)
    assert pool.expire(10**9) == 0 and len(pool) == 3


def test_after_a_block_what_the_sender_can_no_longer_pay_for_goes():
    c = Chain()
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    fee = c.ledger.max_fee(transfer(alice, 0))
    everything = transfer(alice, 0, amount=c.balance("alice") - fee)
    pool.add(everything)
    pool.add(transfer(alice, 1))
    pool.add(transfer(alice, 2))
    c.ledger.apply_block(1, c.time + 1, [everything])
    pool.evict_committed([everything])
    assert len(pool) == 0 and alice.address not in pool.reserved
    # each dropped transaction is remembered with why, for a client waiting on it
    assert [code for _, code in pool.dropped.values()] == ["cannot-pay", "cannot-pay"]


def test_a_transaction_whose_nonce_another_took_is_dropped_and_says_so():
    """Two wallets share a key (the dev faucet: calls at different nodes): the one that
    commits first takes the nonce; the other leaves the mempool as "nonce-used", so a
    client polling its status signs again with the next nonce instead of waiting."""
    c = Chain()
    pool = Mempool(c.ledger)
    alice = c.keys["alice"]
    mine, theirs = transfer(alice, 0, amount=1), transfer(alice, 0, amount=2)
    pool.add(mine)
    c.ledger.apply_block(1, c.time + 1, [theirs])
    pool.evict_committed([theirs])
    assert mine.hash not in pool
    why, code = pool.dropped[mine.id]
    assert code == "nonce-used" and "nonce 0" in why

def test_three_hundred_junk_keys_cannot_keep_a_funded_user_out():
    """The issue's attack: 313 keys without money × 64 nonces each. None gets in, so a
    funded user's transaction does; and keys with a little money, each holding a place
    at the minimum price, give it up to a user who pays more."""
    c = Chain()
    pool = Mempool(c.ledger, max_txs=300)
    junk = [Keypair.from_name(f"junk-{i}") for i in range(313)]
    for kp in junk:
        for n in range(0, 64, 16):
            refused(pool, transfer(kp, n), "cannot-pay")
    user = transfer(c.keys["alice"], 0)
    pool.add(user)
    assert list(pool.ids) == [user.hash]

    fee = c.ledger.max_fee(transfer(junk[0], 0))
    c2 = Chain({"alice": 10**9, "bob": 0, "lender": 0, **{f"j{i}": fee for i in range(300)}},
               names=("alice", "bob", "lender", *(f"j{i}" for i in range(300))))
    full = Mempool(c2.ledger, max_txs=300)
    for i in range(300):
        kp = c2.keys[f"j{i}"]
        full.add(transfer(kp, 0))
        refused(full, transfer(kp, 1), "cannot-pay")     # one place each, no more
    assert len(full) == 300
    refused(full, transfer(c2.keys["alice"], 0), "mempool-full")
    paying = transfer(c2.keys["alice"], 0, price=2)
    full.add(paying)
    assert paying.hash in full and full.batch(1, set()) == [paying]


def test_defaults():
    assert MAX_TXS == 20_000 and MAX_PER_ACCOUNT == 64 and GAP_EXPIRY_MS == 60_000


def test_the_node_expires_gapped_transactions_on_its_ticks():
    from lendnet.node.core.node import Genesis, Node
    from lendnet.node.core.store import MemoryStore
    from .chain import T0
    val, alice = Keypair.from_name("validator"), Keypair.from_name("alice")
    node = Node(Genesis(CHAIN, T0, {alice.address: 10**8}, (val.pubkey,)), val,
                MemoryStore(), now=T0 * 1000)
    node.tick(T0 * 1000 + 500)
    gapped = node.submit(transfer(alice, 3).raw)          # arrives at the node's last now
    node.tick(T0 * 1000 + 500 + GAP_EXPIRY_MS - 1_000)
    assert gapped.hash in node.mempool
    node.tick(T0 * 1000 + 500 + GAP_EXPIRY_MS + 1_000)
    assert gapped.hash not in node.mempool and node.mempool.expired == 1


def test_a_block_is_packed_by_whole_gas_limits_so_every_transaction_finds_its_gas():
    # Max-gas calls may each burn their whole budget: a block takes only as many as its
    # room for transactions holds, and every one of them runs; the rest wait (not put
    # into a block that cannot run them, where they would be in two blocks).
    from lendnet.ledger.ledger import USER_VM_ROOM
    from lendnet.ledger.tx import MAX_CALL_GAS
    c = Chain()
    loop = c.do("alice", "deploy", code=assemble(
        'arg 0\n pushb "init"\n eq\n jnz done\nloop:\n jmp loop\ndone:\n stop'),
        args=[], gas=100)
    pool = Mempool(c.ledger)
    calls = [c.tx("bob", "call", contract=derive_address(b"contract", loop.hash),
                  args=[b"go"], amount=0, gas=MAX_CALL_GAS) for _ in range(10)]
    for t in calls:
        pool.add(t)
    batch = pool.batch(500, set())
    assert len(batch) == max(1, USER_VM_ROOM // c.ledger.gas_limit(calls[0])) < len(calls)
    res = c.block(*batch, strict=False)
    assert all(r.nonce_used for r in res.receipts)             # each found its gas


def test_contract_work_gets_dearer_while_blocks_are_full_of_it_and_cheaper_after():
    # EIP-1559's base fee for the blocks' contract share: a flood of paid loops drives
    # the price up by up to an eighth a block, so an attacker's pre-signed calls are
    # refused after a few blocks and keeping the flood up costs more and more; quiet
    # blocks bring it back to the chain's minimum.
    from lendnet.ledger.ledger import USER_VM_ROOM, VM_TARGET
    from lendnet.ledger.tx import MAX_CALL_GAS
    c = Chain({"alice": 10**12, "bob": 10**12, "lender": 0})
    led = c.ledger
    loop = c.do("alice", "deploy", code=assemble(
        'arg 0\n pushb "init"\n eq\n jnz done\nloop:\n jmp loop\ndone:\n stop'),
        args=[], gas=100)
    target = derive_address(b"contract", loop.hash)
    prices = [led.vm_price()]
    for _ in range(30):                          # a block's whole share, each block
        price = led.vm_price()
        c.block(c.tx("bob", "call", contract=target, args=[b"go"], amount=0,
                     gas=MAX_CALL_GAS, gas_price=price), strict=False)
        prices.append(led.vm_price())
    assert prices[0] == 1 and prices[-1] > 20 and prices == sorted(prices)
    assert MAX_CALL_GAS + 2_000 > VM_TARGET and USER_VM_ROOM >= MAX_CALL_GAS + 2_000
    cheap = c.tx("bob", "call", contract=target, args=[b"go"], amount=0, gas=1_000)
    assert "contract work costs now" in refused(Mempool(led), cheap, "fee-too-low")
    c.nonces["bob"] -= 1
    # transfers are not touched by it
    Mempool(led).add(transfer(c.keys["alice"], led.account(c.addr("alice"))[1]))
    for _ in range(60):
        c.block()
    assert led.vm_price() == 1
