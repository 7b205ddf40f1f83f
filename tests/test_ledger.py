"""The ledger core: encoding, transactions, replay protection, multisig, custom contracts."""
from __future__ import annotations

import msgpack
import pytest

from lendnet.contracts.asm import assemble
from lendnet.ledger import codec, fees, tx as txm
from lendnet.ledger.keys import Keypair, address_of
from lendnet.ledger.ledger import PLAIN, BlockError, Ledger, Rules
from lendnet.ledger.state import State
from lendnet.node.core.mempool import Mempool

from .chain import CHAIN, T0, Chain, h32


# --- canonical encoding -------------------------------------------------------------------

def test_same_object_same_bytes_whatever_the_key_order():
    a = {"b": 1, "a": [1, b"x", "y", None, True], "c": {"z": 0, "y": -5}}
    b = {"c": {"y": -5, "z": 0}, "a": [1, b"x", "y", None, True], "b": 1}
    assert codec.encode(a) == codec.encode(b)
    assert codec.decode(codec.encode(a)) == a


@pytest.mark.parametrize("raw,why", [
    (msgpack.packb({"b": 1, "a": 2}), "canonical"),           # keys out of order
    (msgpack.packb(1.5), "canonical"),                          # floats have no place
    (msgpack.packb("x", use_bin_type=False) + b"\x00", "msgpack"),  # trailing bytes
    (b"\xc1", "msgpack"),                                       # reserved byte
])
def test_decode_rejects_non_canonical_input(raw, why):
    with pytest.raises(codec.EncodingError, match=why):
        codec.decode(raw)


def test_encode_rejects_what_has_no_canonical_form():
    for bad in (1.0, {1: 2}, {"x": {1, 2}}, 2**64):
        with pytest.raises(codec.EncodingError):
            codec.encode(bad)


# --- transaction shape -------------------------------------------------------------------

def _body(**over):
    kp = Keypair.from_name("alice")
    return {**txm.build(kp, CHAIN, "transfer", 0, to=Keypair.from_name("bob").address,
                        amount=5), **over}


@pytest.mark.parametrize("over,why", [
    ({"amount": 0}, "field 'amount' must be an integer from 1"),
    ({"amount": -3}, "field 'amount'"),
    ({"amount": "5"}, "field 'amount'"),
    ({"to": "ln123"}, "field 'to' must be an address"),
    ({"nonce": -1}, "field 'nonce'"),
    ({"kind": "steal"}, "unknown kind 'steal'"),
    ({"memo": "hi"}, "unknown field(s) memo"),
    ({"chain": ""}, "field 'chain'"),
])
def test_bad_fields_are_named(over, why):
    with pytest.raises(txm.TxError) as e:
        txm.check_body(_body(**over))
    assert why in str(e.value)


def test_missing_field_and_cross_field_rules():
    b = _body()
    del b["amount"]
    with pytest.raises(txm.TxError, match="missing field 'amount'"):
        txm.check_body(b)
    kp = Keypair.from_name("x")
    app = txm.build(kp, CHAIN, "apply", 0, amount=10, purpose="p", term=400, period="monthly",
                    method="annuity", product="consumer", grace=0, docs_hash=h32("d"),
                    max_rate_bps=0, max_late_fee_bps=0, min_default_days=1,
                    max_penalty_bps=0, max_origination_fee_bps=0)
    with pytest.raises(txm.TxError, match="term must be at most 360 monthly"):
        txm.check_body(app)


def test_wire_roundtrip_and_rejections():
    t = txm.sign(_body(), [Keypair.from_name("alice")])
    back = txm.parse(t.raw)
    assert back.hash == t.hash and back.verify_signatures()
    with pytest.raises(txm.TxError, match="over the"):
        txm.parse(b"\x00" * (txm.MAX_TX_BYTES + 1))
    with pytest.raises(txm.TxError, match="undecodable"):
        txm.parse(b"\xc1garbage")
    with pytest.raises(txm.TxError, match="exactly 'body' and 'sigs'"):
        txm.parse(codec.encode({"body": t.body}))
    with pytest.raises(txm.TxError, match="32-byte pubkey"):
        txm.parse(codec.encode({"body": t.body, "sigs": [[b"k", b"s"]]}))


# --- applying transactions ---------------------------------------------------------------

def test_transfer_and_replay_protection():
    c = Chain()
    t = c.tx("alice", "transfer", to=c.addr("bob"), amount=1234)
    c.block(t)
    assert c.balance("bob") == 10_000_000 + 1234
    r = c.block(t, strict=False).receipts[0]                     # the same bytes again
    assert not r.ok and "nonce 0 already used" in r.error
    with pytest.raises(BlockError, match="already used"):
        c.block(t)                                                # strict: block refused
    assert c.balance("bob") == 10_000_000 + 1234


def test_other_chain_forged_signature_and_wrong_signer_are_rejected():
    c = Chain()
    alice, bob = c.keys["alice"], c.keys["bob"]
    other_chain = txm.sign(txm.build(alice, "elsewhere", "transfer", 0, to=bob.address,
                                     amount=1), [alice])
    forged = txm.SignedTx(other_chain.body | {"chain": CHAIN}, other_chain.sigs)
    wrong_signer = txm.sign(txm.build(bob, CHAIN, "transfer", 0, sender=alice.address,
                                      to=bob.address, amount=1), [bob])
    ahead = txm.sign(txm.build(alice, CHAIN, "transfer", 5, to=bob.address, amount=1), [alice])
    broke = txm.sign(txm.build(alice, CHAIN, "transfer", 0, to=bob.address,
                               amount=10**12), [alice])
    res = c.block(other_chain, forged, wrong_signer, ahead, broke, strict=False)
    errors = [r.error for r in res.receipts]
    assert "is for chain 'elsewhere'" in errors[0]
    assert errors[1] == "bad signature"
    assert f"not signed by the key of {alice.address}" in errors[2]
    assert "ahead of the account's next nonce 0" in errors[3]
    assert "insufficient funds" in errors[4]
    # only the over-spend was includable: it failed, moved no money, and used its nonce
    assert [r.nonce_used for r in res.receipts] == [False, False, False, False, True]
    # ... and paid its fee: its bytes and the transfer's fixed gas
    fee = res.receipts[4].fee
    assert fee == fees.fee(len(broke.raw), fees.NATIVE_GAS["transfer"], 1, 10) > 0
    assert [r.fee for r in res.receipts[:4]] == [0, 0, 0, 0]
    assert c.ledger.account(alice.address) == (10_000_000 - fee, 1)

    # A program tells the refusals apart by code, never by words; the mempool and the
    # ledger give the same code for the same fault.
    c = Chain()                                             # alice's nonce 0 unused
    pool = Mempool(c.ledger, max_txs=2)
    cases = [(other_chain, "wrong-chain"), (forged, "bad-signature"),
             (wrong_signer, "unauthorised")]
    for tx, code in cases:
        with pytest.raises(txm.TxError) as e:
            c.ledger.check_tx(tx)
        assert e.value.code == code, e.value
        with pytest.raises(txm.TxError) as e:
            pool.add(tx)
        assert e.value.code == code, e.value
    c.block(c.tx("alice", "transfer", to=bob.address, amount=1))
    for check in (c.ledger.check_tx, pool.add):             # now alice's nonce 0 is used
        with pytest.raises(txm.TxError) as e:
            check(broke)
        assert e.value.code == "nonce-used", e.value
    pool.add(ahead)
    for tx, code in ((ahead, "duplicate"),
                     (txm.sign(txm.build(alice, CHAIN, "transfer", 5, to=bob.address,
                                         amount=2), [alice]), "nonce-taken"),
                     (txm.sign(txm.build(alice, CHAIN, "transfer", 10**6, to=bob.address,
                                         amount=1), [alice]), "nonce-ahead")):
        with pytest.raises(txm.TxError) as e:
            pool.add(tx)
        assert e.value.code == code, e.value
    pool.add(txm.sign(txm.build(bob, CHAIN, "transfer", 0, to=alice.address, amount=1),
                      [bob]))
    with pytest.raises(txm.TxError) as e:
        pool.add(txm.sign(txm.build(bob, CHAIN, "transfer", 1, to=alice.address, amount=1),
                          [bob]))
    assert e.value.code == "mempool-full"
    with pytest.raises(txm.TxError) as e:
        txm.parse(b"\x01\x02")
    assert e.value.code == "malformed"
    assert set(txm.CODES) >= {e.value.code, "too-large", "refused"}


def test_block_height_and_time_must_follow():
    c = Chain()
    c.block()
    with pytest.raises(BlockError, match="does not follow"):
        c.ledger.apply_block(5, c.time + 1, [])
    with pytest.raises(BlockError, match="before the chain time"):
        c.ledger.apply_block(2, c.time - 1, [])


def test_multisig_spends_only_with_threshold_member_signatures():
    c = Chain(names=("alice", "bob", "carol", "mallory"))
    members = [c.keys[n].pubkey for n in ("alice", "bob", "carol")]
    res = c.block(c.tx("alice", "create_multisig", threshold=2, members=members))
    pool = [e for e in res.events if e["name"] == "multisig_created"][0]["contract"]
    c.do("alice", "transfer", to=pool, amount=50_000)
    spend = txm.build(c.keys["alice"], CHAIN, "transfer", 0, sender=pool,
                      to=c.addr("mallory"), amount=10_000)
    one = txm.sign(spend, [c.keys["alice"]])
    r = c.block(one, strict=False).receipts[0]
    assert not r.ok and "needs 2 signatures, has 1" in r.error
    outsider = txm.add_signature(one, c.keys["mallory"])
    r = c.block(outsider, strict=False).receipts[0]
    assert not r.ok and "not a member" in r.error
    two = txm.add_signature(one, c.keys["carol"])
    r = c.block(two).receipts[0]
    assert r.ok and r.fee > 0
    assert c.ledger.balance(pool) == 40_000 - r.fee       # the multisig account pays
    assert c.ledger.balance(c.addr("mallory")) == 10_010_000


COUNTER = """
    arg 0
    pushb "init"
    eq
    jnz init
    pushb "count"
    pushb "count"
    sget
    push 1
    add
    sput
    pushb "count"
    sget
    caller
    pushb "counted"
    emit 2
    value
    push 100
    le
    assert "send at most 100"
    stop
init:
    pushb "count"
    push 0
    sput
    stop
"""


def test_deploy_and_call_a_custom_contract():
    c = Chain()
    code = assemble(COUNTER)
    res = c.block(c.tx("alice", "deploy", code=code, args=[], gas=10_000))
    contract = c.ledger.state.contracts.rows
    (addr, inst), = contract.items()
    assert c.ledger.state.code.get(inst["code"]) == code          # readable by anyone
    res = c.block(c.tx("bob", "call", contract=addr, args=[b"hit"], amount=0, gas=10_000))
    assert res.events[0]["values"] == [1, c.addr("bob").encode()]
    # a call that traps changes nothing, not even the money it carried
    r = c.try_do("bob", "call", contract=addr, args=[b"hit"], amount=500, gas=10_000)
    assert not r.ok and "send at most 100" in r.error
    assert c.ledger.state.storage.get((addr, b"count")) == 1
    assert c.ledger.balance(addr) == 0
    r = c.try_do("bob", "call", contract=addr, args=[b"hit"], amount=0, gas=3)
    assert not r.ok and "out of gas" in r.error
    r = c.try_do("bob", "deploy", code=b"\x01\xff", args=[], gas=100)
    assert not r.ok and "rejected by the verifier" in r.error


def test_loan_contracts_cannot_be_called_directly():
    from .test_lending import open_loan
    c = Chain()
    _, _, loan, _ = open_loan(c)
    r = c.try_do("bob", "call", contract=loan, args=[b"init"], amount=0, gas=10_000)
    assert not r.ok and "driven by repay transactions" in r.error


def test_no_contract_run_can_take_a_transaction_past_its_gas_limit(monkeypatch):
    """A transaction's contract runs, nested ones in hooks included, share its gas limit:
    one that would pass it runs out of gas and the transaction fails, rolled back (a
    transaction over its limit would otherwise stop the block with an InvariantError)."""
    from .test_lending import open_loan
    c = Chain()
    _, _, loan, _ = open_loan(c)
    monkeypatch.setitem(c.ledger.rules.gas, "repay", (2_000, 10))   # far under a run's
    before = c.ledger.state.root()
    r = c.try_do("bob", "repay", loan=loan, amount=1_000)
    assert not r.ok and "out of gas" in r.error and r.gas <= 2_010
    assert c.ledger.total_money() == c.ledger.supply
    monkeypatch.undo()
    assert c.try_do("bob", "repay", loan=loan, amount=1_000).ok
    assert c.ledger.state.root() != before


def test_the_generic_ledger_stands_alone_without_lending():
    """Ledger with no application's rules: native kinds work, nothing of lending is
    there (no loan code at genesis, no escrow), and an application cannot redefine a
    native kind."""
    c = Chain()
    c.ledger = Ledger.genesis(CHAIN, {c.addr("alice"): 1_000, c.addr("bob"): 0}, T0,
                              rules=PLAIN)
    assert "loan_code" not in c.ledger.state.meta and len(c.ledger.state.code) == 0
    c.block(c.tx("alice", "transfer", to=c.addr("bob"), amount=400))
    assert (c.balance("alice"), c.balance("bob")) == (600 - c.paid["alice"], 400)
    c.block(c.tx("alice", "deploy", code=assemble(COUNTER), args=[], gas=10_000))
    (addr, _), = c.ledger.state.contracts.rows.items()
    res = c.block(c.tx("bob", "call", contract=addr, args=[b"hit"], amount=0, gas=10_000))
    assert res.receipts[0].ok and res.events[0]["name"] == "counted"
    assert c.ledger.total_money() == c.ledger.supply == 1_000
    with pytest.raises(ValueError, match="redefines native kinds"):
        Ledger(CHAIN, Rules(handlers={"transfer": lambda led, tx, b: None}))


def test_address_derivation_is_domain_separated():
    kp = Keypair.from_name("alice")
    assert address_of(kp.pubkey) == kp.address
    assert Keypair.from_name("alice").address == kp.address       # deterministic dev keys
    assert Keypair.from_name("bob").address != kp.address


def test_state_declares_every_table_it_sets():
    # State sets its tables by name; the class annotations are what type checkers see.
    assert set(State.__annotations__) == set(State.TABLES)
    state = State()
    assert all(getattr(state, name) is state.tables[name] for name in State.TABLES)
