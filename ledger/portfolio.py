"""A loan book as loan officers read it: outstanding, arrears buckets, PAR, net yield.

Portfolio at risk (PAR1, PAR30, PAR90): the principal outstanding of loans more than 0
(30, 90) days past due, as a share of all principal outstanding, in basis points. Loans counted as
outstanding are those still owed: active (current or in arrears) and defaulted; written-off,
repaid and settled loans are not. A defaulted loan's principal stays at risk until it is
recovered or written off.

Net yield: what the lenders got back (repayments and recoveries) plus the principal still
outstanding on active loans, less what they lent, as basis points of what they lent; the
principal of defaulted and written-off loans counts as lost until it is recovered. It is a
return over the book's life, not a yearly rate.

A shared loan (funded by a pool of lenders, ledger/pools.py) is in each pool lender's
book at its share: its principal lent and outstanding (and so its PAR) pro rata to the
lender's slice, rounded down, and as received what the pool has paid that lender (its
share of repayments, recoveries and the origination fee). The network's book counts it
once, as one loan.

A read-only view over `lending.loan_view` rows: consensus never calls it.
"""
from __future__ import annotations

from . import pools
from .ledger import Ledger
from .lending import BUCKETS as _LIMITS, loan_view

BUCKETS = (*(name for name, _ in _LIMITS), "90+")     # lending.bucket's names, in order
OWED = ("active", "defaulted")          # statuses whose principal is still outstanding
LOST = ("defaulted", "written_off")     # statuses whose outstanding counts as lost


def _bps(part: int, whole: int) -> int | None:
    return part * 10_000 // whole if whole else None


def summary(views: list[dict]) -> dict:
    """The book of these loans (loan_view rows)."""
    outstanding = sum(v["principal_outstanding"] or 0 for v in views if v["status"] in OWED)
    at_risk = {days: sum(v["principal_outstanding"] or 0 for v in views
                         if v["status"] in OWED and (v["days_past_due"] or 0) > days)
               for days in (0, 30, 90)}
    # What was lent: the principal disbursed, not the agreement's P, which a restructuring
    # overwrites with the payoff (capitalised interest, fees and penalty are not lent).
    lent = sum(v.get("principal", v["terms"]["P"]) or 0 for v in views)
    received = sum(v["terms"]["paid"] or 0 for v in views)
    performing = sum(v["principal_outstanding"] or 0 for v in views if v["status"] == "active")
    lost = sum(v["principal_outstanding"] or 0 for v in views if v["status"] in LOST)
    by_bucket = {b: {"loans": 0, "outstanding": 0} for b in BUCKETS}
    statuses: dict[str, int] = {}
    for v in views:
        statuses[v["status"]] = statuses.get(v["status"], 0) + 1
        if v["status"] in OWED:
            slot = by_bucket[v["bucket"]]
            slot["loans"] += 1
            slot["outstanding"] += v["principal_outstanding"] or 0
    return {
        "loans": len(views), "lent": lent, "received": received,
        "outstanding": outstanding, "by_status": dict(sorted(statuses.items())),
        "buckets": by_bucket,
        "par1_bps": _bps(at_risk[0], outstanding), "par30_bps": _bps(at_risk[30], outstanding),
        "par90_bps": _bps(at_risk[90], outstanding),
        "at_risk_1": at_risk[0], "at_risk_30": at_risk[30], "at_risk_90": at_risk[90],
        "lost": lost,
        "net_yield_bps": _bps(received + performing - lent, lent),
    }


def share_view(view: dict, amount: int, target: int, received: int) -> dict:
    """A shared loan's view at one lender's share: `amount` of its `target`."""
    def part(x) -> int:
        return (x or 0) * amount // target
    return {**view, "principal_outstanding": part(view["principal_outstanding"]),
            "principal": part(view.get("principal", view["terms"]["P"])),
            "terms": {**view["terms"], "paid": received}}


def shared_views(led: Ledger, lender: str) -> list[dict]:
    """The shared loans `lender` holds a slice of, each at its share (share_view), with
    the share's own figures under "share"."""
    out = []
    for addr, pool, row in pools.shares_of(led, lender):
        v = loan_view(led, pool["loan"])
        if v is None:
            continue
        mine = share_view(v, row["amount"], pool["target"], row["received"])
        out.append({**mine, "share": {"pool": addr, "application": pool["application"],
                                      "amount": row["amount"], "of": pool["target"],
                                      "share_bps": row["share_bps"],
                                      "received": row["received"],
                                      "outstanding": mine["principal_outstanding"]}})
    return out


class Busy(Exception):
    """Too many lenders' books asked for in one height (Books.FRESH_PER_HEIGHT)."""


class Books:
    """Loan books as of the ledger's height, each computed at most once a height (it is a
    walk over every loan): one keeper for everything a node serves them to (the API, the
    explorer). At most MOST books are kept."""

    MOST = 1024
    # Lenders' books computed afresh in one height, at most: any address may be asked
    # for, and each costs a walk over every loan and pool, so without this a client's
    # every request would cost O(state). (The network's book is one a height anyway.)
    FRESH_PER_HEIGHT = 16

    def __init__(self) -> None:
        self._kept: dict = {}            # lender (None: the network) -> (height, book, ids)
        self._fresh = (-1, 0)            # height, lenders' books computed in it

    def get(self, led: Ledger, lender: str | None = None) -> tuple[int, dict, list]:
        """(height, summary, the defaulted loans' ids in key order) for one lender's
        loans, or the network's; Busy past FRESH_PER_HEIGHT new lenders' books in one
        height."""
        kept = self._kept.get(lender)
        if kept is None or kept[0] != led.height:
            if lender is not None:
                height, n = self._fresh if self._fresh[0] == led.height else (led.height, 0)
                if n >= self.FRESH_PER_HEIGHT:
                    raise Busy(f"{n} lenders' loan books were computed at height "
                               f"{led.height} already, the most in one height: ask again "
                               f"after the next block")
                self._fresh = (height, n + 1)
            if len(self._kept) >= self.MOST:
                self._kept.clear()
            # O(loans + pools) once per (lender, height): kept, at most MOST of them.
            views = [v for loan, rec in led.state.loans.items()
                     if lender is None or rec["lender"] == lender
                     if (v := loan_view(led, loan)) is not None]
            shared = [] if lender is None else shared_views(led, lender)
            views += shared
            book = summary(views)
            if lender is not None:
                book["shares"] = [{"loan": v["loan"], "status": v["status"], **v["share"]}
                                  for v in shared]
            defaulted = sorted(v["loan"] for v in views if v["status"] == "defaulted")
            kept = self._kept[lender] = (led.height, book, defaulted)
        return kept
