"""Savings paired with credit: deposit accounts that earn interest and may be pledged as
cash collateral (issue 18).

A provider (any address: a lender, an MFI) publishes a savings product with a yearly
rate and an interest reserve. Each product is one instance of the savings agreement
(`contracts/agreements/savings.lasm`), which holds the reserve and every account's
deposits and makes the money decisions: interest (simple, actual/365, whole days,
rounded down, paid from the reserve while it lasts), who may take money out and how
much, withdrawals blocked while anything is pledged. This module validates the
transactions, moves money in, runs the agreement, and keeps the index the ledger and the
API need: which pledges back which application or loan.

A pledge backs the owner's own open application or active loan and counts at face value
toward the offer's collateral cover. It is indexed under the application's id (a loan
keeps its application's id, so a pledge made before funding follows the loan without
being moved). It ends in one of two ways:

- released, when the loan closes repaid or settled or the application is withdrawn
  (`release_pledges`, from lending.release_liens). Releasing runs no contract: it may be
  called from inside the loan agreement's run (its `release` op), and a repayment's gas
  budget has no room for other contracts' runs. The agreement is told on the owner's next
  savings transaction (`_unlock_released`), before anything else; until then the API
  shows the pledge released and the money "to unlock".
- drawn, after a run of the loan in default or written off (`draw_pledges`, a step of
  lending.AFTER_LOAN_RUN, after the guarantees'): the agreement pays min(pledge, the
  claim now) into the loan, which takes it as a recovery; a surplus would go back to the
  owner. A default the guarantees paid in full leaves the loan settled: nothing is drawn.
"""
from __future__ import annotations

from typing import Any

from lendnet.contracts.agreements import ReadOnlyHost, call_readonly

from . import guarantees, keys, settlement
from .ledger import Ledger
from .tx import SignedTx, TxError

MAX_RATE_BPS = 2_000            # 20 % a year: the most a product may promise
# Active pledges one account may have, and pledges (of any accounts) one application or
# loan may have: release, draw and the views walk them, so both are bounded.
MAX_PLEDGES_PER_ACCOUNT = 4
MAX_PLEDGES_PER_TARGET = 4
PLEDGE_STATUSES = ("active", "released", "drawn")

# Gas budgets of the agreement's runs (VM gas, storage included), measured by
# tests/test_savings.py::test_gas_of_each_method_is_within_its_budget and
# ::test_gas_of_a_draw_and_of_its_recovery (the figures in the comments), with two to
# five times that as the budget (the tests fail if a run outgrows its budget). Storage
# is most of it: a new account writes five rows (20 gas a byte, ledger/fees.py).
PRODUCT_GAS = 6_000             # init: measured 1,878
FUND_GAS = 1_000                # fund: measured 87
DEPOSIT_GAS = 12_000            # first deposit (opens the account): 5,408; later: 333
WITHDRAW_GAS = 1_500            # measured 335
PLEDGE_GAS = 1_500              # measured 306
RELEASE_GAS = 1_500             # measured 301
DRAW_GAS = 1_500                # measured 409 (the loan's recovery then runs on its own
                                # budget, settlement.RECOVERY_GAS)
# The owner's first savings transaction after pledges were released unlocks them, all in
# one run of release.
UNLOCK_GAS = RELEASE_GAS


# --- reading the agreement ------------------------------------------------------------------

def _stored(led: Ledger, product: str, key: bytes) -> int:
    return led.state.storage.get((product, key)) or 0


def _product(led: Ledger, product: str) -> dict:
    return led.record("savings", product, "savings product")


def account_view(led: Ledger, product: str, owner: str) -> dict | None:
    """The account as it stands now, interest accrued to this chain time (computed by
    the agreement, read-only: nothing is stored), or None when it has none."""
    if not _stored(led, product, b"t" + owner.encode()):
        return None
    code = led.state.code.get(led.state.contracts.get(product)["code"])
    store = led.state.storage
    host = ReadOnlyHost(led.time, lambda key: store.get((product, key)), product.encode())
    call_readonly(code, [b"view", owner.encode()], host)
    b, through, earned, unpaid, locked, _reserve = host.events[-1][1]
    acct = led.state.savings_accounts.get((product, owner)) or _NEW_ACCOUNT
    pledges = [{"to": key, **p} for key in acct["pledges"]
               for p in led.state.savings_pledges.get(key, []) if _is(p, product, owner)]
    # The agreement still locks pledges released since the owner's last transaction
    # ("to_unlock"); they are free, and unlocked before anything else the owner does.
    pledged = locked - acct["unlock"]
    return {"product": product, "owner": owner, "balance": b,
            "interest_earned": earned, "interest_unpaid": unpaid,
            "interest_accrued_through": through, "pledged": pledged,
            "to_unlock": acct["unlock"], "available": b - pledged, "pledges": pledges}


def product_view(led: Ledger, product: str) -> dict | None:
    rec = led.state.savings.get(product)
    if rec is None:
        return None
    return {"product": product, **rec, "reserve": _stored(led, product, b"reserve"),
            "accounts": _stored(led, product, b"n"), "balance": led.balance(product)}


# --- the pledge index -------------------------------------------------------------------------

_NEW_ACCOUNT: dict[str, Any] = {"pledges": [], "unlock": 0}


def _is(p: dict, product: str, owner: str) -> bool:
    return p["product"] == product and p["owner"] == owner


def pledge_key(led: Ledger, target: str) -> str:
    """Where pledges to an application or loan are indexed: the application's id (a loan
    is found by its record's application; a loan without one, by its address)."""
    rec = led.state.loans.get(target)
    if rec is not None:
        return rec.get("application") or target
    return target


def pledged_to(led: Ledger, target: str) -> int:
    """The cash pledged, and not released or drawn, to an application or loan (the
    compulsory-savings check at funding reads this)."""
    return sum(p["amount"] for p in led.state.savings_pledges.get(pledge_key(led, target), [])
               if p["status"] == "active")


def release_pledges(led: Ledger, holder: str) -> None:
    """The loan closed repaid or settled, or the application ended: every active pledge to
    it is released. No contract runs here (see the module's doc): the owner's account
    records what its agreement must unlock, done on the owner's next transaction."""
    st = led.state
    key = pledge_key(led, holder)
    rows = st.savings_pledges.get(key)
    if not rows or not any(p["status"] == "active" for p in rows):
        return
    for p in rows:
        if p["status"] == "active":
            _end_pledge(led, key, p, "released")
    st.savings_pledges.put(key, [{**p, "status": "released"} if p["status"] == "active"
                                 else p for p in rows])


def _end_pledge(led: Ledger, key: str, p: dict, how: str) -> None:
    """Take the pledge off its account's active list; a released one's amount is to be
    unlocked in the agreement (a drawn one the draw itself unlocked)."""
    st = led.state
    ak = (p["product"], p["owner"])
    acct = st.savings_accounts.get(ak) or _NEW_ACCOUNT
    st.savings_accounts.put(ak, {
        "pledges": [k for k in acct["pledges"] if k != key],
        "unlock": acct["unlock"] + (p["amount"] if how == "released" else 0)})


def _unlock_released(led: Ledger, product: str, owner: str) -> None:
    """Tell the agreement about pledges released since the owner's last transaction."""
    st = led.state
    acct = st.savings_accounts.get((product, owner))
    if acct is None or not acct["unlock"]:
        return
    led.run_contract(product, [b"release", owner.encode(), acct["unlock"]], product, 0,
                     RELEASE_GAS)
    st.savings_accounts.put((product, owner), {**acct, "unlock": 0})


# --- transactions -----------------------------------------------------------------------------

def _savings_product(led: Ledger, tx: SignedTx, b: dict) -> None:
    led.require_funds(tx.sender, b["reserve"])
    product = keys.derive_address(b"savings", tx.hash)
    led.create_contract(product, led.state.meta.get("savings_code"), tx.sender)
    led.move(tx.sender, product, b["reserve"])
    led.run_contract(product, [b"init", b["rate_bps"]], tx.sender, b["reserve"], PRODUCT_GAS)
    led.state.savings.put(product, {"name": b["name"], "provider": tx.sender,
                                    "rate_bps": b["rate_bps"], "created": led.time,
                                    "funded": b["reserve"]})


def _savings_fund(led: Ledger, tx: SignedTx, b: dict) -> None:
    rec = _product(led, b["product"])
    if tx.sender != rec["provider"]:
        raise TxError("only the product's provider can fund its interest reserve")
    led.require_funds(tx.sender, b["amount"])
    led.move(tx.sender, b["product"], b["amount"])
    led.run_contract(b["product"], [b"fund"], tx.sender, b["amount"], FUND_GAS)
    led.state.savings.put(b["product"], {**rec, "funded": rec["funded"] + b["amount"]})


def _savings_deposit(led: Ledger, tx: SignedTx, b: dict) -> None:
    _product(led, b["product"])
    _unlock_released(led, b["product"], tx.sender)
    led.require_funds(tx.sender, b["amount"])
    led.move(tx.sender, b["product"], b["amount"])
    led.run_contract(b["product"], [b"deposit"], tx.sender, b["amount"], DEPOSIT_GAS)


def _account(led: Ledger, product: str, owner: str) -> dict:
    _product(led, product)
    view = account_view(led, product, owner)
    if view is None:
        raise TxError(f"{owner} has no account in savings product {product}: deposit first")
    return view


def _savings_withdraw(led: Ledger, tx: SignedTx, b: dict) -> None:
    _product(led, b["product"])
    _unlock_released(led, b["product"], tx.sender)
    acct = _account(led, b["product"], tx.sender)
    active = [p for p in acct["pledges"] if p["status"] == "active"]
    if active:
        named = ", ".join(f"{p['amount']} to {p['to']}" for p in active)
        raise TxError(f"withdrawals blocked while the account is pledged: {named}; a "
                      f"pledge ends when its loan is repaid or its application withdrawn")
    if b["amount"] > acct["balance"]:
        raise TxError(f"amount {b['amount']} exceeds the account's balance "
                      f"{acct['balance']} (interest to now included)")
    led.run_contract(b["product"], [b"withdraw", b["amount"]], tx.sender, 0, WITHDRAW_GAS)


def _pledge_target(led: Ledger, owner: str, target: str) -> str:
    """The pledge key of the owner's own open application or active loan, else refuse."""
    from . import lending            # lending imports this module: import at call time
    st = led.state
    app = st.applications.get(target)
    if app is not None:
        if app["borrower"] != owner or app["status"] != "open":
            raise TxError("savings can be pledged only to your own open application")
        return target
    rec = st.loans.get(target)
    if rec is not None:
        if rec["borrower"] != owner or lending.loan_status(led, target) != "active":
            raise TxError("savings can be pledged only to your own active loan")
        return pledge_key(led, target)
    raise TxError(f"no open application or loan {target}")


def _savings_pledge(led: Ledger, tx: SignedTx, b: dict) -> None:
    st = led.state
    product, owner, amount = b["product"], tx.sender, b["amount"]
    _product(led, product)
    _unlock_released(led, product, owner)
    acct = _account(led, product, owner)
    key = _pledge_target(led, owner, b["to"])
    rows = st.savings_pledges.get(key, [])
    mine = next((p for p in rows if _is(p, product, owner) and p["status"] == "active"),
                None)
    if mine is None:
        held = sum(p["status"] == "active" for p in rows)
        if held >= MAX_PLEDGES_PER_TARGET:
            raise TxError(f"{b['to']} already has {held} savings pledges: at most "
                          f"{MAX_PLEDGES_PER_TARGET}")
        if len(acct["pledges"]) >= MAX_PLEDGES_PER_ACCOUNT:
            raise TxError(f"this account already backs {len(acct['pledges'])} "
                          f"applications or loans: at most {MAX_PLEDGES_PER_ACCOUNT}")
    if amount > acct["available"]:
        raise TxError(f"amount {amount} exceeds the account's unpledged balance "
                      f"{acct['available']}")
    led.run_contract(product, [b"pledge", amount], owner, 0, PLEDGE_GAS)
    if mine is None:
        rows = rows + [{"product": product, "owner": owner, "amount": amount,
                        "drawn": 0, "status": "active", "created": led.time}]
        ak = (product, owner)
        a = st.savings_accounts.get(ak) or _NEW_ACCOUNT
        st.savings_accounts.put(ak, {**a, "pledges": a["pledges"] + [key]})
    else:               # a second pledge to the same target adds to the first
        rows = [{**p, "amount": p["amount"] + amount} if p is mine else p for p in rows]
    st.savings_pledges.put(key, rows)
    _show_in_cover(led, b["to"], product, owner, amount)


def cover_entry(product: str, owner: str, amount: int) -> dict:
    """How pledged savings show in an application's or loan's cover: face value."""
    return {"asset": f"savings:{product}/{owner}", "value": amount, "source": "savings"}


def _show_in_cover(led: Ledger, target: str, product: str, owner: str, amount: int) -> None:
    """Count the pledge toward the cover: the application's `savings` entries (which
    lending.collateral_cover adds to its cover), or a running loan's cover itself."""
    st = led.state
    name = cover_entry(product, owner, 0)["asset"]
    if target in st.applications:
        rec, field = st.applications.get(target), "savings"
        table = st.applications
    else:
        rec, field = st.loans.get(target), "cover"
        table = st.loans
    entries = list(rec.get(field, []))
    for i, c in enumerate(entries):
        if c["asset"] == name:
            entries[i] = {**c, "value": c["value"] + amount}
            break
    else:
        entries.append(cover_entry(product, owner, amount))
    table.put(target, {**rec, field: entries})


def savings_cover(app: dict) -> list[dict]:
    """The savings entries of an application's cover (lending.collateral_cover)."""
    return list(app.get("savings", []))


# --- the default: a step of lending.AFTER_LOAN_RUN -------------------------------------------

def draw_pledges(led: Ledger, loan: str, rec: dict) -> None:
    """After a run of a loan: in default (or written off), each active pledge pays
    min(pledge, the claim now) into it as a recovery, in the order pledged; closed (repaid
    or settled), its pledges are released. Idempotent; the usual path is one dict lookup."""
    rows = led.state.savings_pledges.get(rec.get("application") or loan)
    if not rows:
        return
    from . import lending            # lending imports this module: import at call time
    while True:
        key = rec.get("application") or loan
        rows = led.state.savings_pledges.get(key)
        first = next((p for p in rows if p["status"] == "active"), None)
        if first is None:
            return
        status = lending.loan_status(led, loan)
        if status in ("repaid", "settled"):
            release_pledges(led, loan)
            return
        if status not in settlement.CLAIM_OPEN:
            return
        if led.in_transaction:
            # Inside a transaction (a repayment that found the loan past its default
            # date): its gas limit has no room for the draws. The loan's duty draws
            # them in the next block (a defaulted loan's tick does nothing else).
            led.set_wake(loan, led.time)
            return
        if guarantees.undrawn(led, loan):
            return              # the guarantees pay first (lending.AFTER_LOAN_RUN's order)
        _draw(led, loan, key, rows, first, lending.loan_payoff(led, loan) or 0)


def _draw(led: Ledger, loan: str, key: str, rows: list, p: dict, claim: int) -> None:
    """Draw one pledge: marked drawn first, so the runs this starts (the loan's recovery
    runs this step again) see it done."""
    amount = min(p["amount"], claim)
    led.state.savings_pledges.put(key, [{**q, "status": "drawn", "drawn": amount}
                                        if q is p else q for q in rows])
    _end_pledge(led, key, p, "drawn")
    product, owner = p["product"], p["owner"]
    led.run_contract(product, [b"draw", owner.encode(), loan.encode(), amount, p["amount"]],
                     product, 0, DRAW_GAS)
    settlement.recover(led, loan, amount, owner)


# --- what the ledger is given -----------------------------------------------------------------

def is_savings(led: Ledger, address: str) -> bool:
    return address in led.state.savings


HANDLERS = {"savings_product": _savings_product, "savings_fund": _savings_fund,
            "savings_deposit": _savings_deposit, "savings_withdraw": _savings_withdraw,
            "savings_pledge": _savings_pledge}
# (fixed gas, the most the agreement's runs may burn): a deposit, withdrawal or pledge
# first unlocks what was released since the owner's last transaction.
GAS = {"savings_product": (3_000, PRODUCT_GAS), "savings_fund": (2_000, FUND_GAS),
       "savings_deposit": (2_000, UNLOCK_GAS + DEPOSIT_GAS),
       "savings_withdraw": (2_000, UNLOCK_GAS + WITHDRAW_GAS),
       "savings_pledge": (3_000, UNLOCK_GAS + PLEDGE_GAS)}
