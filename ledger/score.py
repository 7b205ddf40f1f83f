"""The credit score: a points scorecard over a borrower's on-chain history.

Deterministic and explainable by construction: integers only, a base plus points for each
factor, each factor binned or capped, the total clamped. The components are returned with
the score, and the reason codes name the factors that cost points, worst first, so a
borrower can see why and a lender can audit the number. docs/SCORE.md explains it in
plain words; the tables below are the single definition.

Whose history. A history belongs to a *subject*: the identity a registrar attested for
the address (every address attested with that identity shares one history, defaults
included), or, for an address no registrar attested, the address itself. An unattested
address is a "thin file": it scores THIN_FILE (reason "thin_file") whatever its history,
and every attested history scores at least FLOOR, which is above THIN_FILE, so a
defaulter gains nothing by starting over at a fresh address.

The history record (a dict of integers, kept in the ledger's `history` table and updated
from loan events by the credit bureau in ledger/lending.py):
  opened, repaid_loans, defaults, settled, written_off, restructured   counts of loans
  on_time, late               counts of instalments (shown, not scored)
  on_time_w, late_w           amount-weighted sums of instalments paid on time / late,
                              decaying: halved for every whole HALF_LIFE_DAYS since `t`
  t                           when the weights were last brought up to date (chain time)
  repaid_volume               principal of the loans repaid in full (those that count:
                              at least 100.00, running at least one period), not decaying
  open_principal, open_loans  principal outstanding and number of active loans, all lenders
  since                       when the identity was first attested (None for an address)
"""
from __future__ import annotations

SCORE_MIN, SCORE_MAX = 300, 850
SCORE_BASE = 500
THIN_FILE = 300          # any unattested address
FLOOR = 350              # the least an attested history scores: above THIN_FILE
DAY = 86_400
HALF_LIFE_DAYS = 180     # on-time and late weights halve per whole 180 days elapsed
HALF_LIFE = HALF_LIFE_DAYS * DAY

HISTORY_FIELDS = ("opened", "repaid_loans", "defaults", "settled", "written_off",
                  "restructured", "on_time", "late", "on_time_w", "late_w", "t",
                  "repaid_volume", "open_principal", "open_loans", "since")


def empty_history(since: int | None = None) -> dict:
    return {**{f: 0 for f in HISTORY_FIELDS}, "since": since}


# --- the scorecard: (threshold, points) bins, rising; the highest bin reached counts -------
# Amounts are in minor units (two decimals): 10_000 is 100.00 LND.
ON_TIME_BINS = ((1, 5), (10_000, 15), (50_000, 30), (100_000, 45), (250_000, 65),
                (500_000, 85), (1_000_000, 110))
LATE_BINS = ((1, -30), (10_000, -50), (50_000, -75), (100_000, -100), (250_000, -130))
VOLUME_BINS = ((10_000, 10), (100_000, 25), (1_000_000, 50), (10_000_000, 70))
AGE_BINS = ((30, 10), (90, 20), (365, 40), (730, 60))                   # days
DEBT_BINS = ((1, -10), (100_000, -25), (500_000, -45), (2_000_000, -70))
CONCURRENT_BINS = ((2, -40), (3, -80), (4, -120))                       # active loans
DEFAULT_POINTS, SETTLED_DEFAULT_POINTS, DEFAULTS_CAP = -200, -100, -400
RESTRUCTURED_POINTS, RESTRUCTURED_CAP = -15, -45
REPAID_LOAN_POINTS, REPAID_LOANS_CAP = 20, 80
# A borrower's groups (joint liability, ledger/groups.py): each default of a fellow member
# costs every other member points, and clearing a fellow's overdue instalment with a
# cover earns a few; both capped, so a group's record moves a score by at most -60 / +15.
FELLOW_DEFAULT_POINTS, FELLOW_DEFAULTS_CAP = -20, -60
COVER_POINTS, COVERS_CAP = 5, 15


def group_points(g: dict) -> int:
    """The points a group record ({fellow_defaults, covers}) adds to its members' scores."""
    return (max(FELLOW_DEFAULTS_CAP, FELLOW_DEFAULT_POINTS * g["fellow_defaults"])
            + min(COVERS_CAP, COVER_POINTS * g["covers"]))


def _binned(value: int, bins) -> int:
    """Points of the highest bin whose threshold `value` reaches (bins rising)."""
    points = 0
    for threshold, p in bins:
        if value >= threshold:
            points = p
    return points


def decayed(h: dict, now: int) -> dict:
    """The history with its weights brought up to `now`: halved once per whole half-life
    since `t`, and `t` moved on by those whole half-lives (the part of a half-life not yet
    elapsed carries over, so updating often or rarely gives the same weights)."""
    if now <= h["t"]:
        return h
    n = (now - h["t"]) // HALF_LIFE
    if n == 0:
        return h
    shift = min(n, 63)
    return {**h, "on_time_w": h["on_time_w"] >> shift, "late_w": h["late_w"] >> shift,
            "t": h["t"] + n * HALF_LIFE}


def merge(a: dict, b: dict, now: int) -> dict:
    """Two histories as one (an address's own history joining its identity's)."""
    a, b = decayed(a, now), decayed(b, now)
    out = {f: a[f] + b[f] for f in HISTORY_FIELDS if f not in ("t", "since")}
    # Both are decayed to `now` (each keeps its part of a half-life not yet elapsed); the
    # sum takes the later anchor, so the merged weights never decay sooner than either.
    out["t"] = max(a["t"], b["t"])
    sinces = [s for s in (a["since"], b["since"]) if s is not None]
    out["since"] = min(sinces) if sinces else None
    return out


def components(h: dict, age_from: int | None, now: int) -> dict[str, int]:
    h = decayed(h, now)
    age_days = 0 if age_from is None else max(0, now - age_from) // DAY
    unsettled = max(0, h["defaults"] - h["settled"])
    return {
        "on_time_instalments": _binned(h["on_time_w"], ON_TIME_BINS),
        "late_instalments": _binned(h["late_w"], LATE_BINS),
        "defaults": max(DEFAULTS_CAP, DEFAULT_POINTS * unsettled
                        + SETTLED_DEFAULT_POINTS * min(h["settled"], h["defaults"])),
        "restructured": max(RESTRUCTURED_CAP, RESTRUCTURED_POINTS * h["restructured"]),
        "loans_repaid": min(REPAID_LOANS_CAP, REPAID_LOAN_POINTS * h["repaid_loans"]),
        "amount_repaid": _binned(h["repaid_volume"], VOLUME_BINS),
        "account_age": _binned(age_days, AGE_BINS),
        "current_debt": _binned(h["open_principal"], DEBT_BINS),
        "concurrent_loans": _binned(h["open_loans"], CONCURRENT_BINS),
    }


def score(h: dict, attested: bool, age_from: int | None, now: int,
          group: dict | None = None) -> dict:
    """The score of a history at chain time `now`. `attested`: whether the history is an
    attested identity's (else a thin file); `age_from`: when the identity was first
    attested (or the address registered), for the age factor; `group`: its groups'
    record, if it was ever in one (the "group" component, absent otherwise)."""
    parts = components(h, age_from, now)
    if group is not None:
        parts["group"] = group_points(group)
    if attested:
        total = max(FLOOR, min(SCORE_MAX, SCORE_BASE + sum(parts.values())))
        # The factors that cost points, worst first; ties broken by name.
        reasons = [name for name, p in sorted(parts.items(), key=lambda kv: (kv[1], kv[0]))
                   if p < 0]
    else:
        total, reasons = THIN_FILE, ["thin_file"]
    d = decayed(h, now)
    return {"score": total, "base": SCORE_BASE, "components": parts, "reasons": reasons,
            "range": [SCORE_MIN, SCORE_MAX], "floor": FLOOR, "thin_file": not attested,
            "history": {k: d[k] for k in HISTORY_FIELDS if k != "t"}}


def tier_for(tiers: list, score_value: int):
    """The best tier [min_score, rate_bps, max_principal] this score reaches, or None."""
    best = None
    for tier in tiers:           # tiers rise by min_score (checked when the offer is made)
        if score_value >= tier[0]:
            best = tier
    return best
