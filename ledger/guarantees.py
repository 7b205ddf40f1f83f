"""Guarantors: a third party escrows an amount behind an application or a loan, and the
loan draws on it when it defaults, before its collateral is sold.

Each guarantee is an instance of the guarantee agreement (`contracts/agreements/
guarantee.lasm`, stored by genesis), which holds the money and decides who may take it
out: the loan it backs (at most the claim left, the rest back to the guarantor) or the
guarantor (all of it, once it is released). This module validates the transactions,
moves the money in, runs the agreement and keeps the index records the API shows: the
`guarantees` table, and the list of guarantees on the application's and the loan's
records.

The rules (docs: the report of issue 18, /work/notes/s24_guarantee.md):

- `guarantee` {to, amount}: anyone but the borrower (the same address or the same attested
  identity) pledges to an open application or an active loan; at most MAX_GUARANTEES held
  per application (drawn ones stay on a loan's list); each at least MIN_GUARANTEE_BPS of
  the principal, so four dust pledges cannot fill an application's slots. A held
  guarantee counts at face value toward the offer's collateral_bps cover, like cash.
- `release_guarantee` {guarantee}: the guarantor takes it back while the application is
  open. Once funded it is held until the loan closes, then returned automatically.
- Default: after any run of a loan in default (or written off) with guarantees still
  held, each is drawn in the order pledged: the agreement pays min(held, claim left) into
  the loan, which takes it as a recovery, and the rest back to the guarantor. Collateral
  sales open at the default but settle no sooner than 7 chain days later, so guarantees
  always pay first; a claim they pay in full settles the loan, which cancels the sales
  and releases the collateral.
- Repaid or settled: the guarantees still held go back to their guarantors.

Not modelled: subrogation (the borrower does not come to owe the guarantor what it paid).
"""
from __future__ import annotations

from lendnet.contracts.agreements import GUARANTEE_STATUS, LOAN_KEY, LOAN_STATUS

from . import keys, settlement
from .ledger import InvariantError, Ledger
from .tx import SignedTx, TxError

MAX_GUARANTEES = 4          # held per application; pledged per loan (drawn ones included)
# The least a guarantee may be, in basis points of the principal (rounded up): without a
# floor, anyone could fill an application's four slots with one-unit pledges and keep a
# real guarantor out.
MIN_GUARANTEE_BPS = 500
# The agreement's gas, measured by tests/test_guarantees.py::test_gas_of_each_method (init
# writes every row the guarantee will ever have, so draw and release grow no storage):
# init 2,873 (a loan address as target) to 3,314 (an application id), draw 231, release
# 165, storage included. Each budget has about twice that or more; a run that needs more
# fails whole (and a draw that fails fails the loan's tick, retried an hour later).
INIT_GAS = 6_000
DRAW_GAS = 1_000
RELEASE_GAS = 1_000
STATUSES = tuple(s for s in GUARANTEE_STATUS.values() if s != "new")
CLOSED = ("repaid", "settled")


def address_of(tx_hash: bytes) -> str:
    """A guarantee's address: one per guarantee transaction, from its hash."""
    return keys.derive_address(b"guarantee", tx_hash)


def _loan_status(led: Ledger, loan: str) -> str:
    return LOAN_STATUS[led.state.storage.get((loan, LOAN_KEY["st"]), 0)]


def _target(led: Ledger, to: str) -> tuple[str, dict, str, int]:
    """The table, record, borrower and principal of what `to` names, if it can take a
    guarantee now: an open application or an active loan."""
    st = led.state
    app = st.applications.get(to)
    if app is not None:
        if app["status"] != "open":
            where = f": pledge to its loan {app['loan']}" if app["loan"] else ""
            raise TxError(f"application is {app['status']}, not open{where}")
        return "applications", app, app["borrower"], app["amount"]
    loan = st.loans.get(to)
    if loan is not None:
        status = _loan_status(led, to)
        if status != "active":
            raise TxError(f"loan is {status}: only an open application or an active loan "
                          f"can be guaranteed")
        return "loans", loan, loan["borrower"], loan["principal"]
    raise TxError(f"no open application or active loan {to}")


def least(principal: int) -> int:
    """The smallest guarantee a principal takes (MIN_GUARANTEE_BPS, rounded up)."""
    return -(-principal * MIN_GUARANTEE_BPS // 10_000)


def _guarantee(led: Ledger, tx: SignedTx, b: dict) -> None:
    from .lending import subject        # lending imports this module: import at use
    to, amount = b["to"], b["amount"]
    table, rec, borrower, principal = _target(led, to)
    if subject(led, tx.sender) == subject(led, borrower):
        raise TxError("a borrower cannot guarantee its own loan (the same address or the "
                      "same attested identity): pledge savings or collateral instead")
    held = rec.get("guarantees", [])
    if len(held) >= MAX_GUARANTEES:
        raise TxError(f"{to} already has {len(held)} guarantees: at most {MAX_GUARANTEES}")
    if amount < least(principal):
        raise TxError(f"a guarantee must be at least {least(principal)} "
                      f"({MIN_GUARANTEE_BPS} bps of the principal {principal})")
    led.require_funds(tx.sender, amount)
    addr = address_of(tx.hash)
    led.create_contract(addr, led.state.meta.get("guarantee_code"), tx.sender)
    led.move(tx.sender, addr, amount)
    led.run_contract(addr, [b"init", tx.sender.encode(), to.encode()], tx.sender, amount,
                     INIT_GAS)
    led.state.guarantees.put(addr, {
        "guarantor": tx.sender, "to": to, "borrower": borrower, "amount": amount,
        "application": to if table == "applications" else None,
        "loan": to if table == "loans" else None, "status": "held",
        "pledged": led.time, "tx": tx.id, "drawn": None, "refunded": None, "closed": None})
    led.state.tables[table].put(to, {**rec, "guarantees": held + [addr]})


def _record(led: Ledger, addr: str) -> dict:
    return led.record("guarantees", addr, "guarantee")


def _release_guarantee(led: Ledger, tx: SignedTx, b: dict) -> None:
    g = _record(led, b["guarantee"])
    if g["guarantor"] != tx.sender:
        raise TxError("only the guarantor can release its guarantee")
    if g["status"] != "held":
        raise TxError(f"guarantee is {g['status']}: nothing is held")
    if g["loan"] is not None:
        raise TxError(f"the guarantee backs loan {g['loan']}: it is held until the loan "
                      f"closes, then returned automatically (or drawn if it defaults)")
    release(led, b["guarantee"], tx.sender)
    app = led.state.applications.get(g["application"])
    led.state.applications.put(g["application"], {
        **app, "guarantees": [a for a in app["guarantees"] if a != b["guarantee"]]})


def _amount(out: object) -> int:
    """What draw and release return: the amount they paid (an int, by the agreement)."""
    if type(out) is not int:
        raise InvariantError(f"the guarantee agreement returned {out!r}, not an amount")
    return out


def release(led: Ledger, addr: str, caller: str) -> None:
    """The agreement pays everything the guarantee holds back to its guarantor."""
    back = _amount(led.run_contract(addr, [b"release"], caller, 0, RELEASE_GAS))
    g = led.state.guarantees.get(addr)
    led.state.guarantees.put(addr, {**g, "status": "released", "refunded": back,
                                    "closed": led.time})


def release_application(led: Ledger, app_id: str) -> None:
    """An application withdrawn: its guarantees go back (run natively, from the
    withdrawal's handler: no agreement is running)."""
    app = led.state.applications.get(app_id)
    if app is None:
        return
    for addr in app.get("guarantees", []):
        if led.state.guarantees.get(addr)["status"] == "held":
            release(led, addr, app["borrower"])


def on_funded(led: Ledger, app: dict, loan: str) -> list:
    """The application is funded as `loan`: its guarantees now back the loan. Returns the
    list the loan's record keeps."""
    held = app.get("guarantees", [])
    for addr in held:
        led.state.guarantees.put(addr, {**led.state.guarantees.get(addr), "loan": loan})
    return held


def cover(led: Ledger, rec: dict) -> int:
    """What the guarantees held behind an application or loan count toward its cover:
    their face value (the money is escrowed in the agreement, like cash)."""
    total = 0
    for addr in rec.get("guarantees", []):
        g = led.state.guarantees.get(addr)
        if g["status"] == "held":
            total += g["amount"]
    return total


def _draw(led: Ledger, loan: str, addr: str) -> None:
    """Draw one guarantee into a loan in default: the agreement pays min(held, claim) to
    the loan and the rest back to the guarantor; the loan takes it as a recovery."""
    st = led.state
    claim = st.storage.get((loan, LOAN_KEY["claim"])) or 0
    g = st.guarantees.get(addr)
    held = led.balance(addr)        # the pledge (and anything transferred to it since)
    drawn = _amount(led.run_contract(addr, [b"draw", claim], loan, 0, DRAW_GAS))
    refunded = held - drawn
    st.guarantees.put(addr, {**g, "status": "drawn", "drawn": drawn, "refunded": refunded,
                             "closed": led.time})
    rec = st.loans.get(loan)
    draws = rec.get("guarantee_draws", []) + [{"guarantee": addr, "guarantor": g["guarantor"],
                                               "amount": drawn, "time": led.time}]
    st.loans.put(loan, {**rec, "guarantee_draws": draws})
    # Marked drawn first: the recovery runs the loan again, and this step with it.
    settlement.recover(led, loan, drawn, g["guarantor"])


def _next_held(led: Ledger, loan: str) -> str | None:
    rec = led.state.loans.get(loan)
    for addr in rec.get("guarantees", []):
        if led.state.guarantees.get(addr)["status"] == "held":
            return addr
    return None


def undrawn(led: Ledger, loan: str) -> bool:
    """Whether the loan has a guarantee still held. A later step that pays a defaulted
    loan's claim (pledged savings) waits while this is true: guarantees pay first."""
    rec = led.state.loans.get(loan)
    return bool(rec and rec.get("guarantees")) and _next_held(led, loan) is not None


def after_loan_run(led: Ledger, loan: str, rec: dict) -> None:
    """lending.AFTER_LOAN_RUN's first step. A loan in default draws its guarantees, in the
    order pledged, until its claim is paid; a closed loan returns those still held. An
    active loan, or one with none held, costs two lookups.

    Inside a transaction the work waits for the next block's duties (the loan is woken
    now): a transaction's gas is reserved before it runs, and a repayment's does not
    cover up to four agreements' runs. Between blocks nothing else can happen first,
    and collateral sales take days."""
    if not rec.get("guarantees"):
        return
    status = _loan_status(led, loan)
    if status == "active" or _next_held(led, loan) is None:
        return
    if led.in_transaction:
        led.set_wake(loan, led.time)
        return
    # Each pass closes one guarantee (drawn or released); the nested runs of the loan
    # may close others, so every pass looks again.
    while (addr := _next_held(led, loan)) is not None:
        status = _loan_status(led, loan)
        if status in settlement.CLAIM_OPEN:
            _draw(led, loan, addr)
        elif status in CLOSED:
            release(led, addr, loan)
        else:
            return


def view(led: Ledger, addr: str) -> dict | None:
    """A guarantee as the API shows it: its record and what its agreement holds now."""
    g = led.state.guarantees.get(addr)
    if g is None:
        return None
    return {**g, "held": led.balance(addr)}


def listing(led: Ledger, rec: dict) -> list[dict]:
    """The guarantees of an application's or loan's record, with their status."""
    return [{"guarantee": a, **led.state.guarantees.get(a), "held": led.balance(a)}
            for a in rec.get("guarantees", [])]


HANDLERS = {"guarantee": _guarantee, "release_guarantee": _release_guarantee}
# (fixed gas: the checks and the index records; the most the agreement's runs may burn)
GAS = {"guarantee": (3_000, INIT_GAS), "release_guarantee": (2_000, RELEASE_GAS)}
