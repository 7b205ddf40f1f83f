"""Every product of docs/PRODUCTS.md at once, with ordinary loans, defaults and
recoveries: random workloads, and after every block the money adds up to the supply to
the unit. At the end each product's own books must balance:

- a pool paid its lenders exactly what it received, each slice its share to within a
  unit per payment;
- a drawn guarantee paid the claim and refunded the rest, no more than it held;
- a savings product's agreement holds its reserve plus every account's balance.

The workloads are built so that loans really happen (each "loan" step makes one through
one of the four paths) and chain time runs far enough for defaults, draws and sales.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from lendnet.ledger import keys, pools, savings

from .chain import DAY, OFFER_TERMS, Chain, h32

BORROWERS = ("ana", "ben", "cai")              # the group, and also plain borrowers
NAMES = ("lender", "colender", "gia", "bidder", *BORROWERS)
TERMS = dict(OFFER_TERMS, default_days=20, tolerance_days=2)
APPLY = dict(purpose="p", period="monthly", method="annuity", product="consumer", grace=0,
             docs_hash=h32("d"), max_rate_bps=2400, max_late_fee_bps=500,
             min_default_days=20, max_penalty_bps=0, max_origination_fee_bps=0)
PATHS = ("plain", "guaranteed", "shared", "group")

steps = st.lists(st.tuples(
    st.sampled_from(["loan", "loan", "pay", "pay", "cover", "advance", "advance", "deposit",
                     "withdraw", "sale"]),
    st.integers(0, 2), st.integers(0, 2**32)), min_size=6, max_size=24)


class World:
    def __init__(self):
        c = self.c = Chain(names=NAMES)
        for n in ("lender", "colender"):
            c.do(n, "register_lender", profile_hash=h32(n))
        for n in BORROWERS:
            c.do(n, "register_borrower", profile_hash=h32(n), docs_hash=h32("d"))
        self.offer = c.do("lender", "publish_offer", amount=5_000_000, **TERMS).id
        t = c.do("lender", "savings_product", name="s", rate_bps=800, reserve=5_000)
        self.product = keys.derive_address(b"savings", t.hash)
        t = c.do("ana", "group_create", name="g", savings_bps=1_000,
                 members=[c.addr(n) for n in BORROWERS])
        self.group = keys.derive_address(b"group", t.hash)
        for n in BORROWERS[1:]:
            c.do(n, "group_join", group=self.group)
        self.loans: list[str] = []
        led = c.ledger
        apply_block = led.apply_block

        def checked(*args, **kw):
            res = apply_block(*args, **kw)
            assert led.total_money() == led.supply          # every block, to the unit
            return res

        led.apply_block = checked

    def loan(self, who: str, n: int) -> None:
        c = self.c
        amount, term = 20_000 + n % 100_000, 1 + n % 6
        path = PATHS[n // 7 % len(PATHS)]
        kind, extra = ("group_apply", {"group": self.group}) if path == "group" else \
            ("apply", {})
        r = c.try_do(who, kind, amount=amount, term=term, **APPLY, **extra)
        if not r.ok:
            return
        app = r.tx
        if path == "group":
            need = -(-amount // 10)
            c.try_do(who, "savings_deposit", product=self.product, amount=need)
            c.try_do(who, "savings_pledge", product=self.product, to=app, amount=need)
        if path == "guaranteed":
            c.try_do("gia", "guarantee", to=app, amount=amount // 20 + n % 50_000 + 1)
        if path == "shared":
            first = amount * (1 + n % 3) // 4
            c.try_do("lender", "fund_share", application=app, offer=self.offer, amount=first)
            c.try_do("colender", "fund_share", application=app, offer=self.offer,
                     amount=amount - first)
        else:
            c.try_do("lender", "fund", application=app, offer=self.offer, accept=[])
        loan = c.ledger.state.applications.get(app)["loan"]
        if loan:
            self.loans.append(loan)

    def step(self, kind: str, who: int, n: int) -> None:
        c, name = self.c, BORROWERS[who]
        mine = [ln for ln in self.loans if c.ledger.state.loans.get(ln)["borrower"]
                == c.addr(name)]
        if kind == "loan":
            self.loan(name, n)
        elif kind == "pay" and mine:
            c.try_do(name, "repay", loan=mine[n % len(mine)], amount=1 + n % 60_000)
        elif kind == "cover" and self.loans:
            c.try_do(name, "group_cover", loan=self.loans[n % len(self.loans)],
                     amount=1 + n % 30_000)
        elif kind == "advance":
            c.advance((1 + n % 40) * DAY)
        elif kind == "deposit":
            c.try_do(name, "savings_deposit", product=self.product, amount=1 + n % 20_000)
        elif kind == "withdraw":
            c.try_do(name, "savings_withdraw", product=self.product, amount=1 + n % 20_000)
        elif kind == "sale":
            open_ = sorted(s for s, rec in c.ledger.state.sales.rows.items()
                           if rec["status"] == "open")
            if open_:
                sale = open_[n % len(open_)]
                rec = c.ledger.state.sales.get(sale)
                c.try_do("bidder", "bid", sale=sale, amount=rec["reserve"] + n % 1_000)
                c.advance(8 * DAY)
                c.try_do("bidder", "settle_sale", sale=sale)

    def check_books(self) -> None:
        led = self.c.ledger
        st = led.state
        for addr, pool in st.pools.rows.items():
            rows = pools.slice_rows(led, addr, pool)
            paid_out = sum(r["received"] for r in rows)
            assert paid_out == (st.storage.get((addr, b"d")) or 0)
        for g in st.guarantees.rows.values():
            if g["status"] == "drawn":
                assert 0 <= g["drawn"] <= g["amount"]
                assert g["drawn"] + g["refunded"] == g["amount"]   # (nothing sent to it)
        product = savings.product_view(led, self.product)
        # the agreement holds its reserve and every account's stored balance, to the unit
        stored = sum(st.storage.get((self.product, b"b" + self.c.addr(n).encode())) or 0
                     for n in NAMES)
        assert product["reserve"] + stored == led.balance(self.product)


mix = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@mix
@given(steps)
def test_every_product_with_loans_defaults_and_recoveries_conserves_money(script):
    w = World()
    for kind, who, n in script:
        w.step(kind, who, n)
    w.c.advance(60 * DAY)                  # whatever is still running defaults or closes
    w.check_books()
