"""Group (joint-liability) loans (ledger/groups.py, contracts/agreements/group.lasm): a
group of 3 to 10 borrowers forms, each member borrows individually through it, fellow
members may cover a member's loan, the group is told of lates and defaults, a group in
arrears takes no new loans, and the group's record feeds every member's score."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.contracts.agreements import group_code
from lendnet.contracts.vm import Program, execute
from lendnet.ledger import groups, keys, lending, score as scoring
from lendnet.ledger.lending import credit_score, loan_view
from lendnet.ledger.tx import TxError, build, sign

from .chain import APPLY_LIMITS, CHAIN, DAY, OFFER_TERMS, Chain, h32

FIVE = ("ana", "ben", "cai", "dee", "eve")
APPLY = dict(purpose="a stall", term=6, period="monthly", method="annuity",
             product="business", grace=0, docs_hash=h32("p"), **APPLY_LIMITS)


def chain(names=FIVE, extra=()) -> Chain:
    c = Chain(names=("lender", *names, *extra, "stranger"),
              balances={"lender": 50_000_000, "stranger": 0,
                        **{n: 10_000_000 for n in (*names, *extra)}})
    c.do("lender", "register_lender", profile_hash=h32("lender"))
    for n in (*names, *extra):
        c.do(n, "register_borrower", profile_hash=h32(n), docs_hash=h32("docs"))
        c.attest(n)
    return c


def offer(c: Chain) -> str:
    return c.do("lender", "publish_offer", amount=10_000_000, **OFFER_TERMS).id


def create_tx(c: Chain, who: str, members, savings_bps: int = 1_000,
              title: str = "market women"):
    """A signed group_create (its field `name` is Chain.tx's first parameter's name)."""
    kp = c.keys[who]
    body = build(kp, CHAIN, "group_create", c.nonces[who], name=title,
                 members=[c.addr(n) if n in c.keys else n for n in members],
                 savings_bps=savings_bps)
    c.nonces[who] += 1
    return sign(body, [kp])


def create(c: Chain, who: str, members, **kw):
    """Apply a group_create; return (its receipt, the group's address)."""
    t = create_tx(c, who, members, **kw)
    r = c.block(t, strict=False).receipts[0]
    if not r.nonce_used:
        c.nonces[who] -= 1
    return r, keys.derive_address(b"group", t.hash)


def form(c: Chain, names=FIVE, savings_bps: int = 1_000) -> str:
    """Create a group led by names[0] and have every other member join: active."""
    r, group = create(c, names[0], names, savings_bps=savings_bps)
    assert r.ok, r.error
    for n in names[1:]:
        c.do(n, "group_join", group=group)
    return group


def borrow(c: Chain, group: str, name: str, off: str, amount: int = 100_000) -> str:
    app = c.do(name, "group_apply", group=group, amount=amount, **APPLY).id
    c.do("lender", "fund", application=app, offer=off, accept=[])
    return c.ledger.state.applications.get(app)["loan"]


def keep_current(c: Chain, loans: dict, names) -> None:
    """Each named member pays its running instalment the day before it falls due."""
    for n in names:
        v = loan_view(c.ledger, loans[n])
        if v["status"] == "active" and v["due_time"] and v["due_time"] <= c.time + DAY:
            if v["amount_due"]:
                c.do(n, "repay", loan=loans[n], amount=v["amount_due"])


def until_late(c: Chain, loans: dict, payers) -> list:
    """Advance a day at a time, the payers paying, until a member_late is emitted."""
    seen: list = []
    while not any(e["name"] == "member_late" for e in seen):
        keep_current(c, loans, payers)
        seen += c.advance(DAY).events
    return seen


def refused(c: Chain, name: str, kind: str, **fields) -> str:
    r = c.try_do(name, kind, **fields)
    assert not r.ok, f"{kind} went through"
    return r.error


def conserved(c: Chain) -> bool:
    return c.ledger.total_money() == c.ledger.supply


def view(c: Chain, group: str) -> dict:
    return groups.group_view(c.ledger, group)


def events(c: Chain, result, name: str) -> list:
    return [e for e in result.events if e["name"] == name]


def to_default(c: Chain, loan: str, loans: dict | None = None, payers=()) -> list:
    """Let chain time run, a day a block, the payers paying, until the loan defaults;
    return every event."""
    seen: list = []
    for _ in range(120):
        if loans:
            keep_current(c, loans, payers)
        r = c.advance(DAY)
        seen += r.events
        if loan_view(c.ledger, loan)["status"] == "defaulted":
            return seen
    raise AssertionError("the loan did not default")


# --- the scenario ----------------------------------------------------------------

def test_a_group_of_five_covers_a_member_twice_then_the_member_defaults():
    c = chain()
    off = offer(c)
    g = form(c)
    assert view(c, g)["status"] == "active" and view(c, g)["savings_bps"] == 1_000
    loans = {n: borrow(c, g, n, off) for n in FIVE}
    before = {n: credit_score(c.ledger, c.addr(n))["score"] for n in FIVE}
    eve = loans["eve"]
    # Eve misses her first instalment: the group is told, and it is in arrears.
    payers = FIVE[:4]
    seen = until_late(c, loans, payers)
    late = [e for e in seen if e["name"] == "member_late"][0]
    assert late["contract"] == g
    assert late["values"][:3] == [c.addr("eve").encode(), eve.encode(), 1]
    assert late["values"][3] > 0                     # what the instalment owes
    assert view(c, g)["in_arrears"] and view(c, g)["lates"] == 1
    # Ana covers Eve's overdue instalment: Eve is up to date again.
    owed = loan_view(c.ledger, eve)["amount_due"]
    ana0 = c.balance("ana")
    r = c.block(c.tx("ana", "group_cover", loan=eve, amount=owed))
    assert r.receipts[0].ok, r.receipts[0].error
    assert c.balance("ana") == ana0 - owed - r.receipts[0].fee
    assert loan_view(c.ledger, eve)["days_past_due"] == 0
    assert not view(c, g)["in_arrears"]
    # Eve misses the next; Ben covers it.
    until_late(c, loans, payers)
    owed2 = loan_view(c.ledger, eve)["amount_due"]
    c.do("ben", "group_cover", loan=eve, amount=owed2)
    v = view(c, g)
    assert v["covers"] == 2 and v["covered_amount"] == owed + owed2
    rows = {m["address"]: m for m in v["members"]}
    assert rows[c.addr("eve")]["covers_received"] == 2
    assert rows[c.addr("eve")]["owed_within_group"] == {c.addr("ana"): owed,
                                                          c.addr("ben"): owed2}
    assert rows[c.addr("ana")]["covers_given"] == 1
    # Then nobody pays Eve's loan and it defaults: the group records it.
    seen = to_default(c, eve, loans, payers)
    assert [e["values"] for e in seen if e["name"] == "member_defaulted"] == [
        [c.addr("eve").encode(), eve.encode()]]
    v = view(c, g)
    assert v["defaults"] == 1 and v["in_arrears"]
    assert any("is defaulted with its claim unpaid" in a for a in v["arrears"])
    # Every fellow member's score carries Eve's default; the coverers earned a little.
    for n in ("ana", "ben", "cai", "dee"):
        s = credit_score(c.ledger, c.addr(n))
        credit = 5 if n in ("ana", "ben") else 0
        assert s["components"]["group"] == scoring.FELLOW_DEFAULT_POINTS + credit
    # The group takes no new loans while in arrears (the others have loans running:
    # let Cai repay his and apply again).
    c.do("cai", "repay", loan=loans["cai"], amount=loan_view(c.ledger, loans["cai"])["payoff"])
    err = refused(c, "cai", "group_apply", group=g, amount=50_000, **APPLY)
    assert "in arrears" in err and c.addr("eve") in err and eve in err
    assert conserved(c)
    assert before


def test_fund_and_accept_offer_are_refused_while_the_group_is_in_arrears():
    c = chain()
    off = offer(c)
    g = form(c)
    eve = borrow(c, g, "eve", off)
    app = c.do("ana", "group_apply", group=g, amount=50_000, **APPLY).id
    while loan_view(c.ledger, eve)["days_past_due"] == 0:
        c.advance(DAY)
    err = refused(c, "lender", "fund", application=app, offer=off, accept=[])
    assert "in arrears" in err and c.addr("eve") in err and eve in err
    err = refused(c, "ana", "accept_offer", application=app, offer=off)
    assert "in arrears" in err
    # Eve pays up: the group may borrow again.
    c.do("eve", "repay", loan=eve, amount=loan_view(c.ledger, eve)["amount_due"])
    c.do("ana", "accept_offer", application=app, offer=off)
    assert c.ledger.state.applications.get(app)["status"] == "funded"
    assert conserved(c)


def test_gas_of_the_group_agreement():
    c = chain()
    code = group_code()
    assert Program.load(code)
    r = c.block(c.tx("ana", "group_create", name="g", members=[c.addr(n) for n in FIVE],
                     savings_bps=0))
    assert r.receipts[0].gas < 3_000 + groups.INIT_GAS
    assert execute is not None and sign is not None and build is not None and CHAIN
    assert TxError and lending and pytest and given and settings and st and HealthCheck
