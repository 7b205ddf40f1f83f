"""Lending on the ledger: borrowers, lenders, offers, applications, collateral, loans.

The native side does what needs the whole ledger: escrow of an offer's funds, matching an
application to an offer (products, terms, the borrower's score tier, collateral cover),
liens on collateral, and the credit history. The loan itself — schedule, allocation of
repayments, late fees, default — is the standard agreement run by the contract VM
(`contracts/agreements/loan.lasm`), instantiated per loan; the ledger feeds it money and
chain time and learns what happened from the events it emits.

Lending builds on the generic ledger (`ledger.py`), which does not know it: `RULES` hands
the ledger lending's transaction kinds and hooks (genesis, loan events, calls to loans,
escrow, liens), and `genesis` is the one place a lendnet ledger is made.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from lendnet.contracts.agreements import (LOAN_KEY, LOAN_STATUS, METHOD_CODES, PERIOD_CODES,
                                          PERIOD_NAMES, ReadOnlyHost, call_readonly,
                                          group_code, guarantee_code, instalments,
                                          loan_code, loan_storage, pool_code, savings_code,
                                          schedule)
from lendnet.contracts.vm import ContractError, Program

from . import apr, groups, guarantees, keys, pools, savings, score as scoring, settlement
from .ledger import Handler, Ledger, Rules
from .tx import MAX_ACCEPTED, MAX_RATE_BPS, MAX_TERM, SignedTx, TxError

DAY = 86_400
# Gas for the agreement's runs (VM gas, storage included; measured by
# tests/test_loan_v2.py::test_gas_of_the_longest_schedules_and_of_paying_many_overdue_
# instalments). Funding runs init, which posts only instalment 1 but walks an annuity's
# schedule once to check it: the longest (520 weekly, 3 periods of grace) takes 29,637,
# 360 monthly 24,300, the other methods about 13,500; FUND_GAS is over three times that
# (restructuring, under the same budget, measured 19,044 for a weekly loan 50 weeks in
# arrears). A repayment clears at most 8 instalments (the agreement's MAX_CLEARED; money
# beyond them comes back), so its gas does not grow with how far behind a loan is: on
# time about 1,900, paying off 1,900, 8 overdue weekly instalments with penalty interest
# 3,500, a prepayment that recomputes a 520-week annuity's instalment 4,200 (the most
# measured, tests/test_loan_v2.py and the note of issue 16). REPAY_GAS covers that with
# two fifths to spare. A block reserves each transaction's whole limit (fixed gas and this
# budget), so the budget is also how many fit in a block: 375 repayments in 3,000,000
# (v1's 4,000 fitted 500, but v1 paid one overdue instalment a call and left the rest
# unpaid). A tick that catches up 53 weekly postings, fees and alerts after a year
# without blocks took 106,823 of TICK_GAS's 200,000.
FUND_GAS = 100_000
REPAY_GAS = 6_000
REDUCE_MODES = {"term": 0, "instalment": 1}      # the agreement's repay modes
MAX_PROPOSALS = 4          # pending restructuring proposals kept per loan (oldest dropped)
# A proposal lapses after this many chain days: a new term agreed to for the balance then
# owed is not an agreement to stretch whatever is owed months later (nothing else lets
# the proposer take a proposal back).
PROPOSAL_DAYS = 7
# Assets pledged to one application or loan: funding, default (a sale each, opened by the
# chain's duty), release and the views walk the list, and each pledge rewrites it, so it
# is bounded; a lender can value at most MAX_ACCEPTED in one fund anyway.
MAX_COLLATERAL = MAX_ACCEPTED


def _register_borrower(led: Ledger, tx: SignedTx, b: dict) -> None:
    if tx.sender in led.state.borrowers:
        raise TxError(f"{tx.sender} is already registered as a borrower")
    led.state.borrowers.put(tx.sender, {"profile_hash": b["profile_hash"],
                                        "docs_hash": b["docs_hash"], "since": led.time})


def _register_lender(led: Ledger, tx: SignedTx, b: dict) -> None:
    if tx.sender in led.state.lenders:
        raise TxError(f"{tx.sender} is already registered as a lender")
    led.state.lenders.put(tx.sender, {"profile_hash": b["profile_hash"], "since": led.time})


def _publish_offer(led: Ledger, tx: SignedTx, b: dict) -> None:
    if tx.sender not in led.state.lenders:
        raise TxError("only a registered lender can publish an offer")
    if b["default_days"] <= b["tolerance_days"]:
        raise TxError("default_days must be more than tolerance_days")
    cap = params(led)["max_rate_bps"]
    for t in b["tiers"]:
        if t[1] > cap:
            raise TxError(f"tier from score {t[0]}: rate {t[1]} bps is above the network's "
                          f"cap max_rate_bps {cap}")
    led.require_funds(tx.sender, b["amount"])
    led.debit_to_escrow(tx.sender, b["amount"])
    offer = {k: b[k] for k in ("products", "methods", "periods", "min_term", "max_term",
                               "max_grace", "tiers", "late_fee_bps", "tolerance_days",
                               "default_days", "collateral_bps", "origination_fee_bps",
                               "penalty_bps")}
    offer.update(lender=tx.sender, amount=b["amount"], available=b["amount"],
                 active=True, created=led.time)
    led.state.offers.put(tx.id, offer)


def _withdraw_offer(led: Ledger, tx: SignedTx, b: dict) -> None:
    offer = _offer(led, b["offer"])
    if offer["lender"] != tx.sender:
        raise TxError("only the offer's lender can withdraw it")
    if not offer["active"]:
        raise TxError("offer is already withdrawn")
    if offer["available"]:
        led.credit_from_escrow(tx.sender, offer["available"])
    led.state.offers.put(b["offer"], {**offer, "available": 0, "active": False})


def _apply(led: Ledger, tx: SignedTx, b: dict) -> None:
    if tx.sender not in led.state.borrowers:
        raise TxError("only a registered borrower can apply for a loan")
    app = {k: b[k] for k in ("amount", "purpose", "term", "period", "method", "product",
                             "grace", "docs_hash")}
    app.update(borrower=tx.sender, status="open", created=led.time, collateral=[],
               loan=None, limits={k: b[k] for k in LIMITS})
    led.state.applications.put(tx.id, app)


def _withdraw_application(led: Ledger, tx: SignedTx, b: dict) -> None:
    app = _application(led, b["application"])
    if app["borrower"] != tx.sender:
        raise TxError("only the applicant can withdraw an application")
    if app["status"] != "open":
        raise TxError(f"application is {app['status']}, not open")
    pools.refund_open(led, app, tx.sender)       # a pool filling it refunds every slice
    release_liens(led, b["application"])
    led.state.applications.put(b["application"], {**app, "status": "withdrawn",
                                                  "collateral": []})


def _offer(led: Ledger, offer_id: str) -> dict:
    return led.record("offers", offer_id, "offer")


def _application(led: Ledger, app_id: str) -> dict:
    return led.record("applications", app_id, "application")


def subject(led: Ledger, addr: str) -> str:
    """Whose history an address's loans write: its attested identity's ("id:" + hex), so
    every address attested with one identity shares one history; or, unattested, its own."""
    bound = led.state.identities.get(addr)
    return "id:" + bound["identity"] if bound else addr


def credit_score(led: Ledger, addr: str) -> dict:
    """The borrower's score now, with its components, reason codes and identity status
    (ledger/score.py; docs/SCORE.md)."""
    bound = led.state.identities.get(addr)
    key = subject(led, addr)
    h = led.state.history.get(key) or scoring.empty_history()
    if bound:
        age_from = h["since"]
    else:
        reg = led.state.borrowers.get(addr)
        age_from = reg and reg["since"]
    out = scoring.score(h, bound is not None, age_from, led.time,
                        groups.group_credit(led, addr, key))
    out["identity"] = ({"status": "attested", "identity": bound["identity"],
                        "registrar": bound["registrar"], "attested_at": bound["at"]}
                       if bound else {"status": "thin_file"})
    return out


# --- consent: the borrower's limits, signed in the application -------------------------

# apply's limits: (field, the offer's term it bounds, "max" or "min").
LIMITS = {"max_rate_bps": "rate", "max_late_fee_bps": "late_fee_bps",
          "min_default_days": "default_days", "max_penalty_bps": "penalty_bps",
          "max_origination_fee_bps": "origination_fee_bps"}


def offered_terms(offer: dict, rate_bps: int) -> dict:
    """What a loan from this offer would carry, by the names LIMITS bounds."""
    return {"rate": rate_bps, "late_fee_bps": offer["late_fee_bps"],
            "default_days": offer["default_days"],
            "penalty_bps": offer.get("penalty_bps", 0),
            "origination_fee_bps": offer.get("origination_fee_bps", 0)}


def consent_problems(led: Ledger, app: dict, offer: dict, rate_bps: int) -> list[str]:
    """Every way a loan at `rate_bps` from `offer` would break the application's limits
    or the network's rate cap ([] when it breaks none), each naming both values."""
    terms = offered_terms(offer, rate_bps)
    out = []
    cap = params(led)["max_rate_bps"]
    if rate_bps > cap:
        out.append(f"rate {rate_bps} bps is above the network's cap max_rate_bps {cap}")
    for limit, term in LIMITS.items():
        have, bound = terms[term], app["limits"][limit]
        if limit.startswith("max_") and have > bound:
            out.append(f"{term} {have} is above the application's {limit} {bound}")
        elif limit.startswith("min_") and have < bound:
            out.append(f"{term} {have} is below the application's {limit} {bound}")
    return out


def origination_fee(principal: int, offer: dict) -> int:
    """What the borrower pays the lender out of the disbursement (rounded down)."""
    return principal * offer.get("origination_fee_bps", 0) // 10_000


# --- collateral cover: only attested values count ----------------------------------------

def collateral_cover(led: Ledger, app: dict, accepted: dict | None = None) -> list[dict]:
    """Each pledged asset's counted value and its source: the value the lender accepts
    in the funding transaction (`accepted`, asset id -> value), else the appraised
    value, else nothing. A value the owner declared counts for nothing by itself."""
    out = []
    for asset_id in app["collateral"]:
        asset = led.state.assets.get(asset_id)
        if accepted is not None and asset_id in accepted:
            out.append({"asset": asset_id, "value": accepted[asset_id], "source": "accepted"})
        elif asset["appraised_value"] is not None:
            out.append({"asset": asset_id, "value": asset["appraised_value"],
                        "source": "appraised"})
        else:
            out.append({"asset": asset_id, "value": 0, "source": "none"})
    # Savings pledged as cash collateral count at face value (ledger/savings.py).
    return out + savings.savings_cover(app)


def match(led: Ledger, app: dict, offer: dict, accepted: dict | None = None, *,
          escrow: bool = True, cover: bool = True) -> list:
    """Check that an application fits an offer; return the score tier that prices it.
    `accepted`: the values the funding lender accepts pledged assets at (fund only).
    A pool's slices fund the loan, not the offer's escrow (`escrow` False); the offer's
    terms bind the pool from its first slice, which ledger/pools.py takes only on an
    active offer, so withdrawing the offer stops new pools, not one already filling. The
    first slice leaves the cover to be checked when the loan starts (`cover` False)."""
    if escrow and not offer["active"]:
        raise TxError("offer is withdrawn")
    for field, allowed in (("product", "products"), ("method", "methods"),
                           ("period", "periods")):
        if app[field] not in offer[allowed]:
            raise TxError(f"offer does not lend for {field} {app[field]!r} "
                          f"(it offers {', '.join(offer[allowed])})")
    if not offer["min_term"] <= app["term"] <= offer["max_term"]:
        raise TxError(f"term {app['term']} is outside the offer's "
                      f"{offer['min_term']}..{offer['max_term']}")
    if app["grace"] > offer["max_grace"]:
        raise TxError(f"grace {app['grace']} exceeds the offer's maximum {offer['max_grace']}")
    s = credit_score(led, app["borrower"])["score"]
    tier = scoring.tier_for(offer["tiers"], s)
    if tier is None:
        raise TxError(f"credit score {s} is below the offer's minimum {offer['tiers'][0][0]}")
    if app["amount"] > tier[2]:
        raise TxError(f"amount {app['amount']} exceeds {tier[2]}, the limit for score {s}")
    if escrow and app["amount"] > offer["available"]:
        raise TxError(f"offer has only {offer['available']} available")
    if not cover:
        return tier
    need = -(-app["amount"] * offer["collateral_bps"] // 10_000)
    pledged = sum(c["value"] for c in collateral_cover(led, app, accepted))
    # Guarantees held behind the application count at face value, like cash.
    guaranteed = guarantees.cover(led, app)
    if pledged + guaranteed < need:
        raise TxError(f"collateral pledged is worth {pledged} (appraised"
                      f"{' or accepted' if accepted is not None else ''} values only)"
                      f"{f' and guarantees {guaranteed}' if guaranteed else ''}, "
                      f"the offer needs {need}")
    return tier


def _originate(led: Ledger, tx: SignedTx, app_id: str, offer_id: str,
               accepted: dict | None = None, pool: str | None = None) -> None:
    """Instantiate the standard loan agreement for an accepted application and fund it,
    on terms within the application's limits only. The principal comes from the offer's
    escrow, or from `pool` (ledger/pools.py), which is then the loan's lender."""
    app, offer = _application(led, app_id), _offer(led, offer_id)
    if app["status"] != "open":
        raise TxError(f"application is {app['status']}, not open")
    filling = pools.open_pool(led, app)
    if pool is None and filling is not None:
        raise TxError(f"application is being filled by a pool of slices "
                      f"({filling[1]['filled']} of {filling[1]['target']}, until "
                      f"{filling[1]['expires']}): fund a share of it (fund_share), or "
                      f"the applicant withdraws it, which refunds every slice")
    if subject(led, offer["lender"]) == subject(led, app["borrower"]):
        # A loan to oneself moves money from one pocket to the other, interest included,
        # yet would earn on-time credit and a better tier for a few transaction fees.
        raise TxError("you cannot lend to yourself: the offer's lender is the applicant "
                      "(the same address or the same attested identity)")
    tier = match(led, app, offer, accepted, escrow=pool is None)
    problems = consent_problems(led, app, offer, tier[1])
    if problems:
        raise TxError("the borrower did not consent to these terms: " + "; ".join(problems))
    st = led.state
    loan = keys.derive_address(b"loan", tx.hash)
    principal = app["amount"]
    lender = pool or offer["lender"]
    led.create_contract(loan, st.meta.get("loan_code"), tx.sender)
    st.loans.put(loan, {"borrower": app["borrower"], "lender": lender,
                        "offer": offer_id, "application": app_id, "created": led.time,
                        "principal": app["amount"], "collateral": app["collateral"],
                        "cover": collateral_cover(led, app, accepted),
                        "guarantees": guarantees.on_funded(led, app, loan),
                        "origination_fee": origination_fee(principal, offer),
                        **({"pool": pool} if pool else {})})
    if pool is None:
        st.offers.put(offer_id, {**offer, "available": offer["available"] - principal})
    st.applications.put(app_id, {**app, "status": "funded", "loan": loan})
    for asset_id in app["collateral"]:
        st.assets.put(asset_id, {**st.assets.get(asset_id), "lien": loan})
    # The principal moves from escrow (or the pool) into the contract, which disburses it.
    if pool is None:
        led.credit_from_escrow(loan, principal)
    else:
        pools.lend_principal(led, pool, loan, tx.sender)
    args = [b"init", principal, tier[1], app["term"], METHOD_CODES[app["method"]],
            app["grace"], led.time, PERIOD_CODES[app["period"]], offer["late_fee_bps"],
            offer["tolerance_days"] * DAY, offer["default_days"] * DAY,
            offer.get("penalty_bps", 0), app["borrower"].encode(), lender.encode()]
    led.run_contract(loan, args, tx.sender, principal, FUND_GAS)
    # The origination fee, out of what the agreement has just disbursed.
    fee = origination_fee(principal, offer)
    if fee:
        led.move(app["borrower"], lender, fee)
    # A group application: refused while the group is in arrears, else the group's record.
    groups.after_originate(led, app_id, app, loan)


def _fund(led: Ledger, tx: SignedTx, b: dict) -> None:
    if _offer(led, b["offer"])["lender"] != tx.sender:
        raise TxError("only the offer's lender can fund against it")
    app = _application(led, b["application"])
    accepted = {}
    for asset_id, value in b["accept"]:
        if asset_id not in app["collateral"]:
            raise TxError(f"asset {asset_id!r} is not pledged to application "
                          f"{b['application']}: a lender can accept only the collateral "
                          f"the borrower offered")
        accepted[asset_id] = value
    _originate(led, tx, b["application"], b["offer"], accepted)


def _accept_offer(led: Ledger, tx: SignedTx, b: dict) -> None:
    if _application(led, b["application"])["borrower"] != tx.sender:
        raise TxError("only the applicant can accept an offer for an application")
    _originate(led, tx, b["application"], b["offer"])


def _loan(led: Ledger, loan: str) -> dict:
    return led.record("loans", loan, "loan")


def _repay(led: Ledger, tx: SignedTx, b: dict) -> None:
    """Pay a loan: what is due oldest first, the rest prepays and shortens the term. After
    default it is a recovery of the frozen claim; any surplus comes back."""
    _pay_loan(led, tx, b["loan"], b["amount"], [b"repay"])


def _prepay(led: Ledger, tx: SignedTx, b: dict) -> None:
    """A repayment whose remainder, once all that is due is paid, shortens the term
    (reduce "term") or keeps it and lowers the instalment (reduce "instalment")."""
    _pay_loan(led, tx, b["loan"], b["amount"], [b"repay", REDUCE_MODES[b["reduce"]]])


def _pay_loan(led: Ledger, tx: SignedTx, loan: str, amount: int, args: list) -> None:
    _loan(led, loan)
    status = loan_status(led, loan)
    if status in ("repaid", "settled"):
        raise TxError(f"loan is {status}: nothing is owed")
    led.require_funds(tx.sender, amount)
    led.move(tx.sender, loan, amount)
    led.run_contract(loan, args, tx.sender, amount, REPAY_GAS)


def _write_off(led: Ledger, tx: SignedTx, b: dict) -> None:
    """The lender gives up on a defaulted loan, with a reason kept in the loan record and
    in the "write_off_reason" event; payments are still accepted as recoveries."""
    rec = _loan(led, b["loan"])
    _refuse_shared(led, rec, "written off")
    if rec["lender"] != tx.sender:
        raise TxError("only the loan's lender can write it off")
    status = loan_status(led, b["loan"])
    if status != "defaulted":
        raise TxError(f"loan is {status}: only a defaulted loan can be written off")
    led.run_contract(b["loan"], [b"write_off"], tx.sender, 0, REPAY_GAS)
    led.state.loans.put(b["loan"], {**rec, "write_off": {"reason": b["reason"],
                                                         "time": led.time, "tx": tx.id}})
    led.record_event(b["loan"], "write_off_reason", [b["reason"].encode()])


def _refuse_shared(led: Ledger, rec: dict, what: str) -> None:
    if "pool" in rec:
        n = len(led.state.pools.get(rec["pool"])["slices"])
        raise TxError(pools.SHARED_DECISIONS.format(n=n, what=what))


def _party(rec: dict, sender: str) -> str:
    if sender == rec["borrower"]:
        return "borrower"
    if sender == rec["lender"]:
        return "lender"
    raise TxError("only the loan's borrower or lender can restructure it")


def _check_term(led: Ledger, loan: str, term: int) -> None:
    period = PERIOD_NAMES[led.state.storage.get((loan, LOAN_KEY["per"]))]
    if term > MAX_TERM[period]:
        raise TxError(f"term must be at most {MAX_TERM[period]} {period} periods")


def _propose_restructure(led: Ledger, tx: SignedTx, b: dict) -> None:
    """Either party proposes a new term; the other accepts it (accept_restructure)."""
    rec = _loan(led, b["loan"])
    _refuse_shared(led, rec, "restructured")
    by = _party(rec, tx.sender)
    status = loan_status(led, b["loan"])
    if status != "active":
        raise TxError(f"loan is {status}: only an active loan can be restructured")
    _check_term(led, b["loan"], b["term"])
    proposals = {**rec.get("proposals", {}),
                 tx.id: {"by": by, "term": b["term"], "created": led.time}}
    if len(proposals) > MAX_PROPOSALS:
        oldest = min(proposals, key=lambda p: (proposals[p]["created"], p))
        del proposals[oldest]
    led.state.loans.put(b["loan"], {**rec, "proposals": proposals})


def _accept_restructure(led: Ledger, tx: SignedTx, b: dict) -> None:
    rec = _loan(led, b["loan"])
    _refuse_shared(led, rec, "restructured")
    by = _party(rec, tx.sender)
    proposal = rec.get("proposals", {}).get(b["proposal"])
    if proposal is None:
        raise TxError(f"no restructuring proposal {b['proposal']} for this loan")
    if proposal["by"] == by:
        raise TxError(f"the {by} proposed it: the other party must accept it")
    if led.time > proposal["created"] + PROPOSAL_DAYS * DAY:
        raise TxError(f"the proposal lapsed {PROPOSAL_DAYS} days after it was made "
                      f"(at {proposal['created']}): ask for a new one")
    term = proposal["term"]
    _check_term(led, b["loan"], term)
    led.run_contract(b["loan"], [b"restructure", term], tx.sender, 0, FUND_GAS)
    done = rec.get("restructures", []) + [{"proposal": b["proposal"], "term": term,
                                           "time": led.time}]
    led.state.loans.put(b["loan"], {**rec, "proposals": {}, "restructures": done})


def asset_id(owner: str, name: str) -> str:
    """Asset ids are scoped to whoever registers them: "<owner address>/<name>"."""
    return f"{owner}/{name}"


def _register_collateral(led: Ledger, tx: SignedTx, b: dict) -> None:
    aid = asset_id(tx.sender, b["asset"])
    if aid in led.state.assets:
        raise TxError(f"you have already registered an asset {b['asset']!r} ({aid})")
    led.state.assets.put(aid, {"owner": tx.sender, "name": b["asset"],
                               "declared_value": b["value"], "appraised_value": None,
                               "appraiser": None, "appraised_at": None,
                               "description_hash": b["description_hash"], "lien": None})


def _appraise(led: Ledger, tx: SignedTx, b: dict) -> None:
    if tx.sender not in params(led)["appraisers"]:
        raise TxError(f"{tx.sender} is not an appraiser: only keys the genesis lists in "
                      f"lending.appraisers may attest an asset's value")
    asset = led.state.assets.get(b["asset"])
    if asset is None:
        raise TxError(f"no asset {b['asset']!r}")
    led.state.assets.put(b["asset"], {**asset, "appraised_value": b["value"],
                                      "appraiser": tx.sender, "appraised_at": led.time})


def _pledge(led: Ledger, tx: SignedTx, b: dict) -> None:
    st = led.state
    # A full id, or the name of one of the sender's own assets.
    aid = b["asset"] if "/" in b["asset"] else asset_id(tx.sender, b["asset"])
    asset = st.assets.get(aid)
    if asset is None:
        raise TxError(f"no asset {aid!r}")
    if asset["owner"] != tx.sender:
        raise TxError("only the asset's owner can pledge it")
    if asset["lien"] is not None:
        raise TxError(f"asset is already pledged to {asset['lien']}")
    target = b["to"]
    holder = st.applications.get(target) or st.loans.get(target)
    if holder is not None and len(holder["collateral"]) >= MAX_COLLATERAL:
        raise TxError(f"{target} already has {len(holder['collateral'])} assets pledged: "
                      f"at most {MAX_COLLATERAL}")
    if target in st.applications:
        app = st.applications.get(target)
        if app["borrower"] != tx.sender or app["status"] != "open":
            raise TxError("collateral can be pledged only to your own open application")
        st.applications.put(target, {**app, "collateral": app["collateral"] + [aid]})
    elif target in st.loans:
        ln = st.loans.get(target)
        if ln["borrower"] != tx.sender or loan_status(led, target) != "active":
            raise TxError("collateral can be pledged only to your own active loan")
        # Pledged to a running loan, an asset counts at its appraised value, if any.
        added = collateral_cover(led, {"collateral": [aid]})
        st.loans.put(target, {**ln, "collateral": ln["collateral"] + [aid],
                              "cover": ln["cover"] + added})
    else:
        raise TxError(f"no open application or loan {target}")
    st.assets.put(aid, {**asset, "lien": target})


# --- liens: the loan contract releases them on payoff and seizes them on default ---------

def _pledged_to(led: Ledger, holder: str) -> list:
    st = led.state
    rec = st.loans.get(holder) or st.applications.get(holder)
    return [] if rec is None else rec["collateral"]


def release_liens(led: Ledger, holder: str) -> None:
    if holder in led.state.loans:
        settlement.cancel_sales(led, holder)
        # (a closed loan's guarantees go back in guarantees.after_loan_run, once the
        # agreement that called this has finished its run)
    else:
        guarantees.release_application(led, holder)
    savings.release_pledges(led, holder)
    for asset_id in _pledged_to(led, holder):
        asset = led.state.assets.get(asset_id)
        if asset["lien"] == holder:
            led.state.assets.put(asset_id, {**asset, "lien": None})


def seize_liens(led: Ledger, holder: str, to: str) -> None:
    """A defaulted loan's collateral is sold, not handed over (ledger/settlement.py)."""
    if holder in led.state.loans:
        settlement.open_sales(led, holder, to)


# --- the credit bureau: loan events update the borrower's history -------------------------

# The history is the subject's (see `subject`); the bureau also keeps, per loan, what it
# needs to judge the next event: the principal it counts as outstanding, the instalment,
# the latest due date it credited as paid on time, and whether the loan is open.
# What counts (docs/SCORE.md): an on-time instalment only when paid within its own
# period (no earlier than one period before its due date) and only once per due date, so
# a burst of payments earns one period's credit; weights by amount, decaying by age;
# open principal and open loans across all lenders; defaults, settlements, write-offs
# and restructurings.

_LONGEST_PERIOD = {"monthly": 31 * DAY, "weekly": 7 * DAY}
# A repaid loan counts (repaid_loans, repaid_volume) only when it lent at least
# MIN_COUNTED_LOAN and ran at least its shortest period: taking a loan and paying it
# straight back, or many tiny ones, builds no history.
MIN_COUNTED_LOAN = 10_000                           # 100.00 LND
_SHORTEST_PERIOD = {"monthly": 28 * DAY, "weekly": 7 * DAY}


def _history(led: Ledger, key: str) -> dict:
    h = led.state.history.get(key)
    # A copy: rows are values, replaced and never changed in place (the journal keeps
    # the old one).
    return dict(scoring.decayed(h, led.time)) if h else scoring.empty_history() | {
        "t": led.time}


def _on_contract_event(led: Ledger, contract: str, name: str, values: list) -> None:
    if contract in led.state.loans:
        observe_loan_event(led, contract, name, values)
        if name == "settled":         # the whole claim recovered: what is unsold returns
            release_liens(led, contract)
        groups.on_loan_event(led, contract, name, values)
    elif contract in led.state.pools:
        pools.observe(led, contract, name, values)


# What happens after each run of a loan's agreement, in this order (each idempotent: it
# looks at the loan's state and does nothing when there is nothing to do): the products
# that pay a defaulted loan's claim before its collateral is sold, and the split among a
# shared loan's lenders of what its agreement paid them. Each is (led, loan, record).
# Savings pledges are drawn after the guarantees (a default they pay in full draws none).
AFTER_LOAN_RUN: tuple = (guarantees.after_loan_run, savings.draw_pledges,
                         pools.after_loan_run)


def _after_run(led: Ledger, address: str) -> None:
    rec = led.state.loans.get(address)
    if rec is not None:
        for step in AFTER_LOAN_RUN:
            step(led, address, rec)
    elif address in led.state.groups:
        groups.after_group_run(led, address)


def observe_loan_event(led: Ledger, loan: str, name: str, values: list) -> None:
    """Update the borrower's credit history from one of the loan agreement's events
    (named and valued as contracts/agreements/loan.lasm emits them)."""
    st = led.state
    rec = st.loans.get(loan)
    b = st.bureau.get(loan) or {"P": 0, "out": 0, "pmt": 0, "last_due": 0, "open": 0}
    key = subject(led, rec["borrower"])
    h = _history(led, key)
    nb = dict(b)

    def close() -> None:
        if b["open"]:
            h["open_loans"] -= 1
            h["open_principal"] -= b["out"]
        nb.update(open=0, out=0)

    if name == "disbursed":
        if loan in st.bureau:
            return              # a loan disburses once
        principal = values[0]
        h["opened"] += 1
        h["open_loans"] += 1
        h["open_principal"] += principal
        nb.update(P=principal, out=principal, pmt=values[1], open=1)
    elif name == "instalment_paid":
        if not values[1]:
            return              # paid late: counted when it fell late (instalment_late)
        # The event's amount is what the last payment applied to the instalment (it may
        # have been paid in parts): the credit is weighed by the instalment itself.
        # But no more than the payment applied plus the principal outstanding before it
        # (this event comes before the run's "payment"): after prepaying nearly all, tiny
        # instalments would otherwise each earn the original instalment's credit.
        amount, due = min(max(values[2], b["pmt"]), values[2] + b["out"]), values[3]
        if due <= b["last_due"] or led.time + _period(led, rec) < due:
            return              # this due date was credited, or it is paid ahead in a burst
        h["on_time"] += 1
        h["on_time_w"] += amount
        nb["last_due"] = due
    elif name == "instalment_late":
        h["late"] += 1
        h["late_w"] += b["pmt"] or b["out"]
    elif name == "payment":
        part = min(values[3], b["out"]) if b["open"] else 0
        h["open_principal"] -= part
        nb["out"] = b["out"] - part
    elif name == "repaid":
        app = st.applications.get(rec["application"])
        ran = led.time - rec["created"] >= _SHORTEST_PERIOD.get(app and app["period"],
                                                                28 * DAY)
        if b["open"] and ran and b["P"] >= MIN_COUNTED_LOAN:
            h["repaid_loans"] += 1
            h["repaid_volume"] += b["P"]
        close()
    elif name == "defaulted":
        h["defaults"] += 1
        close()
    elif name == "settled":
        h["settled"] += 1
    elif name == "written_off":
        h["written_off"] += 1
    elif name == "restructured":
        principal, n = values[0], values[1]
        h["restructured"] += 1
        if b["open"]:
            h["open_principal"] += principal - b["out"]
            nb.update(P=max(b["P"], principal), out=principal,
                      pmt=-(-principal // max(1, n)))
    else:
        return
    st.history.put(key, h)
    if nb != b or loan not in st.bureau:
        st.bureau.put(loan, nb)


def _period(led: Ledger, rec: dict) -> int:
    """The longest a period of this loan can be: how early an instalment may be paid and
    still count as paid within its own period."""
    app = led.state.applications.get(rec["application"])
    return _LONGEST_PERIOD.get(app["period"] if app else "monthly", 31 * DAY)


def _attest_identity(led: Ledger, tx: SignedTx, b: dict) -> None:
    """A registrar vouches that `borrower` is the person `identity` names (a hash of the
    registrar's own record of them): the address's history joins the identity's."""
    if tx.sender not in params(led)["registrars"]:
        raise TxError("only a registrar named in the genesis can attest an identity")
    st = led.state
    addr = b["borrower"]
    if addr in st.identities:
        raise TxError(f"{addr} is already attested (identity "
                      f"{st.identities.get(addr)['identity'][:16]}…)")
    ident = b["identity"].hex()
    key = "id:" + ident
    h = st.history.get(key)
    h = scoring.decayed(h, led.time) if h else scoring.empty_history(led.time) | {"t": led.time}
    own = st.history.get(addr)
    if own is not None:
        h = scoring.merge(h, {**own, "since": None}, led.time)
        st.history.delete(addr)
    st.history.put(key, h)
    st.identities.put(addr, {"identity": ident, "registrar": tx.sender, "at": led.time})
    groups.on_attested(led, addr, key)          # a member's group follows its person


# --- read-only views ----------------------------------------------------------------------

def loan_terms(led: Ledger, loan: str) -> dict:
    """The agreement's own storage, by the names the contract source gives them."""
    store = led.state.storage
    return loan_storage(lambda key: store.get((loan, key)))


def loan_status(led: Ledger, loan: str) -> str:
    return LOAN_STATUS[led.state.storage.get((loan, LOAN_KEY["st"]), 0)]


def _readonly(led: Ledger, loan: str, method: bytes) -> int:
    code = led.state.code.get(led.state.contracts.get(loan)["code"])
    store = led.state.storage
    host = ReadOnlyHost(led.time, lambda key: store.get((loan, key)), loan.encode())
    return call_readonly(code, [method], host)


def loan_payoff(led: Ledger, loan: str) -> int | None:
    """What would close the loan at the current chain time, quoted by the agreement: for
    an active loan everything owed with the current period's interest only for the days
    elapsed; for a defaulted or written-off one, the claim still unpaid."""
    if loan_status(led, loan) not in ("active", "defaulted", "written_off"):
        return None
    return _readonly(led, loan, b"payoff")


def _get(led: Ledger, loan: str):
    store = led.state.storage
    return lambda key: store.get((loan, key))


def days_past_due(led: Ledger, loan: str) -> int:
    """Whole days since the due date of the oldest unpaid instalment (0 when none is past
    due, and for closed loans: repaid, settled, written off)."""
    if loan_status(led, loan) not in ("active", "defaulted"):
        return 0
    get = _get(led, loan)
    unpaid = instalments(get)
    if not unpaid or unpaid[0]["due"] > led.time:
        return 0
    return (led.time - unpaid[0]["due"]) // DAY


BUCKETS = (("current", 0), ("1-30", 30), ("31-60", 60), ("61-90", 90))


def bucket(dpd: int) -> str:
    """The delinquency bucket of a number of days past due."""
    for name, most in BUCKETS:
        if dpd <= most:
            return name
    return "90+"


def loan_view(led: Ledger, loan: str) -> dict | None:
    rec = led.state.loans.get(loan)
    if rec is None:
        return None
    get = _get(led, loan)
    # The agreement's storage by name: ints (or None when unset), bytes shown as text.
    t: dict[str, Any] = {k: (v.decode() if type(v) is bytes else v)
                         for k, v in loan_storage(get).items()}
    status = LOAN_STATUS[t["st"] or 0]
    rows = instalments(get) if status in ("active", "defaulted") else []
    for r in rows:
        r["owed"] = r["principal"] + r["interest"] + r["fees"]
    overdue = [r for r in rows if r["due"] <= led.time]
    current = [r for r in rows if r["due"] > led.time]
    penalty = _readonly(led, loan, b"penalty") if status == "active" else t["pen"] or 0
    dpd = days_past_due(led, loan)
    arrears = sum(r["owed"] for r in overdue) + (penalty if overdue else 0)
    nxt = current[0] if current else None
    if nxt is None and status == "active":        # the next period has not begun yet
        when = _readonly(led, loan, b"next_due")
        nxt = {"n": t["k"] + 1, "due": when, "owed": None} if when else None
    return {"loan": loan, **rec, "status": status, "terms": t,
            "instalment": t["k"], "oldest_unpaid": t["ko"],
            "due_time": nxt["due"] if nxt else (rows[0]["due"] if rows else None),
            "instalments": rows, "arrears": arrears, "days_past_due": dpd,
            "bucket": bucket(dpd), "penalty": penalty,
            # what to pay now to be up to date: everything past due (every overdue
            # instalment and the penalty) or, when nothing is, the running instalment
            "amount_due": (0 if status != "active" else arrears if overdue
                           else sum(r["owed"] for r in current)),
            "next_due": {"n": nxt["n"], "due": nxt["due"], "amount": nxt["owed"]}
            if nxt else None,
            "principal_outstanding": t["out"], "payoff": loan_payoff(led, loan),
            "guarantees": guarantees.listing(led, rec)}


# The representative example an offer's view shows for each tier: a 12-month annuity of
# the tier's largest principal or 100,000 (minor units, 1,000.00 LND), whichever is
# smaller, starting now, with the offer's origination fee.
REPRESENTATIVE_TERM = 12
REPRESENTATIVE_PRINCIPAL = 100_000
REPRESENTATIVE_BASIS = ("12 monthly annuity instalments of the tier's maximum principal or "
                        "1,000.00 LND, whichever is smaller, origination fee included")


@functools.lru_cache(maxsize=4096)
def _representative(principal: int, rate_bps: int, fee_bps: int, start: int) -> int | None:
    try:
        rows = schedule(principal, rate_bps, REPRESENTATIVE_TERM, "monthly", "annuity", 0,
                        start)
        return apr.apr_bps(principal, principal * fee_bps // 10_000, rows, start)
    except (ContractError, ValueError):     # terms the agreement refuses: no example
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
    """An offer as the API shows it: its record plus the representative APR per tier
    (display only: nothing in a block reads it)."""
    return {**offer, "apr": representative(offer, now), "apr_basis": REPRESENTATIVE_BASIS}


def quote(led: Ledger, app_id: str, offer_id: str) -> dict:
    """What this application would get from this offer if it were funded now: the tier
    and rate, the exact schedule, total cost and APR, whether the terms are within the
    application's limits, and whether accept_offer would go through (appraised cover)."""
    app, offer = led.state.applications.get(app_id), led.state.offers.get(offer_id)
    if app is None or offer is None:
        raise KeyError(f"no application {app_id}" if app is None else f"no offer {offer_id}")
    s = credit_score(led, app["borrower"])["score"]
    tier = scoring.tier_for(offer["tiers"], s)
    out: dict = {"application": app_id, "offer": offer_id, "borrower": app["borrower"],
                 "lender": offer["lender"], "score": s, "start": led.time,
                 "limits": app["limits"], "status": app["status"]}
    if tier is None:
        return {**out, "rate_bps": None, "schedule": None, "within_limits": None,
                "problems": [f"credit score {s} is below the offer's minimum "
                             f"{offer['tiers'][0][0]}"], "fits": "score"}
    rate = tier[1]
    terms = offered_terms(offer, rate)
    problems = consent_problems(led, app, offer, rate)
    try:
        match(led, app, offer)
        fits = ""
    except TxError as e:            # why accept_offer would be refused
        fits = str(e)
    fee = origination_fee(app["amount"], offer)
    try:
        rows = schedule(app["amount"], rate, app["term"], app["period"], app["method"],
                        app["grace"], led.time)
        figures = apr.cost(app["amount"], fee, rows, led.time)
    except (ContractError, ValueError) as e:
        rows, figures = None, {"error": str(e)}
    return {**out, "rate_bps": rate, "terms": terms, **figures, "schedule": rows,
            "within_limits": not problems, "problems": problems,
            "cover": collateral_cover(led, app), "fits": fits}


HANDLERS: dict[str, Handler] = {
    "register_borrower": _register_borrower,
    "register_lender": _register_lender,
    "publish_offer": _publish_offer,
    "withdraw_offer": _withdraw_offer,
    "apply": _apply,
    "withdraw_application": _withdraw_application,
    "fund": _fund,
    "accept_offer": _accept_offer,
    **pools.HANDLERS,
    "repay": _repay,
    "prepay": _prepay,
    "write_off": _write_off,
    "propose_restructure": _propose_restructure,
    "accept_restructure": _accept_restructure,
    "register_collateral": _register_collateral,
    "pledge": _pledge,
    **settlement.HANDLERS,
    **savings.HANDLERS,
    **groups.HANDLERS,
    **guarantees.HANDLERS,
    "attest_identity": _attest_identity,
    "appraise": _appraise,
}


# --- lending on the ledger: its rules, and the one place a lendnet ledger is made ---------

# What a genesis may set about lending (genesis.json "lending"; absent: these): a
# network-wide cap on the yearly rate any loan may carry, and the keys whose
# attestations the ledger trusts: appraisers value collateral, registrars vouch that an
# address is a person (so a defaulter cannot shed a history by taking a new address).
LENDING_DEFAULTS: dict[str, Any] = {"max_rate_bps": MAX_RATE_BPS, "appraisers": [],
                                    "registrars": []}
MAX_ATTESTERS = 64


def check_params(given: dict | None) -> dict:
    """A genesis's lending parameters, complete and checked; ValueError says what is wrong."""
    given = given or {}
    if type(given) is not dict:
        raise ValueError("lending parameters must be a map")
    unknown = sorted(set(given) - set(LENDING_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown lending parameters {unknown}; known: "
                         f"{', '.join(LENDING_DEFAULTS)}")
    out = {**LENDING_DEFAULTS, **given}
    cap = out["max_rate_bps"]
    if type(cap) is not int or not 0 <= cap <= MAX_RATE_BPS:
        raise ValueError(f"max_rate_bps must be an integer from 0 to {MAX_RATE_BPS}")
    for name in ("appraisers", "registrars"):
        who = out[name]
        if (type(who) is not list or len(who) > MAX_ATTESTERS
                or not all(keys.is_address(a) for a in who) or len(set(who)) != len(who)):
            raise ValueError(f"{name} must be a list of at most {MAX_ATTESTERS} distinct "
                             f"addresses")
        out[name] = sorted(who)
    return out


def params(led: Ledger) -> dict:
    """The chain's lending parameters (check_params), as its genesis set them."""
    return led.state.meta.get("lending")


# The agreements genesis stores on the ledger by hash, each under meta "<name>_code": the
# code every loan, pool, group and savings product runs, for anyone to read and audit.
AGREEMENTS = {"loan": loan_code, "pool": pool_code, "group": group_code,
              "savings": savings_code, "guarantee": guarantee_code}


def _genesis(led: Ledger, lending_params: dict) -> None:
    """Store the standard agreements' bytecode by hash, and the genesis's lending
    parameters."""
    for name, code_of in AGREEMENTS.items():
        code = code_of()
        code_hash = Program.load(code).code_hash.hex()
        led.state.code.put(code_hash, code)
        led.state.meta.put(f"{name}_code", code_hash)
    led.state.meta.put("lending", lending_params)


def _check_call(led: Ledger, address: str) -> None:
    if address in led.state.loans:
        raise TxError("loan contracts are driven by repay transactions and chain time")
    if savings.is_savings(led, address):
        raise TxError("savings agreements are driven by savings_* transactions")
    if address in led.state.pools:
        raise TxError("pool contracts are driven by fund_share, withdraw_application and "
                      "chain time")
    if address in led.state.groups:
        raise TxError("group contracts are driven by group_join, group_cover, the "
                      "group's loans and chain time")
    if address in led.state.guarantees:
        raise TxError("guarantee agreements are driven by guarantee transactions and by "
                      "the loan they back")


def escrowed(led: Ledger) -> int:
    """What offers hold in escrow (published, not yet lent or withdrawn) and the best
    bids of open collateral sales."""
    return (sum(o["available"] for _, o in led.state.offers.items())
            + settlement.escrowed(led))


# The fee schedule of lending's kinds (ledger/fees.py): (fixed gas, most the loan agreement
# may burn). The fixed gas pays for checking and writing the records; funding and
# repaying also pay what the agreement's run burned (about 13,000-30,000 gas to fund,
# storage included, and 1,500-12,500 for a repayment), up to FUND_GAS and REPAY_GAS.
GAS: dict[str, tuple[int, int]] = {
    "register_borrower": (2_000, 0), "register_lender": (2_000, 0),
    "publish_offer": (3_000, 0), "withdraw_offer": (2_000, 0),
    # withdrawing an application refunds its pool's slices, if a pool is filling it, and
    # returns its guarantees (up to MAX_GUARANTEES releases)
    "apply": (2_000, 0),
    "withdraw_application": (2_000, pools.POOL_GAS
                             + guarantees.MAX_GUARANTEES * guarantees.RELEASE_GAS),
    "fund": (5_000, FUND_GAS), "accept_offer": (5_000, FUND_GAS),
    **pools.gas(FUND_GAS),
    "repay": (2_000, REPAY_GAS), "prepay": (2_000, REPAY_GAS),
    "write_off": (2_000, REPAY_GAS), "propose_restructure": (2_000, 0),
    "accept_restructure": (3_000, FUND_GAS),
    "register_collateral": (2_000, 0), "pledge": (2_000, 0), "appraise": (2_000, 0),
    **settlement.GAS,
    **savings.GAS,
    **groups.gas(REPAY_GAS),
    **guarantees.GAS,
    "attest_identity": (3_000, 0),
}


def _is_duty(led: Ledger, address: str) -> bool:
    """A loan's deadlines (instalments due, late fees, default, lien release), a
    pool's (expiry, splitting what its loan paid it) and passing a group its members'
    loans' notices (ledger/groups.py) are the chain's duties: they run before anything
    users send (Rules.duty)."""
    st = led.state
    return address in st.loans or address in st.pools or address in st.groups


RULES = Rules(handlers=HANDLERS, genesis=lambda led: _genesis(led, check_params(None)),
              on_event=_on_contract_event,
              check_call=_check_call, duty=_is_duty, escrowed=escrowed,
              release_liens=release_liens, seize_liens=seize_liens, gas=GAS,
              after_run=_after_run)


def genesis(chain_id: str, balances: dict[str, int], time: int = 0,
            fee_params: dict | None = None, lending_params: dict | None = None) -> Ledger:
    """The lendnet ledger at height 0: the generic ledger with lending's rules.
    `fee_params`: the genesis's min_gas_price and byte_price (ledger/fees.py);
    `lending_params`: its rate cap and trusted keys (check_params)."""
    checked = check_params(lending_params)
    rules = dataclasses.replace(RULES, genesis=lambda led: _genesis(led, checked))
    return Ledger.genesis(chain_id, balances, time, rules=rules, fee_params=fee_params)


def from_state(chain_id: str, state, height: int | None = None) -> Ledger:
    """The lendnet ledger over a restored state (ledger/snapshot.py): lending's rules,
    the height and time the state records (`height`: the certified block's, checked).
    The genesis parameters are in the state."""
    return Ledger.from_state(chain_id, RULES, state, height)
