"""Savings paired with credit (ledger/savings.py, contracts/agreements/savings.lasm):
deposits earning interest from the provider's reserve, withdrawals blocked while pledged,
pledges counted as cash collateral, released when the loan closes, drawn on default."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.contracts.agreements import ReadOnlyHost, savings_code
from lendnet.contracts.vm import ContractError, Program, execute
from lendnet.ledger import keys, lending, savings, settlement, tx as txm
from lendnet.ledger.ledger import BlockError
from lendnet.ledger.lending import loan_view

from .chain import APPLY_LIMITS, CHAIN, DAY, OFFER_TERMS, Chain, h32

NAMES = ("lender", "alice", "bob", "mfi")


def make_product(c: Chain, who: str = "mfi", rate_bps: int = 500,
                 reserve: int = 50_000, name: str = "basic") -> str:
    """Publish a savings product (built by hand: Chain.do's own first argument is
    `name`, which is also this kind's field); return its agreement's address."""
    kp = c.keys[who]
    body = txm.build(kp, CHAIN, "savings_product", c.nonces[who], name=name,
                     rate_bps=rate_bps, reserve=reserve)
    c.nonces[who] += 1
    t = txm.sign(body, [kp])
    c.block(t)
    return keys.derive_address(b"savings", t.hash)


def account(c: Chain, product: str, who: str) -> dict:
    return savings.account_view(c.ledger, product, c.addr(who))


def conserved(c: Chain, *products: str) -> bool:
    """Money conserved on the ledger, and in each agreement: reserve + every balance ==
    its ledger balance, to the unit."""
    rows = c.ledger.state.storage.rows
    for p in products:
        balances = sum(v for (addr, key), v in rows.items() if addr == p and key[:1] == b"b")
        if rows[(p, b"reserve")] + balances != c.ledger.balance(p):
            return False
    return c.ledger.total_money() == c.ledger.supply


def borrower_applies(c: Chain, collateral_bps: int = 5_000, amount: int = 100_000):
    """The lender publishes an offer asking collateral_bps of cover; alice applies.
    Returns (offer id, application id)."""
    c.do("lender", "register_lender", profile_hash=h32("lender"))
    offer = c.do("lender", "publish_offer", amount=1_000_000,
                 **{**OFFER_TERMS, "collateral_bps": collateral_bps}).id
    c.do("alice", "register_borrower", profile_hash=h32("alice"), docs_hash=h32("docs"))
    c.attest("alice")
    return offer, apply(c, amount)


def apply(c: Chain, amount: int = 100_000, who: str = "alice") -> str:
    return c.do(who, "apply", amount=amount, purpose="a van", term=6, period="monthly",
                method="annuity", product="business", grace=0, docs_hash=h32("p"),
                **APPLY_LIMITS).id


def funded_loan(c: Chain, pledge: int, deposit: int = 200_000):
    """Alice saves `deposit`, pledges `pledge` of it to her application for 100,000
    (the offer needs 50 % cover) and the lender funds it. Returns (product, app, loan)."""
    p = make_product(c)
    offer, app = borrower_applies(c)
    c.do("alice", "savings_deposit", product=p, amount=deposit)
    c.do("alice", "savings_pledge", product=p, to=app, amount=pledge)
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    return p, app, c.ledger.state.applications.get(app)["loan"]


def default(c: Chain, loan: str) -> None:
    """Nothing is paid: chain time runs to the loan's default."""
    for _ in range(40):
        view = loan_view(c.ledger, loan)
        unpaid = view["instalments"]
        due = unpaid[0]["due"] if unpaid else view["next_due"]["due"]
        c.block(at=max(c.time + DAY, due + OFFER_TERMS["default_days"] * DAY))
        if loan_view(c.ledger, loan)["status"] != "active":
            return
    raise AssertionError("the loan did not default")


# --- deposits and interest ---------------------------------------------------------------------

def test_a_year_of_interest_is_exact_to_the_unit():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=500, reserve=50_000)
    c.do("alice", "savings_deposit", product=p, amount=100_000)
    c.advance(365 * DAY)
    a = account(c, p, "alice")
    assert a["balance"] == 105_000 and a["interest_earned"] == 5_000
    assert a["interest_unpaid"] == 0
    before = c.balance("alice")
    res = c.block(c.tx("alice", "savings_withdraw", product=p, amount=105_000))
    assert res.receipts[0].ok
    assert c.balance("alice") == before + 105_000 - res.receipts[0].fee
    assert savings.product_view(c.ledger, p)["reserve"] == 45_000
    assert conserved(c, p)


def test_the_first_deposit_opens_the_account_and_counts_it():
    c = Chain(names=NAMES)
    p = make_product(c)
    assert account(c, p, "alice") is None
    c.do("alice", "savings_deposit", product=p, amount=10)
    c.do("alice", "savings_deposit", product=p, amount=20)
    c.do("bob", "savings_deposit", product=p, amount=5)
    view = savings.product_view(c.ledger, p)
    assert view["accounts"] == 2 and view["rate_bps"] == 500 and view["reserve"] == 50_000
    assert view["provider"] == c.addr("mfi") and view["name"] == "basic"
    assert account(c, p, "alice")["balance"] == 30
    assert conserved(c, p)


def test_interest_counts_whole_days_rounded_down_and_the_rest_of_a_day_carries():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=1_000)
    c.do("alice", "savings_deposit", product=p, amount=36_500)       # 10 a day
    opened = account(c, p, "alice")["interest_accrued_through"]
    c.block(at=c.time + DAY + DAY // 2)
    c.do("alice", "savings_deposit", product=p, amount=1)             # touched: accrues
    a = account(c, p, "alice")
    assert a["interest_earned"] == 10 and a["interest_accrued_through"] == opened + DAY
    c.block(at=opened + 2 * DAY)                 # the carried half day makes a second day
    a = account(c, p, "alice")
    assert a["interest_earned"] == 20 and a["balance"] == 36_521
    c2 = Chain(names=NAMES)
    p2 = make_product(c2, rate_bps=1)
    c2.do("alice", "savings_deposit", product=p2, amount=1_000)       # 0.0003 a day
    c2.advance(30 * DAY)
    assert account(c2, p2, "alice")["interest_earned"] == 0           # rounded down


def test_a_later_deposit_earns_from_its_own_day_only():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=730)
    c.do("alice", "savings_deposit", product=p, amount=100_000)      # 20 a day
    c.block(at=c.time + 10 * DAY)
    c.do("alice", "savings_deposit", product=p, amount=100_000)      # accrues 200 first
    assert account(c, p, "alice")["interest_earned"] == 200
    c.block(at=c.time + 10 * DAY)
    # 10 days on 200,200: floor(200,200 * 730 * 10 / 3,650,000) = 400
    assert account(c, p, "alice")["interest_earned"] == 600


def test_the_reserve_running_dry_stops_interest_and_records_what_was_not_paid():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=2_000, reserve=1_000)
    c.do("alice", "savings_deposit", product=p, amount=100_000)
    c.advance(365 * DAY)                         # 20,000 due, 1,000 in the reserve
    c.do("alice", "savings_deposit", product=p, amount=1)
    a = account(c, p, "alice")
    assert a["interest_earned"] == 1_000 and a["interest_unpaid"] == 19_000
    assert a["balance"] == 101_001
    assert savings.product_view(c.ledger, p)["reserve"] == 0
    c.advance(365 * DAY)
    a = account(c, p, "alice")
    assert a["interest_earned"] == 1_000 and a["interest_unpaid"] == 19_000 + 20_200
    # A top-up pays interest again from then on, not what went unpaid before it.
    c.do("alice", "savings_deposit", product=p, amount=1)
    c.do("mfi", "savings_fund", product=p, amount=50_000)
    c.advance(365 * DAY)
    a = account(c, p, "alice")
    assert a["interest_earned"] == 1_000 + 20_200
    assert conserved(c, p)


def test_only_the_provider_funds_the_reserve_and_nobody_takes_it_out():
    c = Chain(names=NAMES)
    p = make_product(c)
    r = c.try_do("bob", "savings_fund", product=p, amount=1_000)
    assert not r.ok and "only the product's provider" in r.error
    c.do("mfi", "savings_fund", product=p, amount=1_000)
    assert savings.product_view(c.ledger, p)["reserve"] == 51_000
    # The provider has no account: it cannot withdraw the reserve (no kind lets it).
    r = c.try_do("mfi", "savings_withdraw", product=p, amount=1_000)
    assert not r.ok and "no account" in r.error
    assert conserved(c, p)


def test_refusals_name_the_problem():
    c = Chain(names=NAMES)
    p = make_product(c)
    nowhere = keys.derive_address(b"savings", b"nothing")
    r = c.try_do("alice", "savings_deposit", product=nowhere, amount=5)
    assert not r.ok and "no savings product" in r.error
    r = c.try_do("alice", "savings_deposit", product=p, amount=10**12)
    assert not r.ok and "insufficient funds" in r.error
    c.do("alice", "savings_deposit", product=p, amount=100)
    r = c.try_do("alice", "savings_withdraw", product=p, amount=101)
    assert not r.ok and "exceeds the account's balance 100" in r.error
    with pytest.raises(txm.TxError, match="rate_bps"):
        make_product(c, rate_bps=2_001)
    assert conserved(c, p)


# --- pledges --------------------------------------------------------------------------------

def test_pledged_savings_count_toward_the_cover_at_face_value():
    c = Chain(names=NAMES)
    p = make_product(c)
    offer, app = borrower_applies(c, collateral_bps=5_000)
    c.do("alice", "savings_deposit", product=p, amount=80_000)
    c.do("alice", "savings_pledge", product=p, to=app, amount=30_000)
    r = c.try_do("lender", "fund", application=app, offer=offer, accept=[])
    assert not r.ok and "worth 30000" in r.error and "needs 50000" in r.error
    c.do("alice", "savings_pledge", product=p, to=app, amount=20_000)    # adds to it
    assert savings.pledged_to(c.ledger, app) == 50_000
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    loan = c.ledger.state.applications.get(app)["loan"]
    assert savings.pledged_to(c.ledger, loan) == 50_000
    cover = c.ledger.state.loans.get(loan)["cover"]
    assert cover == [savings.cover_entry(p, c.addr("alice"), 50_000)]
    a = account(c, p, "alice")
    assert a["pledged"] == 50_000 and a["available"] == 30_000
    assert [(x["to"], x["amount"], x["status"]) for x in a["pledges"]] == \
        [(app, 50_000, "active")]
    assert conserved(c, p)


def test_a_pledge_to_a_running_loan_shows_in_its_cover():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    c.do("alice", "savings_pledge", product=p, to=loan, amount=10_000)
    assert savings.pledged_to(c.ledger, loan) == 60_000
    assert c.ledger.state.loans.get(loan)["cover"] == [   # one entry per account
        savings.cover_entry(p, c.addr("alice"), 60_000)]


def test_withdrawals_are_blocked_while_pledged_and_the_pledge_is_named():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    r = c.try_do("alice", "savings_withdraw", product=p, amount=1)
    assert not r.ok and "withdrawals blocked while the account is pledged" in r.error
    assert f"50000 to {app}" in r.error
    assert conserved(c, p)


def test_repaying_the_loan_releases_the_pledge():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    c.advance(10 * DAY)
    # (the next block is a day later by the agreement's whole-day count: more than enough)
    c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"] + 5_000)
    assert loan_view(c.ledger, loan)["status"] == "repaid"
    a = account(c, p, "alice")
    assert a["pledged"] == 0 and a["to_unlock"] == 50_000 and a["pledges"] == []
    assert c.ledger.state.savings_pledges.get(app)[0]["status"] == "released"
    assert savings.pledged_to(c.ledger, loan) == 0
    c.do("alice", "savings_withdraw", product=p, amount=a["balance"])   # unlocks first
    a = account(c, p, "alice")
    assert a["balance"] == 0 and a["to_unlock"] == 0
    assert conserved(c, p)


def test_withdrawing_the_application_releases_the_pledge():
    c = Chain(names=NAMES)
    p = make_product(c)
    _, app = borrower_applies(c)
    c.do("alice", "savings_deposit", product=p, amount=10_000)
    c.do("alice", "savings_pledge", product=p, to=app, amount=10_000)
    c.do("alice", "withdraw_application", application=app)
    assert account(c, p, "alice")["pledged"] == 0
    c.do("alice", "savings_withdraw", product=p, amount=10_000)
    assert conserved(c, p)


def test_a_default_draws_the_pledge_into_the_claim():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    lender0 = c.balance("lender")
    default(c, loan)
    view = loan_view(c.ledger, loan)
    assert view["status"] == "defaulted" and view["payoff"] > 0    # the rest still owed
    assert c.balance("lender") == lender0 + 50_000
    a = account(c, p, "alice")
    assert a["pledged"] == 0 and a["pledges"] == []
    assert a["balance"] == 150_000 + a["interest_earned"]
    row = c.ledger.state.savings_pledges.get(app)[0]
    assert row["status"] == "drawn" and row["drawn"] == 50_000
    c.do("alice", "savings_withdraw", product=p, amount=a["balance"])
    assert conserved(c, p)


def test_a_pledge_larger_than_the_claim_pays_the_claim_and_keeps_the_rest():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=190_000)
    alice0, lender0 = c.balance("alice"), c.balance("lender")
    default(c, loan)
    view = loan_view(c.ledger, loan)
    assert view["status"] == "settled"                 # the claim is paid in full
    claim = c.balance("lender") - lender0
    assert 100_000 < claim < 110_000                   # principal, interest, a late fee
    assert c.balance("alice") == alice0                # nothing more from her wallet
    a = account(c, p, "alice")
    assert a["balance"] == 200_000 + a["interest_earned"] - claim
    assert a["pledged"] == 0 and a["available"] == a["balance"]
    assert c.ledger.state.savings_pledges.get(app)[0]["drawn"] == claim
    c.do("alice", "savings_withdraw", product=p, amount=a["balance"])
    assert conserved(c, p)


def test_two_pledges_are_drawn_in_order_until_the_claim_is_paid():
    c = Chain(names=NAMES)
    p1 = make_product(c, name="first")
    p2 = make_product(c, name="second")
    offer, app = borrower_applies(c)
    for p in (p1, p2):
        c.do("alice", "savings_deposit", product=p, amount=100_000)
        c.do("alice", "savings_pledge", product=p, to=app, amount=80_000)
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    loan = c.ledger.state.applications.get(app)["loan"]
    lender0 = c.balance("lender")
    default(c, loan)
    view = loan_view(c.ledger, loan)
    claim = c.balance("lender") - lender0
    assert view["status"] == "settled"
    first, second = c.ledger.state.savings_pledges.get(app)
    assert (first["drawn"], second["drawn"]) == (80_000, claim - 80_000)
    assert account(c, p2, "alice")["pledged"] == 0
    assert conserved(c, p1, p2)


def test_a_default_the_guarantees_pay_in_full_draws_nothing(monkeypatch):
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)

    def guarantee(led, loan_addr, rec):
        """A stand-in for the guarantee step, which runs first: bob pays the claim."""
        if lending.loan_status(led, loan_addr) == "defaulted":
            owed = lending.loan_payoff(led, loan_addr)
            led.move(c.addr("bob"), loan_addr, owed)
            settlement.recover(led, loan_addr, owed, c.addr("bob"))

    monkeypatch.setattr(lending, "AFTER_LOAN_RUN", (guarantee, savings.draw_pledges))
    default(c, loan)
    assert loan_view(c.ledger, loan)["status"] == "settled"
    a = account(c, p, "alice")
    assert a["balance"] == 200_000 + a["interest_earned"] and a["pledged"] == 0
    assert c.ledger.state.savings_pledges.get(app)[0]["status"] == "released"
    assert conserved(c, p)


def test_the_no_op_path_after_a_loan_run_draws_and_writes_nothing():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    led = c.ledger
    mark = led.state.mark()
    savings.draw_pledges(led, loan, led.state.loans.get(loan))      # active: nothing
    assert led.state.mark() == mark


# --- attacks ----------------------------------------------------------------------------------

def test_a_zero_balance_key_can_do_nothing():
    c = Chain(names=(*NAMES, "ghost"), balances={n: 10_000_000 for n in NAMES} | {"ghost": 0})
    p = make_product(c)
    for kind, fields in (("savings_deposit", {"product": p, "amount": 1}),
                         ("savings_withdraw", {"product": p, "amount": 1}),
                         ("savings_fund", {"product": p, "amount": 1})):
        r = c.try_do("ghost", kind, **fields)
        assert not r.ok and not r.nonce_used and "cannot pay the fee" in r.error
    with pytest.raises(BlockError, match="cannot pay the fee"):
        make_product(c, who="ghost")
    assert conserved(c, p)


def test_nobody_pledges_another_s_account_or_to_another_s_application_or_loan():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    # bob has no account: he cannot pledge alice's
    r = c.try_do("bob", "savings_pledge", product=p, to=loan, amount=1)
    assert not r.ok and "no account" in r.error
    c.do("bob", "savings_deposit", product=p, amount=10_000)
    r = c.try_do("bob", "savings_pledge", product=p, to=loan, amount=1)
    assert not r.ok and "only to your own active loan" in r.error
    app2 = apply(c, who="alice")
    r = c.try_do("bob", "savings_pledge", product=p, to=app2, amount=1)
    assert not r.ok and "only to your own open application" in r.error
    # nor to a funded application, nor to nothing
    r = c.try_do("alice", "savings_pledge", product=p, to=app, amount=1)
    assert not r.ok and "open application" in r.error
    r = c.try_do("alice", "savings_pledge", product=p, to="0" * 64, amount=1)
    assert not r.ok and "no open application or loan" in r.error
    assert conserved(c, p)


def test_over_pledging_is_refused():
    c = Chain(names=NAMES)
    p = make_product(c)
    _, app = borrower_applies(c)
    app2 = apply(c)
    c.do("alice", "savings_deposit", product=p, amount=1_000)
    r = c.try_do("alice", "savings_pledge", product=p, to=app, amount=1_001)
    assert not r.ok and "exceeds the account's unpledged balance 1000" in r.error
    c.do("alice", "savings_pledge", product=p, to=app, amount=600)
    r = c.try_do("alice", "savings_pledge", product=p, to=app2, amount=401)
    assert not r.ok and "unpledged balance 400" in r.error
    c.do("alice", "savings_pledge", product=p, to=app2, amount=400)
    assert savings.pledged_to(c.ledger, app) + savings.pledged_to(c.ledger, app2) == 1_000


def test_pledged_money_cannot_be_withdrawn_even_in_part():
    c = Chain(names=NAMES)
    p = make_product(c)
    _, app = borrower_applies(c)
    c.do("alice", "savings_deposit", product=p, amount=1_000)
    c.do("alice", "savings_pledge", product=p, to=app, amount=1)
    for amount in (1, 999, 1_000):
        r = c.try_do("alice", "savings_withdraw", product=p, amount=amount)
        assert not r.ok and "withdrawals blocked" in r.error
    assert account(c, p, "alice")["balance"] == 1_000


def test_nobody_withdraws_another_s_money():
    c = Chain(names=NAMES)
    p = make_product(c)
    c.do("alice", "savings_deposit", product=p, amount=100_000)
    r = c.try_do("bob", "savings_withdraw", product=p, amount=1)
    assert not r.ok and "no account" in r.error
    c.do("bob", "savings_deposit", product=p, amount=10)
    r = c.try_do("bob", "savings_withdraw", product=p, amount=11)
    assert not r.ok and "exceeds the account's balance 10" in r.error
    assert account(c, p, "alice")["balance"] == 100_000
    assert conserved(c, p)


def test_a_stranger_cannot_drain_the_reserve_or_call_the_agreement():
    c = Chain(names=NAMES)
    p = make_product(c, reserve=50_000)
    c.do("bob", "savings_deposit", product=p, amount=10)
    for args in ([b"draw", c.addr("bob").encode(), c.addr("bob").encode(), 10, 10],
                 [b"release", c.addr("bob").encode(), 1], [b"withdraw", 10], [b"init", 1]):
        r = c.try_do("bob", "call", contract=p, args=args, amount=0, gas=10_000)
        assert not r.ok and "driven by savings_* transactions" in r.error
    # The agreement itself refuses its ledger-only methods to any caller but itself.
    code = Program.load(savings_code())
    store = {(k): v for (a, k), v in c.ledger.state.storage.rows.items() if a == p}

    class Host(ReadOnlyHost):
        caller = c.addr("bob").encode()
    host = Host(c.time, store.get, p.encode())
    for args in ([b"draw", c.addr("bob").encode(), c.addr("bob").encode(), 5, 10],
                 [b"release", c.addr("bob").encode(), 1]):
        with pytest.raises(ContractError, match="only the ledger"):
            execute(code, host, args, 10_000)
    # Interest is the only way out of the reserve: 10 saved for ten years earns 5.
    c.advance(3_650 * DAY)
    c.do("bob", "savings_withdraw", product=p, amount=10)
    assert savings.product_view(c.ledger, p)["reserve"] >= 50_000 - 6
    assert conserved(c, p)


def test_a_fifth_pledge_is_refused_per_account_and_per_target():
    c = Chain(names=NAMES)
    p = make_product(c)
    _, app = borrower_applies(c)
    apps = [app] + [apply(c) for _ in range(4)]
    c.do("alice", "savings_deposit", product=p, amount=1_000)
    for a in apps[:4]:
        c.do("alice", "savings_pledge", product=p, to=a, amount=10)
    r = c.try_do("alice", "savings_pledge", product=p, to=apps[4], amount=10)
    assert not r.ok and "at most 4" in r.error
    c.do("alice", "savings_pledge", product=p, to=apps[0], amount=10)   # same target: adds
    # four other accounts back apps[4]; a sixth account's pledge to it is the fifth
    products = [make_product(c, name=f"p{i}") for i in range(5)]
    for q in products:
        c.do("alice", "savings_deposit", product=q, amount=100)
    for q in products[:4]:
        c.do("alice", "savings_pledge", product=q, to=apps[4], amount=10)
    r = c.try_do("alice", "savings_pledge", product=products[4], to=apps[4], amount=10)
    assert not r.ok and "already has 4 savings pledges: at most 4" in r.error
    assert savings.pledged_to(c.ledger, apps[4]) == 40


# --- properties ----------------------------------------------------------------------------------

def model_accrue(acct: dict, reserve: int, rate: int, now: int) -> int:
    """The rule, in Python: whole days, rounded down, from the reserve while it lasts."""
    days = (now - acct["t"]) // DAY
    if days > 0:
        due = acct["b"] * rate * days // 3_650_000
        paid = min(due, reserve)
        reserve -= paid
        acct.update(b=acct["b"] + paid, e=acct["e"] + paid, u=acct["u"] + due - paid,
                    t=acct["t"] + days * DAY)
    return reserve


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.integers(0, 2_000), reserve=st.integers(1, 20_000),
       steps=st.lists(st.tuples(st.sampled_from(["alice", "bob"]),
                                st.sampled_from(["deposit", "withdraw", "wait"]),
                                st.integers(1, 200_000), st.integers(0, 400 * DAY)),
                      min_size=1, max_size=12))
def test_money_is_conserved_and_interest_is_exact(rate, reserve, steps):
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=rate, reserve=reserve)
    model: dict = {}
    for who, op, amount, wait in steps:
        c.block(at=c.time + wait)
        acct = model.get(who)
        if op == "deposit":
            c.block(c.tx(who, "savings_deposit", product=p, amount=amount))
            if acct is None:
                model[who] = {"b": amount, "t": c.time, "e": 0, "u": 0}
            else:
                reserve = model_accrue(acct, reserve, rate, c.time)
                acct["b"] += amount
        elif op == "withdraw" and acct is not None:
            reserve = model_accrue(acct, reserve, rate, c.time + 60)
            take = min(amount, acct["b"])
            if take:
                c.block(c.tx(who, "savings_withdraw", product=p, amount=take))
                acct["b"] -= take
        assert conserved(c, p)
    for who, acct in model.items():
        now = dict(acct)
        reserve = model_accrue(now, reserve, rate, c.time)
        model[who] = now
        a = account(c, p, who)
        assert (a["balance"], a["interest_earned"], a["interest_unpaid"]) == \
            (now["b"], now["e"], now["u"])
        c.do(who, "savings_deposit", product=p, amount=1)       # store the accrual
    assert savings.product_view(c.ledger, p)["reserve"] == reserve
    assert conserved(c, p)


# --- gas --------------------------------------------------------------------------------------

def test_gas_of_each_method_is_within_its_budget():
    """The agreement's measured gas (printed with -s) under each budget in savings.py."""
    c = Chain(names=NAMES)
    fixed = lending.GAS

    def vm_gas(result, kind):
        r = result.receipts[0]
        assert r.ok, r.error
        return r.gas - fixed[kind][0]
    kp = c.keys["mfi"]
    t = txm.sign(txm.build(kp, CHAIN, "savings_product", c.nonces["mfi"], name="basic",
                           rate_bps=500, reserve=50_000), [kp])
    c.nonces["mfi"] += 1
    p = keys.derive_address(b"savings", t.hash)
    measured = {"init": vm_gas(c.block(t), "savings_product")}
    measured["fund"] = vm_gas(c.block(c.tx("mfi", "savings_fund", product=p, amount=5)),
                              "savings_fund")
    _, app = borrower_applies(c)
    measured["first deposit"] = vm_gas(c.block(c.tx("alice", "savings_deposit", product=p,
                                                    amount=10_000)), "savings_deposit")
    c.advance(30 * DAY)
    measured["deposit"] = vm_gas(c.block(c.tx("alice", "savings_deposit", product=p,
                                              amount=10_000)), "savings_deposit")
    measured["withdraw"] = vm_gas(c.block(c.tx("alice", "savings_withdraw", product=p,
                                               amount=1_000)), "savings_withdraw")
    measured["pledge"] = vm_gas(c.block(c.tx("alice", "savings_pledge", product=p, to=app,
                                             amount=1_000)), "savings_pledge")
    c.do("alice", "withdraw_application", application=app)
    measured["release + withdraw"] = vm_gas(c.block(c.tx(
        "alice", "savings_withdraw", product=p, amount=1_000)), "savings_withdraw")
    print(measured)
    assert measured["init"] <= savings.PRODUCT_GAS
    assert measured["fund"] <= savings.FUND_GAS
    assert measured["first deposit"] <= savings.DEPOSIT_GAS
    assert measured["withdraw"] <= savings.WITHDRAW_GAS
    assert measured["pledge"] <= savings.PLEDGE_GAS
    assert measured["release + withdraw"] <= savings.UNLOCK_GAS + savings.WITHDRAW_GAS


def test_gas_of_a_draw_and_of_its_recovery(monkeypatch):
    """A default's draw: the agreement's run and the loan's recovery run it starts."""
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    led = c.ledger
    runs = []
    real = type(led).run_contract

    def measured(self, address, args, caller, value, gas):
        before = self._block_gas
        out = real(self, address, args, caller, value, gas)
        runs.append((args[0], address, self._block_gas - before))
        return out
    monkeypatch.setattr(type(led), "run_contract", measured)
    default(c, loan)
    draw = [g for name, a, g in runs if name == b"draw"]
    print({"draw": draw})
    assert len(draw) == 1 and draw[0] <= savings.DRAW_GAS


def test_a_draw_found_inside_a_transaction_waits_for_the_loan_s_duty(monkeypatch):
    """A transaction's gas limit has no room for draws: when one finds a defaulted loan
    with undrawn pledges, the loan's duty draws them at the start of the next block."""
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    monkeypatch.setattr(lending, "AFTER_LOAN_RUN", ())      # the default draws nothing yet
    default(c, loan)
    assert savings.pledged_to(c.ledger, loan) == 50_000
    monkeypatch.setattr(lending, "AFTER_LOAN_RUN", (savings.draw_pledges,))
    owed = loan_view(c.ledger, loan)["payoff"]
    r = c.block(c.tx("bob", "repay", loan=loan, amount=1)).receipts[0]
    assert r.ok, r.error                          # within its gas: nothing drawn in it
    assert savings.pledged_to(c.ledger, loan) == 50_000
    assert c.ledger.state.wakes.get(loan) == c.time
    c.advance(60)
    assert savings.pledged_to(c.ledger, loan) == 0
    assert loan_view(c.ledger, loan)["payoff"] == owed - 1 - 50_000
    assert conserved(c, p)


def test_a_write_off_after_the_draw_draws_nothing_more():
    c = Chain(names=NAMES)
    p, app, loan = funded_loan(c, pledge=50_000)
    default(c, loan)
    before = account(c, p, "alice")["balance"]
    c.do("lender", "write_off", loan=loan, reason="unreachable")
    assert account(c, p, "alice")["balance"] == before
    assert c.ledger.state.savings_pledges.get(app)[0]["drawn"] == 50_000
    assert conserved(c, p)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deposits=st.lists(st.integers(1, 150_000), min_size=1, max_size=3),
       share_bps=st.integers(1, 10_000), repaid=st.booleans())
def test_a_pledge_ends_released_or_drawn_and_money_is_conserved(deposits, share_bps, repaid):
    """However much is saved and pledged, and whether the loan is repaid or defaults:
    money is conserved in the ledger and in each agreement, a draw takes no more than
    the pledge and the claim, and the account keeps the rest."""
    c = Chain(names=NAMES)
    offer, app = borrower_applies(c, collateral_bps=0)
    products = [make_product(c, name=f"p{i}") for i in range(len(deposits))]
    pledged = []
    for p, d in zip(products, deposits):
        c.do("alice", "savings_deposit", product=p, amount=d)
        pledged.append(max(1, d * share_bps // 10_000))
        c.do("alice", "savings_pledge", product=p, to=app, amount=pledged[-1])
    c.do("lender", "fund", application=app, offer=offer, accept=[])
    loan = c.ledger.state.applications.get(app)["loan"]
    lender0 = c.balance("lender")
    if repaid:
        c.advance(DAY)
        c.do("alice", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"] + 5_000)
    else:
        default(c, loan)
    rows = c.ledger.state.savings_pledges.get(app)
    assert all(r["status"] in ("released", "drawn") for r in rows)
    drawn = sum(r["drawn"] for r in rows)
    assert all(r["drawn"] <= r["amount"] for r in rows)
    if repaid:
        assert drawn == 0
    else:
        assert drawn == c.balance("lender") - lender0            # all of it to the claim
        if drawn < sum(pledged):        # the pledges paid the whole claim, with some left
            assert loan_view(c.ledger, loan)["status"] == "settled"
        else:
            assert drawn == sum(pledged)
    for p, d, r in zip(products, deposits, rows):
        a = account(c, p, "alice")
        assert a["balance"] == d + a["interest_earned"] - r["drawn"] and a["pledged"] == 0
    assert conserved(c, *products)


def test_a_top_up_before_the_next_touch_pays_that_touch_in_full():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=1_000, reserve=10)
    c.do("alice", "savings_deposit", product=p, amount=36_500)        # 10 a day
    c.block(at=c.time + 3 * DAY)
    c.do("alice", "savings_deposit", product=p, amount=1)             # 30 due, 10 paid
    assert account(c, p, "alice")["interest_unpaid"] == 20
    c.block(at=c.time + 5 * DAY)                                      # empty reserve
    c.do("mfi", "savings_fund", product=p, amount=1_000)
    c.do("alice", "savings_deposit", product=p, amount=1)
    a = account(c, p, "alice")
    assert a["interest_earned"] == 10 + 50 and a["interest_unpaid"] == 20
    assert conserved(c, p)
