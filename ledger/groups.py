"""Group (joint-liability) loans, as Grameen-style lenders run them.

A group of 3 to 10 registered borrowers who know each other forms (group_create by its
leader, group_join by each listed member) and is then active. Each member applies for its
own individual loan through the group (group_apply: an `apply` whose record names the
group), consenting to its own limits; lenders fund those applications one by one. The
group answers for its members:

- a group in arrears (any member's group loan past due, or defaulted with its claim
  unpaid) takes no new loans: group_apply, fund and accept_offer are refused, naming the
  member and the loan, and so is any loan (an individual one too) to one of its members;
- a group loan is funded only with the group's compulsory savings (savings_bps of the
  loan) pledged to the application (ledger/savings.py);
- any fellow member may cover a member's loan (group_cover): the money passes through
  the group agreement, which records who covered whom, to the loan, whose repay runs
  with the coverer as payer (any surplus comes back to the coverer);
- the group agreement is told of its members' group loans' instalments coming due
  ("member_due"), late ("member_late") and defaults ("member_defaulted");
- the group's record feeds every member's score: a fellow member's default costs each
  other member points, covering a fellow's overdue instalment earns a few (score.py).

The group is an instance of the standard group agreement (contracts/agreements/
group.lasm), stored at genesis by hash. It keeps the group's record and makes its
decisions (who is a member, who may cover which loan); this module validates, moves
money, runs it, and keeps the indexes the API and the checks need:

  groups        group address -> name, leader, members (listed), savings_bps, created,
                forming_until, current (member -> its group application id: at most one
                open application or unclosed loan per member), pending (loan -> the
                notices not yet passed to the agreement)
  group_members address -> the group it joined (one at a time, for good: no leaving);
                and "id:<identity>" -> the group an address attested as that person
                joined (so a person's other addresses answer to it: `membership`)
  group_credit  subject (as lending.subject) -> fellow_defaults, covers: the score's input

Notices reach the agreement from the loans' own events. An event arrives while the loan's
agreement runs, often inside a transaction whose gas limit was fixed before it ran; so
the notice is queued in the group's index and the group is woken (a duty, like a loan):
its tick, in the same block's duties when the event came from a loan's deadline, else in
the next block, passes the queued notices in, with the chain's duty gas.
"""
from __future__ import annotations

from typing import Any

from lendnet.contracts.agreements import LOAN_KEY, instalment_key, instalments

from . import keys, savings
from .ledger import Ledger
from .tx import SignedTx, TxError

# lending.py imports this module (its kinds, hooks and views are lending's), so what this
# module needs of lending (_apply, loan_status, days_past_due, subject, REPAY_GAS) it
# imports inside the functions that use it, once both modules are loaded.

DAY = 86_400
MIN_MEMBERS, MAX_MEMBERS = 3, 10
MAX_SAVINGS_BPS = 5_000
# A group must have every listed member join within this many chain days of its creation,
# or it lapses and its joined members are free to form or join another.
FORMING_DAYS = 30
# Gas for the group agreement's runs (VM gas, storage included; measured by
# tests/test_groups.py::test_gas_of_the_group_agreement, the largest case of each): init
# of 10 members 23,573 (its storage: each member's address and index); join 611; loan
# 1,791 (a member's first); cover 166; covered 2,754 (the first cover between two
# members: seven new counters); late 689; default 709; due 98; tick 19. Each budget is
# about twice the most measured. A transaction reserves its whole budget in the block.
INIT_GAS = 50_000
GROUP_GAS = 6_000
# A group's loan statuses that no longer count against it: nothing is owed.
CLOSED = ("repaid", "settled")
CLAIM_OPEN = ("defaulted", "written_off")
NOTICE_EVENTS = ("instalment_due", "instalment_late", "defaulted")
# The group agreement's events about one member's loan, and where the loan is in their
# values: the node streams them with the loans' own (lendnet watch).
GROUP_LOAN_EVENTS = {"member_due": 1, "member_late": 1, "member_defaulted": 1,
                     "member_covered": 2, "group_loan": 1}


# --- reading the group ------------------------------------------------------------------

def _get(led: Ledger, group: str, key: bytes):
    return led.state.storage.get((group, key))


def _index_key(prefix: bytes, i: int) -> bytes:
    return prefix + i.to_bytes(8, "big")


def status(led: Ledger, group: str) -> str:
    """forming, active, or lapsed (still forming after FORMING_DAYS)."""
    if _get(led, group, b"st") == 1:
        return "active"
    rec = led.state.groups.get(group)
    return "lapsed" if led.time >= rec["forming_until"] else "forming"


def group_of(led: Ledger, addr: str) -> str | None:
    """The group the address belongs to: it joined it, and the group has not lapsed."""
    g = led.state.group_members.get(addr)
    if g is None or status(led, g) == "lapsed":
        return None
    return g


def _person(led: Ledger, addr: str) -> str | None:
    """The attested identity's key (lending.subject) an address borrows as, or None."""
    from .lending import subject
    key = subject(led, addr)
    return key if key != addr else None


def membership(led: Ledger, addr: str) -> str | None:
    """The group the address answers to: the one it joined, else the one another address
    of the same attested person joined. A person cannot borrow around its group's
    arrears, or sit in a second group, from a second address."""
    mine = group_of(led, addr)
    person = _person(led, addr)
    return mine if mine is not None or person is None else group_of(led, person)


def _enter(led: Ledger, addr: str, group: str) -> None:
    """The address joins the group: recorded for it and for the person it is attested
    as (group_members' "id:" keys; an attestation after joining adds it, on_attested)."""
    led.state.group_members.put(addr, group)
    person = _person(led, addr)
    if person is not None:
        led.state.group_members.put(person, group)


def on_attested(led: Ledger, addr: str, person: str) -> None:
    """lending's attest_identity: the group record written under the address (fellows'
    defaults, covers) joins the person's, as its credit history does, so every address
    attested as the person carries it; and a member attested after joining brings its
    group to the person, unless the person already answers to a live group."""
    st = led.state
    own = st.group_credit.get(addr)
    if own is not None:
        theirs = st.group_credit.get(person) or {"fellow_defaults": 0, "covers": 0}
        st.group_credit.put(person, {f: theirs[f] + own[f] for f in theirs})
        st.group_credit.delete(addr)
    g = group_of(led, addr)
    if g is not None and group_of(led, person) is None:
        led.state.group_members.put(person, g)


def _group(led: Ledger, group: str) -> dict:
    return led.record("groups", group, "group")


def loan_group(led: Ledger, loan: str) -> str | None:
    """The group a loan was made through (None: an individual loan)."""
    rec = led.state.loans.get(loan)
    app = rec and led.state.applications.get(rec["application"])
    return app.get("group") if app else None


def _current_loan(led: Ledger, app_id: str) -> tuple[str | None, str]:
    """A member's current group application: (its loan or None, the status that counts:
    the application's while it is not funded, else the loan's)."""
    from .lending import loan_status
    app = led.state.applications.get(app_id)
    if app["status"] != "funded":
        return None, app["status"]
    return app["loan"], loan_status(led, app["loan"])


def arrears(led: Ledger, group: str) -> list[str]:
    """Why the group is in arrears ([] when it is not): each member's group loan past
    due, or defaulted with its claim unpaid. At most one per member, so at most 10."""
    from .lending import days_past_due
    out = []
    for member, app_id in sorted(led.state.groups.get(group)["current"].items()):
        loan, st = _current_loan(led, app_id)
        if loan is None:
            continue
        if st in CLAIM_OPEN:
            out.append(f"member {member}'s loan {loan} is {st} with its claim unpaid")
        else:
            dpd = days_past_due(led, loan)
            if dpd > 0:
                out.append(f"member {member}'s loan {loan} is {dpd} days past due")
    return out


def _refuse_in_arrears(led: Ledger, group: str) -> None:
    why = arrears(led, group)
    if why:
        raise TxError(f"group {group} is in arrears, and a group in arrears cannot take "
                      f"new loans: " + "; ".join(why))


# --- transactions ----------------------------------------------------------------------

def _run(led: Ledger, group: str, args: list, caller: str, value: int = 0,
         gas: int = GROUP_GAS) -> None:
    led.run_contract(group, args, caller, value, gas)


def _group_create(led: Ledger, tx: SignedTx, b: dict) -> None:
    leader, members = tx.sender, b["members"]
    if leader not in members:
        raise TxError("the sender must be one of the members: it is the group's leader")
    if leader not in led.state.borrowers:
        raise TxError("only a registered borrower can lead a group")
    for m in members:
        g = membership(led, m)
        if g is not None:
            raise TxError(f"member {m} already belongs to group {g}: a borrower belongs "
                          f"to one group at a time")
    ordered = [leader] + [m for m in members if m != leader]
    st = led.state
    group = keys.derive_address(b"group", tx.hash)
    led.create_contract(group, st.meta.get("group_code"), leader)
    st.groups.put(group, {"name": b["name"], "leader": leader, "members": ordered,
                          "savings_bps": b["savings_bps"], "created": led.time,
                          "forming_until": led.time + FORMING_DAYS * DAY,
                          "current": {}, "pending": {}})
    _enter(led, leader, group)
    _run(led, group, [b"init", b["name"].encode(), b["savings_bps"], FORMING_DAYS * DAY,
                      *(m.encode() for m in ordered)], leader, gas=INIT_GAS)


def _group_join(led: Ledger, tx: SignedTx, b: dict) -> None:
    group = b["group"]
    rec = _group(led, group)
    if tx.sender not in rec["members"]:
        raise TxError("only a member the group lists may join it")
    if tx.sender not in led.state.borrowers:
        raise TxError("only a registered borrower can join a group")
    if group_of(led, tx.sender) == group:
        raise TxError("you have already joined this group")
    mine = membership(led, tx.sender)
    if mine == group:
        # A group is 3 to 10 people: one person in two seats would fake its size and
        # answer for itself.
        raise TxError("another address attested as the same person has joined this "
                      "group: a person holds one seat in a group")
    if mine is not None:
        raise TxError(f"you already belong to group {mine}: a borrower belongs to one "
                      f"group at a time")
    state = status(led, group)
    if state != "forming":
        raise TxError(f"the group is {state}: it takes no more members"
                      + (f" (every member had to join within {FORMING_DAYS} days)"
                         if state == "lapsed" else ""))
    _enter(led, tx.sender, group)
    _run(led, group, [b"join"], tx.sender)


def _group_apply(led: Ledger, tx: SignedTx, b: dict) -> None:
    from .lending import _apply
    group = b["group"]
    rec = _group(led, group)
    if group_of(led, tx.sender) != group:
        raise TxError("only a joined member of the group can apply through it")
    if status(led, group) != "active":
        raise TxError("the group is not active yet: every listed member must join first")
    app_id = rec["current"].get(tx.sender)
    if app_id is not None:
        loan, st = _current_loan(led, app_id)
        if st not in CLOSED and st != "withdrawn":
            raise TxError(f"you already have {'loan ' + loan if loan else 'application ' + app_id}"
                          f" ({st}) through the group: one at a time")
    _refuse_in_arrears(led, group)
    _apply(led, tx, b)
    app = led.state.applications.get(tx.id)
    led.state.applications.put(tx.id, {**app, "group": group})
    led.state.groups.put(group, {**rec, "current": {**rec["current"], tx.sender: tx.id}})


def after_originate(led: Ledger, app_id: str, app: dict, loan: str) -> None:
    """A loan was funded (fund or accept_offer): for a group application, refuse it while
    the group is in arrears, else tell the group agreement."""
    # A member of a group in arrears takes no new loan, through the group or alone:
    # joint liability would mean little if a member could borrow around it.
    # Its own group and its person's: two, if two addresses joined two groups before
    # either was attested (on_attested keeps the person's first).
    person = _person(led, app["borrower"])
    for joined in dict.fromkeys((group_of(led, app["borrower"]),
                                 person and group_of(led, person))):
        if joined is not None:
            _refuse_in_arrears(led, joined)
    group = app.get("group")
    if group is None:
        return
    need = -(-app["amount"] * _group(led, group)["savings_bps"] // 10_000)
    have = savings.pledged_to(led, app_id)
    if have < need:
        bps = _group(led, group)["savings_bps"]
        raise TxError(f"the group requires compulsory savings of {bps} bps of the loan "
                      f"pledged to the application: {need}, and {have} is pledged "
                      f"(lendnet savings pledge)")
    _run(led, group, [b"loan", app["borrower"].encode(), loan.encode()], "")


def _late(led: Ledger, loan: str) -> bool:
    """Whether the loan is behind by its own terms: defaulted, or its oldest unpaid
    instalment past its due date and the offer's tolerance (when the agreement charges
    the late fee and the credit bureau counts the instalment late)."""
    from .lending import loan_status
    if loan_status(led, loan) in CLAIM_OPEN:
        return True
    unpaid = instalments(lambda key: _get(led, loan, key))
    return bool(unpaid) and led.time > unpaid[0]["due"] + (_get(led, loan, LOAN_KEY["tol"])
                                                           or 0)


def _group_cover(led: Ledger, tx: SignedTx, b: dict) -> None:
    from .lending import REPAY_GAS, loan_status, subject
    loan, amount, coverer = b["loan"], b["amount"], tx.sender
    rec = led.record("loans", loan, "loan")
    group = loan_group(led, loan)
    if group is None:
        raise TxError(f"loan {loan} was not made through a group: only a group loan can "
                      f"be covered")
    if group_of(led, coverer) != group:
        raise TxError(f"only a member of the loan's group {group} can cover it")
    if subject(led, coverer) == subject(led, rec["borrower"]):
        # By person, as lending judges self-dealing: covering one's own late instalment
        # from a second attested address would earn the coverer's credit.
        raise TxError("a member cannot cover its own loan (the same address or the same "
                      "attested identity): pay it with repay")
    if coverer == rec["lender"]:
        # What the cover applied is measured by what comes back to the coverer; the
        # lender is paid by the loan itself, so its cover could not be told apart.
        raise TxError("the loan's lender cannot cover it")
    before = loan_status(led, loan)
    if before in CLOSED:
        raise TxError(f"loan is {before}: nothing is owed")
    led.require_funds(coverer, amount)
    # Credit is for rescuing a fellow who is late: within the offer's tolerance the
    # borrower is not (no late fee, and the bureau counts the instalment on time), so two
    # members taking turns a day "behind" could otherwise farm it for nothing.
    overdue, ko = _late(led, loan), _get(led, loan, LOAN_KEY["ko"])
    # Through the group agreement (it checks the coverer, the member and the loan, and
    # pays the loan), then the loan's repay with the coverer as payer: the surplus, if
    # any, comes straight back to the coverer.
    led.move(coverer, group, amount)
    _run(led, group, [b"cover", rec["borrower"].encode(), loan.encode()], coverer, amount)
    held = led.balance(coverer)
    led.run_contract(loan, [b"repay"], coverer, amount, REPAY_GAS)
    applied = max(0, amount - (led.balance(coverer) - held))
    _run(led, group, [b"covered", rec["borrower"].encode(), loan.encode(), applied],
         coverer)
    after = loan_status(led, loan)
    # A cover earns score credit only when it clears a late instalment (the loan's
    # oldest unpaid one moves on) or settles the claim: once per instalment, never for
    # paying a fellow's loan ahead, so two members cannot farm it with small covers.
    if overdue and (_get(led, loan, LOAN_KEY["ko"]) != ko or after in CLOSED):
        _credit(led, subject(led, coverer), "covers")


# --- notices from the members' loans ------------------------------------------------------

def on_loan_event(led: Ledger, loan: str, name: str, values: list) -> None:
    """A group loan's instalment comes due soon, fell late, or the loan defaulted: queue
    the notice for the group agreement and wake the group (a duty) to pass it in. At
    most one entry per loan: lates are counted, the latest due alert kept."""
    if name not in NOTICE_EVENTS:
        return
    group = loan_group(led, loan)
    if group is None:
        return
    rec = led.state.groups.get(group)
    pending = dict(rec["pending"])
    n = pending.get(loan, {"late": 0, "instalment": 0, "defaulted": 0, "due": None})
    if name == "instalment_late":
        n = {**n, "late": n["late"] + 1, "instalment": values[0]}
    elif name == "instalment_due":                  # (instalment, owed, due time)
        n = {**n, "due": list(values[:3])}
    else:
        n = {**n, "defaulted": 1}
    pending[loan] = n
    led.state.groups.put(group, {**rec, "pending": pending})
    led.set_wake(group, led.time)


def is_group(led: Ledger, address: str) -> bool:
    return address in led.state.groups


def after_group_run(led: Ledger, group: str) -> None:
    """After the group's tick (never inside a transaction): pass the queued notices to
    the agreement, one loan at a time (at most one loan per member is current)."""
    rec = led.state.groups.get(group)
    if not rec["pending"] or led.in_transaction:
        return
    led.state.groups.put(group, {**rec, "pending": {}})
    for loan in sorted(rec["pending"]):
        n = rec["pending"][loan]
        member = led.state.loans.get(loan)["borrower"]
        if n["due"] is not None:
            _run(led, group, [b"due", member.encode(), loan.encode(), *n["due"]], "")
        if n["late"]:
            i = n["instalment"]
            owed = sum(_get(led, loan, instalment_key(row, i)) or 0
                       for row in ("principal", "interest", "fees"))
            _run(led, group, [b"late", member.encode(), loan.encode(), i, owed, n["late"]],
                 "")
        if n["defaulted"]:
            _run(led, group, [b"default", member.encode(), loan.encode()], "")
            _fellow_default(led, group, member)


def _fellow_default(led: Ledger, group: str, member: str) -> None:
    from .lending import subject
    for m in led.state.groups.get(group)["members"]:
        if m != member and led.state.group_members.get(m) == group:
            _credit(led, subject(led, m), "fellow_defaults")


def _credit(led: Ledger, key: str, field: str) -> None:
    row = led.state.group_credit.get(key) or {"fellow_defaults": 0, "covers": 0}
    led.state.group_credit.put(key, {**row, field: row[field] + 1})


def group_credit(led: Ledger, addr: str, key: str) -> dict | None:
    """The group record that feeds an address's score: its subject's (an attestation
    moves the address's own row into the person's: on_attested), plus the address's own
    (a thin file's)."""
    rows = [r for k in dict.fromkeys((key, addr))
            if (r := led.state.group_credit.get(k)) is not None]
    if not rows:
        return None
    return {f: sum(r[f] for r in rows) for f in ("fellow_defaults", "covers")}


# --- views ------------------------------------------------------------------------------

def group_view(led: Ledger, group: str) -> dict | None:
    """The group's record (the agreement's storage), its members' current loans with
    days past due, and whether it is in arrears."""
    from .lending import days_past_due
    rec = led.state.groups.get(group)
    if rec is None:
        return None

    def member_row(i: int, addr: str) -> dict:
        def at(prefix: bytes) -> int:
            return _get(led, group, _index_key(prefix, i)) or 0
        owes: dict[str, int] = {}
        for j, other in enumerate(rec["members"], 1):
            owed = _get(led, group, _index_key(b"o", j) + i.to_bytes(8, "big"))
            if owed:
                owes[other] = owed          # what `addr` owes `other`, who covered it
        row: dict[str, Any] = {
               "address": addr, "joined": bool(at(b"j")), "loans_taken": at(b"lc"),
               "covers_given": at(b"cc"), "covered_amount_given": at(b"ca"),
               "covers_received": at(b"xc"), "covered_amount_received": at(b"xa"),
               "lates": at(b"l"), "defaults": at(b"d"), "loan": None,
               "owed_within_group": owes}
        app_id = rec["current"].get(addr)
        if app_id is not None:
            loan, st = _current_loan(led, app_id)
            row["loan"] = {"application": app_id, "loan": loan, "status": st,
                           "days_past_due": days_past_due(led, loan) if loan else 0}
        return row

    def total(key: bytes) -> int:
        return _get(led, group, key) or 0

    why = arrears(led, group)
    return {"group": group, "name": rec["name"], "leader": rec["leader"],
            "status": status(led, group), "savings_bps": rec["savings_bps"],
            "created": rec["created"], "forming_until": rec["forming_until"],
            "members": [member_row(i, a) for i, a in enumerate(rec["members"], 1)],
            "joined": total(b"jn"), "loans": total(b"nl"), "covers": total(b"tc"),
            "covered_amount": total(b"ta"), "lates": total(b"tl"),
            "defaults": total(b"td"), "in_arrears": bool(why), "arrears": why,
            "code": led.state.contracts.get(group)["code"]}


HANDLERS = {"group_create": _group_create, "group_join": _group_join,
            "group_apply": _group_apply, "group_cover": _group_cover}
# (fixed gas, the most the agreements' runs may burn): create runs init; join one run;
# apply none (it reads at most 10 loans, one per member); cover two group runs and the
# loan's repayment.


def gas(repay_gas: int) -> dict[str, tuple[int, int]]:
    """The kinds' fees, given the loan's repayment budget (lending.REPAY_GAS)."""
    return {"group_create": (3_000, INIT_GAS), "group_join": (2_000, GROUP_GAS),
            "group_apply": (3_000, 0), "group_cover": (3_000, 2 * GROUP_GAS + repay_gas)}
