"""Whole loans walked through the ledger and the loan agreement running in the VM."""
from __future__ import annotations

import pytest

from lendnet.contracts.agreements import INSTALMENT_ROWS, LOAN_KEY, instalment_key, schedule
from lendnet.ledger.lending import credit_score, loan_view

from .chain import APPLY_LIMITS, DAY, OFFER_TERMS, Chain, h32

MONTH = 30 * DAY


def open_loan(c: Chain, amount=100_000, term=6, method="annuity", grace=0, collateral=None,
              **offer_overrides):
    """Lender registers and offers; alice registers (a registrar attests her identity),
    applies, pledges; lender funds."""
    c.do("lender", "register_lender", profile_hash=h32("lender profile"))
    c.attest("alice")
    offer = c.do("lender", "publish_offer", amount=1_000_000,
                 **{**OFFER_TERMS, **offer_overrides}).id
    c.do("alice", "register_borrower", profile_hash=h32("alice"), docs_hash=h32("docs"))
    app = c.do("alice", "apply", amount=amount, purpose="tools for the shop", term=term,
               period="monthly", method=method, product="business", grace=grace,
               docs_hash=h32("payslips"), **APPLY_LIMITS).id
    if collateral:
        c.do("alice", "register_collateral", asset=collateral, description_hash=h32("car"),
             value=300_000)
        c.do("alice", "pledge", asset=collateral, to=app)
    fund = c.tx("lender", "fund", application=app, offer=offer, accept=[])
    result = c.block(fund)
    loan = c.ledger.state.applications.get(app)["loan"]
    return offer, app, loan, result


def test_funding_instantiates_the_agreement_and_disburses():
    c = Chain()
    before = c.balance("alice")
    offer, app, loan, result = open_loan(c)
    assert c.balance("alice") == before + 100_000 - c.paid["alice"]
    assert c.ledger.state.offers.get(offer)["available"] == 900_000
    view = loan_view(c.ledger, loan)
    assert view["status"] == "active" and view["principal_outstanding"] == 100_000
    assert view["lender"] == c.addr("lender") and view["borrower"] == c.addr("alice")
    # the agreement's code is on the ledger by hash, readable by anyone
    code_hash = c.ledger.state.contracts.get(loan)["code"]
    assert c.ledger.state.code.get(code_hash)
    assert [e["name"] for e in result.events] == ["disbursed"]
    assert c.ledger.total_money() == c.ledger.supply


def test_missed_instalment_late_fee_default_by_chain_time_and_sale():
    c = Chain()
    offer, app, loan, _ = open_loan(c, collateral="car-VIN-1")
    rows = schedule(100_000, 2400 if credit_score(c.ledger, c.addr("alice"))["score"] < 650
                    else 1200, 6, start=loan_view(c.ledger, loan)["terms"]["t0"])
    score_before = credit_score(c.ledger, c.addr("alice"))["score"]
    lender_before = c.balance("lender")
    # two instalments paid on time
    for i in range(2):
        c.advance(MONTH - 2 * DAY)
        due = loan_view(c.ledger, loan)["amount_due"]
        assert due == rows[i]["total"]
        res = c.block(c.tx("alice", "repay", loan=loan, amount=due))
        assert [e["values"][1] for e in c.events(res, "instalment_paid")] == [1]
    assert c.balance("lender") == lender_before + rows[0]["total"] + rows[1]["total"]
    # the third is missed: no transaction at all from here on, only chain time
    third_due = loan_view(c.ledger, loan)["due_time"]
    res = c.block(at=third_due + 3 * DAY + 1)
    late = c.events(res, "instalment_late")
    fee = (rows[2]["total"] * 500 + 5_000) // 10_000
    assert len(late) == 1 and late[0]["values"][:2] == [3, fee]
    assert loan_view(c.ledger, loan)["amount_due"] == rows[2]["total"] + fee
    assert c.ledger.state.assets.get(f"{c.addr('alice')}/car-VIN-1")["owner"] == c.addr("alice")
    res = c.block(at=third_due + 30 * DAY)
    assert [e["name"] for e in res.events] == ["defaulted"]
    view = loan_view(c.ledger, loan)
    assert view["status"] == "defaulted"
    # the car is not handed to the lender: it goes up for sale (tests/test_settlement.py)
    asset = c.ledger.state.assets.get(f"{c.addr('alice')}/car-VIN-1")
    assert asset["owner"] == c.addr("alice") and asset["lien"] == loan
    assert c.ledger.state.sales.get(asset["sale"])["status"] == "open"
    after = credit_score(c.ledger, c.addr("alice"))
    assert after["score"] < score_before
    assert "defaults" in after["reasons"] and "late_instalments" in after["reasons"]
    # nothing wakes a defaulted loan again; a payment now is a recovery of the claim
    assert loan not in c.ledger.state.wakes
    claim = view["payoff"]
    res = c.block(c.tx("alice", "repay", loan=loan, amount=1000))
    assert [e["name"] for e in res.events] == ["recovery", "payment"]
    assert loan_view(c.ledger, loan)["payoff"] == claim - 1000
    assert loan not in c.ledger.state.wakes
    assert c.ledger.total_money() == c.ledger.supply


def test_early_payoff_releases_the_lien_and_raises_the_score():
    c = Chain()
    offer, app, loan, _ = open_loan(c, collateral="tractor-7")
    assert c.ledger.state.assets.get(f"{c.addr('alice')}/tractor-7")["lien"] == loan
    c.advance(MONTH - DAY)
    first = loan_view(c.ledger, loan)["amount_due"]
    c.do("alice", "repay", loan=loan, amount=first)
    score_mid = credit_score(c.ledger, c.addr("alice"))["score"]
    view = loan_view(c.ledger, loan)
    payoff = view["payoff"]
    alice_before = c.balance("alice")
    res = c.block(c.tx("alice", "repay", loan=loan, amount=payoff + 777))  # surplus refunded
    assert [e["name"] for e in res.events][-1] == "repaid"
    assert c.balance("alice") == alice_before - payoff - res.receipts[0].fee
    view = loan_view(c.ledger, loan)
    assert view["status"] == "repaid" and view["principal_outstanding"] == 0
    asset = c.ledger.state.assets.get(f"{c.addr('alice')}/tractor-7")
    assert asset["lien"] is None and asset["owner"] == c.addr("alice")
    score = credit_score(c.ledger, c.addr("alice"))
    assert score["score"] > score_mid
    assert score["components"]["loans_repaid"] > 0
    # paid off before the second instalment began: its interest was never charged
    rows = schedule(100_000, view["terms"]["a"], 6, start=view["terms"]["t0"])
    assert payoff == 100_000 - rows[0]["principal"]
    assert c.ledger.total_money() == c.ledger.supply


def test_partial_payments_and_prepayment_shorten_the_term():
    c = Chain()
    _, _, loan, _ = open_loan(c, amount=60_000, term=6, method="equal-principal")
    part = 3_000
    c.do("alice", "repay", loan=loan, amount=part)
    v = loan_view(c.ledger, loan)
    assert v["instalment"] == 1 and v["amount_due"] > 0
    # the rest of instalment 1 plus 20,000 of prepayment
    c.do("alice", "repay", loan=loan, amount=v["amount_due"] + 20_000)
    v = loan_view(c.ledger, loan)
    # instalment 1 is paid; the next is posted only when its period begins
    assert v["instalment"] == 1 and v["oldest_unpaid"] == 2 and v["instalments"] == []
    assert v["principal_outstanding"] == 60_000 - 10_000 - 20_000
    paid_principal = 0
    for _ in range(10):
        if v["status"] != "active":
            break
        c.block(at=v["next_due"]["due"] - DAY)
        v = loan_view(c.ledger, loan)
        paid_principal += sum(r["principal"] for r in v["instalments"])
        c.do("alice", "repay", loan=loan, amount=v["amount_due"])
        v = loan_view(c.ledger, loan)
    assert v["status"] == "repaid" and v["instalment"] < 6     # fewer instalments
    assert paid_principal == 30_000


def test_grace_defers_the_first_instalment_and_adds_its_interest():
    # from 1 January 1970: two months of grace (59 days), instalment 1 on 1 April (its
    # period, March, has 31 days)
    rows = schedule(120_000, 1200, 4, grace=2, start=0)
    plain = schedule(120_000, 1200, 4, start=0)
    assert rows[0]["due"] == 90 * DAY
    assert rows[0]["interest"] == round(120_000 * 1200 * 31 / 3_650_000) + 2_328
    assert plain[0]["due"] == 31 * DAY
    assert sum(r["principal"] for r in rows) == sum(r["principal"] for r in plain) == 120_000


@pytest.mark.parametrize("amount,term,why", [
    (250_000, 6, "exceeds 200000, the limit for score"),
    (100_000, 48, "outside the offer's 1..36"),
])
def test_funding_refuses_what_the_offer_does_not_cover(amount, term, why):
    c = Chain()
    c.do("lender", "register_lender", profile_hash=h32("l"))
    offer = c.do("lender", "publish_offer", amount=1_000_000, **OFFER_TERMS).id
    c.do("alice", "register_borrower", profile_hash=h32("a"), docs_hash=h32("d"))
    app = c.do("alice", "apply", amount=amount, purpose="x", term=term, period="monthly",
               method="annuity", product="consumer", grace=0, docs_hash=h32("p"),
               **APPLY_LIMITS).id
    r = c.try_do("lender", "fund", application=app, offer=offer, accept=[])
    assert not r.ok and why in r.error


def test_collateral_cover_and_score_tiers():
    c = Chain()
    c.do("lender", "register_lender", profile_hash=h32("l"))
    secured = c.do("lender", "publish_offer", amount=1_000_000,
                   **{**OFFER_TERMS, "collateral_bps": 5_000}).id
    c.do("alice", "register_borrower", profile_hash=h32("a"), docs_hash=h32("d"))
    app = c.do("alice", "apply", amount=100_000, purpose="x", term=6, period="monthly",
               method="annuity", product="consumer", grace=0, docs_hash=h32("p"),
               **APPLY_LIMITS).id
    r = c.try_do("alice", "accept_offer", application=app, offer=secured)
    assert not r.ok and "collateral pledged is worth 0" in r.error
    assert "the offer needs 50000" in r.error
    c.do("alice", "register_collateral", asset="bike", description_hash=h32("b"), value=50_000)
    c.do("alice", "pledge", asset="bike", to=app)
    # a declared value counts for nothing until an appraiser attests it
    r = c.try_do("alice", "accept_offer", application=app, offer=secured)
    assert not r.ok and "collateral pledged is worth 0" in r.error
    c.do("registrar", "appraise", asset=f"{c.addr('alice')}/bike", value=50_000)
    r = c.try_do("alice", "accept_offer", application=app, offer=secured)
    assert r.ok
    loan = c.ledger.state.applications.get(app)["loan"]
    # a new borrower (score 500) is priced by the first tier
    assert loan_view(c.ledger, loan)["terms"]["a"] == 2400


def test_withdrawn_offer_returns_escrow():
    c = Chain()
    c.do("lender", "register_lender", profile_hash=h32("l"))
    before = c.balance("lender") + c.paid["lender"]
    offer = c.do("lender", "publish_offer", amount=400_000, **OFFER_TERMS).id
    assert c.balance("lender") == before - 400_000 - c.paid["lender"]
    c.do("lender", "withdraw_offer", offer=offer)
    assert c.balance("lender") == before - c.paid["lender"]
    r = c.try_do("lender", "withdraw_offer", offer=offer)
    assert not r.ok and "already withdrawn" in r.error


def test_a_loan_writes_only_the_storage_its_layout_describes():
    """Python reads the agreement's storage through LOAN_STORAGE alone: a loan taken
    through repayment, a late fee and default writes no key that list does not name."""
    c = Chain()
    _, _, loan, _ = open_loan(c, collateral="car-VIN-2")
    due = loan_view(c.ledger, loan)["due_time"]
    c.block(at=due + 3 * DAY + 1)                             # late: fee and notice
    c.block(at=due + 30 * DAY)                                # defaulted
    written = {key for (addr, key) in c.ledger.state.storage.rows if addr == loan}
    k = loan_view(c.ledger, loan)["terms"]["k"]
    rows = {instalment_key(row, i) for row in INSTALMENT_ROWS for i in range(1, k + 1)}
    rows.add(instalment_key("due", 0))
    assert written <= set(LOAN_KEY.values()) | rows, written - set(LOAN_KEY.values()) - rows
    assert rows <= written
    assert {LOAN_KEY[name] for name in ("st", "kl", "k", "ko", "dk")} <= written
