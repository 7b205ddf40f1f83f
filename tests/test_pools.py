"""Shared funding (ledger/pools.py, contracts/agreements/pool.lasm): an application filled
by several lenders in slices; repayments, recoveries and the origination fee split pro
rata to the unit by the agreement's stated rule; expiry and withdrawal refund every slice;
and the holes an attacker would try."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.contracts.agreements import POOL_SLICE_ROWS
from lendnet.ledger import ledger as ledger_mod, pools
from lendnet.ledger.lending import loan_view
from lendnet.ledger.portfolio import Books
from lendnet.ledger.settlement import sale_id

from .chain import DAY, OFFER_TERMS, Chain, h32, limits_for
from .test_cli import run as _cli

LENDERS = ("lead", "l2", "l3", "l4")
AMOUNT = 100_000
# Four unequal slices of AMOUNT, the lead's first.
SLICES = (("lead", 13_337), ("l2", 21_111), ("l3", 29_000), ("l4", 36_552))


class PoolChain(Chain):
    """A test chain that keeps every event, so the tests can replay each distribution."""

    def __init__(self, names=(*LENDERS, "alice", "bob", "mallory"), **kw):
        super().__init__(names=names, **kw)
        self.log: list = []

    def block(self, *txs, at=None, strict=True):
        r = super().block(*txs, at=at, strict=strict)
        self.log += r.events
        return r


def setup(c: PoolChain, lenders=LENDERS, amount=AMOUNT, fee_bps=0, car: int | None = None,
          **offer_terms):
    """Lenders registered, the lead's offer, Alice's application (with her car pledged
    and appraised at `car`, if given); returns (offer id, application id)."""
    for n in lenders:
        c.do(n, "register_lender", profile_hash=h32(n))
    terms = {**OFFER_TERMS, "origination_fee_bps": fee_bps, **offer_terms}
    offer = c.do("lead", "publish_offer", amount=1, **terms).id
    c.do("alice", "register_borrower", profile_hash=h32("alice"), docs_hash=h32("d"))
    app = c.do("alice", "apply", amount=amount, purpose="a van", term=6, period="monthly",
               method="annuity", product="business", grace=0, docs_hash=h32("p"),
               **limits_for(terms)).id
    if car is not None:
        c.pledge_asset("alice", "car", car, app)
    return offer, app


def fill(c: PoolChain, offer: str, app: str, slices=SLICES):
    for name, amount in slices:
        c.do(name, "fund_share", application=app, offer=offer, amount=amount)
    return pools.pool_view(c.ledger, app)


def conserved(c: Chain) -> bool:
    return c.ledger.total_money() == c.ledger.supply


def split(x: int, amounts: list[int], cursor: int) -> tuple[list[int], int]:
    """The stated rule, independently: floor(x * s_i / S) each, and the residue one unit
    each to the first slices from the cursor on whose exact share has a fraction; returns
    (the parts, the next cursor: after the last slice served)."""
    total, n = sum(amounts), len(amounts)
    parts = [x * s // total for s in amounts]
    residue = x - sum(parts)
    assert 0 <= residue < n
    after = cursor
    for j in range(n):
        i = (cursor + j) % n
        if residue and x * amounts[i] % total:
            parts[i] += 1
            residue -= 1
            after = (i + 1) % n
    assert residue == 0
    return parts, after


def replay(c: PoolChain, addr: str, amounts: list[int]) -> tuple[list[int], int]:
    """What the rule gives each slice over every distribution the pool made, and the sum
    distributed."""
    got, cursor, total = [0] * len(amounts), 0, 0
    for e in c.log:
        if e["contract"] == addr and e["name"] == "distributed":
            x = e["values"][0]
            parts, cursor = split(x, amounts, cursor)
            assert sum(parts) == x
            for i, p in enumerate(parts):
                # the exact share rounded down or up, each distribution
                assert abs(p * sum(amounts) - x * amounts[i]) < sum(amounts)
                assert p == x * amounts[i] // sum(amounts) or p * sum(amounts) > x * amounts[i]
            got = [g + p for g, p in zip(got, parts)]
            total += x
    return got, total


def received(c: Chain, addr: str, n: int) -> list[int]:
    store = c.ledger.state.storage
    return [store.get((addr, POOL_SLICE_ROWS["received"] + i.to_bytes(8, "big")), 0)
            for i in range(n)]


def pay_due(c: PoolChain, loan: str, late: bool = False):
    """Alice pays the next instalment on its due date (or past the tolerance, late)."""
    v = loan_view(c.ledger, loan)
    nxt = v["next_due"]
    due = nxt["due"]
    at = due + (OFFER_TERMS["tolerance_days"] + 1) * DAY if late else due
    c.block(at=max(c.time + 1, at))                    # the deadline's tick, if any
    owed = loan_view(c.ledger, loan)
    amount = owed["amount_due"] if owed["amount_due"] else owed["next_due"]["amount"]
    c.block(c.tx("alice", "repay", loan=loan, amount=amount), at=c.time + 60)
    return amount


# --- the loan filled by four lenders ---------------------------------------------------

def test_four_unequal_slices_fund_the_loan_and_every_repayment_is_split_to_the_unit():
    c = PoolChain()
    offer, app = setup(c, fee_bps=150)
    before = {n: c.balance(n) for n in LENDERS}
    fees0 = dict(c.paid)
    p = fill(c, offer, app)
    assert p["status"] == "funded" and p["filled"] == AMOUNT and p["left"] == 0
    loan = p["loan"]
    rec = c.ledger.state.loans.get(loan)
    # the pool is the loan's lender, and the records say so
    assert rec["lender"] == p["pool"] == rec["pool"]
    assert c.ledger.state.applications.get(app)["pool"] == p["pool"]
    offer_rec = c.ledger.state.offers.get(offer)
    assert offer_rec["pooled"] == AMOUNT and offer_rec["pooled_loans"] == 1
    assert offer_rec["available"] == 1          # the offer's escrow is not used
    assert loan_view(c.ledger, loan)["terms"]["lender"] == p["pool"]
    for k in range(6):
        pay_due(c, loan, late=(k == 2))
        c.advance(60)                               # the pool's distribution: a duty
        assert conserved(c)
    late = [e for e in c.log if e["name"] == "instalment_late"]
    assert len(late) == 1 and late[0]["values"][0] == 3 and late[0]["values"][1] > 0
    assert loan_view(c.ledger, loan)["status"] == "repaid"
    c.advance(60)
    amounts = [a for _, a in SLICES]
    want, total = replay(c, p["pool"], amounts)
    got = received(c, p["pool"], 4)
    assert got == want
    fee = AMOUNT * 150 // 10_000
    assert sum(got) == total == loan_view(c.ledger, loan)["terms"]["paid"] + fee
    assert c.ledger.balance(p["pool"]) == 0
    # each lender's balance: its slice back and its receipts, less its fees
    for (name, amount), r in zip(SLICES, got):
        spent = c.paid[name] - fees0[name]
        assert c.balance(name) == before[name] - amount + r - spent
    assert pools.pool_view(c.ledger, app)["distributed"] == total


def test_the_origination_fee_is_split_too():
    c = PoolChain()
    offer, app = setup(c, fee_bps=200)
    p = fill(c, offer, app)
    assert p["undistributed"] == AMOUNT * 200 // 10_000
    c.advance(60)
    got = received(c, p["pool"], 4)
    assert sum(got) == 2_000 and got == replay(c, p["pool"], [a for _, a in SLICES])[0]


def test_a_single_slice_of_the_whole_amount_funds_the_loan_at_once():
    c = PoolChain()
    offer, app = setup(c)
    p = fill(c, offer, app, (("lead", AMOUNT),))
    assert p["status"] == "funded" and len(p["slices"]) == 1
    assert c.balance("alice") > 10_000_000


def test_a_lender_tops_up_its_own_slice_and_takes_no_new_place():
    c = PoolChain()
    offer, app = setup(c)
    p = fill(c, offer, app, (("lead", 10_000), ("l2", 10_000), ("lead", 5_000)))
    assert [(s["lender"], s["amount"]) for s in p["slices"]] == [
        (c.addr("lead"), 15_000), (c.addr("l2"), 10_000)]
    assert p["filled"] == 25_000 and p["status"] == "open"


# --- expiry and withdrawal ---------------------------------------------------------------

def test_not_full_in_14_days_the_pool_expires_and_refunds_every_slice():
    c = PoolChain()
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 30_000), ("l2", 20_000)))
    lead, l2 = c.balance("lead"), c.balance("l2")
    p = pools.pool_view(c.ledger, app)
    assert p["expires"] == p["created"] + pools.SHARE_DAYS * DAY
    c.block(at=p["expires"] - 120)
    assert pools.pool_view(c.ledger, app)["status"] == "open"
    r = c.try_do("l3", "fund_share", application=app, offer=offer, amount=10_000)
    assert r.ok                                     # still open, a minute before
    l3 = c.balance("l3")
    c.block(at=p["expires"])
    p = pools.pool_view(c.ledger, app)
    assert p["status"] == "expired" and c.ledger.balance(p["pool"]) == 0
    assert c.balance("lead") == lead + 30_000 and c.balance("l2") == l2 + 20_000
    assert c.balance("l3") == l3 + 10_000
    assert any(e["name"] == "expired" and e["contract"] == p["pool"] for e in c.log)
    assert c.ledger.state.applications.get(app)["status"] == "open"
    assert conserved(c)
    # after the expiry, a slice on the old pool is refused; the lead may start a new one
    r = c.try_do("l2", "fund_share", application=app, offer=offer, amount=10_000)
    assert not r.ok and "first slice" in r.error
    fill(c, offer, app, (("lead", 50_000), ("l2", 50_000)))
    assert pools.pool_view(c.ledger, app)["status"] == "funded"


def test_withdrawing_the_application_refunds_every_slice():
    c = PoolChain()
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 30_000), ("l2", 20_000), ("l3", 5_000)))
    held = {n: c.balance(n) for n in ("lead", "l2", "l3")}
    c.do("alice", "withdraw_application", application=app)
    p = pools.pool_view(c.ledger, app)
    assert p["status"] == "withdrawn" and c.ledger.balance(p["pool"]) == 0
    assert [c.balance(n) - held[n] for n in ("lead", "l2", "l3")] == [30_000, 20_000, 5_000]
    assert c.ledger.state.applications.get(app)["status"] == "withdrawn"
    c.block(at=p["expires"] + DAY)                  # no expiry after it: nothing left
    assert pools.pool_view(c.ledger, app)["status"] == "withdrawn"
    assert conserved(c)


def test_the_lead_withdrawing_its_offer_stops_new_pools_not_one_already_filling():
    c = PoolChain()
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 30_000), ("l2", 20_000)))
    c.do("lead", "withdraw_offer", offer=offer)
    p = fill(c, offer, app, (("l3", 50_000),))
    assert p["status"] == "funded"
    c2 = PoolChain()
    offer2, app2 = setup(c2)
    c2.do("lead", "withdraw_offer", offer=offer2)
    r = c2.try_do("lead", "fund_share", application=app2, offer=offer2, amount=50_000)
    assert not r.ok and "offer is withdrawn" in r.error


def test_fund_and_accept_offer_are_refused_while_a_pool_fills_the_application():
    c = PoolChain()
    offer, app = setup(c)
    c.do("bob", "register_lender", profile_hash=h32("bob"))
    whole = c.do("bob", "publish_offer", amount=AMOUNT, **OFFER_TERMS).id
    fill(c, offer, app, (("lead", 30_000),))
    r = c.try_do("bob", "fund", application=app, offer=whole, accept=[])
    assert not r.ok and "being filled by a pool" in r.error
    r = c.try_do("alice", "accept_offer", application=app, offer=whole)
    assert not r.ok and "being filled by a pool" in r.error


# --- default, sale, recovery ----------------------------------------------------------------

def defaulted(c: PoolChain, car: int = 300_000):
    offer, app = setup(c, car=car, collateral_bps=5_000)
    p = fill(c, offer, app, SLICES[:3] + (("l4", AMOUNT - 13_337 - 21_111 - 29_000),))
    loan = p["loan"]
    for _ in range(40):
        v = loan_view(c.ledger, loan)
        due = v["instalments"][0]["due"] if v["instalments"] else v["next_due"]["due"]
        c.block(at=max(c.time + DAY, due + OFFER_TERMS["default_days"] * DAY))
        if loan_view(c.ledger, loan)["status"] == "defaulted":
            return p, loan, sale_id(loan, f"{c.addr('alice')}/car")
    raise AssertionError("no default")


def test_a_default_sale_recovery_is_split_pro_rata():
    c = PoolChain()
    p, loan, sid = defaulted(c)
    sale = c.ledger.state.sales.get(sid)
    assert sale["lender"] == p["pool"]
    claim = loan_view(c.ledger, loan)["payoff"]
    c.do("bob", "bid", sale=sid, amount=300_000)
    c.block(at=sale["closes"])
    c.do("bob", "settle_sale", sale=sid)
    c.advance(60)
    assert loan_view(c.ledger, loan)["status"] == "settled"
    amounts = [s["amount"] for s in p["slices"]]
    want, total = replay(c, p["pool"], amounts)
    assert total == claim and received(c, p["pool"], 4) == want
    assert conserved(c)


def test_any_pool_lender_may_take_unsold_collateral_at_its_value_and_bids_at_least_it():
    c = PoolChain()
    p, loan, sid = defaulted(c)
    r = c.try_do("l3", "bid", sale=sid, amount=150_000)     # the reserve, not the value
    assert not r.ok and "lender bids at least the asset's value 300000" in r.error
    c.block(at=c.ledger.state.sales.get(sid)["closes"])
    c.do("bob", "settle_sale", sale=sid)
    r = c.try_do("bob", "take_collateral", sale=sid)
    assert not r.ok and "pool's lenders" in r.error
    claim = loan_view(c.ledger, loan)["payoff"]
    l3 = c.balance("l3")
    res = c.block(c.tx("l3", "take_collateral", sale=sid))
    assert res.receipts[0].ok
    c.advance(60)
    assert c.ledger.state.assets.get(f"{c.addr('alice')}/car")["owner"] == c.addr("l3")
    got = received(c, p["pool"], 4)
    assert sum(got) == claim
    assert c.balance("l3") == l3 - 300_000 + got[2] - res.receipts[0].fee
    assert conserved(c)


def test_a_shared_loan_cannot_be_written_off_or_restructured():
    c = PoolChain()
    p, loan, _ = defaulted(c)
    for who in ("lead", "l2"):
        r = c.try_do(who, "write_off", loan=loan, reason="gone")
        assert not r.ok and "cannot be written off" in r.error
        assert "pools.SHARED_DECISIONS" in r.error
    c2 = PoolChain()
    offer, app = setup(c2)
    loan2 = fill(c2, offer, app)["loan"]
    r = c2.try_do("alice", "propose_restructure", loan=loan2, term=12)
    assert not r.ok and "cannot be restructured" in r.error


# --- the loan book ----------------------------------------------------------------------------

def test_each_pool_lender_s_book_shows_its_share_and_the_network_counts_the_loan_once():
    c = PoolChain()
    offer, app = setup(c)
    p = fill(c, offer, app)
    pay_due(c, p["loan"])
    c.advance(60)
    books = Books()
    _, net, _ = books.get(c.ledger)
    assert net["loans"] == 1 and net["lent"] == AMOUNT
    out = loan_view(c.ledger, p["loan"])["principal_outstanding"]
    assert net["outstanding"] == out
    got = received(c, p["pool"], 4)
    total_out = 0
    for (name, amount), r in zip(SLICES, got):
        _, book, _ = books.get(c.ledger, c.addr(name))
        assert book["loans"] == 1 and book["lent"] == amount
        assert book["outstanding"] == out * amount // AMOUNT
        assert book["received"] == r
        (share,) = book["shares"]
        assert share["loan"] == p["loan"] and share["amount"] == amount
        assert share["received"] == r
        total_out += book["outstanding"]
    assert out - 4 < total_out <= out                 # each share rounded down
    _, pool_book, _ = books.get(c.ledger, p["pool"])
    assert pool_book["loans"] == 1                     # the pool, as the loan's lender


# --- the property: random slices and payments -----------------------------------------------

@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, AMOUNT - 1), min_size=0, max_size=3, unique=True),
       payments=st.lists(st.integers(1, 40_000), min_size=1, max_size=5),
       fee_bps=st.sampled_from([0, 37, 100]))
def test_property_random_slices_and_payments_split_exactly_and_conserve_money(
        cuts, payments, fee_bps):
    c = PoolChain()
    offer, app = setup(c, fee_bps=fee_bps)
    bounds = [0, *sorted(cuts), AMOUNT]
    amounts = [b - a for a, b in zip(bounds, bounds[1:])]
    # a new slice is at least AMOUNT / 20 (or all that is left): merge smaller cuts
    least = AMOUNT // pools.MAX_SLICES
    merged: list[int] = []
    for a in amounts:
        if merged and (a < least or merged[-1] < least):
            merged[-1] += a
        else:
            merged.append(a)
    names = LENDERS[:len(merged)]
    p = fill(c, offer, app, list(zip(names, merged)))
    assert p["status"] == "funded"
    for amount in payments:
        left = loan_view(c.ledger, p["loan"])["payoff"]
        if not left:
            break
        c.block(c.tx("alice", "repay", loan=p["loan"], amount=min(amount, left)),
                at=c.time + 3 * DAY)
        assert conserved(c)
    c.advance(60)
    want, total = replay(c, p["pool"], merged)
    got = received(c, p["pool"], len(merged))
    assert got == want and sum(got) == total
    assert total == loan_view(c.ledger, p["loan"])["terms"]["paid"] + AMOUNT * fee_bps // 10_000
    assert c.ledger.balance(p["pool"]) == 0
    assert conserved(c)


# --- attacks ------------------------------------------------------------------------------------

def test_a_zero_balance_key_cannot_slice_and_a_poor_lender_is_refused_whole():
    c = PoolChain(balances={**{n: 10_000_000 for n in (*LENDERS, "alice", "bob")},
                            "mallory": 0})
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 30_000),))
    r = c.try_do("mallory", "fund_share", application=app, offer=offer, amount=10_000)
    assert not r.ok and not r.nonce_used              # cannot even pay the fee
    c.do("bob", "transfer", to=c.addr("mallory"), amount=5_000)
    c.do("mallory", "register_lender", profile_hash=h32("m"))
    r = c.try_do("mallory", "fund_share", application=app, offer=offer, amount=10_000)
    assert not r.ok and "balance" in r.error
    assert pools.pool_view(c.ledger, app)["filled"] == 30_000
    assert conserved(c)


def test_a_stranger_cannot_slice_with_another_offer_nor_start_a_pool_on_someone_else_s():
    c = PoolChain()
    offer, app = setup(c)
    c.do("mallory", "register_lender", profile_hash=h32("m"))
    own = c.do("mallory", "publish_offer", amount=1, **{**OFFER_TERMS, "tiers": [
        [300, 2400, 200_000]]}).id
    # the first slice must come from the offer's lender
    r = c.try_do("mallory", "fund_share", application=app, offer=offer, amount=50_000)
    assert not r.ok and "offer's lender" in r.error
    fill(c, offer, app, (("lead", 30_000),))
    # a slice on a different offer (her own) of a pool that is filling
    r = c.try_do("mallory", "fund_share", application=app, offer=own, amount=10_000)
    assert not r.ok and "must name that offer" in r.error
    # an unregistered key
    r = c.try_do("bob", "fund_share", application=app, offer=offer, amount=10_000)
    assert not r.ok and "registered lender" in r.error
    # the borrower herself, registered as a lender
    c.do("alice", "register_lender", profile_hash=h32("a"))
    r = c.try_do("alice", "fund_share", application=app, offer=offer, amount=10_000)
    assert not r.ok and "your own application" in r.error
    assert pools.pool_view(c.ledger, app)["filled"] == 30_000


def test_overfilling_is_refused_naming_what_is_left():
    c = PoolChain()
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 60_000), ("l2", 30_000)))
    r = c.try_do("l3", "fund_share", application=app, offer=offer, amount=10_001)
    assert not r.ok and "more than the 10000 left to fill (of 100000)" in r.error
    r = c.try_do("lead", "fund_share", application=app, offer=offer, amount=10_001)
    assert not r.ok and "10000 left" in r.error           # a top-up, too
    r = c.try_do("l3", "fund_share", application=app, offer=offer, amount=1_000)
    assert not r.ok and "at least 5000" in r.error      # a new slice: a twentieth at least
    c.do("l3", "fund_share", application=app, offer=offer, amount=10_000)
    p = pools.pool_view(c.ledger, app)
    assert p["filled"] == AMOUNT and p["status"] == "funded"
    assert conserved(c)


def test_a_lender_cannot_take_more_than_its_share():
    c = PoolChain()
    offer, app = setup(c)
    p = fill(c, offer, app)
    pay_due(c, p["loan"])
    # driving the pool agreement directly: refund, distribute to itself, lend elsewhere
    for args in ([b"refund"], [b"distribute"], [b"lend", c.addr("l2").encode()],
                 [b"add"]):
        r = c.try_do("l2", "call", contract=p["pool"], args=args, amount=0, gas=50_000)
        assert not r.ok and "pool contracts are driven by" in r.error
    # or the loan's: repay paid to itself
    r = c.try_do("l2", "call", contract=p["loan"], args=[b"write_off"], amount=0, gas=50_000)
    assert not r.ok
    # a slice into a funded pool
    r = c.try_do("l2", "fund_share", application=app, offer=offer, amount=1)
    assert not r.ok and "funded" in r.error
    c.advance(60)
    want, _ = replay(c, p["pool"], [a for _, a in SLICES])
    assert received(c, p["pool"], 4) == want


def test_a_new_slice_below_a_twentieth_is_refused_so_slices_always_fill_the_pool():
    c = PoolChain()
    offer, app = setup(c)
    r = c.try_do("lead", "fund_share", application=app, offer=offer, amount=4_999)
    assert not r.ok and "at least 5000" in r.error
    fill(c, offer, app, (("lead", 5_000),))
    r = c.try_do("lead", "fund_share", application=app, offer=offer, amount=1)
    assert r.ok                                   # a top-up of one's own slice: any size


def test_21_slices_never_happen_20_of_the_least_fill_the_pool():
    names = tuple(f"lender{i}" for i in range(21))
    c = PoolChain(names=(*names, "alice", "lead"))
    offer, app = setup(c, lenders=("lead", *names))
    least = -(-AMOUNT // pools.MAX_SLICES)
    fill(c, offer, app, [("lead", least)] + [(n, least) for n in names[:18]])
    p = pools.pool_view(c.ledger, app)
    assert len(p["slices"]) == 19 and p["left"] == least
    r = c.try_do(names[18], "fund_share", application=app, offer=offer, amount=least - 1)
    assert not r.ok and f"at least {least}" in r.error
    c.do(names[18], "fund_share", application=app, offer=offer, amount=least)
    p = pools.pool_view(c.ledger, app)
    assert len(p["slices"]) == pools.MAX_SLICES and p["status"] == "funded"
    r = c.try_do(names[19], "fund_share", application=app, offer=offer, amount=1)
    assert not r.ok and "funded" in r.error
    c.advance(60)
    assert conserved(c)


# --- gas -----------------------------------------------------------------------------------------

def test_gas_of_the_pool_agreement(monkeypatch):
    """Each method's gas with 20 slices, the most: what POOL_GAS and the comment in
    ledger/pools.py rest on."""
    seen: list = []
    real = ledger_mod.execute

    def measured(program, host, args, limit):
        out = real(program, host, args, limit)
        if host.ledger.state.pools.get(host._addr) is not None:
            seen.append((args[0].decode(), out.gas_used))
        return out
    monkeypatch.setattr(ledger_mod, "execute", measured)
    names = tuple(f"lender{i}" for i in range(20))
    c = PoolChain(names=(*names, "alice", "lead"))
    offer, app = setup(c, lenders=("lead", *names), fee_bps=100)
    least = -(-AMOUNT // pools.MAX_SLICES)
    fill(c, offer, app, [("lead", least)] + [(n, least) for n in names[:18]])
    c.do("lead", "fund_share", application=app, offer=offer, amount=1)          # top-up
    c.do(names[18], "fund_share", application=app, offer=offer, amount=least - 1)
    c.advance(60)                                                                # the fee
    most = {}
    for method, gas in seen:
        most[method] = max(most.get(method, 0), gas)
    assert set(most) >= {"init", "add", "lend", "tick"}
    for method in ("init", "add", "lend"):
        assert most[method] * 2 < pools.POOL_GAS          # "over twice the most"
    assert most["tick"] < ledger_mod.TICK_GAS
    print(most)
    # the most a distribution walks: a residue of 19 units among 20 unequal slices
    from lendnet.contracts.vm import Program
    from lendnet.ledger.host import ContractHost
    led, addr = c.ledger, pools.pool_view(c.ledger, app)["pool"]
    program = Program.load(led.state.code.get(led.state.contracts.get(addr)["code"]))
    mark = led.state.mark()
    led.move(c.addr("alice"), addr, 99_999)
    out = real(program, ContractHost(led, addr, "", 0), [b"distribute"], 10**6)
    assert [e for e in led.events if e["name"] == "distributed"][-1]["values"] == [99_999, 19]
    led.state.rollback(mark)
    assert out.gas_used < 4_000
    print("distribute, residue 19:", out.gas_used)
    # refund of 20 slices, on a second application
    c2 = PoolChain(names=(*names, "alice", "lead"))
    offer2, app2 = setup(c2, lenders=("lead", *names))
    seen.clear()
    fill(c2, offer2, app2, [("lead", least)] + [(n, least) for n in names[:18]])
    c2.do("alice", "withdraw_application", application=app2)
    refund = max(g for m, g in seen if m == "refund")      # 19 slices: 20 always fill
    assert refund * 2 < pools.POOL_GAS
    print("refund", refund)


# --- the CLI --------------------------------------------------------------------------------------



def test_cli_lender_fund_share_signs_a_slice_and_refuses_accept(wallet):
    import json

    from lendnet.ledger import tx as txm
    app, offer = "ab" * 32, "cd" * 32
    out = wallet / "tx.json"
    common = ("--wallet", "w", "--offline", "--nonce", "0", "--chain", "c", "--out", str(out))
    r = _cli("lender", "fund", "--application", app, "--offer", offer, "--share", "250.75",
             *common, "--json")
    assert r.exit_code == 0, r.output
    body = txm.parse(bytes.fromhex(json.loads(out.read_text())["tx"])).body
    assert body["kind"] == "fund_share"
    assert (body["application"], body["offer"], body["amount"]) == (app, offer, 25_075)
    r = _cli("lender", "fund", "--application", app, "--offer", offer, "--share", "1",
             "--accept", f"ln{'0' * 40}/car=10", *common)
    assert r.exit_code == 2 and "--accept is for a whole funding" in r.output
    r = _cli("lender", "fund", "--application", app, "--offer", offer, "--share", "0",
             *common)
    assert r.exit_code == 2 and "--share" in r.output


def test_cli_lender_pool_and_portfolio_show_the_slices_and_the_share(monkeypatch):
    import json

    from lendnet.cli import lending as cli_lending
    from lendnet.node.daemon.api import jsonable
    c = PoolChain()
    offer, app = setup(c)
    p = fill(c, offer, app)
    pay_due(c, p["loan"])
    c.advance(60)
    books = Books()

    def fake_get(node_url, path):
        if path.startswith("/v1/pools/"):
            return jsonable({"height": c.ledger.height, **pools.pool_view(c.ledger, app)})
        if path.startswith("/v1/portfolio"):
            lender = path.partition("lender=")[2]
            return jsonable({"lender": lender, **books.get(c.ledger, lender)[1]})
        raise AssertionError(path)
    monkeypatch.setattr(cli_lending, "get", fake_get)
    r = _cli("lender", "pool", app, "--node", "http://x", "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.output)
    assert shown["status"] == "funded" and len(shown["slices"]) == 4
    r = _cli("lender", "pool", app, "--node", "http://x")
    assert r.exit_code == 0 and "funded" in r.output and "133.37" in r.output
    r = _cli("lender", "portfolio", "--address", c.addr("l2"), "--node", "http://x")
    assert r.exit_code == 0, r.output
    assert f"shared loan {p['loan']}" in r.output and "211.11 LND of 1,000.00 LND" in r.output


# --- the agreement guards itself (defence in depth: the ledger checks first) -------------------

def test_the_pool_agreement_refuses_what_the_ledger_would_never_ask():
    from lendnet.contracts.vm import ContractError
    c = PoolChain()
    offer, app = setup(c)
    fill(c, offer, app, (("lead", 60_000),))
    addr = pools.pool_view(c.ledger, app)["pool"]
    led = c.ledger

    def refused(args, caller="l2", value=0, why=""):
        mark = led.state.mark()
        try:
            if value:
                led.move(c.addr(caller), addr, value)
            with pytest.raises(ContractError, match=why):
                led.run_contract(addr, args, c.addr(caller), value, pools.POOL_GAS)
        finally:
            led.state.rollback(mark)
    refused([b"add"], value=40_001, why="larger than what is left")
    refused([b"add"], value=4_999, why="at least the target / 20")
    refused([b"lend", c.addr("mallory").encode()], why="not full")
    refused([b"distribute"], why="has not lent")
    refused([b"init", 1, 1], why="already initialised")
    refused([b"steal"], why="unknown method")
    p = fill(c, offer, app, (("l2", 40_000),))
    assert p["status"] == "funded"
    refused([b"refund"], why="not open")
    refused([b"add"], value=1, why="not open for slices")
    refused([b"lend", c.addr("mallory").encode()], why="not open")
