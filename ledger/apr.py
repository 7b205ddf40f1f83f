"""The APR of a loan, fees included, and quotes: display code, outside consensus.

The annual percentage rate is the yearly rate X that makes what the borrower receives
equal to what they repay, each instalment discounted by the actual days from the loan's
start on a 365-day year (the EU consumer-credit directive's APRC, annex I):

    principal - upfront fees = sum over instalments k of  total_k * (1 + X) ** (-days_k / 365)

days_k = (due_k - t0) / 86,400, fractional days counting. The right side falls as X grows,
so X is found by bisection over whole basis points, with decimal arithmetic at 50 digits
(exp and ln correctly rounded): no floats. The answer is the basis point nearest the exact
root. Nothing here runs in a block: the ledger never reads an APR, so the decimal module is
fine; the views call it (lending.offer_view and lending.quote, the API, the CLI).
"""
from __future__ import annotations

from decimal import Context, Decimal

YEAR_SECONDS = 365 * 86_400
_CTX = Context(prec=50)
MIN_APR_BPS = -9_999                 # (1 + X) must stay above 0
MAX_APR_BPS = 10**9                  # 10,000,000 % a year: past it, "too high to state"



def _present_value(rate_bps: int, flows: list[tuple[int, int]]) -> Decimal:
    """sum amount * (1 + rate)^(-seconds / YEAR_SECONDS)."""
    log = (Decimal(10_000 + rate_bps) / 10_000).ln(_CTX)
    total = Decimal(0)
    for amount, seconds in flows:
        total = _CTX.add(total, _CTX.multiply(
            Decimal(amount), _CTX.exp(-log * seconds / YEAR_SECONDS)))
    return total


def apr_bps(principal: int, upfront_fee: int, rows: list[dict], t0: int) -> int:
    """The APR in basis points (nearest) of a loan of `principal` that costs `upfront_fee`
    at the start `t0` (chain seconds) and is repaid by `rows` (contracts.agreements
    .schedule: each row's "total" falls due at its "due")."""
    target = Decimal(principal - upfront_fee)
    if target <= 0:
        raise ValueError("the upfront fee takes the whole principal")
    flows = [(r["total"], r["due"] - t0) for r in rows if r["total"]]
    if not flows or any(s < 0 for _, s in flows):
        raise ValueError("a schedule falls due after its start")
    if all(s == 0 for _, s in flows):
        raise ValueError("a schedule all due at its start has no rate")
    lo, hi = MIN_APR_BPS, 0              # PV(lo) >= target > PV(hi): find hi first
    while _present_value(hi, flows) >= target:
        lo, hi = hi, max(2 * hi, 10_000)
        if hi > MAX_APR_BPS:
            raise ValueError("the APR is over 10,000,000 % a year")
    if _present_value(lo, flows) < target:
        raise ValueError("the APR is under -99.99 % a year")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _present_value(mid, flows) >= target:
            lo = mid
        else:
            hi = mid
    # The root lies in [lo, hi): the nearer end, by present value (linear near the root).
    above, below = _present_value(lo, flows) - target, target - _present_value(hi, flows)
    return lo if above <= below else hi


def cost(principal: int, upfront_fee: int, rows: list[dict], t0: int) -> dict:
    """A schedule's figures: what is repaid, what the credit costs, and its APR."""
    repaid = sum(r["total"] for r in rows)
    return {"principal": principal, "origination_fee": upfront_fee,
            "received": principal - upfront_fee, "repaid": repaid,
            "interest": repaid - principal, "total_cost": repaid - principal + upfront_fee,
            "apr_bps": apr_bps(principal, upfront_fee, rows, t0)}

