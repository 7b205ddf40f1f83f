"""Issue 16's rules under attack: borrowers, lenders and strangers taking whatever
advantage the rules leave them. Each test is named after the attack; it failed before the
fix its comment names (or is xfail(strict=True) where the fix is a design choice)."""
from __future__ import annotations

from lendnet.ledger.lending import loan_view

from .chain import APPLY_LIMITS, Chain, h32
from .test_settlement import CAR, conserved, defaulted_loan


def _car(c: Chain) -> str:
    return f"{c.addr('alice')}/car"


def test_lender_takes_unsold_collateral_after_the_borrower_paid_the_whole_claim():
    """The sale closes unsold; alice then pays the whole claim (the loan is settled and
    the lien released), and re-pledges her car to a new application. The lender must no
    longer be able to take it: it is owed nothing, and the car now secures something
    else. Before the fix, take_collateral still went through on the "unsold" sale: the
    car changed hands and the new application's lien was wiped."""
    c = Chain()
    loan, sid = defaulted_loan(c)
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("bob", "settle_sale", sale=sid)
    assert c.ledger.state.sales.get(sid)["status"] == "unsold"
    c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"])
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert c.ledger.state.sales.get(sid)["status"] == "cancelled"
    app = c.do("alice", "apply", amount=50_000, purpose="again", term=6, period="monthly",
               method="annuity", product="business", grace=0, docs_hash=h32("p2"),
               **APPLY_LIMITS).id
    c.do("alice", "pledge", asset=_car(c), to=app)
    r = c.try_do("lender", "take_collateral", sale=sid)
    assert not r.ok
    car = c.ledger.state.assets.get(_car(c))
    assert car["owner"] == c.addr("alice") and car["lien"] == app
    assert conserved(c)


def test_lender_bids_the_reserve_on_its_own_borrowers_sale():
    """The lender bids half the car's value on its own defaulted borrower's sale: nobody
    else bids, and it would have the car for half of what take_collateral charges, the
    borrower's surplus halved. The lender's own bid must be at least the asset's counted
    value (what taking it unsold would cost); others still bid from the reserve."""
    c = Chain()
    loan, sid = defaulted_loan(c)
    assert not c.try_do("lender", "bid", sale=sid, amount=CAR // 2).ok
    assert c.try_do("bob", "bid", sale=sid, amount=CAR // 2).ok
    before = c.balance("lender")
    assert c.try_do("lender", "bid", sale=sid, amount=CAR).ok
    assert c.balance("lender") < before - CAR + 100        # escrowed (a fee aside)
    assert conserved(c)
