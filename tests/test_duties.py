"""A loan's deadlines are the chain's duties: no user can crowd them out (issue 15).

An attacker deploys contracts whose wake-ups burn gas and re-arm every block, and
10,000 tiny ones, and still a loan charges its late fee and defaults in the very block
its chain time says, as it does on a quiet chain."""
from __future__ import annotations

from lendnet.contracts.asm import assemble

from .chain import DAY, Chain
from .test_lending import open_loan

# init: keep n (the deploy argument) and arm a wake-up for the next second; tick: burn
# n loop turns and re-arm.
WAKER = """
    arg 0
    pushb "init"
    eq
    jnz arm
    pushb "n"
    sget
burn:
    push 1
    sub
    dup
    jnz burn
    pop
arm:
    arg 0
    pushb "init"
    eq
    jz rearm
    pushb "n"
    arg 1
    sput
rearm:
    time
    push 1
    add
    wake
    stop
"""
HEAVY, TINY = 100, 10_000


def _loan_deadlines(attack: bool) -> tuple[list[str], list[str], list[str]]:
    """What the loan did in the block whose chain time is its late-fee deadline, and in
    the one at its default deadline; and what others' wake-ups did in that last one
    (their events, and "ticked" for each that ran and re-armed)."""
    c = Chain(names=("lender", "alice", "bob", "mallory"),
              balances={"lender": 10_000_000, "alice": 10_000_000, "bob": 0,
                        "mallory": 10_000_000})
    _, _, loan, _ = open_loan(c)
    if attack:
        code = assemble(WAKER)
        heavy = [c.tx("mallory", "deploy", code=code, args=[40_000], gas=10_000)
                 for _ in range(HEAVY)]
        tiny = [c.tx("mallory", "deploy", code=code, args=[1], gas=10_000)
                for _ in range(TINY)]
        assert all(r.ok for r in c.block(*heavy, *tiny, strict=False).receipts)
    due = c.ledger.state.storage.get((loan, b"due"))
    did = []
    for at in (due + 3 * DAY + 1, due + 30 * DAY):
        res = c.block(at=at)
        did.append([e["name"] for e in res.events if e["contract"] == loan])
    others = [e["name"] for e in res.events if e["contract"] != loan]
    ticked = sum(t == c.time + 1 for t in c.ledger.state.wakes.rows.values())
    return did[0], did[1], others + ["ticked"] * ticked


def test_a_loan_meets_its_deadlines_however_many_wake_ups_users_schedule():
    quiet = _loan_deadlines(attack=False)
    assert "instalment_late" in quiet[0] and "defaulted" in quiet[1], quiet
    late, default, others = _loan_deadlines(attack=True)
    assert (late, default) == quiet[:2]
    assert others and "tick_failed" not in others      # the attack's wake-ups ran too


def test_user_wake_ups_get_a_share_of_the_block_and_wait_for_the_next():
    c = Chain(names=("mallory",), balances={"mallory": 10_000_000})
    code = assemble(WAKER)
    c.block(*[c.tx("mallory", "deploy", code=code, args=[40_000], gas=10_000)
              for _ in range(HEAVY)])
    res = c.block(at=c.time + 2)
    assert "tick_failed" not in {e["name"] for e in res.events}
    ticked = [a for a, t in c.ledger.state.wakes.rows.items() if t == c.time + 1]
    # every wake-up is still armed: the ones that did not fit wait, none is dropped
    assert len(c.ledger.state.wakes) == HEAVY
    # within their share of the block (a quarter of its gas): some ran, the rest wait
    assert 0 < len(ticked) < HEAVY
    c.block(at=c.time + 2)                       # and the next block runs others
    assert {a for a, t in c.ledger.state.wakes.rows.items() if t == c.time + 1} - set(ticked)


def test_the_wake_up_index_stays_in_proportion_to_the_wake_ups():
    # Every re-arm leaves a stale entry in the index; it is compacted before the stale
    # entries can outnumber the live ones (plus a fixed slack), so a contract that
    # re-arms forever costs no growing memory.
    c = Chain(names=("mallory",), balances={"mallory": 10_000_000})
    code = assemble(WAKER)
    c.block(*[c.tx("mallory", "deploy", code=code, args=[1], gas=10_000)
              for _ in range(200)])
    led = c.ledger
    most = 0
    for _ in range(40):
        c.block(at=c.time + 2)
        most = max(most, len(led._duties) + len(led._user_wakes))
    assert len(led.state.wakes) == 200
    assert most <= 2 * 200 + 1_024 + 200          # compacted at the start of a block
