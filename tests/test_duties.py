"""A loan's deadlines are the chain's duties: no user can crowd them out (issue 15).

An attacker pays for 100 wake-ups that burn gas and 10,000 tiny ones, all due at the
loan's late-fee deadline, and re-arming every second after it; it fills the block with
paid gas burners too. Still the loan charges its late fee and defaults in the very block
its chain time says, as it does on a quiet chain. A user contract's wake-up is paid when
it is scheduled; a duty never is."""
from __future__ import annotations

from lendnet.contracts.asm import assemble
from lendnet.ledger import keys
from lendnet.ledger.fees import FEES_ADDRESS, WAKE_GAS, fee
from lendnet.ledger.ledger import BLOCK_GAS_LIMIT
from lendnet.ledger.tx import MAX_CALL_GAS
from lendnet.node.harness.attacks import GAS_LOOP as BURNER   # loop: jmp loop
from lendnet.node.harness.attacks import WAKER   # init (n, t); tick: burn n, re-arm

from .chain import DAY, Chain
from .test_lending import open_loan

HEAVY, TINY = 100, 10_000
DEPLOY_GAS = WAKE_GAS + 20_000           # the init's wake-up is paid by its deploy
FUNDS = 100 * 100                        # 100 LND each, to pay for re-arming from a tick


def _deploy_wakers(c: Chain, n_turns: int, count: int, at: int) -> list[str]:
    """`count` funded wakers armed for `at` (which must come after the blocks that make
    and fund them). One deploy a block, at the contract price: more a block would drive
    the price up (Ledger.vm_price), which is the point of it, but not of this test."""
    code = assemble(WAKER)
    made: list[str] = []
    for _ in range(count):
        t = c.tx("mallory", "deploy", code=code, args=[n_turns, at], gas=DEPLOY_GAS,
                 gas_price=c.ledger.vm_price())
        c.block(t)
        made.append(keys.derive_address(b"contract", t.hash))
    for i in range(0, count, 2_000):
        c.block(*[c.tx("mallory", "transfer", to=a, amount=FUNDS) for a in made[i:i + 2_000]])
    return made


def _loan_deadlines(attack: bool) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """What the loan did in the block whose chain time is its late-fee deadline, and in
    the one at its default deadline; and what the attack did in those blocks (wake-ups
    that ran, gas its transactions burnt)."""
    c = Chain(names=("lender", "alice", "bob", "mallory"),
              balances={"lender": 10_000_000, "alice": 10_000_000, "bob": 0,
                        "mallory": 10**12})
    _, _, loan, _ = open_loan(c)
    due = c.ledger.state.storage.get((loan, b"dk"))      # instalment 1's due date
    deadlines = (due + 3 * DAY + 1, due + 30 * DAY)
    burner = None
    if attack:
        _deploy_wakers(c, 40_000, HEAVY, deadlines[0])
        _deploy_wakers(c, 1, TINY, deadlines[0])
        burner = keys.derive_address(b"contract", c.do(
            "mallory", "deploy", code=assemble(BURNER), args=[], gas=10_000).hash)
    did, attack_did = [], []
    for at in deadlines:
        burners = [c.tx("mallory", "call", contract=burner, args=[b"burn"], amount=0,
                        gas=MAX_CALL_GAS, gas_price=c.ledger.vm_price())
                   for _ in range(20)] if burner else []
        res = c.block(*burners, at=at, strict=False)
        c.nonces["mallory"] = c.ledger.account(c.addr("mallory"))[1]   # (some did not fit)
        did.append([e["name"] for e in res.events if e["contract"] == loan])
        ticked = sum(t == at + 1 for t in c.ledger.state.wakes.rows.values())
        attack_did.append((ticked, sum(r.gas for r in res.receipts)))
    return did[0], did[1], attack_did


def test_a_loan_meets_its_deadlines_however_many_wake_ups_users_pay_for():
    quiet = _loan_deadlines(attack=False)
    assert "instalment_late" in quiet[0] and "defaulted" in quiet[1], quiet
    late, default, attack = _loan_deadlines(attack=True)
    assert (late, default) == quiet[:2], attack
    # the attack ran beside it: hundreds of its wake-ups (all its share of the block
    # allows) and most of the block's gas burnt
    assert all(ticked > 100 and burnt > BLOCK_GAS_LIMIT // 2 for ticked, burnt in attack)


def test_a_user_wake_up_is_paid_when_scheduled_and_a_duty_is_not():
    c = Chain(names=("lender", "alice", "mallory"),
              balances={"lender": 10_000_000, "alice": 10_000_000, "mallory": 10**9})
    _, _, loan, _ = open_loan(c)
    fees_before = c.ledger.balance(FEES_ADDRESS)
    code = assemble(WAKER)
    cheap = c.tx("mallory", "deploy", code=code, args=[1, c.time + 10], gas=WAKE_GAS - 1)
    r = c.block(cheap, strict=False).receipts[0]
    assert not r.ok and "gas" in r.error                   # its wake-up is not paid for
    paid = c.tx("mallory", "deploy", code=code, args=[1, c.time + 10], gas=DEPLOY_GAS)
    r = c.block(paid).receipts[0]
    assert r.gas > WAKE_GAS                                # the tick's gas, paid now
    waker = keys.derive_address(b"contract", paid.hash)
    # its tick re-arms from its own balance; with none, the tick fails and is cleared
    res = c.block(at=c.time + 20)
    assert [e["name"] for e in res.events if e["contract"] == waker] == ["tick_failed"]
    assert waker not in c.ledger.state.wakes
    c.do("mallory", "transfer", to=waker, amount=1_000)
    c.do("mallory", "call", contract=waker, args=[b"poke"], amount=0, gas=DEPLOY_GAS)
    before = c.ledger.balance(waker)
    c.block(at=c.time + 5)
    assert before - c.ledger.balance(waker) == fee(0, WAKE_GAS, 1, 0)
    # the loan's own wake-ups (duties) cost its parties nothing beyond their transactions
    assert loan in c.ledger.state.wakes
    assert c.ledger.balance(FEES_ADDRESS) > fees_before


def test_user_wake_ups_get_a_share_of_the_block_and_wait_for_the_next():
    c = Chain(names=("mallory",), balances={"mallory": 10**12})
    at = c.time + DAY                          # after they are all deployed and funded
    made = _deploy_wakers(c, 40_000, HEAVY, at)
    c.block(at=at)
    ticked = [a for a in made if c.ledger.state.wakes.get(a) == c.time + 1]
    # every wake-up is still armed: the ones that did not fit wait, none is dropped
    assert len(c.ledger.state.wakes) == HEAVY
    # within their share of the block (a quarter of its gas): some ran, the rest wait
    assert 0 < len(ticked) < HEAVY
    c.block(at=c.time + 1)                       # and the next block runs others
    assert {a for a in made if c.ledger.state.wakes.get(a) == c.time + 1} - set(ticked)


def test_the_wake_up_index_stays_in_proportion_to_the_wake_ups():
    # Every re-arm leaves a stale entry in the index; it is compacted before the stale
    # entries can outnumber the live ones (plus a fixed slack), so a contract that
    # re-arms forever costs no growing memory.
    c = Chain(names=("mallory",), balances={"mallory": 10**12})
    _deploy_wakers(c, 1, 200, c.time + DAY)
    c.block(at=c.time + DAY)
    led = c.ledger
    most = 0
    for _ in range(40):
        c.block(at=c.time + 100)
        most = max(most, len(led._duties) + len(led._user_wakes))
    assert len(led.state.wakes) == 200
    assert most <= 2 * 200 + 1_024 + 200          # compacted at the start of a block
