"""The credit score: a points scorecard over a borrower's on-chain history.

Deterministic and explainable by construction: a base plus integer points for each
factor, each factor's points capped or binned, the total clamped to [300, 850]. The
components are returned with the score, and the reason codes name the factors that
cost the most points, so a borrower can see why and a lender can audit the number.

History counters (kept in the ledger's `history` table, updated from loan events):
  opened, on_time, late, defaults, repaid_loans, amount_repaid, active
plus the time the borrower registered (account age).
"""
from __future__ import annotations

SCORE_MIN, SCORE_MAX, SCORE_BASE = 300, 850, 500
DAY = 86_400

HISTORY_FIELDS = ("opened", "on_time", "late", "defaults", "repaid_loans",
                  "amount_repaid", "active")
EMPTY_HISTORY = (0,) * len(HISTORY_FIELDS)


def _binned(value, bins):
    """Points of the highest bin whose threshold `value` reaches (bins rising)."""
    points = 0
    for threshold, p in bins:
        if value >= threshold:
            points = p
    return points


def components(history: tuple, registered_at: int | None, now: int) -> dict[str, int]:
    h = dict(zip(HISTORY_FIELDS, history))
    age_days = 0 if registered_at is None else max(0, now - registered_at) // DAY
    return {
        "on_time_instalments": min(4 * h["on_time"], 150),
        "late_instalments": -min(20 * h["late"], 200),
        "defaults": -min(150 * h["defaults"], 300),
        "loans_repaid": min(25 * h["repaid_loans"], 100),
        # minor units: 100.00, 1,000.00 and 10,000.00 with two decimals
        "amount_repaid": _binned(h["amount_repaid"], ((10_000, 10), (100_000, 25),
                                                      (1_000_000, 50))),
        "account_age": _binned(age_days, ((30, 10), (90, 20), (365, 40))),
        "current_debt": -_binned(h["active"], ((1, 10), (2, 25), (3, 50))),
    }


def score(history: tuple, registered_at: int | None, now: int) -> dict:
    parts = components(history, registered_at, now)
    total = max(SCORE_MIN, min(SCORE_MAX, SCORE_BASE + sum(parts.values())))
    # The factors that cost points, worst first; ties broken by name for determinism.
    reasons = [name for name, p in sorted(parts.items(), key=lambda kv: (kv[1], kv[0]))
               if p < 0]
    return {"score": total, "base": SCORE_BASE, "components": parts, "reasons": reasons,
            "range": [SCORE_MIN, SCORE_MAX]}


def tier_for(tiers: list, score_value: int):
    """The best tier [min_score, rate_bps, max_principal] this score reaches, or None."""
    best = None
    for tier in tiers:           # tiers rise by min_score (checked when the offer is made)
        if score_value >= tier[0]:
            best = tier
    return best
