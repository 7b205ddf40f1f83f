"""Invariants over arbitrary sequences: money conserved, failures inert, replicas agree,
schedules exact."""
from __future__ import annotations

from fractions import Fraction

import numpy_financial as npf
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from lendnet.contracts.agreements import schedule
from lendnet.contracts.asm import assemble
from lendnet.contracts.vm import ContractError
from lendnet.ledger import fees, keys, lending
from lendnet.ledger.ledger import BLOCK_GAS_LIMIT as BLOCK_GAS

from .chain import DAY, OFFER_TERMS, REGISTRAR, Chain, h32

ACTORS = ("lender", "alice", "bob")
# mallory holds less than any transaction's most fee: what it sends is never includable
FUNDS = {"lender": 10_000_000, "alice": 10_000_000, "bob": 10_000_000, "mallory": 3,
         REGISTRAR: 10_000_000}
# A contract whose every call writes a row and then loops until its gas is gone.
LOOP = assemble("""
    arg 0
    pushb "init"
    eq
    jnz done
    pushb "junk"
    arg 0
    sput
loop:
    jmp loop
done:
    stop
""")


def chain() -> Chain:
    return Chain(dict(FUNDS), names=tuple(FUNDS))
LENDER_KINDS = {"offer", "withdraw", "fund", "writeoff", "take", "share"}
BORROWER_KINDS = {"apply", "accept", "repay", "prepay", "collateral", "pledge", "deposit",
                  "swithdraw", "spledge", "gapply", "cover", "join"}
# The products of docs/PRODUCTS.md: savings, guarantees, shared funding, a group (alice,
# bob and the registrar, who also lends: a second lender for pools).
PRODUCT_KINDS = ["deposit", "swithdraw", "spledge", "guarantee", "grelease", "share",
                 "share", "gapply", "cover"]

# One action: (kind, actor index, a number that picks amounts and targets). The actor
# index is overridden by the action's natural role four times in five, so workloads
# reach funded loans, repayments, late fees and defaults, and still try the wrong actor.
actions = st.lists(st.tuples(
    st.sampled_from(["transfer", "offer", "apply", "fund", "accept", "repay", "repay",
                     "prepay", "advance", "withdraw", "collateral", "pledge", "loop", "broke",
                     "appraise", "writeoff", "restructure", "bid", "settle", "take",
                     *PRODUCT_KINDS]),
    st.integers(0, 2), st.integers(0, 2**40)), min_size=8, max_size=30)

# Every workload starts with both roles registered, one offer published, the loop
# contract deployed and an asset for each borrower to pledge. (Sales of collateral are
# rare here; tests/test_settlement.py's property drives them directly.)
SETUP = [("register", 0, 1), ("register", 1, 0), ("register", 2, 0), ("offer", 0, 2_999_999),
         ("deploy", 2, 0), ("collateral", 1, 0), ("collateral", 2, 5), ("registrar", 0, 0),
         ("sproduct", 0, 0), ("group", 1, 0), ("join", 2, 0), ("join", 0, 1)]


def _limits(n: int) -> dict:
    """An application's limits, from tight to loose: some offers fit, some do not."""
    return {"max_rate_bps": (1200, 2400, 100_000)[n % 3],
            "max_late_fee_bps": (0, 500, 10_000)[n // 3 % 3],
            "min_default_days": (1, 30, 90)[n // 9 % 3],
            "max_penalty_bps": (0, 100_000)[n // 27 % 2],
            "max_origination_fee_bps": (0, 100, 1_000)[n // 54 % 3]}


def _offer_terms(n: int) -> dict:
    return {**OFFER_TERMS, "origination_fee_bps": (0, 100, 500)[n // 7 % 3],
            "default_days": (30, 90)[n // 11 % 2]}


def _actor(kind, who, n):
    if kind == "appraise" and n % 5:
        return REGISTRAR
    if kind == "join" and n % 2:
        return REGISTRAR
    if kind == "share" and n % 3 == 0:
        return REGISTRAR
    if n % 5:
        if kind in LENDER_KINDS:
            return "lender"
        if kind in BORROWER_KINDS:
            return ACTORS[1 + who % 2]
    return ACTORS[who]


def run(chain: Chain, script, empty_at=frozenset()) -> list:
    """Interpret SETUP + script as blocks; return (state root, receipts) per block.
    Blocks whose index is in `empty_at` are applied empty instead, at the same time."""
    history = []

    def commit(t, name):
        if len(history) in empty_at:
            chain.nonces[name] -= 1
            res = chain.block()
        else:
            res = chain.block(t, strict=False)
            if not res.receipts[0].nonce_used:
                chain.nonces[name] -= 1
        history.append((res.state_root, res.receipts))
        return res

    for kind, who, n in SETUP + list(script):
        name = _actor(kind, who, n)
        led = chain.ledger
        offers = sorted(led.state.offers.rows)
        apps = sorted(led.state.applications.rows)
        loans = sorted(led.state.loans.rows)

        def pick(seq, n=n):
            return seq[n % len(seq)] if seq else "0" * 64

        if kind == "transfer":
            t = chain.tx(name, "transfer", to=chain.addr(ACTORS[(who + 1) % 3]),
                         amount=n % 20_000_000 + 1)
        elif kind == "register":
            t = chain.tx(name, "register_lender" if n % 2 else "register_borrower",
                         profile_hash=h32(name), **({} if n % 2 else {"docs_hash": h32("d")}))
        elif kind == "offer":
            t = chain.tx(name, "publish_offer", amount=n % 3_000_000 + 1, **_offer_terms(n))
        elif kind == "apply":
            t = chain.tx(name, "apply", amount=n % 150_000 + 1_000, purpose="p",
                         term=n % 12 + 1, period=("monthly", "weekly")[n % 2],
                         method=("annuity", "equal-principal", "balloon")[n % 3],
                         product="consumer", grace=n % 2, docs_hash=h32("x"), **_limits(n))
        elif kind in ("fund", "accept"):
            open_apps = [a for a in apps if led.state.applications.get(a)["status"] == "open"]
            if not open_apps:      # file one first, in its own block, so loans are common
                borrower = ACTORS[1 + who % 2]
                applied = chain.tx(borrower, "apply", amount=n % 150_000 + 1_000,
                                   purpose="p", term=n % 12 + 1, period="monthly",
                                   method=("annuity", "equal-principal", "balloon")[n % 3],
                                   product="consumer", grace=0, docs_hash=h32("y"),
                                   **_limits(n))
                if commit(applied, borrower).receipts:
                    open_apps = [applied.id]
                    free = [a for a, rec in sorted(led.state.assets.rows.items())
                            if rec["owner"] == chain.addr(borrower) and rec["lien"] is None]
                    if free:        # and pledge an asset to it, so cover is exercised
                        commit(chain.tx(borrower, "pledge", asset=pick(free), to=applied.id),
                               borrower)
            app = pick(open_apps)
            pledged = (led.state.applications.get(app) or {"collateral": []})["collateral"]
            accept = {"accept": [[a, n % 300_000] for a in pledged[:n % 3]]}
            t = chain.tx(name, "fund" if kind == "fund" else "accept_offer",
                         application=app, offer=pick(offers),
                         **(accept if kind == "fund" else {}))
        elif kind == "repay":
            t = chain.tx(name, "repay", loan=pick(loans) if loans else chain.addr(name),
                         amount=n % 60_000 + 1)
        elif kind == "prepay":
            t = chain.tx(name, "prepay", loan=pick(loans) if loans else chain.addr(name),
                         amount=n % 60_000 + 1, reduce=("term", "instalment")[n % 2])
        elif kind == "writeoff":
            t = chain.tx(name, "write_off", loan=pick(loans) if loans else chain.addr(name),
                         reason="gone")
        elif kind == "restructure":
            # accept a pending proposal as the other party (four times in five), or propose
            loan = pick(loans) if loans else chain.addr(name)
            rec = led.state.loans.get(loan) or {}
            pending = sorted(rec.get("proposals", {}).items())
            if pending and n % 5:
                pid, prop = pending[n % len(pending)]
                other = rec["lender"] if prop["by"] == "borrower" else rec["borrower"]
                name = chain._names.get(other, name)
                t = chain.tx(name, "accept_restructure", loan=loan, proposal=pid)
            else:
                if rec and n % 5:
                    name = chain._names.get(rec[("borrower", "lender")[n % 2]], name)
                t = chain.tx(name, "propose_restructure", loan=loan, term=n % 24 + 1)
        elif kind in ("bid", "settle", "take"):      # collateral sales of defaulted loans
            sale = pick(sorted(led.state.sales.rows))
            if kind == "bid":
                best = (led.state.sales.get(sale) or {"best": 0})["best"]
                t = chain.tx(name, "bid", sale=sale, amount=best + n % 400_000 + 1)
            else:
                t = chain.tx(name, "settle_sale" if kind == "settle" else "take_collateral",
                             sale=sale)
        elif kind == "registrar":        # the registrar also lends and borrows
            commit(chain.tx(REGISTRAR, "register_lender", profile_hash=h32("r")), REGISTRAR)
            t = chain.tx(REGISTRAR, "register_borrower", profile_hash=h32("r"),
                         docs_hash=h32("d"))
            name = REGISTRAR
        elif kind == "sproduct":
            t = chain.tx(name, "savings_product", name="s", rate_bps=500, reserve=2_000)
        elif kind == "group":
            t = chain.tx(name, "group_create", name="g", savings_bps=500,
                         members=[chain.addr(x) for x in ("alice", "bob", REGISTRAR)])
        elif kind == "join":
            t = chain.tx(name, "group_join", group=pick(sorted(led.state.groups.rows)))
        elif kind in ("deposit", "swithdraw", "spledge"):
            product = pick(sorted(led.state.savings.rows))
            if kind == "spledge":
                t = chain.tx(name, "savings_pledge", product=product, to=pick(apps + loans),
                             amount=n % 20_000 + 1)
            else:
                t = chain.tx(name, "savings_deposit" if kind == "deposit" else
                             "savings_withdraw", product=product, amount=n % 50_000 + 1)
        elif kind == "guarantee":
            t = chain.tx(name, "guarantee", to=pick(apps + loans), amount=n % 100_000 + 1)
        elif kind == "grelease":
            t = chain.tx(name, "release_guarantee",
                         guarantee=pick(sorted(led.state.guarantees.rows))
                         if led.state.guarantees.rows else chain.addr(name))
        elif kind == "share":
            open_apps = [a for a in apps if led.state.applications.get(a)["status"] == "open"]
            t = chain.tx(name, "fund_share", application=pick(open_apps or apps or ["0" * 64]),
                         offer=pick(offers), amount=n % 80_000 + 1)
        elif kind == "gapply":
            t = chain.tx(name, "group_apply", group=pick(sorted(led.state.groups.rows)),
                         amount=n % 150_000 + 1_000, purpose="g", term=n % 12 + 1,
                         period=("monthly", "weekly")[n % 2], method="annuity",
                         product="consumer", grace=0, docs_hash=h32("g"), **_limits(n))
        elif kind == "cover":
            t = chain.tx(name, "group_cover", loan=pick(loans) if loans else chain.addr(name),
                         amount=n % 30_000 + 1)
        elif kind == "withdraw":
            t = chain.tx(name, "withdraw_offer", offer=pick(offers))
        elif kind == "collateral":
            t = chain.tx(name, "register_collateral", asset=f"asset-{n % 5}",
                         description_hash=h32("c"), value=n % 500_000 + 1)
        elif kind == "pledge":       # by its name (own asset) or by its full id
            asset = (f"asset-{n % 5}" if n % 2 else
                     pick(sorted(led.state.assets.rows)) if led.state.assets.rows
                     else f"{chain.addr(name)}/asset-0")
            t = chain.tx(name, "pledge", asset=asset, to=pick(apps + loans))
        elif kind == "appraise":
            t = chain.tx(name, "appraise", asset=pick(sorted(led.state.assets.rows))
                         if led.state.assets.rows else f"{chain.addr(name)}/none",
                         value=n % 400_000)
        elif kind == "deploy":
            t = chain.tx(name, "deploy", code=LOOP, args=[], gas=1_000)
        elif kind == "loop":
            t = chain.tx(name, "call", contract=pick(sorted(led.state.contracts.rows)),
                         args=[n.to_bytes(8, "big")], amount=n % 3,
                         gas=n % 50_000 + 1)
        elif kind == "broke":
            t = chain.tx("mallory", "transfer", to=chain.addr(name), amount=1)
            name = "mallory"
        else:
            res = chain.advance((1 + n % 7) * 10 * DAY)     # 10 to 70 days: deadlines pass
            history.append((res.state_root, []))
            continue
        commit(t, name)
    return history


fast = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@fast
@given(actions)
def test_money_is_conserved_and_every_failure_says_why(script):
    """After every block the balances, escrows and collected fees add up to the supply
    to the unit; every includable transaction paid the schedule's fee for its bytes and
    gas, never over its limit, and one not includable paid nothing."""
    c = chain()
    led = c.ledger
    paid = 0
    apply_block = led.apply_block

    def checked(*args, **kw):
        nonlocal paid
        res = apply_block(*args, **kw)
        assert led.total_money() == led.supply          # every block, to the unit
        for r in res.receipts:
            assert r.ok or (r.error and isinstance(r.error, str))
            assert (r.fee > 0) == r.nonce_used
            paid += r.fee
        assert led.fees_collected() == paid
        return res

    led.apply_block = checked
    run(c, script)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_no_loan_starts_outside_its_applications_limits(script):
    """Whatever lenders and borrowers try, every loan's terms, as its agreement stores
    them, are within what its application signed and the genesis rate cap, and its
    cover counts only appraised or lender-accepted values."""
    c = chain()
    run(c, script)
    st = c.ledger.state
    cap = lending.params(c.ledger)["max_rate_bps"]
    for loan, rec in st.loans.rows.items():
        lim = st.applications.get(rec["application"])["limits"]
        t = lending.loan_terms(c.ledger, loan)
        assert t["a"] <= min(lim["max_rate_bps"], cap)
        assert t["fee"] <= lim["max_late_fee_bps"]
        assert t["dflt"] >= lim["min_default_days"] * DAY
        assert (t.get("pbps") or 0) <= lim["max_penalty_bps"]
        assert rec["origination_fee"] * 10_000 <= t["P"] * lim["max_origination_fee_bps"]
        for cover in rec["cover"]:
            asset = st.assets.get(cover["asset"])
            assert cover["source"] in ("accepted", "appraised", "none")
            assert cover["source"] != "none" or cover["value"] == 0
            assert cover["source"] != "appraised" or asset["appraiser"] is not None


@fast
@given(actions)
def test_same_transactions_same_order_give_the_same_state_root(script):
    a, b = run(chain(), script), run(chain(), script)
    assert [root for root, _ in a] == [root for root, _ in b]


@fast
@given(actions)
def test_failing_transactions_change_nothing_but_their_nonce_and_fee(script):
    """Every transaction that failed, whatever the reason, left every table exactly as
    it found it, except that an includable one used up its sender's nonce and moved
    its fee — its bytes and the gas it burned, at its price — from the sender to the
    fees; one that is not includable changed nothing at all. A success paid the same
    rule's fee."""
    c = chain()
    led = c.ledger
    apply_tx = led.apply_tx
    failures = []
    min_price, byte_price = led.prices()

    def snapshot():
        return {name: dict(t.rows) for name, t in led.state.tables.items()}

    def spy(tx, _in_block=False):
        before = snapshot()
        fees_before = led._block_fees             # (paid into FEES_ADDRESS at block end)
        gas_left = BLOCK_GAS - led._block_gas
        r = apply_tx(tx, _in_block)
        if r.nonce_used:
            assert led.fixed_gas(tx) <= r.gas <= led.gas_limit(tx) <= gas_left
            assert r.fee == fees.fee(len(tx.raw), r.gas, tx.body["gas_price"], byte_price)
        if not r.ok:
            after = snapshot()
            if r.nonce_used:
                bal, nonce = before["accounts"].get(tx.sender, (0, 0))
                assert after["accounts"][tx.sender] == (bal - r.fee, nonce + 1)
                assert led._block_fees == fees_before + r.fee
                after["accounts"][tx.sender] = before["accounts"].get(tx.sender)
                if after["accounts"][tx.sender] is None:
                    del after["accounts"][tx.sender]
            else:
                assert r.fee == r.gas == 0
            assert after == before, r.error
            failures.append(r)
        return r

    led.apply_tx = spy
    run(c, script)
    assume(failures)


def test_an_account_that_cannot_pay_gets_nothing_run():
    """mallory's 3 units cover no transaction's most fee: not includable, no nonce, and
    a loop call it sends never runs."""
    c = chain()
    history = run(c, [("broke", 1, 0)])
    r = history[-1][1][0]
    assert not r.nonce_used and "cannot pay the fee" in r.error
    assert c.ledger.account(c.addr("mallory")) == (3, 0)
    assert keys.is_address(fees.FEES_ADDRESS)


terms = st.tuples(st.integers(1, 10**9), st.integers(0, 100_000), st.integers(1, 360),
                  st.sampled_from(["monthly", "weekly"]),
                  st.sampled_from(["annuity", "equal-principal", "balloon"]),
                  st.integers(0, 12))


@settings(max_examples=120, deadline=None)
@given(terms)
def test_schedule_principal_sums_exactly_to_the_principal(t):
    principal, rate, term, period, method, grace = t
    try:
        rows = schedule(principal, rate, term, period, method, grace)
    except ContractError as e:
        assert "principal too small for the term" in e.message
        assert principal < term or method == "annuity"
        return
    assert sum(r["principal"] for r in rows) == principal
    # an annuity's principal can run out a period or two early when actual/365 interest
    # falls below the nominal rate's (the schedule then just ends): never late
    assert len(rows) == term or method == "annuity" and len(rows) < term
    assert all(r["principal"] >= 0 and r["interest"] >= 0 for r in rows)
    assert [r["n"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(b["due"] > a["due"] for a, b in zip(rows, rows[1:]))


@settings(max_examples=120, deadline=None)
@given(st.integers(10_000, 10**9), st.integers(1, 60_000), st.integers(1, 120),
       st.sampled_from(["monthly", "weekly"]))
def test_annuity_instalments_match_the_financial_formula(principal, rate, term, period):
    per_year = {"monthly": 12, "weekly": 52}[period]
    try:
        rows = schedule(principal, rate, term, period, "annuity")
    except ContractError as e:
        # Refused only where an instalment would repay under one unit of principal, or
        # rounding really would use the principal up before the last instalment.
        assert "principal too small for the term" in e.message
        assert _refusable(principal, rate, term, per_year)
        return
    # PMT is the annuity formula's at the nominal periodic rate; interest is actual/365 on
    # calendar periods, so each instalment but the last is exactly PMT (principal = PMT -
    # interest), unless a period's interest alone exceeds it (principal 0). The last
    # takes what remains; it is checked exactly against an independent oracle in
    # tests/test_loan_v2.py.
    pmt = -npf.pmt(rate / 10_000 / per_year, term, principal)
    for r in rows[:-1]:
        if r["principal"] > 0:
            assert abs(r["total"] - pmt) <= 1, (r, pmt)
        else:
            assert r["interest"] >= pmt - 1, (r, pmt)
    assert sum(r["principal"] for r in rows) == principal


def _refusable(principal, rate, term, per_year):
    """Independent oracle: exact rationals, half-even rounding (Python's round)."""
    b = 10_000 * per_year
    x, y = (b + rate) ** term, b ** term
    pmt = round(Fraction(principal * rate * x, b * (x - y)))
    if pmt - round(Fraction(principal * rate, b)) < 1:
        return True
    out = principal
    for _ in range(term - 1):
        out -= min(max(pmt - round(Fraction(out * rate, b)), 0), out)
    return out < 1


@pytest.mark.parametrize("method", ["annuity", "equal-principal", "balloon"])
def test_known_schedule_figures(method):
    # from 1 January 1970 (not a leap year): interest is actual/365 on each calendar month
    rows = schedule(100_000, 1200, 12, "monthly", method)
    if method == "annuity":
        assert {r["total"] for r in rows[:-1]} == {8885}         # PMT 88.8488 LND
        assert [r["interest"] for r in rows[:2]] == [1019, 848]  # 31 days on 100,000, 28 on 92,134
        assert rows[-1]["total"] == 8852
    elif method == "equal-principal":
        assert [r["principal"] for r in rows] == [8333] * 11 + [8337]
        assert rows[0]["interest"] == 1019 and rows[-1]["interest"] == 85     # 8,337, 31 days
    else:
        assert [r["principal"] for r in rows] == [0] * 11 + [100_000]
        # 31, 28 and 30 days on 100,000 at 12 %: 1,019.18, 920.55, 986.30
        assert [r["interest"] for r in rows[:4]] == [1019, 921, 1019, 986]


# A listed table's key order (what the API pages through) under puts, deletes and the
# rollback of failed transactions: always the table's keys, sorted; and paging from any
# cursor, with any page size and scan bound, visits each matching row once, in order.
table_ops = st.lists(st.tuples(st.sampled_from(["put", "delete", "mark", "rollback"]),
                               st.integers(0, 40)), max_size=80)


@given(table_ops, st.integers(1, 7), st.integers(1, 9))
def test_a_listed_table_keeps_its_keys_in_order_and_pages_through_each_once(ops, limit, scan):
    from lendnet.ledger.state import State
    state = State()
    t = state.offers
    marks = []
    for op, k in ops:
        key = f"{k:064x}"
        if op == "put":
            t.put(key, {"n": k % 3})
        elif op == "delete":
            t.delete(key)
        elif op == "mark":
            marks.append(state.mark())
        elif marks:
            state.rollback(marks.pop())
        assert list(t.order) == sorted(t.rows)
    want = [(key, rec) for key, rec in sorted(t.rows.items()) if rec["n"] != 1]
    got, after, pages = [], None, 0
    while True:
        page, after = t.page(after, limit, lambda rec: rec["n"] != 1, scan)
        assert len(page) <= limit
        got += page
        pages += 1
        assert pages <= len(t.rows) + 1
        if after is None:
            break
    assert got == want
