"""Settling a defaulted loan from its collateral, and no more.

When a loan defaults its agreement seizes the liens (the VM's `seize`); here that opens a
sale for each pledged asset instead of handing the asset to the lender. For SALE_DAYS of
chain time anyone may bid in LND; a bid is escrowed and must beat the best by MIN_RAISE_BPS
and reach the reserve (RESERVE_BPS of the value the loan counted for the asset, so a
lowball bid cannot take a valuable asset for little); the loan's own lender bids at least
the asset's counted value, what taking it unsold would cost. Once the sale has closed
anyone may settle it:

- sold: the asset goes to the best bidder and the price is paid into the loan as a
  recovery. The agreement applies what the debt still claims and returns the rest to the
  borrower, so the debt is paid from the collateral and no more; a shortfall stays owed.
- not sold: the lender may take the asset at its value (`counted_value`: what the loan's
  cover counted for it, appraised or accepted by the lender, or its appraisal now if
  more): the lender pays that value in as a recovery, which comes back to the lender up
  to the debt, and the surplus goes to the borrower.

If the borrower pays the whole claim while a sale is open, the agreement releases the
liens and every open sale is cancelled, its best bid refunded; an unsold sale is
cancelled too, so the lender can no longer take the asset.
"""
from __future__ import annotations

import hashlib

from lendnet.contracts.agreements import LOAN_KEY, LOAN_STATUS

from .ledger import Ledger
from .tx import SignedTx, TxError

DAY = 86_400
SALE_DAYS = 7                   # chain days a collateral sale takes bids
RESERVE_BPS = 5_000             # the least a bid may be: half the asset's counted value
MIN_RAISE_BPS = 100             # a new bid beats the best by at least 1 %
RECOVERY_GAS = 4_000            # the agreement's run for a recovery (as a repayment's)
SALE_STATUSES = ("open", "sold", "unsold", "taken", "cancelled")
# The agreement is in default (or written off) while its claim is open: recoveries go in.
CLAIM_OPEN = ("defaulted", "written_off")


def counted_value(led: Ledger, loan: str, asset_id: str) -> int:
    """What the asset is worth to this loan's settlement: the value its cover counted at
    funding (appraised, or accepted by the lender) or its appraisal now, whichever is
    more, so a lender who accepted an asset cheaply cannot take it cheaply."""
    cover = {c["asset"]: c["value"] for c in led.state.loans.get(loan).get("cover", [])}
    appraised = led.state.assets.get(asset_id).get("appraised_value") or 0
    return max(cover.get(asset_id, 0), appraised)


def sale_id(loan: str, asset_id: str) -> str:
    """One sale per loan and asset: its id is a hash of both."""
    return hashlib.sha256(f"lendnet/sale/{loan}/{asset_id}".encode()).hexdigest()


def open_sales(led: Ledger, loan: str, lender: str) -> None:
    """The agreement seized the liens: put each asset still pledged to it up for sale."""
    st = led.state
    for asset_id in st.loans.get(loan)["collateral"]:
        asset = st.assets.get(asset_id)
        if asset["lien"] != loan:
            continue
        value = counted_value(led, loan, asset_id)
        st.sales.put(sale_id(loan, asset_id), {
            "loan": loan, "asset": asset_id, "lender": lender, "owner": asset["owner"],
            "value": value, "reserve": max(1, -(-value * RESERVE_BPS // 10_000)),
            "opened": led.time, "closes": led.time + SALE_DAYS * DAY,
            "best": 0, "bidder": None, "status": "open"})
        st.assets.put(asset_id, {**asset, "sale": sale_id(loan, asset_id)})


def cancel_sales(led: Ledger, loan: str) -> None:
    """The claim was paid: the liens are released, so open sales end, bids refunded."""
    st = led.state
    for asset_id in st.loans.get(loan)["collateral"]:
        sid = sale_id(loan, asset_id)
        sale = st.sales.get(sid)
        # An unsold sale ends too: the lender is owed nothing more, so it may no longer
        # take the asset (it could otherwise force a purchase from a borrower who paid
        # in full, or take an asset the borrower has pledged again elsewhere).
        if sale is None or sale["status"] not in ("open", "unsold"):
            continue
        if sale["bidder"] is not None:
            led.credit_from_escrow(sale["bidder"], sale["best"])
        st.sales.put(sid, {**sale, "status": "cancelled", "best": 0})
        asset = st.assets.get(asset_id)
        st.assets.put(asset_id, {k: v for k, v in asset.items() if k != "sale"})


def acts_as_lender(led: Ledger, sale: dict, who: str) -> bool:
    """Whether `who` stands in the sale's lender's shoes: the loan's lender, or for a
    shared loan (its lender a pool, ledger/pools.py) any lender holding a slice of it."""
    if who == sale["lender"]:
        return True
    pool = led.state.pools.get(sale["lender"])
    return pool is not None and any(s[0] == who for s in pool["slices"])


def _sale(led: Ledger, sid: str) -> dict:
    return led.record("sales", sid, "collateral sale")


def _bid(led: Ledger, tx: SignedTx, b: dict) -> None:
    sale = _sale(led, b["sale"])
    if sale["status"] != "open" or led.time >= sale["closes"]:
        raise TxError(f"the sale is {sale['status']} and closed at {sale['closes']}; "
                      f"it takes no more bids")
    least = max(sale["reserve"], sale["best"] + -(-sale["best"] * MIN_RAISE_BPS // 10_000))
    if acts_as_lender(led, sale, tx.sender):
        # The lender (any of a shared loan's lenders) bids no less than take_collateral
        # would charge it: otherwise it could bid the reserve on its own borrower's sale,
        # take the asset at half its value and halve the surplus the borrower is owed.
        least = max(least, sale["value"])
    if b["amount"] < least:
        raise TxError(f"a bid must be at least {least} (the reserve, or the best bid "
                      f"{sale['best']} raised by {MIN_RAISE_BPS} bps; the loan's lender "
                      f"bids at least the asset's value {sale['value']})")
    led.require_funds(tx.sender, b["amount"])
    led.debit_to_escrow(tx.sender, b["amount"])
    if sale["bidder"] is not None:
        led.credit_from_escrow(sale["bidder"], sale["best"])
    led.state.sales.put(b["sale"], {**sale, "best": b["amount"], "bidder": tx.sender})


def _recover(led: Ledger, sale: dict, amount: int) -> None:
    """A sale's price (already the loan's) goes in as a recovery; the surplus is the
    borrower's."""
    recover(led, sale["loan"], amount, led.state.loans.get(sale["loan"])["borrower"])


def recover(led: Ledger, loan: str, amount: int, surplus_to: str) -> None:
    """Pay `amount`, already in the loan's balance, in as a recovery of its claim: the
    agreement takes what the claim still needs and returns the rest to `surplus_to` (the
    caller of its run). When nothing more is owed, it all goes to `surplus_to`."""
    status = LOAN_STATUS[led.state.storage.get((loan, LOAN_KEY["st"]), 0)]
    if amount == 0:
        return
    if status not in CLAIM_OPEN:
        led.move(loan, surplus_to, amount)
        return
    led.run_contract(loan, [b"repay"], surplus_to, amount, RECOVERY_GAS)


def _transfer_asset(led: Ledger, asset_id: str, to: str) -> None:
    asset = led.state.assets.get(asset_id)
    led.state.assets.put(asset_id, {**{k: v for k, v in asset.items() if k != "sale"},
                                    "owner": to, "lien": None})


def _settle_sale(led: Ledger, tx: SignedTx, b: dict) -> None:
    sale = _sale(led, b["sale"])
    if sale["status"] != "open":
        raise TxError(f"the sale is already {sale['status']}")
    if led.time < sale["closes"]:
        raise TxError(f"the sale takes bids until {sale['closes']}; settle it after")
    if sale["bidder"] is None:
        led.state.sales.put(b["sale"], {**sale, "status": "unsold"})
        return
    led.state.sales.put(b["sale"], {**sale, "status": "sold"})
    _transfer_asset(led, sale["asset"], sale["bidder"])
    led.credit_from_escrow(sale["loan"], sale["best"])
    _recover(led, sale, sale["best"])


def _take_collateral(led: Ledger, tx: SignedTx, b: dict) -> None:
    sale = _sale(led, b["sale"])
    if not acts_as_lender(led, sale, tx.sender):
        raise TxError("only the loan's lender (for a shared loan, one of its pool's "
                      "lenders) can take unsold collateral")
    if sale["status"] != "unsold":
        raise TxError(f"the sale is {sale['status']}: only unsold collateral can be taken "
                      f"(settle the sale once it has closed)")
    if led.state.assets.get(sale["asset"])["lien"] != sale["loan"]:
        # Defence in depth: an asset whose lien the loan no longer holds is not the
        # lender's to take (cancel_sales ends such sales when the claim is paid).
        raise TxError("the asset is no longer pledged to this loan")
    led.state.sales.put(b["sale"], {**sale, "status": "taken"})
    _transfer_asset(led, sale["asset"], tx.sender)
    if sale["value"]:
        led.require_funds(tx.sender, sale["value"])
        led.move(tx.sender, sale["loan"], sale["value"])
        _recover(led, sale, sale["value"])


def escrowed(led: Ledger) -> int:
    """The best bids of open sales, held until the sale settles or is outbid."""
    return sum(s["best"] for _, s in led.state.sales.items() if s["status"] == "open")


HANDLERS = {"bid": _bid, "settle_sale": _settle_sale, "take_collateral": _take_collateral}
GAS = {"bid": (3_000, 0), "settle_sale": (4_000, RECOVERY_GAS),
       "take_collateral": (4_000, RECOVERY_GAS)}
