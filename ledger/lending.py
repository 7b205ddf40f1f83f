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

from typing import Any

from lendnet.contracts.agreements import (LOAN_KEY, LOAN_STATUS, METHOD_CODES, PERIOD_CODES,
                                          PERIOD_NAMES, ReadOnlyHost, call_readonly,
                                          instalments,
                                          loan_code, loan_storage)
from lendnet.contracts.vm import Program

from . import keys, score as scoring
from .ledger import Handler, Ledger, Rules
from .tx import MAX_TERM, SignedTx, TxError

DAY = 86_400
# Gas for the agreement's runs (VM gas, storage included; measured by
# tests/test_loan_v2.py::test_gas_of_the_longest_schedules_and_of_paying_many_overdue_
# instalments). Funding runs init, which posts only instalment 1 but walks an annuity's
# schedule once to check it: the longest (520 weekly, 3 periods of grace) takes 29,637,
# 360 monthly 24,300, the other methods about 13,500; FUND_GAS is over three times that
# (restructuring, under the same budget, measured 19,044 for a weekly loan 50 weeks in
# arrears). A repayment pays every instalment it clears: on time about 1,900, paying off
# 1,500; paying a weekly loan's 53 overdue instalments (the most there can be: default
# comes at most 365 days after the oldest) 12,268, or all 54 off 12,320. REPAY_GAS
# covers that with a third to spare. A block reserves each transaction's whole limit
# (fixed gas and this budget), so the budget is also how many fit in a block: about 166
# repayments in 3,000,000 (v1's 4,000 fitted 500, but v1 paid one overdue instalment a
# call and left the rest unpaid). A tick that catches up 53 weekly postings, fees and
# alerts after a year without blocks took 106,823 of TICK_GAS's 200,000.
FUND_GAS = 100_000
REPAY_GAS = 16_000
REDUCE_MODES = {"term": 0, "instalment": 1}      # the agreement's repay modes
MAX_PROPOSALS = 4          # pending restructuring proposals kept per loan (oldest dropped)


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
    led.require_funds(tx.sender, b["amount"])
    led.debit_to_escrow(tx.sender, b["amount"])
    offer = {k: b[k] for k in ("products", "methods", "periods", "min_term", "max_term",
                               "max_grace", "tiers", "late_fee_bps", "tolerance_days",
                               "default_days", "collateral_bps", "penalty_bps")}
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
               loan=None)
    led.state.applications.put(tx.id, app)


def _withdraw_application(led: Ledger, tx: SignedTx, b: dict) -> None:
    app = _application(led, b["application"])
    if app["borrower"] != tx.sender:
        raise TxError("only the applicant can withdraw an application")
    if app["status"] != "open":
        raise TxError(f"application is {app['status']}, not open")
    release_liens(led, b["application"])
    led.state.applications.put(b["application"], {**app, "status": "withdrawn",
                                                  "collateral": []})


def _offer(led: Ledger, offer_id: str) -> dict:
    offer = led.state.offers.get(offer_id)
    if offer is None:
        raise TxError(f"no offer {offer_id}")
    return offer


def _application(led: Ledger, app_id: str) -> dict:
    app = led.state.applications.get(app_id)
    if app is None:
        raise TxError(f"no application {app_id}")
    return app


def credit_score(led: Ledger, addr: str) -> dict:
    """The borrower's score now, with its components and reason codes."""
    reg = led.state.borrowers.get(addr)
    history = led.state.history.get(addr, scoring.EMPTY_HISTORY)
    return scoring.score(history, reg and reg["since"], led.time)


def match(led: Ledger, app: dict, offer: dict) -> list:
    """Check that an application fits an offer; return the score tier that prices it."""
    if not offer["active"]:
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
    if app["amount"] > offer["available"]:
        raise TxError(f"offer has only {offer['available']} available")
    need = -(-app["amount"] * offer["collateral_bps"] // 10_000)
    pledged = sum(led.state.assets.get(a)["value"] for a in app["collateral"])
    if pledged < need:
        raise TxError(f"collateral pledged is worth {pledged}, the offer needs {need}")
    return tier


def _originate(led: Ledger, tx: SignedTx, app_id: str, offer_id: str) -> None:
    """Instantiate the standard loan agreement for an accepted application and fund it."""
    app, offer = _application(led, app_id), _offer(led, offer_id)
    if app["status"] != "open":
        raise TxError(f"application is {app['status']}, not open")
    tier = match(led, app, offer)
    st = led.state
    loan = keys.derive_address(b"loan", tx.hash)
    principal = app["amount"]
    led.create_contract(loan, st.meta.get("loan_code"), tx.sender)
    st.loans.put(loan, {"borrower": app["borrower"], "lender": offer["lender"],
                        "offer": offer_id, "application": app_id, "created": led.time,
                        "collateral": app["collateral"]})
    st.offers.put(offer_id, {**offer, "available": offer["available"] - principal})
    st.applications.put(app_id, {**app, "status": "funded", "loan": loan})
    for asset_id in app["collateral"]:
        st.assets.put(asset_id, {**st.assets.get(asset_id), "lien": loan})
    # The principal moves from escrow into the contract, which disburses it itself.
    led.credit_from_escrow(loan, principal)
    args = [b"init", principal, tier[1], app["term"], METHOD_CODES[app["method"]],
            app["grace"], led.time, PERIOD_CODES[app["period"]], offer["late_fee_bps"],
            offer["tolerance_days"] * DAY, offer["default_days"] * DAY,
            offer.get("penalty_bps", 0), app["borrower"].encode(), offer["lender"].encode()]
    led.run_contract(loan, args, tx.sender, principal, FUND_GAS)


def _fund(led: Ledger, tx: SignedTx, b: dict) -> None:
    if _offer(led, b["offer"])["lender"] != tx.sender:
        raise TxError("only the offer's lender can fund against it")
    _originate(led, tx, b["application"], b["offer"])


def _accept_offer(led: Ledger, tx: SignedTx, b: dict) -> None:
    if _application(led, b["application"])["borrower"] != tx.sender:
        raise TxError("only the applicant can accept an offer for an application")
    _originate(led, tx, b["application"], b["offer"])


def _loan(led: Ledger, loan: str) -> dict:
    rec = led.state.loans.get(loan)
    if rec is None:
        raise TxError(f"no loan {loan}")
    return rec


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
    if rec["lender"] != tx.sender:
        raise TxError("only the loan's lender can write it off")
    status = loan_status(led, b["loan"])
    if status != "defaulted":
        raise TxError(f"loan is {status}: only a defaulted loan can be written off")
    led.run_contract(b["loan"], [b"write_off"], tx.sender, 0, REPAY_GAS)
    led.state.loans.put(b["loan"], {**rec, "write_off": {"reason": b["reason"],
                                                         "time": led.time, "tx": tx.id}})
    led.record_event(b["loan"], "write_off_reason", [b["reason"].encode()])


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
    by = _party(rec, tx.sender)
    proposal = rec.get("proposals", {}).get(b["proposal"])
    if proposal is None:
        raise TxError(f"no restructuring proposal {b['proposal']} for this loan")
    if proposal["by"] == by:
        raise TxError(f"the {by} proposed it: the other party must accept it")
    term = proposal["term"]
    _check_term(led, b["loan"], term)
    led.run_contract(b["loan"], [b"restructure", term], tx.sender, 0, FUND_GAS)
    done = rec.get("restructures", []) + [{"proposal": b["proposal"], "term": term,
                                           "time": led.time}]
    led.state.loans.put(b["loan"], {**rec, "proposals": {}, "restructures": done})


def _register_collateral(led: Ledger, tx: SignedTx, b: dict) -> None:
    if b["asset"] in led.state.assets:
        raise TxError(f"asset {b['asset']!r} is already registered")
    led.state.assets.put(b["asset"], {"owner": tx.sender, "value": b["value"],
                                      "description_hash": b["description_hash"],
                                      "lien": None})


def _pledge(led: Ledger, tx: SignedTx, b: dict) -> None:
    st = led.state
    asset = st.assets.get(b["asset"])
    if asset is None:
        raise TxError(f"no asset {b['asset']!r}")
    if asset["owner"] != tx.sender:
        raise TxError("only the asset's owner can pledge it")
    if asset["lien"] is not None:
        raise TxError(f"asset is already pledged to {asset['lien']}")
    target = b["to"]
    if target in st.applications:
        app = st.applications.get(target)
        if app["borrower"] != tx.sender or app["status"] != "open":
            raise TxError("collateral can be pledged only to your own open application")
        st.applications.put(target, {**app, "collateral": app["collateral"] + [b["asset"]]})
    elif target in st.loans:
        ln = st.loans.get(target)
        if ln["borrower"] != tx.sender or loan_status(led, target) != "active":
            raise TxError("collateral can be pledged only to your own active loan")
        st.loans.put(target, {**ln, "collateral": ln["collateral"] + [b["asset"]]})
    else:
        raise TxError(f"no open application or loan {target}")
    st.assets.put(b["asset"], {**asset, "lien": target})


# --- liens: the loan contract releases them on payoff and seizes them on default ---------

def _pledged_to(led: Ledger, holder: str) -> list:
    st = led.state
    rec = st.loans.get(holder) or st.applications.get(holder)
    return [] if rec is None else rec["collateral"]


def release_liens(led: Ledger, holder: str) -> None:
    for asset_id in _pledged_to(led, holder):
        asset = led.state.assets.get(asset_id)
        if asset["lien"] == holder:
            led.state.assets.put(asset_id, {**asset, "lien": None})


def seize_liens(led: Ledger, holder: str, to: str) -> None:
    for asset_id in _pledged_to(led, holder):
        asset = led.state.assets.get(asset_id)
        if asset["lien"] == holder:
            led.state.assets.put(asset_id, {**asset, "owner": to, "lien": None})


# --- the credit bureau: loan events update the borrower's history -------------------------

_I = {name: i for i, name in enumerate(scoring.HISTORY_FIELDS)}
_EVENT_EFFECTS = {
    "disbursed": (("opened", 1), ("active", 1)),
    "instalment_late": (("late", 1),),
    "repaid": (("repaid_loans", 1), ("active", -1)),
    "defaulted": (("defaults", 1), ("active", -1)),
}


def _on_contract_event(led: Ledger, contract: str, name: str, values: list) -> None:
    if contract in led.state.loans:
        observe_loan_event(led, contract, name, values)


def observe_loan_event(led: Ledger, loan: str, name: str, values: list) -> None:
    changes = list(_EVENT_EFFECTS.get(name, ()))
    if name == "instalment_paid" and values[1]:
        changes.append(("on_time", 1))
    elif name == "payment":
        changes.append(("amount_repaid", values[0]))
    if not changes:
        return
    borrower = led.state.loans.get(loan)["borrower"]
    h = list(led.state.history.get(borrower, scoring.EMPTY_HISTORY))
    for field, delta in changes:
        h[_I[field]] += delta
    led.state.history.put(borrower, tuple(h))


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
            "principal_outstanding": t["out"], "payoff": loan_payoff(led, loan)}


HANDLERS: dict[str, Handler] = {
    "register_borrower": _register_borrower,
    "register_lender": _register_lender,
    "publish_offer": _publish_offer,
    "withdraw_offer": _withdraw_offer,
    "apply": _apply,
    "withdraw_application": _withdraw_application,
    "fund": _fund,
    "accept_offer": _accept_offer,
    "repay": _repay,
    "prepay": _prepay,
    "write_off": _write_off,
    "propose_restructure": _propose_restructure,
    "accept_restructure": _accept_restructure,
    "register_collateral": _register_collateral,
    "pledge": _pledge,
}


# --- lending on the ledger: its rules, and the one place a lendnet ledger is made ---------

def _genesis(led: Ledger) -> None:
    """Store the standard loan agreement's bytecode by hash, for every loan to run."""
    code = loan_code()
    code_hash = Program.load(code).code_hash.hex()
    led.state.code.put(code_hash, code)
    led.state.meta.put("loan_code", code_hash)


def _check_call(led: Ledger, address: str) -> None:
    if address in led.state.loans:
        raise TxError("loan contracts are driven by repay transactions and chain time")


def escrowed(led: Ledger) -> int:
    """What offers hold in escrow: published, not yet lent or withdrawn."""
    return sum(o["available"] for o in led.state.offers.rows.values())


# The fee schedule of lending's kinds (ledger/fees.py): (fixed gas, most the loan agreement
# may burn). The fixed gas pays for checking and writing the records; funding and
# repaying also pay what the agreement's run burned (about 13,000-30,000 gas to fund,
# storage included, and 1,500-12,500 for a repayment), up to FUND_GAS and REPAY_GAS.
GAS: dict[str, tuple[int, int]] = {
    "register_borrower": (2_000, 0), "register_lender": (2_000, 0),
    "publish_offer": (3_000, 0), "withdraw_offer": (2_000, 0),
    "apply": (2_000, 0), "withdraw_application": (2_000, 0),
    "fund": (5_000, FUND_GAS), "accept_offer": (5_000, FUND_GAS),
    "repay": (2_000, REPAY_GAS), "prepay": (2_000, REPAY_GAS),
    "write_off": (2_000, REPAY_GAS), "propose_restructure": (2_000, 0),
    "accept_restructure": (3_000, FUND_GAS),
    "register_collateral": (2_000, 0), "pledge": (2_000, 0),
}


def _is_loan(led: Ledger, address: str) -> bool:
    """A loan's deadlines (instalments due, late fees, default, lien release) are the
    chain's duties: they run before anything users send (Rules.duty)."""
    return address in led.state.loans


RULES = Rules(handlers=HANDLERS, genesis=_genesis, on_event=_on_contract_event,
              check_call=_check_call, duty=_is_loan, escrowed=escrowed,
              release_liens=release_liens, seize_liens=seize_liens, gas=GAS)


def genesis(chain_id: str, balances: dict[str, int], time: int = 0,
            fee_params: dict | None = None) -> Ledger:
    """The lendnet ledger at height 0: the generic ledger with lending's rules.
    `fee_params`: the genesis's min_gas_price and byte_price (ledger/fees.py)."""
    return Ledger.genesis(chain_id, balances, time, rules=RULES, fee_params=fee_params)
