"""Guarantors (ledger/guarantees.py, contracts/agreements/guarantee.lasm): a third party's
escrowed pledge that a defaulted loan draws before its collateral is sold, returned when
the loan is repaid or the application withdrawn."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.contracts.agreements import guarantee_code
from lendnet.contracts.vm import ContractError, Program
from lendnet.ledger import guarantees as G
from lendnet.ledger.lending import loan_view
from lendnet.ledger.settlement import sale_id

from .chain import APPLY_LIMITS, DAY, OFFER_TERMS, Chain, h32
from .test_cli import run as _cli

NAMES = ("lender", "alice", "bob", "carol", "dave", "erin", "mallory")
PRINCIPAL = 100_000
CAR = 300_000


def conserved(c: Chain) -> bool:
    return c.ledger.total_money() == c.ledger.supply


def application(c: Chain, collateral_bps: int = 0, car: int | None = None) -> tuple:
    """The lender's offer and alice's open application for 100,000 over 6 months (with
    her car pledged, appraised at `car`, if given); returns (offer, application)."""
    c.do("lender", "register_lender", profile_hash=h32("lender"))
    offer = c.do("lender", "publish_offer", amount=1_000_000,
                 **{**OFFER_TERMS, "collateral_bps": collateral_bps}).id
    c.do("alice", "register_borrower", profile_hash=h32("alice"), docs_hash=h32("docs"))
    c.attest("alice")
    app = c.do("alice", "apply", amount=PRINCIPAL, purpose="a van", term=6,
               period="monthly", method="annuity", product="business", grace=0,
               docs_hash=h32("p"), **APPLY_LIMITS).id
    if car is not None:
        c.pledge_asset("alice", "car", car, app)
    return offer, app


def pledge(c: Chain, who: str, to: str, amount: int) -> str:
    """`who` guarantees `to` with `amount`; returns the guarantee's address."""
    return G.address_of(c.do(who, "guarantee", to=to, amount=amount).hash)


def fund(c: Chain, offer: str, app: str) -> str:
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    return c.ledger.state.applications.get(app)["loan"]


def default(c: Chain, loan: str):
    """Chain time runs until the loan defaults (nobody pays); returns that block."""
    for _ in range(40):
        view = loan_view(c.ledger, loan)
        due = view["instalments"][0]["due"] if view["instalments"] else view["next_due"]["due"]
        res = c.block(at=max(c.time + DAY, due + OFFER_TERMS["default_days"] * DAY))
        if loan_view(c.ledger, loan)["status"] != "active":
            return res
    raise AssertionError("the loan did not default")


def record(c: Chain, g: str) -> dict:
    return c.ledger.state.guarantees.get(g)


def claim_at_default(c: Chain, res) -> int:
    """The claim the loan froze at default, from its "defaulted" event (ko, principal,
    interest, fees and penalty)."""
    ev = [e for e in res.events if e["name"] == "defaulted"][0]
    return sum(ev["values"][1:])


# --- the rules, one scenario each ----------------------------------------------------------

def test_a_default_is_paid_from_the_guarantee_and_the_surplus_goes_back():
    c = Chain(names=NAMES)
    offer, app = application(c, car=CAR)
    g = pledge(c, "bob", app, 200_000)
    assert c.ledger.balance(g) == 200_000
    loan = fund(c, offer, app)
    assert record(c, g)["loan"] == loan and loan_view(c.ledger, loan)["guarantees"][0][
        "status"] == "held"
    lender0, bob0 = c.balance("lender"), c.balance("bob")
    res = default(c, loan)
    claim = claim_at_default(c, res)
    assert PRINCIPAL < claim < 110_000
    names = [e["name"] for e in res.events]
    # the default, then (in the same block) the guarantee drawn into the claim, settled
    assert names.index("defaulted") < names.index("drawn") < names.index("settled")
    view = loan_view(c.ledger, loan)
    assert view["status"] == "settled" and view["terms"]["rec"] == claim
    assert c.balance("lender") == lender0 + claim
    assert c.balance("bob") == bob0 + 200_000 - claim       # lost the claim, no more
    assert c.ledger.balance(g) == 0
    r = record(c, g)
    assert r["status"] == "drawn" and r["drawn"] == claim and r["refunded"] == 200_000 - claim
    assert r["closed"] == c.time
    assert view["guarantee_draws"] == [{"guarantee": g, "guarantor": c.addr("bob"),
                                        "amount": claim, "time": c.time}]
    # before collateral: the sale the default opened is cancelled, the car is alice's
    sale = c.ledger.state.sales.get(sale_id(loan, f"{c.addr('alice')}/car"))
    assert sale["status"] == "cancelled"
    car = c.ledger.state.assets.get(f"{c.addr('alice')}/car")
    assert car["owner"] == c.addr("alice") and car["lien"] is None
    assert conserved(c)


def test_a_guarantee_short_of_the_claim_then_the_collateral_sale_pays_the_rest():
    c = Chain(names=NAMES)
    offer, app = application(c, car=CAR)
    g = pledge(c, "bob", app, 20_000)
    loan = fund(c, offer, app)
    bob0, alice0, lender0 = c.balance("bob"), c.balance("alice"), c.balance("lender")
    res = default(c, loan)
    claim = claim_at_default(c, res)
    assert record(c, g)["drawn"] == 20_000 and record(c, g)["refunded"] == 0
    assert c.balance("bob") == bob0                       # its whole pledge went in
    view = loan_view(c.ledger, loan)
    assert view["status"] == "defaulted" and view["payoff"] == claim - 20_000
    sid = sale_id(loan, f"{c.addr('alice')}/car")
    assert c.ledger.state.sales.get(sid)["status"] == "open"
    c.do("carol", "bid", sale=sid, amount=CAR)
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("carol", "settle_sale", sale=sid)
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert c.balance("lender") == lender0 + claim
    assert c.balance("alice") == alice0 + CAR - (claim - 20_000)   # the car's surplus
    assert conserved(c)


def test_guarantees_are_drawn_in_the_order_pledged_and_the_rest_go_back():
    c = Chain(names=NAMES)
    offer, app = application(c)
    g1 = pledge(c, "bob", app, 60_000)
    g2 = pledge(c, "carol", app, 60_000)
    g3 = pledge(c, "dave", app, 60_000)
    loan = fund(c, offer, app)
    dave0 = c.balance("dave")
    claim = claim_at_default(c, default(c, loan))
    assert record(c, g1)["drawn"] == 60_000
    assert record(c, g2)["drawn"] == claim - 60_000
    assert record(c, g2)["refunded"] == 120_000 - claim
    assert record(c, g3)["status"] == "released" and record(c, g3)["drawn"] is None
    assert c.balance("dave") == dave0 + 60_000
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert conserved(c)


def test_repayment_releases_the_guarantee():
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    loan = fund(c, offer, app)
    bob0 = c.balance("bob")
    c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"] + 1_000)
    assert loan_view(c.ledger, loan)["status"] == "repaid"
    # the repayment's transaction reserved no gas for it: the chain returns it in the
    # next block's own work
    assert record(c, g)["status"] == "held" and c.ledger.state.wakes.get(loan) == c.time
    c.advance(60)
    assert record(c, g)["status"] == "released" and record(c, g)["refunded"] == 30_000
    assert c.balance("bob") == bob0 + 30_000 and c.ledger.balance(g) == 0
    assert loan not in c.ledger.state.wakes
    assert conserved(c)


def test_withdrawal_releases_the_guarantee():
    c = Chain(names=NAMES)
    _, app = application(c)
    g1 = pledge(c, "bob", app, 30_000)
    g2 = pledge(c, "carol", app, 10_000)
    bob0, carol0 = c.balance("bob"), c.balance("carol")
    c.do("alice", "withdraw_application", application=app)
    assert [record(c, g)["status"] for g in (g1, g2)] == ["released", "released"]
    assert c.balance("bob") == bob0 + 30_000 and c.balance("carol") == carol0 + 10_000
    assert conserved(c)


def test_the_guarantor_may_take_it_back_while_the_application_is_open():
    c = Chain(names=NAMES)
    _, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    bob0 = c.balance("bob")
    res = c.block(c.tx("bob", "release_guarantee", guarantee=g))
    assert c.balance("bob") == bob0 + 30_000 - res.receipts[0].fee
    assert record(c, g)["status"] == "released"
    assert c.ledger.state.applications.get(app)["guarantees"] == []      # slot freed
    r = c.try_do("bob", "release_guarantee", guarantee=g)
    assert not r.ok and "guarantee is released: nothing is held" in r.error
    assert conserved(c)


def test_release_is_refused_once_the_loan_is_funded():
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    loan = fund(c, offer, app)
    r = c.try_do("bob", "release_guarantee", guarantee=g)
    assert not r.ok and f"backs loan {loan}: it is held until the loan closes" in r.error
    assert record(c, g)["status"] == "held" and c.ledger.balance(g) == 30_000


def test_a_guarantee_to_an_active_loan_backs_it_too():
    c = Chain(names=NAMES)
    offer, app = application(c)
    loan = fund(c, offer, app)
    g = pledge(c, "bob", loan, 150_000)
    assert record(c, g)["loan"] == loan and record(c, g)["application"] is None
    claim = claim_at_default(c, default(c, loan))
    assert record(c, g)["drawn"] == claim
    assert loan_view(c.ledger, loan)["status"] == "settled"
    assert conserved(c)


def test_a_guarantee_counts_toward_the_offers_cover_at_face_value():
    c = Chain(names=NAMES)
    offer, app = application(c, collateral_bps=5_000)          # needs 50,000 of cover
    pledge(c, "bob", app, 49_999)
    r = c.try_do("lender", "fund", application=app, offer=offer, accept=[])
    assert not r.ok and "guarantees 49999, the offer needs 50000" in r.error
    pledge(c, "carol", app, 5_000)
    assert fund(c, offer, app)
    assert conserved(c)


def test_a_released_guarantee_no_longer_counts_toward_the_cover():
    c = Chain(names=NAMES)
    offer, app = application(c, collateral_bps=5_000)
    g = pledge(c, "bob", app, 50_000)
    c.do("bob", "release_guarantee", guarantee=g)
    r = c.try_do("alice", "accept_offer", application=app, offer=offer)
    assert not r.ok and "worth 0 (appraised values only), the offer needs 50000" in r.error


def test_the_api_views_list_the_guarantees():
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    v = G.view(c.ledger, g)
    assert v["guarantor"] == c.addr("bob") and v["to"] == app and v["held"] == 30_000
    assert v["status"] == "held" and v["borrower"] == c.addr("alice")
    loan = fund(c, offer, app)
    assert [x["guarantee"] for x in loan_view(c.ledger, loan)["guarantees"]] == [g]
    assert G.view(c.ledger, "ln" + "0" * 40) is None


# --- an attacker's view ---------------------------------------------------------------------

def test_a_zero_balance_key_cannot_guarantee():
    c = Chain(names=NAMES, balances={**{n: 10_000_000 for n in NAMES}, "mallory": 0})
    _, app = application(c)
    r = c.try_do("mallory", "guarantee", to=app, amount=PRINCIPAL)
    assert not r.ok and not r.nonce_used and "cannot pay the fee" in r.error


def test_a_key_that_pays_the_fee_but_not_the_pledge_is_refused():
    c = Chain(names=NAMES, balances={**{n: 10_000_000 for n in NAMES}, "mallory": 20_000})
    _, app = application(c)
    r = c.try_do("mallory", "guarantee", to=app, amount=30_000)
    assert not r.ok and "insufficient funds" in r.error
    assert c.ledger.state.applications.get(app)["guarantees"] == [] if "guarantees" in \
        c.ledger.state.applications.get(app) else True
    assert conserved(c)


def test_a_fifth_guarantee_is_refused():
    c = Chain(names=NAMES)
    _, app = application(c)
    for who in ("bob", "carol", "dave", "erin"):
        pledge(c, who, app, 10_000)
    r = c.try_do("mallory", "guarantee", to=app, amount=10_000)
    assert not r.ok and "already has 4 guarantees: at most 4" in r.error


def test_a_funded_loan_keeps_its_applications_four_and_takes_no_fifth():
    c = Chain(names=NAMES)
    offer, app = application(c)
    for who in ("bob", "carol", "dave", "erin"):
        pledge(c, who, app, 10_000)
    loan = fund(c, offer, app)
    assert len(c.ledger.state.loans.get(loan)["guarantees"]) == 4
    r = c.try_do("mallory", "guarantee", to=loan, amount=10_000)
    assert not r.ok and "already has 4 guarantees: at most 4" in r.error


def test_dust_cannot_fill_the_slots():
    c = Chain(names=NAMES)
    _, app = application(c)
    r = c.try_do("mallory", "guarantee", to=app, amount=4_999)
    assert not r.ok and "at least 5000 (500 bps of the principal 100000)" in r.error


def test_pledging_and_releasing_does_not_use_up_the_slots():
    c = Chain(names=NAMES)
    _, app = application(c)
    for _ in range(5):
        g = pledge(c, "mallory", app, 5_000)
        c.do("mallory", "release_guarantee", guarantee=g)
    pledge(c, "bob", app, 5_000)
    assert len(c.ledger.state.applications.get(app)["guarantees"]) == 1


@pytest.mark.parametrize("close", ["repaid", "defaulted", "withdrawn", "funded"])
def test_nothing_closed_can_be_guaranteed(close):
    c = Chain(names=NAMES)
    offer, app = application(c)
    to = app
    if close == "withdrawn":
        c.do("alice", "withdraw_application", application=app)
        why = "application is withdrawn, not open"
    elif close == "funded":
        loan = fund(c, offer, app)
        why = f"application is funded, not open: pledge to its loan {loan}"
    else:
        to = fund(c, offer, app)
        if close == "repaid":
            c.do("alice", "repay", loan=to, amount=loan_view(c.ledger, to)["payoff"] + 1_000)
        else:
            default(c, to)
        why = f"loan is {close}: only an open application or an active loan"
    r = c.try_do("bob", "guarantee", to=to, amount=PRINCIPAL)
    assert not r.ok and why in r.error
    r = c.try_do("bob", "guarantee", to="ln" + "1" * 40, amount=PRINCIPAL)
    assert not r.ok and "no open application or active loan" in r.error


def test_the_borrower_cannot_guarantee_itself_under_any_address_of_its_identity():
    c = Chain(names=NAMES)
    _, app = application(c)
    r = c.try_do("alice", "guarantee", to=app, amount=PRINCIPAL)
    assert not r.ok and "pledge savings or collateral instead" in r.error
    c.attest("mallory", identity="alice")          # alice's second address
    r = c.try_do("mallory", "guarantee", to=app, amount=PRINCIPAL)
    assert not r.ok and "same attested identity" in r.error


def test_the_lender_may_guarantee_and_only_pays_itself():
    """A choice: the lender's guarantee pays the lender's own claim with its own money,
    so it moves nothing from anyone else; allowed (it frees the borrower's collateral)."""
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "lender", app, 150_000)
    loan = fund(c, offer, app)
    lender0 = c.balance("lender")
    default(c, loan)
    assert record(c, g)["status"] == "drawn"
    assert c.balance("lender") == lender0 + 150_000          # all of it back, one way or other
    assert conserved(c)


def test_nobody_else_can_release_a_guarantee():
    c = Chain(names=NAMES)
    _, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    for who in ("mallory", "alice", "lender"):
        r = c.try_do(who, "release_guarantee", guarantee=g)
        assert not r.ok and "only the guarantor can release its guarantee" in r.error
    r = c.try_do("bob", "release_guarantee", guarantee="ln" + "2" * 40)
    assert not r.ok and "no guarantee" in r.error
    assert c.ledger.balance(g) == 30_000


def test_nobody_can_call_the_agreement_directly():
    c = Chain(names=NAMES)
    _, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    for args in ([b"draw", 30_000], [b"release"]):
        r = c.try_do("mallory", "call", contract=g, args=args, amount=0, gas=10_000)
        assert not r.ok and "guarantee agreements are driven by" in r.error
    assert c.ledger.balance(g) == 30_000


def test_a_draw_that_runs_twice_draws_once():
    c = Chain(names=NAMES)
    offer, app = application(c, car=CAR)
    g = pledge(c, "bob", app, 20_000)
    loan = fund(c, offer, app)
    default(c, loan)
    led = c.ledger
    before = (led.balance(c.addr("bob")), led.balance(loan), record(c, g),
              led.state.loans.get(loan), led.state.root())
    G.after_loan_run(led, loan, led.state.loans.get(loan))        # the step again
    assert (led.balance(c.addr("bob")), led.balance(loan), record(c, g),
            led.state.loans.get(loan), led.state.root()) == before
    with pytest.raises(ContractError, match="no longer held"):      # the agreement too
        led.run_contract(g, [b"draw", 10**6], loan, 0, G.DRAW_GAS)
    led.state.rollback(0)
    # a later run of the loan (a recovery) draws nothing more either
    c.do("carol", "repay", loan=loan, amount=1_000)
    assert record(c, g)["drawn"] == 20_000 and len(
        led.state.loans.get(loan)["guarantee_draws"]) == 1
    assert conserved(c)


def test_a_default_inside_a_transaction_draws_in_the_next_blocks_duties():
    """The loan's tick could not run (its duty failed, or the block had no room): a
    repayment that finds it past its default date defaults it inside the transaction.
    The draw waits for the next block rather than exceed the repayment's gas."""
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "bob", app, 150_000)
    loan = fund(c, offer, app)
    led = c.ledger
    due = loan_view(led, loan)["instalments"][0]["due"]
    led.set_wake(loan, 0)                          # as if its duty had not run
    led.state.settle()
    c.block(c.tx("carol", "repay", loan=loan, amount=100),
            at=due + OFFER_TERMS["default_days"] * DAY + 1)
    assert loan_view(led, loan)["status"] == "defaulted"
    assert record(c, g)["status"] == "held" and led.state.wakes.get(loan) == c.time
    assert G.undrawn(led, loan)             # what a later step (savings) waits for
    c.advance(60)
    assert record(c, g)["status"] == "drawn" and not G.undrawn(led, loan)
    assert loan_view(led, loan)["status"] == "settled"
    assert conserved(c)


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pledges=st.lists(st.integers(5_000, 150_000), min_size=0, max_size=4),
       paid=st.integers(0, 60_000), repay=st.booleans(), car=st.sampled_from([None, 40_000]),
       taken_back=st.integers(0, 4), after=st.integers(0, 4))
def test_money_is_conserved_and_a_guarantor_loses_exactly_what_the_claim_took(
        pledges, paid, repay, car, taken_back, after):
    """Some guarantors take theirs back before funding (and pledge again), the last
    `after` pledge to the loan once it is funded; whatever happens, each loses exactly
    min(pledge, the claim its turn found left), and only by a draw."""
    c = Chain(names=NAMES)
    offer, app = application(c, car=car)
    who = ("bob", "carol", "dave", "erin")
    early = max(0, len(pledges) - after)
    for w, a in list(zip(who, pledges))[:taken_back]:
        c.do(w, "release_guarantee", guarantee=pledge(c, w, app, a))
    gs = [pledge(c, w, app, a) for w, a in list(zip(who, pledges))[:early]]
    loan = fund(c, offer, app)
    gs += [pledge(c, w, loan, a) for w, a in list(zip(who, pledges))[early:]]
    consistent(c)
    if paid:                                    # a part prepaid: a smaller claim
        c.do("alice", "repay", loan=loan, amount=paid)
    start = {w: c.balance(w) for w in who}
    if repay:
        c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"] + 1_000)
        c.advance(60)
        assert {w: c.balance(w) for w in who} == {
            w: start[w] + a for w, a in zip(who, pledges)} | {w: start[w] for w in who[
                len(pledges):]}
    else:
        claim = claim_at_default(c, default(c, loan))
        left = claim
        for w, a, g in zip(who, pledges, gs):
            lost = start[w] + a - c.balance(w)
            assert lost == min(a, left) and 0 <= lost <= a        # exactly, at most
            assert record(c, g)["drawn"] in (None, lost) and c.ledger.balance(g) == 0
            left -= lost
        assert loan_view(c.ledger, loan)["status"] == ("settled" if left == 0
                                                       else "defaulted")
    for g in gs:
        assert record(c, g)["status"] in ("drawn", "released")
    consistent(c)
    assert conserved(c)


def consistent(c: Chain) -> None:
    """Each guarantee's agreement holds its amount while held and nothing after; what it
    paid out is its amount, to the loan (drawn) and the guarantor (refunded); the loan
    records every draw; at most MAX_GUARANTEES are held behind anything."""
    st_ = c.ledger.state
    for addr, g in st_.guarantees.rows.items():
        held = g["status"] == "held"
        assert c.ledger.balance(addr) == (g["amount"] if held else 0)
        if g["status"] == "drawn":
            assert g["drawn"] + g["refunded"] == g["amount"]
            assert {"guarantee": addr, "guarantor": g["guarantor"], "amount": g["drawn"],
                    "time": g["closed"]} in st_.loans.get(g["loan"])["guarantee_draws"]
        elif g["status"] == "released":
            assert g["refunded"] == g["amount"] and g["drawn"] is None
    for table in (st_.applications, st_.loans):
        for rec in table.rows.values():
            assert len(rec.get("guarantees", [])) <= G.MAX_GUARANTEES


# --- gas ----------------------------------------------------------------------------------

def test_gas_of_each_method():
    """The budgets in ledger/guarantees.py cover what each run takes (measured here)."""
    from lendnet.contracts.vm import execute

    class Host:                      # a minimal host: storage, balance, payments, events
        def __init__(self, caller, value):
            self.height, self.time, self.caller, self.value = 1, 1_000, caller, value
            self.self_address = b"ln" + b"9" * 40
            self.store, self.bal = {}, value

        def storage_get(self, k):
            return self.store.get(k)

        def storage_put(self, k, v):
            old = self.store.get(k)
            size = len(v) if type(v) is bytes else 8
            grown = size - ((len(old) if type(old) is bytes else 8) if old is not None
                            else -len(k))
            self.store[k] = v
            return 20 * grown if grown > 0 else 0

        def balance(self, a):
            return self.bal

        def pay(self, to, n):
            self.bal -= n

        def emit(self, name, values):
            pass

    program = Program.load(guarantee_code())
    used = {}
    for target in (b"ln" + b"1" * 40, b"a" * 64):
        guarantor = b"ln" + b"2" * 40
        h = Host(guarantor, 50_000)
        out = execute(program, h, [b"init", guarantor, target], G.INIT_GAS)
        used["init", len(target)] = out.gas_used
        h.caller, h.value = b"ln" + b"3" * 40, 0
        used["draw"] = execute(program, h, [b"draw", 20_000], G.DRAW_GAS).gas_used
    h = Host(guarantor, 50_000)
    execute(program, h, [b"init", guarantor, target], G.INIT_GAS)
    h.value = 0
    used["release"] = execute(program, h, [b"release"], G.RELEASE_GAS).gas_used
    print(used)
    assert max(used["init", 42], used["init", 64]) * 3 // 2 <= G.INIT_GAS
    assert used["draw"] * 3 <= G.DRAW_GAS and used["release"] * 3 <= G.RELEASE_GAS


# --- the command line ---------------------------------------------------------------------



APP_ID = "ab" * 32
GUARANTEE = "ln" + "cd" * 20


@pytest.mark.parametrize("args,kind,fields", [
    (("guarantor", "pledge", "--to", APP_ID, "--amount", "250.50"), "guarantee",
     {"to": APP_ID, "amount": 25_050}),
    (("guarantor", "pledge", "--to", GUARANTEE, "--amount", "3"), "guarantee",
     {"to": GUARANTEE, "amount": 300}),
    (("guarantor", "release", GUARANTEE), "release_guarantee", {"guarantee": GUARANTEE}),
])
def test_the_guarantor_commands_sign_their_transactions(wallet, args, kind, fields):
    import json

    from lendnet.ledger import tx as txm
    out = wallet / "tx.json"
    r = _cli(*args, "--wallet", "w", "--offline", "--nonce", "3", "--chain", "c", "--out",
             str(out), "--json")
    assert r.exit_code == 0, r.output
    body = txm.parse(bytes.fromhex(json.loads(out.read_text())["tx"])).body
    assert body["kind"] == kind and {k: body[k] for k in fields} == fields


@pytest.mark.parametrize("args,why", [
    (("guarantor", "pledge", "--to", "nope", "--amount", "1"), "application id"),
    (("guarantor", "pledge", "--to", APP_ID, "--amount", "0"), "must be above zero"),
    (("guarantor", "pledge", "--amount", "1"), "Missing option '--to'"),
    (("guarantor", "release", "nope"), "is not an address"),
])
def test_the_guarantor_commands_say_what_is_wrong(wallet, args, why):
    r = _cli(*args, "--wallet", "w", "--offline", "--nonce", "0", "--chain", "c", "--out",
             str(wallet / "tx.json"))
    assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output, r.output


def test_every_guarantor_command_has_help():
    for cmd in ("pledge", "release", "list", "show"):
        r = _cli("guarantor", cmd, "--help")
        assert r.exit_code == 0 and "--json" in r.output, (cmd, r.output)
    text = " ".join(_cli("guarantor", "pledge", "--help").output.split())
    assert "before the collateral is sold" in text and "At most 4 guarantees" in text


def test_list_and_show_read_the_node(monkeypatch):
    """The commands against what the API serves (its views of a test chain)."""
    import json

    from lendnet.cli import guarantor as cli
    from lendnet.node.daemon.api import jsonable
    c = Chain(names=NAMES)
    offer, app = application(c)
    g = pledge(c, "bob", app, 30_000)
    seen = []

    def get(node_url, path):
        seen.append(path)
        return {"guarantee": g, **jsonable(G.view(c.ledger, path.rsplit("/", 1)[1]))}

    def get_all(node_url, path, records):
        seen.append(path)
        return [{"guarantee": g, **jsonable(G.view(c.ledger, g))}]

    monkeypatch.setattr(cli, "get", get)
    monkeypatch.setattr(cli, "get_all", get_all)
    r = _cli("guarantor", "show", g, "--node", "http://x", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "held"
    r = _cli("guarantor", "show", g, "--node", "http://x")
    assert "holds 300.00" in r.output and c.addr("bob") in r.output
    r = _cli("guarantor", "list", "--to", app, "--status", "held", "--node", "http://x",
             "--json")
    assert json.loads(r.output)["guarantees"][0]["guarantee"] == g
    assert seen[-1] == f"/v1/guarantees?to={app}&status=held"
    loan = fund(c, offer, app)
    r = _cli("guarantor", "list", "--node", "http://x")
    assert r.exit_code == 0 and "held" in r.output and loan[:10] in r.output


def test_the_explorers_loan_page_shows_the_guarantees():
    import asyncio
    import types

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from lendnet.ledger import portfolio
    from lendnet.node.daemon import explorer
    c = Chain(names=NAMES)
    offer, app = application(c)
    pledge(c, "bob", app, 150_000)
    loan = fund(c, offer, app)
    default(c, loan)
    node = types.SimpleNamespace(ledger=c.ledger, height=c.ledger.height)
    daemon = types.SimpleNamespace(node=node, subscribers=set(),
                                   genesis=types.SimpleNamespace(chain_id="test"))

    async def page() -> str:
        site = web.Application()
        explorer.routes(site, daemon, portfolio.Books())
        async with TestClient(TestServer(site)) as client:
            r = await client.get(f"/loan/{loan}")
            assert r.status == 200
            return await r.text()

    text = asyncio.run(page())
    row = text[text.index("<h2>Guarantees</h2>"):text.index("<h2>Events</h2>")]
    assert "1,500.00" in row and "drawn" in row and c.addr("bob")[:12] in row


class _Node:
    """A node's API over a test chain: what `sign_and_send` talks to."""

    def __init__(self, c: Chain):
        self.c, self.url, self.receipts = c, "http://test", {}

    def status(self):
        return {"chain_id": self.c.ledger.chain_id}

    def account(self, address):
        bal, nonce = self.c.ledger.account(address)
        return {"balance": bal, "nonce": nonce}

    def submit(self, raw):
        from lendnet.ledger import tx as txm
        t = txm.parse(raw)
        self.receipts[t.id] = self.c.block(t, strict=False).receipts[0]
        return t.id

    def wait_committed(self, h, timeout):
        r = self.receipts[h]
        return {"hash": h, "status": "committed" if r.ok else "failed",
                "height": self.c.ledger.height, "fee": r.fee, "error": r.error}


def test_pledge_and_release_through_the_command_line(wallet, monkeypatch):
    import json

    from lendnet.cli import common
    from lendnet.cli.keystore import info
    c = Chain(names=NAMES)
    _, app = application(c)
    me = info("w")["address"]
    c.do("bob", "transfer", to=me, amount=1_000_000)
    monkeypatch.setattr(common, "client", lambda url: _Node(c))
    r = _cli("guarantor", "pledge", "--wallet", "w", "--to", app, "--amount", "500",
             "--node", "http://test", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    g = out["guarantee"]
    assert out["status"] == "committed" and record(c, g)["guarantor"] == me
    assert c.ledger.balance(g) == 50_000
    r = _cli("guarantor", "pledge", "--wallet", "w", "--to", app, "--amount", "1",
             "--node", "http://test")
    assert r.exit_code == 1 and "a guarantee must be at least 5000" in r.output
    r = _cli("guarantor", "release", g, "--wallet", "w", "--node", "http://test")
    assert r.exit_code == 0 and "release_guarantee committed" in r.output, r.output
    assert record(c, g)["status"] == "released" and c.ledger.balance(g) == 0
