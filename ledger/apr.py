"""The APR of a loan, fees included, and quotes: display code, outside consensus.

The annual percentage rate is the yearly rate X that makes what the borrower receives
equal to what they repay, each instalment discounted by the actual days from the loan's
start on a 365-day year (the EU consumer-credit directive's APRC, annex I):

    principal - upfront fees = sum over instalments k of  total_k * (1 + X) ** (-days_k / 365)

days_k = (due_k - t0) / 86,400, fractional days counting. The right side falls as X grows,
so X is found by bisection over whole basis points, with decimal arithmetic at 50 digits
(exp and ln correctly rounded): no floats. The answer is the basis point nearest the exact
root. Nothing here runs in a block: the ledger never reads an APR, so the decimal module is
fine; the views (API, CLI) call it.
"""
from __future__ import annotations

import functools
from decimal import Context, Decimal

YEAR_SECONDS = 365 * 86_400
_CTX = Context(prec=50)
MIN_APR_BPS = -9_999                 # (1 + X) must stay above 0
MAX_APR_BPS = 10**9                  # 10,000,000 % a year: past it, "too high to state"

# The representative example an offer's view shows for each tier: a 12-month annuity of
# the tier's largest principal or 100,000 (minor units, 1,000.00 LND), whichever is
# smaller, starting now, with the offer's origination fee.
REPRESENTATIVE_TERM = 12
REPRESENTATIVE_PRINCIPAL = 100_000
REPRESENTATIVE_BASIS = ("12 monthly annuity instalments of the tier's maximum principal or "
                        "1,000.00 LND, whichever is smaller, origination fee included")


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


@functools.lru_cache(maxsize=4096)
def _representative(principal: int, rate_bps: int, fee_bps: int, start: int) -> int | None:
    from lendnet.contracts.agreements import schedule
    try:
        rows = schedule(principal, rate_bps, REPRESENTATIVE_TERM, "monthly", "annuity", 0,
                        start)
        return apr_bps(principal, principal * fee_bps // 10_000, rows, start)
    except Exception:               # terms the agreement refuses have no example
        return None


def representative(offer: dict, start: int) -> list[dict]:
    """Per tier of an offer, the APR of the representative example (REPRESENTATIVE_BASIS)
    starting at `start` (taken at the day's start, so views agree within a day)."""
    day = start - start % 86_400
    fee_bps = offer.get("origination_fee_bps", 0)
    out = []
    for min_score, rate, most in offer["tiers"]:
        p = min(most, REPRESENTATIVE_PRINCIPAL)
        out.append({"min_score": min_score, "rate_bps": rate, "principal": p,
                    "apr_bps": _representative(p, rate, fee_bps, day)})
    return out


def offer_view(offer: dict, now: int) -> dict:
    """An offer as the API shows it: its record plus the representative APR per tier."""
    return {**offer, "apr": representative(offer, now), "apr_basis": REPRESENTATIVE_BASIS}


def quote(led, app_id: str, offer_id: str) -> dict:
    """What this application would get from this offer if it were funded now: the tier
    and rate, the exact schedule, total cost and APR, whether the terms are within the
    application's limits, and whether accept_offer would go through (appraised cover)."""
    from lendnet.contracts.agreements import schedule
    from lendnet.contracts.vm import ContractError

    from . import lending, score as scoring
    app, offer = led.state.applications.get(app_id), led.state.offers.get(offer_id)
    if app is None or offer is None:
        raise KeyError(f"no application {app_id}" if app is None else f"no offer {offer_id}")
    s = lending.credit_score(led, app["borrower"])["score"]
    tier = scoring.tier_for(offer["tiers"], s)
    out: dict = {"application": app_id, "offer": offer_id, "borrower": app["borrower"],
                 "lender": offer["lender"], "score": s, "start": led.time,
                 "limits": app["limits"], "status": app["status"]}
    if tier is None:
        return {**out, "rate_bps": None, "schedule": None, "within_limits": None,
                "problems": [f"credit score {s} is below the offer's minimum "
                             f"{offer['tiers'][0][0]}"], "fits": "score"}
    rate = tier[1]
    terms = lending.offered_terms(offer, rate)
    problems = lending.consent_problems(led, app, offer, rate)
    try:
        lending.match(led, app, offer)
        fits = ""
    except Exception as e:          # TxError: why accept_offer would be refused
        fits = str(e)
    fee = lending.origination_fee(app["amount"], offer)
    try:
        rows = schedule(app["amount"], rate, app["term"], app["period"], app["method"],
                        app["grace"], led.time)
        figures = cost(app["amount"], fee, rows, led.time)
    except (ContractError, ValueError) as e:
        rows, figures = None, {"error": str(e)}
    return {**out, "rate_bps": rate, "terms": terms, **figures, "schedule": rows,
            "within_limits": not problems, "problems": problems,
            "cover": lending.collateral_cover(led, app), "fits": fits}
