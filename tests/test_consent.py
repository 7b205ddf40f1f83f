"""Consent to terms and collateral that means something (issue 16, points 1 and 2): the
two exploits the issue found, squatting, appraisal, the rate cap, origination fees."""
from __future__ import annotations

import pytest

from lendnet.ledger import lending
from lendnet.ledger.lending import loan_view

from .chain import APPLY_LIMITS, OFFER_TERMS, REGISTRAR, Chain, h32


def _setup(c: Chain, limits=None, amount=100_000, **offer):
    c.do("lender", "register_lender", profile_hash=h32("l"))
    offer_id = c.do("lender", "publish_offer", amount=1_000_000,
                    **{**OFFER_TERMS, **offer}).id
    c.do("alice", "register_borrower", profile_hash=h32("a"), docs_hash=h32("d"))
    app = c.do("alice", "apply", amount=amount, purpose="x", term=6, period="monthly",
               method="annuity", product="consumer", grace=0, docs_hash=h32("p"),
               **{**APPLY_LIMITS, **(limits or {})}).id
    return offer_id, app


def _fund(c: Chain, app, offer, accept=()):
    return c.try_do("lender", "fund", application=app, offer=offer,
                    accept=[list(x) for x in accept])


def test_a_lender_cannot_impose_a_1000_percent_rate_a_100_percent_fee_and_a_1_day_default():
    """Issue 16's first exploit: refused, and the refusal names each limit and both
    values; nothing moves but the lender's fee."""
    c = Chain()
    offer, app = _setup(c, tiers=[[300, 100_000, 1_000_000]], late_fee_bps=10_000,
                        tolerance_days=0, default_days=1)
    alice = c.balance("alice")
    r = _fund(c, app, offer)
    assert not r.ok
    assert "rate 100000 is above the application's max_rate_bps 2400" in r.error
    assert "late_fee_bps 10000 is above the application's max_late_fee_bps 500" in r.error
    assert "default_days 1 is below the application's min_default_days 30" in r.error
    assert c.ledger.state.applications.get(app)["status"] == "open"
    assert c.balance("alice") == alice and not c.ledger.state.loans.rows
    # accepting such an offer is the borrower's own act, but still bound by its limits
    r = c.try_do("alice", "accept_offer", application=app, offer=offer)
    assert not r.ok and "max_rate_bps 2400" in r.error
    assert c.ledger.total_money() == c.ledger.supply


def test_a_fresh_account_cannot_borrow_against_a_declared_gold_bar():
    """Issue 16's second exploit: a self-declared 2^62 asset covers nothing."""
    c = Chain()
    offer, app = _setup(c, amount=200_000, collateral_bps=15_000)
    c.do("alice", "register_collateral", asset="gold-bar-1", description_hash=h32("g"),
         value=2**62)
    c.do("alice", "pledge", asset="gold-bar-1", to=app)
    r = c.try_do("alice", "accept_offer", application=app, offer=offer)
    assert not r.ok
    assert "collateral pledged is worth 0 (appraised values only), the offer needs 300000" \
        in r.error
    assert not c.ledger.state.loans.rows
    # an appraiser's value counts: 250,000 is not 150 % of 200,000; 300,000 is
    gold = f"{c.addr('alice')}/gold-bar-1"
    c.do(REGISTRAR, "appraise", asset=gold, value=250_000)
    r = c.try_do("alice", "accept_offer", application=app, offer=offer)
    assert not r.ok and "worth 250000" in r.error
    c.do(REGISTRAR, "appraise", asset=gold, value=300_000)
    assert c.try_do("alice", "accept_offer", application=app, offer=offer).ok
    loan = c.ledger.state.applications.get(app)["loan"]
    assert c.ledger.state.loans.get(loan)["cover"] == [
        {"asset": gold, "value": 300_000, "source": "appraised"}]
    assert c.ledger.total_money() == c.ledger.supply


def test_nobody_can_squat_another_owners_asset_name():
    c = Chain()
    offer, app = _setup(c)
    # bob registers "car-VIN-1" first; alice's own "car-VIN-1" is another asset
    c.do("bob", "register_collateral", asset="car-VIN-1", description_hash=h32("b"),
         value=1)
    r = c.try_do("alice", "register_collateral", asset="car-VIN-1",
                 description_hash=h32("a"), value=300_000)
    assert r.ok
    mine, bobs = f"{c.addr('alice')}/car-VIN-1", f"{c.addr('bob')}/car-VIN-1"
    assert c.ledger.state.assets.get(mine)["owner"] == c.addr("alice")
    assert c.ledger.state.assets.get(bobs)["owner"] == c.addr("bob")
    r = c.try_do("alice", "register_collateral", asset="car-VIN-1",
                 description_hash=h32("a"), value=1)
    assert not r.ok and "already registered an asset 'car-VIN-1'" in r.error
    # nobody pledges another's asset, by its id or by a name (a name is your own)
    r = c.try_do("alice", "pledge", asset=bobs, to=app)
    assert not r.ok and "only the asset's owner can pledge it" in r.error
    c.do("alice", "pledge", asset="car-VIN-1", to=app)
    assert c.ledger.state.applications.get(app)["collateral"] == [mine]
    assert c.ledger.state.assets.get(mine)["lien"] == app
    assert c.ledger.state.assets.get(bobs)["lien"] is None
    # a name may not contain "/": nobody can spell another owner's id as a name
    from lendnet.ledger import tx as txm
    with pytest.raises(txm.TxError, match="without '/'"):
        c.tx("bob", "register_collateral", asset=mine, description_hash=h32("x"), value=1)


def test_only_a_genesis_appraiser_may_appraise():
    c = Chain()
    c.do("alice", "register_collateral", asset="bike", description_hash=h32("b"), value=500)
    bike = f"{c.addr('alice')}/bike"
    for who in ("alice", "lender"):
        r = c.try_do(who, "appraise", asset=bike, value=10**9)
        assert not r.ok and f"{c.addr(who)} is not an appraiser" in r.error
    assert c.ledger.state.assets.get(bike)["appraised_value"] is None
    r = c.try_do(REGISTRAR, "appraise", asset=f"{c.addr('alice')}/nothing", value=1)
    assert not r.ok and "no asset" in r.error
    c.do(REGISTRAR, "appraise", asset=bike, value=400)
    a = c.ledger.state.assets.get(bike)
    assert (a["appraised_value"], a["appraiser"], a["declared_value"]) == \
        (400, c.addr(REGISTRAR), 500)


def test_a_lender_accepts_pledged_collateral_at_its_own_value_when_funding():
    c = Chain()
    offer, app = _setup(c, collateral_bps=5_000)
    c.do("alice", "register_collateral", asset="goats", description_hash=h32("g"),
         value=90_000)
    c.do("bob", "register_collateral", asset="tractor", description_hash=h32("t"),
         value=90_000)
    goats, tractor = f"{c.addr('alice')}/goats", f"{c.addr('bob')}/tractor"
    c.do("alice", "pledge", asset="goats", to=app)
    # funding cannot add collateral the borrower did not offer
    r = _fund(c, app, offer, [(tractor, 90_000)])
    assert not r.ok and "is not pledged to application" in r.error
    r = _fund(c, app, offer, [(goats, 49_999)])
    assert not r.ok and "worth 49999 (appraised or accepted values only)" in r.error
    assert _fund(c, app, offer, [(goats, 50_000)]).ok
    loan = c.ledger.state.applications.get(app)["loan"]
    assert c.ledger.state.loans.get(loan)["cover"] == [
        {"asset": goats, "value": 50_000, "source": "accepted"}]
    assert c.ledger.state.assets.get(goats)["lien"] == loan


def test_a_lender_accepted_value_is_preferred_over_an_appraisal_and_missing_is_zero():
    c = Chain()
    offer, app = _setup(c)
    for name in ("a", "b", "c"):
        c.do("alice", "register_collateral", asset=name, description_hash=h32(name),
             value=1_000)
        c.do("alice", "pledge", asset=name, to=app)
    ids = [f"{c.addr('alice')}/{n}" for n in "abc"]
    c.do(REGISTRAR, "appraise", asset=ids[0], value=700)
    c.do(REGISTRAR, "appraise", asset=ids[1], value=800)
    assert _fund(c, app, offer, [(ids[1], 650)]).ok
    loan = c.ledger.state.applications.get(app)["loan"]
    assert c.ledger.state.loans.get(loan)["cover"] == [
        {"asset": ids[0], "value": 700, "source": "appraised"},
        {"asset": ids[1], "value": 650, "source": "accepted"},
        {"asset": ids[2], "value": 0, "source": "none"}]


def test_the_genesis_rate_cap_binds_offers_and_funding():
    c = Chain(lending_params={"max_rate_bps": 3_600})
    c.do("lender", "register_lender", profile_hash=h32("l"))
    r = c.try_do("lender", "publish_offer", amount=100_000,
                 **{**OFFER_TERMS, "tiers": [[300, 2_400, 50_000], [600, 3_601, 90_000]]})
    assert not r.ok
    assert "rate 3601 bps is above the network's cap max_rate_bps 3600" in r.error
    assert c.try_do("lender", "publish_offer", amount=100_000,
                    **{**OFFER_TERMS, "tiers": [[300, 3_600, 90_000]]}).ok
    # an offer above the cap (say, published before a lower cap) cannot fund either
    app = {"limits": {**APPLY_LIMITS, "max_rate_bps": 100_000}}
    offer = {**OFFER_TERMS, "tiers": [[300, 5_000, 90_000]]}
    assert lending.consent_problems(c.ledger, app, offer, 5_000) == [
        "rate 5000 bps is above the network's cap max_rate_bps 3600"]
    assert lending.consent_problems(c.ledger, app, offer, 3_600) == []


def test_every_limit_is_checked_penalty_included():
    c = Chain()
    app = {"limits": {"max_rate_bps": 1_000, "max_late_fee_bps": 100, "min_default_days": 60,
                      "max_penalty_bps": 500, "max_origination_fee_bps": 100}}
    offer = {**OFFER_TERMS, "late_fee_bps": 200, "default_days": 59, "penalty_bps": 501,
             "origination_fee_bps": 101}
    assert lending.consent_problems(c.ledger, app, offer, 1_001) == [
        "rate 1001 is above the application's max_rate_bps 1000",
        "late_fee_bps 200 is above the application's max_late_fee_bps 100",
        "default_days 59 is below the application's min_default_days 60",
        "penalty_bps 501 is above the application's max_penalty_bps 500",
        "origination_fee_bps 101 is above the application's max_origination_fee_bps 100"]
    fits = {**offer, "late_fee_bps": 100, "default_days": 60, "penalty_bps": 500,
            "origination_fee_bps": 100}
    assert lending.consent_problems(c.ledger, app, fits, 1_000) == []
    # an offer without penalty_bps (before the agreement has one) charges none
    assert lending.offered_terms({k: v for k, v in fits.items() if k != "penalty_bps"},
                                 0)["penalty_bps"] == 0


def test_the_origination_fee_goes_from_the_disbursement_to_the_lender():
    c = Chain()
    offer, app = _setup(c, limits={"max_origination_fee_bps": 200},
                        origination_fee_bps=300)
    r = _fund(c, app, offer)
    assert not r.ok
    assert "origination_fee_bps 300 is above the application's max_origination_fee_bps 200" \
        in r.error
    offer2 = c.do("lender", "publish_offer", amount=1_000_000,
                  **{**OFFER_TERMS, "origination_fee_bps": 150}).id
    alice, lender = c.balance("alice"), c.balance("lender")
    res = c.block(c.tx("lender", "fund", application=app, offer=offer2, accept=[]))
    assert res.receipts[0].ok, res.receipts[0].error
    fee = 100_000 * 150 // 10_000
    assert c.balance("alice") == alice + 100_000 - fee
    assert c.balance("lender") == lender + fee - res.receipts[0].fee
    loan = c.ledger.state.applications.get(app)["loan"]
    assert c.ledger.state.loans.get(loan)["origination_fee"] == fee == 1_500
    assert loan_view(c.ledger, loan)["principal_outstanding"] == 100_000
    assert c.ledger.total_money() == c.ledger.supply


def test_a_quote_shows_the_schedule_cost_apr_and_limits():
    from lendnet.ledger import apr
    c = Chain()
    offer, app = _setup(c, limits={"max_origination_fee_bps": 100}, origination_fee_bps=200)
    q = lending.quote(c.ledger, app, offer)
    assert q["rate_bps"] == 2400 and len(q["schedule"]) == 6
    assert q["origination_fee"] == 2_000 and q["received"] == 98_000
    assert q["repaid"] == sum(r["total"] for r in q["schedule"])
    assert q["total_cost"] == q["repaid"] - 100_000 + 2_000
    assert q["apr_bps"] == apr.apr_bps(100_000, 2_000, q["schedule"], c.ledger.time)
    assert q["within_limits"] is False and q["problems"] == [
        "origination_fee_bps 200 is above the application's max_origination_fee_bps 100"]
    assert q["fits"] == ""                     # (the offer itself fits the application)
    with pytest.raises(KeyError):
        lending.quote(c.ledger, app, "0" * 64)
