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


def form(c: Chain, names=FIVE, savings_bps: int = 0) -> str:
    """Create a group led by names[0] and have every other member join: active."""
    r, group = create(c, names[0], names, savings_bps=savings_bps)
    assert r.ok, r.error
    for n in names[1:]:
        c.do(n, "group_join", group=group)
    return group


def save_for(c: Chain, name: str, app: str) -> None:
    """Pledge the group's compulsory savings to the application, from a savings product
    the lender runs (made on first use)."""
    rec = c.ledger.state.applications.get(app)
    need = -(-rec["amount"] * c.ledger.state.groups.get(rec["group"])["savings_bps"] // 10_000)
    if not need:
        return
    if not hasattr(c, "product"):
        t = c.do("lender", "savings_product", name="group savings", rate_bps=300,
                 reserve=100_000)
        c.product = keys.derive_address(b"savings", t.hash)
    c.do(name, "savings_deposit", product=c.product, amount=need)
    c.do(name, "savings_pledge", product=c.product, to=app, amount=need)


def borrow(c: Chain, group: str, name: str, off: str, amount: int = 100_000) -> str:
    app = c.do(name, "group_apply", group=group, amount=amount, **APPLY).id
    save_for(c, name, app)
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
    g = form(c, savings_bps=1_000)         # each loan needs 10 % of it saved and pledged
    assert view(c, g)["status"] == "active" and view(c, g)["savings_bps"] == 1_000
    loans = {n: borrow(c, g, n, off) for n in FIVE}
    before = {n: credit_score(c.ledger, c.addr(n))["score"] for n in FIVE}
    eve = loans["eve"]
    # Eve misses her first instalment: the group is told, and it is in arrears.
    payers = FIVE[:4]
    seen = until_late(c, loans, payers)
    late = [e for e in seen if e["name"] == "member_late"][0]
    assert late["contract"] == g
    # It was told the instalment was coming due first (to every member, by the stream).
    due = [e["values"] for e in seen if e["name"] == "member_due"
           and e["values"][1] == eve.encode()]
    assert due and due[0][2] == 1 and due[0][3] > 0
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


def test_a_group_loan_needs_the_groups_compulsory_savings_pledged():
    c = chain()
    off = offer(c)
    g = form(c, savings_bps=1_000)
    app = c.do("ana", "group_apply", group=g, amount=100_000, **APPLY).id
    why = refused(c, "lender", "fund", application=app, offer=off, accept=[])
    assert "compulsory savings of 1000 bps" in why and "10000, and 0 is pledged" in why
    save_for(c, "ana", app)
    c.do("lender", "fund", application=app, offer=off, accept=[])
    assert c.ledger.state.applications.get(app)["status"] == "funded"


def test_a_member_of_a_group_in_arrears_cannot_borrow_alone_either():
    c = chain()
    off = offer(c)
    g = form(c, savings_bps=0)
    loans = {n: borrow(c, g, n, off) for n in FIVE[:2]}
    until_late(c, loans, FIVE[:1])              # ben's loan falls past due
    app = c.do("cai", "apply", amount=50_000, **APPLY).id
    assert "is in arrears" in refused(c, "lender", "fund", application=app, offer=off,
                                      accept=[])


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


# --- forming and joining -------------------------------------------------------------------

def test_a_group_forms_when_every_listed_member_has_joined():
    c = chain()
    r, g = create(c, "ana", FIVE, savings_bps=500)
    assert r.ok, r.error
    v = view(c, g)
    assert v["status"] == "forming" and v["leader"] == c.addr("ana") and v["joined"] == 1
    assert [m["joined"] for m in v["members"]] == [True, False, False, False, False]
    assert v["savings_bps"] == 500 and v["code"] == c.ledger.state.meta.get("group_code")
    for n in FIVE[1:4]:
        c.do(n, "group_join", group=g)
    assert view(c, g)["status"] == "forming"
    err = refused(c, "ana", "group_apply", group=g, amount=50_000, **APPLY)
    assert "not active" in err
    r = c.block(c.tx("eve", "group_join", group=g))
    assert [e["values"] for e in events(c, r, "group_active")] == [[5]]
    assert view(c, g)["status"] == "active" and view(c, g)["joined"] == 5


def test_create_refusals():
    c = chain(extra=("zed",))
    c.do("lender", "register_borrower", profile_hash=h32("x"), docs_hash=h32("d"))
    r, _ = create(c, "ana", ("ben", "cai", "dee"))
    assert "sender must be one of the members" in r.error
    r, _ = create(c, "stranger", ("stranger", "ben", "cai"))
    assert not r.ok                   # a zero-balance key cannot even pay the fee
    assert c.ledger.state.groups.rows == {}
    c2 = chain(names=("ana", "ben"), extra=())
    c2.do("lender", "transfer", to=c2.addr("stranger"), amount=100_000)
    r, _ = create(c2, "stranger", ("stranger", "ana", "ben"))
    assert "only a registered borrower can lead a group" in r.error
    # 2 and 11 members, or one listed twice, are not well-formed transactions.
    with pytest.raises(TxError, match="3 to 10"):
        create_tx(c, "ana", ("ana", "ben"))
    eleven = ["ana"] + [keys.derive_address(b"x", bytes([i])) for i in range(10)]
    with pytest.raises(TxError, match="3 to 10"):
        create_tx(c, "ana", eleven)
    with pytest.raises(TxError, match="must not repeat"):
        create_tx(c, "ana", ("ana", "ben", "ben"))
    with pytest.raises(TxError, match="savings_bps"):
        create_tx(c, "ana", ("ana", "ben", "cai"), savings_bps=5_001)


def test_ten_members_fit_and_eleven_do_not():
    ten = tuple(f"m{i}" for i in range(10))
    c = chain(names=ten)
    g = form(c, ten)
    assert view(c, g)["status"] == "active" and len(view(c, g)["members"]) == 10
    with pytest.raises(TxError, match="3 to 10"):
        create_tx(c, "m0", (*ten, "stranger"))


def test_join_refusals():
    c = chain(extra=("zed",))
    c.do("lender", "transfer", to=c.addr("stranger"), amount=100_000)
    r, g = create(c, "ana", ("ana", "ben", "cai", "stranger"))
    assert r.ok
    assert "only a member the group lists" in refused(c, "zed", "group_join", group=g)
    assert "registered borrower" in refused(c, "stranger", "group_join", group=g)
    c.do("ben", "group_join", group=g)
    assert "already joined" in refused(c, "ben", "group_join", group=g)
    assert "already joined" in refused(c, "ana", "group_join", group=g)
    other = keys.derive_address(b"group", b"nothing")
    assert "no group" in refused(c, "cai", "group_join", group=other)
    # The agreement is driven by the ledger only: a `call` to it is refused.
    assert "group contracts are driven" in refused(
        c, "ana", "call", contract=g, args=[b"join"], amount=0, gas=10_000)


def test_a_group_lapses_if_its_members_do_not_all_join_in_time():
    c = chain()
    r, g = create(c, "ana", ("ana", "ben", "cai"))
    c.do("ben", "group_join", group=g)
    c.advance(groups.FORMING_DAYS * DAY)
    assert view(c, g)["status"] == "lapsed"
    err = refused(c, "cai", "group_join", group=g)
    assert "lapsed" in err
    # Its members are free again: Ana and Ben form another group.
    g2 = form(c, ("ben", "ana", "dee"))
    assert view(c, g2)["status"] == "active"
    assert c.ledger.state.group_members.get(c.addr("ana")) == g2


def test_one_address_in_two_groups_is_refused():
    c = chain(extra=("fay", "gus"))
    g = form(c, ("ana", "ben", "cai"))
    r, _ = create(c, "dee", ("dee", "eve", "ana"))
    assert f"member {c.addr('ana')} already belongs to group {g}" in r.error
    r, _ = create(c, "ana", ("ana", "fay", "gus"))
    assert "already belongs" in r.error
    # Listed by two forming groups, an address joins one only.
    r1, g1 = create(c, "dee", ("dee", "eve", "fay"))
    r2, g2 = create(c, "gus", ("gus", "eve", "fay"))
    assert r1.ok and r2.ok
    c.do("eve", "group_join", group=g1)
    assert f"already belong to group {g1}" in refused(c, "eve", "group_join", group=g2)


def test_a_member_cannot_leave_to_dodge_the_groups_record():
    """There is no leaving: once joined, an address stays in its group (a lapsed forming
    group excepted), loans closed or not; and the group component of the score is the
    identity's, so a fresh address of the same person carries it."""
    c = chain()
    off = offer(c)
    g = form(c, ("ana", "ben", "cai"))
    ben = borrow(c, g, "ben", off)
    to_default(c, ben)
    assert credit_score(c.ledger, c.addr("ana"))["components"]["group"] == -20
    c.do("ben", "repay", loan=ben, amount=loan_view(c.ledger, ben)["payoff"])
    assert loan_view(c.ledger, ben)["status"] == "settled"
    # Every loan is closed: Ana still cannot start or join a clean group.
    r, _ = create(c, "ana", ("ana", "dee", "eve"))
    assert "already belongs" in r.error
    # A new address attested as the same person carries the group's record.
    c.do("lender", "transfer", to=c.addr("stranger"), amount=100_000)
    c.do("stranger", "register_borrower", profile_hash=h32("a2"), docs_hash=h32("d"))
    c.attest("stranger", "ana")
    assert credit_score(c.ledger, c.addr("stranger"))["components"]["group"] == -20


# --- applying and arrears ----------------------------------------------------------------

def test_apply_rules():
    c = chain(extra=("zed",))
    off = offer(c)
    g = form(c)
    err = refused(c, "zed", "group_apply", group=g, amount=50_000, **APPLY)
    assert "only a joined member" in err
    app = c.do("ana", "group_apply", group=g, amount=50_000, **APPLY).id
    rec = c.ledger.state.applications.get(app)
    assert rec["group"] == g and rec["borrower"] == c.addr("ana")
    assert rec["limits"] == {k: APPLY_LIMITS[k] for k in lending.LIMITS}
    assert "one at a time" in refused(c, "ana", "group_apply", group=g, amount=1, **APPLY)
    c.do("ana", "withdraw_application", application=app)
    app2 = c.do("ana", "group_apply", group=g, amount=60_000, **APPLY).id
    c.do("lender", "fund", application=app2, offer=off, accept=[])
    loan = c.ledger.state.applications.get(app2)["loan"]
    assert "one at a time" in refused(c, "ana", "group_apply", group=g, amount=1, **APPLY)
    r = view(c, g)["members"][0]
    assert r["loans_taken"] == 1 and r["loan"]["loan"] == loan
    c.do("ana", "repay", loan=loan, amount=loan_view(c.ledger, loan)["payoff"])
    c.do("ana", "group_apply", group=g, amount=70_000, **APPLY)
    assert conserved(c)


def test_a_group_in_arrears_cannot_apply():
    c = chain()
    off = offer(c)
    g = form(c)
    ben = borrow(c, g, "ben", off)
    while loan_view(c.ledger, ben)["days_past_due"] == 0:
        c.advance(DAY)
    err = refused(c, "ana", "group_apply", group=g, amount=50_000, **APPLY)
    assert "in arrears" in err and c.addr("ben") in err and ben in err
    # Ben cannot clear his own arrears through a fellow's cover of himself either.
    assert "cannot cover its own loan" in refused(c, "ben", "group_cover", loan=ben,
                                                  amount=1_000)


# --- covers --------------------------------------------------------------------------------

def test_cover_refusals():
    c = chain(extra=("zed", "yan", "xia", "wu"))
    off = offer(c)
    g = form(c, ("ana", "ben", "cai"))
    ben = borrow(c, g, "ben", off)
    # A loan outside the group: an individual loan, and another group's loan.
    own = c.do("zed", "apply", amount=50_000, **APPLY).id
    c.do("lender", "fund", application=own, offer=off, accept=[])
    zed = c.ledger.state.applications.get(own)["loan"]
    assert "not made through a group" in refused(c, "ana", "group_cover", loan=zed,
                                                 amount=1_000)
    g2 = form(c, ("yan", "xia", "wu"))
    xia = borrow(c, g2, "xia", off)
    assert "only a member of the loan's group" in refused(c, "ana", "group_cover", loan=xia,
                                                          amount=1_000)
    assert "only a member of the loan's group" in refused(c, "zed", "group_cover", loan=ben,
                                                          amount=1_000)
    assert "cannot cover its own loan" in refused(c, "ben", "group_cover", loan=ben,
                                                  amount=1_000)
    assert "no loan" in refused(c, "ana", "group_cover", loan=keys.derive_address(b"x", b"y"),
                                amount=1_000)
    # More than the coverer holds.
    have = c.balance("cai")
    assert "insufficient funds" in refused(c, "cai", "group_cover", loan=ben, amount=have)
    # A repaid loan owes nothing.
    c.do("ben", "repay", loan=ben, amount=loan_view(c.ledger, ben)["payoff"])
    assert "nothing is owed" in refused(c, "ana", "group_cover", loan=ben, amount=1_000)
    assert view(c, g)["covers"] == 0 and conserved(c)


def test_a_zero_balance_key_can_do_nothing():
    c = chain()
    off = offer(c)
    g = form(c)
    ben = borrow(c, g, "ben", off)
    before = c.ledger.state_root()
    for kind, fields in (("group_join", {"group": g}),
                         ("group_cover", {"loan": ben, "amount": 1}),
                         ("group_apply", {"group": g, "amount": 1, **APPLY})):
        r = c.try_do("stranger", kind, **fields)
        assert not r.ok and not r.nonce_used and "cannot pay the fee" in r.error
    r, _ = create(c, "stranger", ("stranger", "ana", "ben"))
    assert not r.ok and not r.nonce_used
    c.advance(0)
    assert view(c, g)["covers"] == 0 and before


def test_covering_ahead_or_many_times_earns_no_more_credit():
    """A borrower covering itself is refused; two members covering each other's loans
    when nothing is overdue, or one overdue instalment many times in small parts, earn
    the cover credit at most once per instalment cleared."""
    c = chain()
    off = offer(c)
    g = form(c, ("ana", "ben", "cai"))
    loans = {n: borrow(c, g, n, off) for n in ("ana", "ben")}
    for _ in range(5):                                   # nothing overdue: no credit
        c.do("ana", "group_cover", loan=loans["ben"], amount=100)
        c.do("ben", "group_cover", loan=loans["ana"], amount=100)
    for n in ("ana", "ben"):
        assert "group" not in credit_score(c.ledger, c.addr(n))["components"]
    assert view(c, g)["covers"] == 10
    # Ben falls behind; Ana pays his overdue instalment in 5 small parts: one credit.
    until_late(c, loans, ["ana"])
    due = loan_view(c.ledger, loans["ben"])["amount_due"]
    part = due // 5 + 1
    for _ in range(5):
        c.do("ana", "group_cover", loan=loans["ben"], amount=part)
    assert credit_score(c.ledger, c.addr("ana"))["components"]["group"] == 5
    # The credit is capped: COVERS_CAP.
    assert scoring.group_points({"fellow_defaults": 0, "covers": 99}) == scoring.COVERS_CAP
    assert scoring.group_points({"fellow_defaults": 99, "covers": 0}) == \
        scoring.FELLOW_DEFAULTS_CAP
    assert conserved(c)


def test_covering_a_defaulted_loan_is_a_recovery_and_the_surplus_comes_back():
    c = chain()
    off = offer(c)
    g = form(c, ("ana", "ben", "cai"))
    ben = borrow(c, g, "ben", off)
    to_default(c, ben)
    claim = loan_view(c.ledger, ben)["payoff"]
    cai0 = c.balance("cai")
    r = c.block(c.tx("cai", "group_cover", loan=ben, amount=claim + 7_000))
    assert r.receipts[0].ok, r.receipts[0].error
    assert c.balance("cai") == cai0 - claim - r.receipts[0].fee
    assert loan_view(c.ledger, ben)["status"] == "settled"
    v = view(c, g)
    assert v["covered_amount"] == claim and not v["in_arrears"]
    ben_row = [m for m in v["members"] if m["address"] == c.addr("ben")][0]
    assert ben_row["owed_within_group"] == {c.addr("cai"): claim}
    # Settling the claim cleared an overdue instalment's worth: Cai earns the credit, and
    # still carries Ben's default.
    assert credit_score(c.ledger, c.addr("cai"))["components"]["group"] == -20 + 5
    assert conserved(c)


def test_non_group_borrowers_scores_have_no_group_component():
    c = chain()
    off = offer(c)
    app = c.do("ana", "apply", amount=50_000, **APPLY).id
    c.do("lender", "fund", application=app, offer=off, accept=[])
    assert "group" not in credit_score(c.ledger, c.addr("ana"))["components"]


def test_notices_in_a_transaction_wait_for_the_groups_tick():
    """A loan's late event that arrives inside a transaction (its tick did not run) is
    queued: the group's tick passes it in, with the chain's gas, not the transaction's."""
    c = chain()
    off = offer(c)
    g = form(c, ("ana", "ben", "cai"))
    ben = borrow(c, g, "ben", off)
    rec = c.ledger.state.groups.get(g)
    groups.on_loan_event(c.ledger, ben, "instalment_late", [1, 0, 0])
    assert c.ledger.state.groups.get(g)["pending"] == {ben: {"late": 1, "instalment": 1,
                                                             "defaulted": 0, "due": None}}
    assert c.ledger.state.wakes.get(g) == c.time and rec
    r = c.advance(1)
    assert [e["values"][:3] for e in events(c, r, "member_late")] == [
        [c.addr("ben").encode(), ben.encode(), 1]]
    assert c.ledger.state.groups.get(g)["pending"] == {}


# --- conservation, with covers ------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["advance", "cover", "repay", "cover_due"]),
                         st.integers(0, 2), st.integers(0, 2), st.integers(1, 60_000)),
               min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_money_is_conserved_and_the_record_adds_up_with_covers(ops):
    names = ("ana", "ben", "cai")
    c = chain(names=names)
    off = offer(c)
    g = form(c, names)
    loans = {n: borrow(c, g, n, off, 60_000) for n in names}
    for op, i, j, amount in ops:
        who, whose = names[i], names[j]
        if op == "advance":
            c.advance(amount * 60)
            continue
        v = loan_view(c.ledger, loans[whose])
        if op == "cover_due":
            amount = v["amount_due"] or amount
        kind = "repay" if op == "repay" else "group_cover"
        r = c.try_do(who, kind, loan=loans[whose], amount=amount)
        closed = v["status"] in ("repaid", "settled")
        if kind == "group_cover":
            assert r.ok == (who != whose and not closed), r.error
        assert conserved(c)
    gv = view(c, g)
    owed = sum(sum(m["owed_within_group"].values()) for m in gv["members"])
    given_ = sum(m["covered_amount_given"] for m in gv["members"])
    received = sum(m["covered_amount_received"] for m in gv["members"])
    assert owed == given_ == received == gv["covered_amount"]
    assert gv["covers"] == sum(m["covers_given"] for m in gv["members"])
    assert c.ledger.balance(g) == 0           # a cover only passes through the group
    assert gv["in_arrears"] == any(
        loan_view(c.ledger, ln)["days_past_due"] > 0
        or loan_view(c.ledger, ln)["status"] in ("defaulted", "written_off")
        for ln in loans.values())


def test_gas_of_the_group_agreement(monkeypatch):
    """What each of the agreement's methods burns, the largest case of each: the budgets
    (groups.INIT_GAS, GROUP_GAS) are about twice these."""
    from lendnet.ledger import ledger as ledger_mod
    burned: dict[str, int] = {}
    real = ledger_mod.execute

    def measured(program, host, args, gas):
        out = real(program, host, args, gas)
        if host._addr in c.ledger.state.groups:
            method = args[0].decode()
            burned[method] = max(burned.get(method, 0), out.gas_used)
        return out

    monkeypatch.setattr(ledger_mod, "execute", measured)
    ten = tuple(f"m{i}" for i in range(10))
    c = chain(names=ten)
    off = offer(c)
    g = form(c, ten)
    loans = {n: borrow(c, g, n, off) for n in ten[:3]}
    until_late(c, loans, ten[1:3])
    c.do("m1", "group_cover", loan=loans["m0"], amount=loan_view(c.ledger, loans["m0"])[
        "amount_due"])
    to_default(c, loans["m0"], loans, ten[1:3])
    print(burned)
    assert set(burned) == {"init", "join", "loan", "cover", "covered", "late", "default",
                           "due", "tick"}
    assert burned["init"] * 2 <= groups.INIT_GAS + 1_000
    assert max(v for k, v in burned.items() if k != "init") * 2 <= groups.GROUP_GAS
    assert Program.load(group_code()) and execute


# --- the command line ------------------------------------------------------------------

MEMBERS = ["ln" + f"{i:02x}" * 20 for i in (1, 2)]
GROUP = "ln" + "ef" * 20
LOAN_ADDR = "ln" + "ab" * 20


@pytest.mark.parametrize("args,kind,fields", [
    (("group", "create", "--name", "market women", "--member", MEMBERS[0], "--member",
      MEMBERS[1], "--savings-bps", "1000"), "group_create",
     {"name": "market women", "savings_bps": 1000}),
    (("group", "join", GROUP), "group_join", {"group": GROUP}),
    (("group", "apply", GROUP, "--amount", "500", "--term", "6", "--product", "business"),
     "group_apply", {"group": GROUP, "amount": 50_000, "term": 6, "product": "business",
                     "max_rate_bps": 3_600, "min_default_days": 90}),
    (("group", "cover", LOAN_ADDR, "12.50"), "group_cover",
     {"loan": LOAN_ADDR, "amount": 1_250}),
])
def test_group_commands_sign_their_transactions(wallet, args, kind, fields):
    from .test_cli import offline
    body = offline(wallet, *args)
    assert body["kind"] == kind and {k: body[k] for k in fields} == fields
    if kind == "group_create":        # the wallet leads: it is added as the first member
        assert body["members"][0] == body["from"] and body["members"][1:] == MEMBERS


@pytest.mark.parametrize("args,code,why", [
    (("group", "create", "--name", "g", "--member", MEMBERS[0]), 2, "3 to 10 members"),
    (("group", "create", "--name", "g", "--member", "nope", "--member", MEMBERS[1]), 2,
     "not an address"),
    (("group", "create", "--name", "g", "--member", MEMBERS[0], "--member", MEMBERS[0]), 2,
     "listed twice"),
    (("group", "create", "--name", "g", "--member", MEMBERS[0], "--member", MEMBERS[1],
      "--savings-bps", "6000"), 2, "--savings-bps"),
    (("group", "join", "nope"), 2, "not an address"),
    (("group", "cover", GROUP, "0"), 2, "AMOUNT"),
    (("group", "apply", GROUP, "--term", "6"), 2, "Missing option '--amount'"),
])
def test_group_commands_say_what_is_wrong(wallet, args, code, why):
    from .test_cli import run
    r = run(*args, "--wallet", "w", "--offline", "--nonce", "0", "--chain", "c", "--out",
            str(wallet / "tx.json"))
    assert r.exit_code == code and why in r.output and "Traceback" not in r.output, r.output


def test_group_show_prints_the_record_and_the_arrears(monkeypatch):
    import json

    from lendnet.cli import group as cli_group

    from .test_cli import run
    c = chain()
    off = offer(c)
    g = form(c)
    ben = borrow(c, g, "ben", off)
    while loan_view(c.ledger, ben)["days_past_due"] == 0:
        c.advance(DAY)
    record = {"group": g, **groups.group_view(c.ledger, g)}
    monkeypatch.setattr(cli_group, "get", lambda node, path: record)
    r = run("group", "show", g, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["in_arrears"] is True
    r = run("group", "show", g)
    assert r.exit_code == 0, r.output
    assert "IN ARREARS" in r.output and ben in r.output and "market women" in r.output


# --- the API -------------------------------------------------------------------------------

async def test_the_api_serves_a_group_and_finds_it_by_member(tmp_path):
    """GET /v1/groups/{address} and /v1/groups?member=, on a real daemon whose ledger is
    swapped for a test chain's."""
    import aiohttp

    from lendnet.node.daemon import home as H
    from lendnet.node.daemon.daemon import Daemon
    c = chain()
    off = offer(c)
    g = form(c)
    ben = borrow(c, g, "ben", off)
    while loan_view(c.ledger, ben)["days_past_due"] == 0:
        c.advance(DAY)
    H.init_home(tmp_path, H.NodeConfig())
    d = Daemon(tmp_path)
    await d.start()
    d.node.ledger = c.ledger
    base = f"http://127.0.0.1:{d.port}/v1/groups"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/{g}") as r:
                assert r.status == 200
                got = await r.json()
            async with s.get(f"{base}?member={c.addr('cai')}") as r:
                found = await r.json()
            async with s.get(f"{base}?member={c.addr('lender')}") as r:
                none = await r.json()
            async with s.get(f"{base}?leader={c.addr('ana')}") as r:
                led = await r.json()
            async with s.get(f"{base}/{keys.derive_address(b'x', b'y')}") as r:
                assert r.status == 404
            async with s.get(f"{base}?member=nope") as r:
                assert r.status == 400
    finally:
        await d.stop()
    assert got["group"] == g and got["in_arrears"] and got["status"] == "active"
    row = [m for m in got["members"] if m["address"] == c.addr("ben")][0]
    assert row["loan"]["loan"] == ben and row["loan"]["days_past_due"] > 0
    assert [x["group"] for x in found["groups"]] == [g] and found["next"] is None
    assert none["groups"] == []
    assert [x["group"] for x in led["groups"]] == [g]
