"""The APR including fees (ledger/apr.py): actual/365, EU APRC style, against closed forms
and an independent calculation."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from lendnet.contracts.agreements import schedule
from lendnet.ledger import apr, lending

YEAR = 365 * 86_400


def _independent(principal, fee, rows, t0) -> float:
    """The same equation solved another way: floats, Newton's method from 10 %."""
    flows = [(r["total"], (r["due"] - t0) / YEAR) for r in rows]
    x = 0.1
    for _ in range(200):
        f = sum(a * (1 + x) ** -t for a, t in flows) - (principal - fee)
        df = sum(-t * a * (1 + x) ** (-t - 1) for a, t in flows)
        step = f / df
        x -= step
        if abs(step) < 1e-13:
            break
    return x * 10_000


def test_one_payment_a_year_later_is_exactly_its_rate():
    assert apr.apr_bps(100_000, 0, [{"total": 110_000, "due": YEAR}], 0) == 1_000
    assert apr.apr_bps(100_000, 0, [{"total": 100_000, "due": YEAR}], 0) == 0
    assert apr.apr_bps(100_000, 0, [{"total": 90_000, "due": YEAR}], 0) == -1_000
    # half a year at (1.21)^(1/2) = 1.1: still 21 % a year
    assert apr.apr_bps(1_000_000, 0, [{"total": 1_100_000, "due": YEAR // 2}], 0) == 2_100


@pytest.mark.parametrize("rate", [0, 600, 1200, 2400, 3600, 9900])
def test_a_no_fee_loan_costs_its_effective_rate(rate):
    """When each instalment's interest is the balance times a periodic rate i, the
    discount rate that prices the instalments at the principal is i per period whatever
    the principal's split: the APR is (1 + i)^(365/days) - 1."""
    p, t0 = 10**10, 1_767_225_600
    rows = schedule(p, rate, 52, "weekly", "annuity", 0, t0)
    days = Fraction(rows[0]["due"] - t0, 86_400)
    i = Fraction(rows[0]["interest"], p)
    expected = ((1 + float(i)) ** (365 / float(days)) - 1) * 10_000
    assert abs(apr.apr_bps(p, 0, rows, t0) - expected) <= 1


def test_the_apr_rises_with_the_origination_fee():
    rows = schedule(100_000, 1_800, 12, start=0)
    got = [apr.apr_bps(100_000, fee, rows, 0) for fee in (0, 500, 1_000, 2_000, 10_000)]
    assert got == sorted(set(got)), got
    assert got[0] > 1_800                 # compounding: above the nominal rate
    # a one-off fee on a one-year loan costs about its share again, and more
    assert got[2] - got[0] > 100 * 1.5


@pytest.mark.parametrize("p,rate,n,period,method,grace,fee", [
    (100_000, 1_200, 12, "monthly", "annuity", 0, 0),
    (100_000, 2_400, 6, "monthly", "equal-principal", 0, 1_000),
    (250_000, 1_500, 24, "monthly", "balloon", 2, 2_500),
    (50_000, 3_600, 26, "weekly", "annuity", 1, 500),
    (5_000_000, 900, 360, "monthly", "annuity", 0, 50_000),
    (100_000, 100_000, 12, "monthly", "annuity", 0, 0),     # 1000 % a year
])
def test_matches_an_independent_calculation(p, rate, n, period, method, grace, fee):
    t0 = 1_767_225_600
    rows = schedule(p, rate, n, period, method, grace, t0)
    got = apr.apr_bps(p, fee, rows, t0)
    want = _independent(p, fee, rows, t0)
    assert abs(got - want) <= 0.5 + 1e-6, (got, want)
    assert got == round(want) or abs(got - want) == pytest.approx(0.5, abs=1e-3)


def test_figures_of_a_schedule():
    rows = schedule(100_000, 1_200, 12, start=0)
    c = apr.cost(100_000, 1_000, rows, 0)
    assert c["repaid"] == sum(r["total"] for r in rows)
    assert c["interest"] == c["repaid"] - 100_000
    assert c["total_cost"] == c["interest"] + 1_000 and c["received"] == 99_000
    with pytest.raises(ValueError):
        apr.apr_bps(100, 100, rows, 0)


def test_offers_show_a_representative_apr_per_tier():
    offer = {"tiers": [[300, 2_400, 50_000], [650, 1_200, 1_000_000]],
             "origination_fee_bps": 100}
    rep = lending.representative(offer, 1_767_225_600 + 3_600)
    assert [(r["min_score"], r["rate_bps"], r["principal"]) for r in rep] == \
        [(300, 2_400, 50_000), (650, 1_200, 100_000)]
    t0 = 1_767_225_600                                     # the day's start
    for r in rep:
        rows = schedule(r["principal"], r["rate_bps"], 12, start=t0)
        assert r["apr_bps"] == apr.apr_bps(r["principal"], r["principal"] // 100, rows, t0)
        assert math.isclose(r["apr_bps"], _independent(r["principal"], r["principal"] // 100,
                                                        rows, t0), abs_tol=0.51)
    view = lending.offer_view(offer, t0)
    assert view["apr"] == rep and "12 monthly" in view["apr_basis"]
