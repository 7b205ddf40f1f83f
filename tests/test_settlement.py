"""A defaulted loan is settled from its collateral and no more (ledger/settlement.py):
the sale's price, or the value the lender takes the asset at, pays the debt; the surplus
is the borrower's and a shortfall stays owed."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.ledger.lending import loan_view
from lendnet.ledger.portfolio import summary
from lendnet.ledger.settlement import SALE_DAYS, sale_id

from .chain import APPLY_LIMITS, DAY, OFFER_TERMS, Chain, h32

CAR = 300_000


def defaulted_loan(c: Chain, worth: int = CAR, appraise: bool = True, paid: int = 0):
    """Alice borrows 100,000 over 6 months against her car (appraised at `worth`), pays
    `paid` at once and nothing more, and the loan defaults; returns (loan, the car's
    sale id)."""
    c.do("lender", "register_lender", profile_hash=h32("lender"))
    offer = c.do("lender", "publish_offer", amount=1_000_000, **OFFER_TERMS).id
    c.do("alice", "register_borrower", profile_hash=h32("alice"), docs_hash=h32("docs"))
    c.attest("alice")
    app = c.do("alice", "apply", amount=100_000, purpose="a van", term=6, period="monthly",
               method="annuity", product="business", grace=0, docs_hash=h32("p"),
               **APPLY_LIMITS).id
    car = c.pledge_asset("alice", "car", worth, app, appraise=appraise)
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    loan = c.ledger.state.applications.get(app)["loan"]
    if paid:
        c.do("alice", "repay", loan=loan, amount=paid)
    for _ in range(40):                 # the first unpaid instalment's default, or sooner
        unpaid = loan_view(c.ledger, loan)["instalments"]
        due = unpaid[0]["due"] if unpaid else loan_view(c.ledger, loan)["next_due"]["due"]
        c.block(at=max(c.time + DAY, due + OFFER_TERMS["default_days"] * DAY))
        if loan_view(c.ledger, loan)["status"] == "defaulted":
            return loan, sale_id(loan, car)
    raise AssertionError("the loan did not default")


def conserved(c: Chain) -> bool:
    return c.ledger.total_money() == c.ledger.supply


def test_default_opens_a_sale_and_leaves_the_asset_with_the_borrower():
    c = Chain()
    loan, sid = defaulted_loan(c)
    sale = c.ledger.state.sales.get(sid)
    assert sale["status"] == "open" and sale["value"] == CAR and sale["reserve"] == CAR // 2
    car = c.ledger.state.assets.get(sale["asset"])
    assert car["owner"] == c.addr("alice") and car["lien"] == loan
    assert conserved(c)


def test_a_sale_pays_the_debt_and_the_surplus_goes_to_the_borrower():
    c = Chain()
    loan, sid = defaulted_loan(c)
    claim = loan_view(c.ledger, loan)["payoff"]
    assert 100_000 < claim < 110_000            # principal, interest, a late fee
    lender0, alice0 = c.balance("lender"), c.balance("alice")
    c.do("bob", "bid", sale=sid, amount=CAR)
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("registrar", "settle_sale", sale=sid)          # anyone may settle
    sale = c.ledger.state.sales.get(sid)
    assert sale["status"] == "sold"
    assert c.ledger.state.assets.get(sale["asset"])["owner"] == c.addr("bob")
    assert c.balance("lender") == lender0 + claim
    assert c.balance("alice") == alice0 + CAR - claim
    assert CAR - claim > 190_000                    # the "~197,000 returned"
    view = loan_view(c.ledger, loan)
    assert view["status"] == "settled"
    assert conserved(c)


def test_unsold_the_lender_takes_it_at_its_value_and_pays_the_borrower_the_surplus():
    c = Chain()
    loan, sid = defaulted_loan(c)
    claim = loan_view(c.ledger, loan)["payoff"]
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("alice", "settle_sale", sale=sid)
    assert c.ledger.state.sales.get(sid)["status"] == "unsold"
    r = c.try_do("bob", "take_collateral", sale=sid)
    assert not r.ok and "only the loan's lender" in r.error
    lender0, alice0 = c.balance("lender"), c.balance("alice")
    res = c.block(c.tx("lender", "take_collateral", sale=sid))
    fee = res.receipts[0].fee
    assert c.balance("lender") == lender0 - (CAR - claim) - fee
    assert c.balance("alice") == alice0 + CAR - claim
    assert c.ledger.state.assets.get(c.ledger.state.sales.get(sid)["asset"])["owner"] == \
        c.addr("lender")
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert conserved(c)


def test_a_shortfall_stays_owed_and_the_borrower_may_still_pay_it():
    c = Chain()
    loan, sid = defaulted_loan(c, worth=40_000)
    claim = loan_view(c.ledger, loan)["payoff"]
    c.do("bob", "bid", sale=sid, amount=40_000)
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("bob", "settle_sale", sale=sid)
    view = loan_view(c.ledger, loan)
    assert view["status"] == "defaulted" and view["payoff"] == claim - 40_000
    c.do("alice", "repay", loan=loan, amount=view["payoff"] + 5)     # surplus refunded
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert conserved(c)


def test_paying_the_claim_during_the_sale_cancels_it_and_refunds_the_bid():
    c = Chain()
    loan, sid = defaulted_loan(c)
    bob0 = c.balance("bob")
    res = c.block(c.tx("bob", "bid", sale=sid, amount=CAR // 2))
    bob_fee = res.receipts[0].fee
    assert c.balance("bob") == bob0 - CAR // 2 - bob_fee
    c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"])
    sale = c.ledger.state.sales.get(sid)
    assert sale["status"] == "cancelled" and c.balance("bob") == bob0 - bob_fee
    car = c.ledger.state.assets.get(sale["asset"])
    assert car["owner"] == c.addr("alice") and car["lien"] is None
    assert conserved(c)


@pytest.mark.parametrize("amount, why", [(CAR // 2 - 1, "at least 150000")])
def test_a_lowball_bid_is_refused(amount, why):
    c = Chain()
    _, sid = defaulted_loan(c)
    r = c.try_do("bob", "bid", sale=sid, amount=amount)
    assert not r.ok and why in r.error


def test_bids_must_beat_the_best_and_outbid_money_returns():
    c = Chain()
    _, sid = defaulted_loan(c)
    c.do("bob", "bid", sale=sid, amount=200_000)
    # a third bidder (the lender's own bids start at the asset's value: test_attacks16)
    r = c.try_do("registrar", "bid", sale=sid, amount=201_000)      # under +1 %
    assert not r.ok and "at least 202000" in r.error
    bob0 = c.balance("bob")
    c.do("registrar", "bid", sale=sid, amount=202_000)
    assert c.balance("bob") == bob0 + 200_000
    assert conserved(c)


def test_the_sale_keeps_its_clock():
    c = Chain()
    _, sid = defaulted_loan(c)
    r = c.try_do("bob", "settle_sale", sale=sid)
    assert not r.ok and "settle it after" in r.error
    r = c.try_do("lender", "take_collateral", sale=sid)
    assert not r.ok and "only unsold collateral" in r.error
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    r = c.try_do("bob", "bid", sale=sid, amount=CAR)
    assert not r.ok and "takes no more bids" in r.error
    assert c.ledger.state.sales.get(sid)["closes"] - \
        c.ledger.state.sales.get(sid)["opened"] == SALE_DAYS * DAY


def test_the_book_counts_the_default_at_risk():
    c = Chain()
    loan, _ = defaulted_loan(c)
    book = summary([loan_view(c.ledger, loan)])       # defaulted 30 days after its due
    assert book["par1_bps"] == 10_000 and book["par30_bps"] == 0
    c.advance(DAY)
    book = summary([loan_view(c.ledger, loan)])
    assert book["par30_bps"] == 10_000 and book["by_status"] == {"defaulted": 1}
    assert book["buckets"]["31-60"] == {"loans": 1, "outstanding": 100_000}
    assert book["net_yield_bps"] < 0


def _unpaid_loan(c: Chain, who: str, offer: str) -> str:
    """`who` borrows 100,000 over 12 months on `offer` and never pays."""
    c.do(who, "register_borrower", profile_hash=h32(who), docs_hash=h32("docs"))
    app = c.do(who, "apply", amount=100_000, purpose="stock", term=12, period="monthly",
               method="annuity", product="business", grace=0, docs_hash=h32("p"),
               **LONG_LIMITS).id
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    return c.ledger.state.applications.get(app)["loan"]


LONG = {**OFFER_TERMS, "default_days": 120}
LONG_LIMITS = {**APPLY_LIMITS, "min_default_days": 120}


def _month_before(ts: int) -> int:
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    y, m = (d.year, d.month - 1) if d.month > 1 else (d.year - 1, 12)
    return int(d.replace(year=y, month=m).timestamp())


def test_a_book_at_0_15_45_and_95_days_past_due():
    """Four unpaid loans whose first instalments fell due 95, 45 and 15 days ago and one
    not yet due: exact days, buckets and PAR (ledger/portfolio.py)."""
    names = ("ana", "ben", "cat", "dan")
    c = Chain(names=("lender", *names))
    c.do("lender", "register_lender", profile_hash=h32("lender"))
    offer = c.do("lender", "publish_offer", amount=1_000_000, **LONG).id
    now = c.time + 200 * DAY
    # each is funded a calendar month before its first due date: now - 95, 45, 15 days
    funded = [_month_before(now - d * DAY) for d in (95, 45, 15)] + [now - 10 * DAY]
    assert funded == sorted(funded) and funded[0] > c.time + DAY
    loans = {}
    for who, at in zip(names, funded):
        c.time = at - 360          # its three transactions a minute apart, funded before `at`
        loans[who] = _unpaid_loan(c, who, offer)
    c.block(at=now)
    views = {w: loan_view(c.ledger, ln) for w, ln in loans.items()}
    assert {w: v["days_past_due"] for w, v in views.items()} == \
        {"ana": 95, "ben": 45, "cat": 15, "dan": 0}
    assert [views[w]["bucket"] for w in names] == ["90+", "31-60", "1-30", "current"]
    book = summary(list(views.values()))
    assert book["outstanding"] == 400_000
    assert (book["par1_bps"], book["par30_bps"], book["par90_bps"]) == (7_500, 5_000, 2_500)
    assert {b: v["loans"] for b, v in book["buckets"].items()} == \
        {"current": 1, "1-30": 1, "31-60": 1, "61-90": 0, "90+": 1}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worth=st.integers(1_000, 400_000), paid=st.integers(0, 60_000),
       bids=st.lists(st.tuples(st.sampled_from(["bob", "lender", "alice"]),
                               st.integers(1, 500_000)), max_size=5),
       take=st.booleans(), recover=st.integers(0, 150_000))
def test_settlement_pays_the_debt_from_the_collateral_and_no_more(worth, paid, bids, take,
                                                                   recover):
    """Whatever the asset is worth, whoever bids what, and whether the lender takes an
    unsold asset: the lender receives at most the claim, the borrower every unit above it,
    a shortfall stays owed, and money is conserved at every step."""
    c = Chain()
    loan, sid = defaulted_loan(c, worth=worth, paid=paid)
    claim = loan_view(c.ledger, loan)["payoff"]
    for who, amount in bids:
        c.try_do(who, "bid", sale=sid, amount=amount)
        assert conserved(c)
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    alice0 = c.balance("alice")
    c.try_do("registrar", "settle_sale", sale=sid)
    sale = c.ledger.state.sales.get(sid)
    price = sale["best"] if sale["status"] == "sold" else 0
    if sale["status"] == "unsold" and take:
        c.do("lender", "take_collateral", sale=sid)
        price = sale["value"]
    assert c.balance("alice") - alice0 == max(0, price - claim)     # the surplus is hers
    view = loan_view(c.ledger, loan)
    owed_now = view["payoff"] or 0
    assert owed_now == max(0, claim - price)
    assert view["status"] == ("settled" if price >= claim else "defaulted")
    assert view["terms"]["rec"] == min(price, claim)      # recovered: the debt, no more
    if recover and owed_now:
        c.try_do("alice", "repay", loan=loan, amount=recover)
        assert (loan_view(c.ledger, loan)["payoff"] or 0) == max(0, owed_now - recover)
    assert conserved(c)
