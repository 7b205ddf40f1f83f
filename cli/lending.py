"""`lendnet borrower ...` and `lendnet lender ...`: the lending lifecycle from a wallet.

Every command talks to one node's public API; those that change the ledger sign a
transaction with the wallet (or write it to a file with --offline). Amounts are typed
and shown in LND with two decimals; the ledger holds integer minor units.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import click

from lendnet.contracts.agreements import METHOD_CODES, PERIOD_NAMES, PERIODS_PER_YEAR, schedule
from lendnet.ledger import tx as txm

from .common import (AMOUNT, client, emit, get, get_all, money, node_option, pct, put_blob,
                     send_options, sign_and_send, unlock, wallet_option)

H0 = b"\x00" * 32                      # "no documents": the hash of nothing registered
# `borrower apply`'s limits when not given: what a careful borrower would sign.
APPLY_DEFAULTS = {"max_rate_bps": 3_600, "max_late_fee_bps": 500, "min_default_days": 90,
                  "max_penalty_bps": 1_200, "max_origination_fee_bps": 200}


def _when(ts) -> str:
    return "-" if not ts else dt.datetime.fromtimestamp(ts, dt.UTC).strftime(
        "%Y-%m-%d %H:%M")


def _fits(why: str | None) -> str:
    """The "fits" column: '-' when not judged, 'yes', or 'no (why not)'."""
    return "-" if why is None else ("yes" if not why else f"no ({why})")


def _table(title: str, cols: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console().print(t)


def _address_of_wallet(name: str) -> str:
    from .keystore import KeystoreError, info
    try:
        return info(name)["address"]
    except KeystoreError as e:
        raise click.ClickException(str(e))


# --- private documents ----------------------------------------------------------------

def _recipient(text: str) -> bytes:
    from .tx import _member_key
    return _member_key(text)


def seal_docs(docs: Path | None, authorise: tuple, node_url, keep: Path | None,
              kp) -> bytes:
    """Seal a document to the authorised lenders, store the envelope off-chain (the
    node's blob store, the upload signed with the wallet's key, or a file) and return
    the hash that goes on the ledger."""
    if docs is None:
        return H0
    from .documents import DocumentError, seal
    if not authorise:
        raise click.UsageError("--docs needs at least one --authorise LENDER_PUBKEY|FILE")
    try:
        envelope = seal(docs.read_bytes(), [_recipient(a) for a in authorise])
    except (OSError, DocumentError) as e:
        raise click.ClickException(f"cannot seal {docs}: {e}")
    digest = hashlib.sha256(envelope).digest()
    if keep is not None:
        keep.write_bytes(envelope)
    else:
        stored = put_blob(node_url, envelope, kp)
        if stored != digest.hex():
            raise click.ClickException("the node stored the documents under another hash")
    return digest


def docs_options(f):
    for opt in reversed([
        click.option("--docs", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="Supporting document to seal for the authorised lenders; only "
                          "its hash goes on the ledger."),
        click.option("--authorise", multiple=True, metavar="PUBKEY|FILE",
                     help="A lender allowed to read --docs (repeat)."),
        click.option("--docs-out", type=click.Path(dir_okay=False, path_type=Path),
                     help="Keep the sealed documents in this file instead of the node."),
    ]):
        f = opt(f)
    return f


# --- borrower -------------------------------------------------------------------------

@click.group()
def borrower():
    """Register, apply, accept an offer, repay, see the schedule and the credit score."""


@borrower.command("register")
@wallet_option
@click.option("--profile", default="", help="Profile text; only its hash goes on the ledger.")
@docs_options
@send_options
def b_register(wallet_name, profile, docs, authorise, docs_out, **send):
    """Register as a borrower (the credit history starts now)."""
    kp = unlock(wallet_name)
    h = seal_docs(docs, authorise, send["node_url"], docs_out, kp)
    sign_and_send(kp, "register_borrower",
                  profile_hash=hashlib.sha256(profile.encode()).digest(), docs_hash=h, **send)


# `borrower apply`'s options (the loan asked for, the borrower's limits, documents): one
# definition, shared with `group apply` (cli/group.py).
_APPLY_OPTIONS = [
    click.option("--amount", type=AMOUNT, required=True, help="In LND, e.g. 1000.00"),
    click.option("--term", type=click.IntRange(1, 520), required=True, help="Instalments."),
    click.option("--period", type=click.Choice(list(PERIODS_PER_YEAR)), default="monthly",
                 show_default=True),
    click.option("--method", type=click.Choice(list(METHOD_CODES)), default="annuity",
                 show_default=True),
    click.option("--product", type=click.Choice(txm.PRODUCTS), default="consumer",
                 show_default=True),
    click.option("--grace", type=click.IntRange(0, 12), default=0, show_default=True),
    click.option("--purpose", default="loan", show_default=True),
    click.option("--max-rate-bps", type=click.IntRange(0, txm.MAX_RATE_BPS),
                 default=APPLY_DEFAULTS["max_rate_bps"], show_default=True,
                 help="Refuse any loan above this yearly rate (basis points; 3600 = 36 %, "
                      "the common consumer-credit cap)."),
    click.option("--max-late-fee-bps", type=click.IntRange(0, 10_000),
                 default=APPLY_DEFAULTS["max_late_fee_bps"], show_default=True,
                 help="Refuse a late fee above this share of a late instalment (500 = 5 %)."),
    click.option("--min-default-days", type=click.IntRange(1, 365),
                 default=APPLY_DEFAULTS["min_default_days"], show_default=True,
                 help="Refuse terms that default (and take the collateral) sooner than this "
                      "many days after a missed due date (90: the usual banking "
                      "definition)."),
    click.option("--max-penalty-bps", type=click.IntRange(0, txm.MAX_RATE_BPS),
                 default=APPLY_DEFAULTS["max_penalty_bps"], show_default=True,
                 help="Refuse penalty interest on overdue principal above this yearly rate."),
    click.option("--max-origination-fee-bps",
                 type=click.IntRange(0, txm.MAX_ORIGINATION_FEE_BPS),
                 default=APPLY_DEFAULTS["max_origination_fee_bps"], show_default=True,
                 help="Refuse an origination fee (taken out of the money you receive) above "
                      "this share of the principal (200 = 2 %)."),
]
_APPLY_FIELDS = ("amount", "term", "period", "method", "product", "grace", "purpose",
                 *APPLY_DEFAULTS)


def apply_options(f):
    """Decorate a command with `borrower apply`'s options."""
    f = docs_options(f)
    for opt in reversed(_APPLY_OPTIONS):
        f = opt(f)
    return f


def apply_fields(kp, opts: dict) -> tuple[dict, dict]:
    """Split a command's options into an application's fields (its documents sealed,
    their hash in docs_hash) and the rest (the sending options)."""
    rest = dict(opts)
    fields = {name: rest.pop(name) for name in _APPLY_FIELDS}
    docs, authorise, keep = rest.pop("docs"), rest.pop("authorise"), rest.pop("docs_out")
    fields["docs_hash"] = seal_docs(docs, authorise, rest["node_url"], keep, kp)
    return fields, rest


@borrower.command("apply")
@wallet_option
@apply_options
@send_options
def b_apply(wallet_name, **opts):
    """Apply for a loan; its id is the transaction hash.

    The limits are part of what you sign: no lender can fund this application on terms
    outside them, and the ledger refuses a funding that tries. Check an offer against
    them first with `lendnet borrower quote`."""
    kp = unlock(wallet_name)
    fields, send = apply_fields(kp, opts)
    sign_and_send(kp, "apply", **fields, **send)


def _why_unfit(offer: dict, app: dict, score: int) -> str:
    """Why an offer would not fund this application ('' if it would)."""
    for f, allowed in (("product", "products"), ("method", "methods"), ("period", "periods")):
        if app[f] not in offer[allowed]:
            return f"no {app[f]}"
    if not offer["min_term"] <= app["term"] <= offer["max_term"]:
        return "term"
    tiers = [t for t in offer["tiers"] if t[0] <= score]
    if not tiers:
        return f"score below {offer['tiers'][0][0]}"
    if app["amount"] > max(tiers)[2] or app["amount"] > offer["available"]:
        return "amount"
    limits = app.get("limits") or {}
    terms = {"max_rate_bps": max(tiers)[1], "max_late_fee_bps": offer["late_fee_bps"],
             "max_penalty_bps": offer.get("penalty_bps", 0),
             "max_origination_fee_bps": offer.get("origination_fee_bps", 0)}
    for name, have in terms.items():
        if name in limits and have > limits[name]:
            return f"{name} {limits[name]} < {have}"
    if "min_default_days" in limits and offer["default_days"] < limits["min_default_days"]:
        return f"min_default_days {limits['min_default_days']} > {offer['default_days']}"
    return ""


def _aprs(o: dict) -> str:
    """The representative APR per tier that the node shows with an offer."""
    return ", ".join(f"{a['min_score']}: {pct(a['apr_bps']) if a['apr_bps'] is not None else '-'}"
                     for a in o.get("apr") or [])


@borrower.command("offers")
@click.option("--application", "app_id", default=None, help="Show which offers match it.")
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_offers(app_id, node_url, as_json):
    """Active offers; with --application, whether each would fund it and at what rate."""
    offers = get_all(node_url, "/v1/offers?active=true", "offers")
    app = get(node_url, f"/v1/applications/{app_id}") if app_id else None
    score = get(node_url, f"/v1/scores/{app['borrower']}")["score"] if app else None
    for o in offers:
        o["fits"] = _why_unfit(o, app, score) if app else None
        tier = [t for t in o["tiers"] if score is not None and t[0] <= score]
        o["rate_bps"] = max(tier)[1] if tier else None
    if as_json:
        emit({"offers": offers, "score": score}, True)
        return
    _table("offers" + (f" for application {app_id[:12]}… (score {score})" if app else ""),
           ["offer", "lender", "available", "terms", "tiers (score: rate, max)",
            "APR* (score: APR)", "fee", "fits"],
           [[o["offer"][:12], o["lender"][:12], money(o["available"]),
             f"{o['min_term']}-{o['max_term']} {'/'.join(o['periods'])}",
             ", ".join(f"{t[0]}: {pct(t[1])}, {money(t[2])}" for t in o["tiers"]),
             _aprs(o), pct(o.get("origination_fee_bps", 0)), _fits(o["fits"])]
            for o in offers])
    _apr_note(offers)


def _apr_note(offers: list) -> None:
    if offers and offers[0].get("apr_basis"):
        click.echo(f"* APR including fees, actual/365, for {offers[0]['apr_basis']}; "
                   f"`lendnet borrower quote` gives the exact figure for an application.")


@borrower.command("quote")
@click.option("--application", required=True)
@click.option("--offer", required=True)
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_quote(application, offer, node_url, as_json):
    """What this application would get from this offer if funded now: the exact
    schedule, total cost and APR (fees included, actual/365), and whether the terms are
    within the application's limits."""
    q = get(node_url, f"/v1/quote?application={application}&offer={offer}")
    if as_json:
        emit(q, True)
        return
    if q["rate_bps"] is None:
        click.echo(f"offer {offer[:12]}… would not lend to this application: "
                   + "; ".join(q["problems"]))
        return
    if q.get("schedule") is None:
        click.echo(f"the agreement refuses these terms: {q.get('error')}")
        return
    click.echo(f"application {application[:12]}… on offer {offer[:12]}… (score "
               f"{q['score']}, if funded now)")
    click.echo(f"  rate {pct(q['rate_bps'])} a year; late fee {pct(q['terms']['late_fee_bps'])}"
               f" of a late instalment; default {q['terms']['default_days']} days after a "
               f"missed due date; penalty {pct(q['terms']['penalty_bps'])} a year")
    click.echo(f"  principal {money(q['principal'])}, origination fee "
               f"{money(q['origination_fee'])}, you receive {money(q['received'])}")
    click.echo(f"  you repay {money(q['repaid'])}: interest {money(q['interest'])}, total "
               f"cost of credit {money(q['total_cost'])}")
    click.echo(f"  APR {pct(q['apr_bps'])} (fees included, actual/365)")
    _table("schedule", ["#", "due", "principal", "interest", "total"],
           [[r["n"], _when(r["due"]), money(r["principal"]), money(r["interest"]),
             money(r["total"])] for r in q["schedule"]])
    if q["within_limits"]:
        click.echo("within the application's limits: yes")
    else:
        click.echo("within the application's limits: NO — " + "; ".join(q["problems"]))
    if q["fits"]:
        click.echo(f"accept_offer would be refused: {q['fits']}")


@borrower.command("accept")
@wallet_option
@click.option("--application", required=True)
@click.option("--offer", required=True)
@send_options
def b_accept(wallet_name, application, offer, **send):
    """Take an offer for your application: the loan starts at once."""
    sign_and_send(unlock(wallet_name), "accept_offer", application=application, offer=offer,
                  **send)


@borrower.command("withdraw")
@wallet_option
@click.option("--application", required=True)
@send_options
def b_withdraw(wallet_name, application, **send):
    """Withdraw an open application: its pledged collateral is released."""
    sign_and_send(unlock(wallet_name), "withdraw_application", application=application,
                  **send)


@borrower.command("loans")
@click.option("--wallet", "wallet_name", default=None, help="Whose loans [or --address].")
@click.option("--address", default=None)
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_loans(wallet_name, address, node_url, as_json):
    """Your loans: status, what is due and when, principal outstanding."""
    addr = address or (wallet_name and _address_of_wallet(wallet_name))
    if not addr:
        raise click.UsageError("give --wallet or --address")
    loans = get_all(node_url, f"/v1/loans?borrower={addr}", "loans")
    if as_json:
        emit({"loans": loans}, True)
        return
    _table(f"loans of {addr}", ["loan", "status", "instalment", "due", "amount due",
                                "outstanding", "payoff"],
           [[x["loan"][:14], x["status"], x["instalment"], _when(x["due_time"]),
             money(x["amount_due"]), money(x["principal_outstanding"]), money(x["payoff"])]
            for x in loans])


_METHOD_BY_CODE = {v: k for k, v in METHOD_CODES.items()}


@borrower.command("schedule")
@click.option("--loan", "loan_id", required=True)
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_schedule(loan_id, node_url, as_json):
    """A loan's whole schedule (run by the agreement itself) and what is due now."""
    ln = get(node_url, f"/v1/loans/{loan_id}")
    t = ln["terms"]
    rows = schedule(t["P"], t["a"], t["n"], PERIOD_NAMES[t["per"]],
                    _METHOD_BY_CODE[t["m"]], t["g"], t["t0"])
    from lendnet.ledger.apr import apr_bps
    fee = ln.get("origination_fee", 0)
    apr = apr_bps(t["P"], fee, rows, t["t0"])
    if as_json:
        emit({"loan": ln, "schedule": rows, "apr_bps": apr}, True)
        return
    click.echo(f"loan {loan_id}: {ln['status']}, {money(t['P'])} at {pct(t['a'])} a "
               f"year (APR {pct(apr)} with the {money(fee)} origination fee, actual/365); "
               f"instalment {ln['instalment']} due {_when(ln['due_time'])}: "
               f"{money(ln['amount_due'])}; payoff {money(ln['payoff'])}")
    _table("schedule", ["#", "due", "principal", "interest", "total"],
           [[r["n"], _when(r["due"]), money(r["principal"]), money(r["interest"]),
             money(r["total"])] for r in rows])


PAYOFF_MARGIN_DAYS = 2


def payoff_amount(ln: dict) -> int:
    """What `repay --payoff` sends: the quoted payoff plus PAYOFF_MARGIN_DAYS of interest
    and penalty on the principal outstanding (rounded up). The quote holds only until the
    next whole day (interest and penalty run by whole days), and a payment even 1 short
    of the payoff pays the running instalment's whole interest and leaves the loan open;
    the agreement returns whatever the payoff did not need."""
    t = ln.get("terms") or {}
    if ln.get("status") != "active":
        return ln["payoff"]
    rate = (t.get("a") or 0) + (t.get("pbps") or 0)
    out = ln.get("principal_outstanding") or 0
    return ln["payoff"] + -(-out * rate * PAYOFF_MARGIN_DAYS // 3_650_000) + 1


@borrower.command("repay")
@wallet_option
@click.option("--loan", "loan_id", required=True)
@click.option("--amount", type=AMOUNT, default=None, help="Any amount, in LND.")
@click.option("--instalment", is_flag=True, help="What is due now.")
@click.option("--payoff", is_flag=True, help="Everything: closes the loan.")
@send_options
def b_repay(wallet_name, loan_id, amount, instalment, payoff, **send):
    """Repay: the current instalment, any amount, or pay the loan off."""
    if sum(x is not None and x is not False for x in (amount, instalment or None,
                                                       payoff or None)) != 1:
        raise click.UsageError("give exactly one of --amount, --instalment, --payoff")
    if amount is None:
        ln = get(send["node_url"], f"/v1/loans/{loan_id}")
        amount = payoff_amount(ln) if payoff and ln["payoff"] else (
            ln["payoff"] if payoff else ln["amount_due"])
        if not amount:
            raise click.ClickException(f"nothing is due on loan {loan_id} "
                                       f"({ln['status']})")
    sign_and_send(unlock(wallet_name), "repay", loan=loan_id, amount=amount,
                  describe=f"paid {money(amount)}", **send)


@borrower.command("prepay")
@wallet_option
@click.argument("loan_id", metavar="LOAN")
@click.argument("amount", type=AMOUNT)
@click.option("--reduce", type=click.Choice(list(txm.REDUCE)), default="term",
              show_default=True,
              help="What the prepayment lowers: the number of instalments (term) or each "
                   "instalment (instalment).")
@send_options
def b_prepay(wallet_name, loan_id, amount, reduce, **send):
    """Pay AMOUNT (LND): all that is due first, the rest prepays principal."""
    sign_and_send(unlock(wallet_name), "prepay", loan=loan_id, amount=amount, reduce=reduce,
                  describe=f"prepaid {money(amount)} (reduce the {reduce})", **send)


def _restructure_group(parent: click.Group) -> None:
    @parent.group("restructure")
    def group():
        """Restructure a loan: one party proposes a new term, the other accepts it."""

    @group.command("propose")
    @wallet_option
    @click.argument("loan_id", metavar="LOAN")
    @click.option("--term", type=click.IntRange(1, max(txm.MAX_TERM.values())), required=True,
                  help="Instalments of the new schedule, from now.")
    @send_options
    def propose(wallet_name, loan_id, term, **send):
        """Propose a new term; the proposal's id is the transaction hash."""
        sign_and_send(unlock(wallet_name), "propose_restructure", loan=loan_id, term=term,
                      describe=f"proposed {term} instalments for loan {loan_id}", **send)

    @group.command("accept")
    @wallet_option
    @click.argument("loan_id", metavar="LOAN")
    @click.argument("proposal")
    @send_options
    def accept(wallet_name, loan_id, proposal, **send):
        """Accept the other party's PROPOSAL: arrears are capitalised, a new schedule starts."""
        sign_and_send(unlock(wallet_name), "accept_restructure", loan=loan_id,
                      proposal=proposal, describe=f"restructured loan {loan_id}", **send)


_restructure_group(borrower)


@borrower.command("score")
@click.option("--wallet", "wallet_name", default=None)
@click.option("--address", default=None)
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_score(wallet_name, address, node_url, as_json):
    """The credit score with its components and the reasons it is not higher."""
    addr = address or (wallet_name and _address_of_wallet(wallet_name))
    if not addr:
        raise click.UsageError("give --wallet or --address")
    s = get(node_url, f"/v1/scores/{addr}")
    if as_json:
        emit(s, True)
        return
    ident = s.get("identity", {})
    if ident.get("status") == "attested":
        click.echo(f"identity attested: {ident['identity'][:16]}… by {ident['registrar'][:12]}… "
                   f"at {_when(ident['attested_at'])} (history shared by every address "
                   f"attested as this person)")
    else:
        click.echo("identity not attested: thin file (a registrar's attestation lets the "
                   "history count)")
    click.echo(f"score {s['score']} (range {s['range'][0]}-{s['range'][1]}, base {s['base']}"
               + (f", attested floor {s['floor']})" if "floor" in s else ")"))
    for k, v in s["components"].items():
        click.echo(f"  {k:<20} {v:+d}")
    if s["reasons"]:
        click.echo("  held back by: " + ", ".join(s["reasons"]))


@borrower.group("collateral")
def b_collateral():
    """Register collateral and see it. An asset's id is "<your address>/<name>"."""


@b_collateral.command("register")
@wallet_option
@click.option("--asset", "name", required=True,
              help="A name for it, unique among your assets (no '/').")
@click.option("--value", type=AMOUNT, required=True,
              help="What you declare it is worth (in LND). It counts toward a loan's cover "
                   "only once an appraiser attests a value or a lender accepts one.")
@click.option("--description", default="", help="Hashed into the asset record.")
@send_options
def b_collateral_register(wallet_name, name, value, description, **send):
    """Register an asset you own; prints its id, "<your address>/<name>"."""
    kp = unlock(wallet_name)
    aid = f"{kp.address}/{name}"
    r = sign_and_send(kp, "register_collateral", asset=name, value=value,
                      description_hash=hashlib.sha256(description.encode()).digest(),
                      quiet=True, **send)
    emit({**r, "asset": aid}, send["as_json"], f"registered asset {aid} "
         f"(declared {money(value)}; {r['status']}, {r.get('hash', '')})")


@b_collateral.command("show")
@click.argument("asset_id")
@node_option
@click.option("--json", "as_json", is_flag=True)
def b_collateral_show(asset_id, node_url, as_json):
    """An asset: owner, declared and appraised value, lien."""
    a = get(node_url, f"/v1/assets/{asset_id}")
    emit(a, as_json, f"{a['asset']}: owner {a['owner']}, declared "
         f"{money(a['declared_value'])}, appraised {money(a['appraised_value'])}"
         + (f" by {a['appraiser']}" if a["appraiser"] else "")
         + f", lien {a['lien'] or '-'}")


@borrower.command("pledge")
@wallet_option
@click.option("--asset", required=True,
              help="The asset's id (<owner address>/<name>) or the name of your own.")
@click.option("--to", "target", required=True, help="Your open application or active loan.")
@click.option("--register-value", type=AMOUNT, default=None,
              help="Register the asset first with this value (in LND).")
@click.option("--description", default="", help="Hashed into the asset record.")
@send_options
def b_pledge(wallet_name, asset, target, register_value, description, **send):
    """Pledge collateral (registering the asset first if --register-value is given)."""
    kp = unlock(wallet_name)
    if register_value is not None:
        if send["offline"]:
            raise click.UsageError("offline, register and pledge as two transactions "
                                   "(two nonces)")
        # Two transactions, one answer: with --json, one JSON value naming both.
        if "/" in asset:
            raise click.UsageError("--register-value takes the asset's name, not its id")
        registered = sign_and_send(
            kp, "register_collateral", asset=asset, value=register_value,
            description_hash=hashlib.sha256(description.encode()).digest(),
            quiet=send["as_json"], **send)
        pledged = sign_and_send(kp, "pledge", asset=asset, to=target, quiet=send["as_json"],
                                **send)
        emit({"register_collateral": registered, "pledge": pledged,
              "asset": f"{kp.address}/{asset}"}, send["as_json"],
             f"registered {kp.address}/{asset} and pledged it to {target}")
        return
    sign_and_send(kp, "pledge", asset=asset, to=target, **send)


# --- lender ---------------------------------------------------------------------------

@click.group()
def lender():
    """Register, publish and withdraw offers, fund applications, read documents, watch
    the portfolio."""


@lender.command("register")
@wallet_option
@click.option("--profile", default="")
@send_options
def l_register(wallet_name, profile, **send):
    """Register as a lender."""
    sign_and_send(unlock(wallet_name), "register_lender",
                  profile_hash=hashlib.sha256(profile.encode()).digest(), **send)


def _tier(text: str) -> list[int]:
    try:
        score, rate, limit = text.split(":")
        from .common import parse_amount
        return [int(score), int(rate), parse_amount(limit)]
    except (ValueError, click.BadParameter):
        raise click.BadParameter(f"{text!r}: a tier is MIN_SCORE:RATE_BPS:MAX_AMOUNT, "
                                 f"e.g. 600:1500:5000.00")


@lender.command("offer")
@wallet_option
@click.option("--amount", type=AMOUNT, required=True, help="Funds to commit (escrowed).")
@click.option("--tier", "tiers", multiple=True, required=True, metavar="SCORE:BPS:MAX",
              help="Price by score, e.g. 300:2400:500.00 and 600:1500:5000.00 (repeat).")
@click.option("--product", "products", multiple=True, type=click.Choice(txm.PRODUCTS))
@click.option("--method", "methods", multiple=True, type=click.Choice(list(METHOD_CODES)))
@click.option("--period", "periods", multiple=True, type=click.Choice(list(PERIODS_PER_YEAR)))
@click.option("--min-term", type=int, default=1, show_default=True)
@click.option("--max-term", type=int, default=24, show_default=True)
@click.option("--max-grace", type=int, default=0, show_default=True)
@click.option("--late-fee-bps", type=int, default=500, show_default=True)
@click.option("--tolerance-days", type=int, default=3, show_default=True)
@click.option("--default-days", type=int, default=90, show_default=True,
              help="Days after a missed due date before default (borrowers' `apply` asks "
                   "for at least 90 unless told otherwise).")
@click.option("--collateral-bps", type=int, default=0, show_default=True,
              help="Collateral value required, in basis points of the amount (appraised "
                   "values, or those you accept when funding).")
@click.option("--origination-fee-bps", type=click.IntRange(0, txm.MAX_ORIGINATION_FEE_BPS),
              default=0, show_default=True,
              help="Charged at funding, paid to you out of the principal disbursed.")
@click.option("--penalty-bps", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Penalty interest a year on overdue principal, in basis points.")
@send_options
def l_offer(wallet_name, amount, tiers, products, methods, periods, min_term, max_term,
            max_grace, late_fee_bps, tolerance_days, default_days, collateral_bps,
            origination_fee_bps, penalty_bps, **send):
    """Publish an offer; its id is the transaction hash."""
    sign_and_send(unlock(wallet_name), "publish_offer", amount=amount,
                  tiers=sorted(_tier(t) for t in tiers),
                  products=list(products or txm.PRODUCTS),
                  methods=list(methods or METHOD_CODES), periods=list(periods or PERIODS_PER_YEAR),
                  min_term=min_term, max_term=max_term, max_grace=max_grace,
                  late_fee_bps=late_fee_bps, tolerance_days=tolerance_days,
                  default_days=default_days, collateral_bps=collateral_bps,
                  origination_fee_bps=origination_fee_bps, penalty_bps=penalty_bps, **send)


@lender.command("withdraw")
@wallet_option
@click.option("--offer", required=True)
@send_options
def l_withdraw(wallet_name, offer, **send):
    """Withdraw an offer; what is not lent returns to you."""
    sign_and_send(unlock(wallet_name), "withdraw_offer", offer=offer, **send)


@lender.command("offers")
@click.option("--wallet", "wallet_name", default=None)
@click.option("--offer", "offer_id", default=None, help="Show this one offer in full.")
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_offers(wallet_name, offer_id, node_url, as_json):
    """Your offers (all offers without --wallet), with the APR (fees included) of a
    representative loan per tier."""
    if offer_id:
        o = get(node_url, f"/v1/offers/{offer_id}")
        if as_json:
            emit(o, True)
            return
        state = "active" if o["active"] else "withdrawn"
        click.echo(f"offer {o['offer']} by {o['lender']}: {state}, "
                   f"{money(o['available'])} of {money(o['amount'])} available")
        click.echo(f"  {'/'.join(o['products'])}; {'/'.join(o['methods'])}; "
                   f"{'/'.join(o['periods'])}; term {o['min_term']}-{o['max_term']}, grace "
                   f"up to {o['max_grace']}")
        click.echo(f"  late fee {pct(o['late_fee_bps'])} after {o['tolerance_days']} days; "
                   f"default after {o['default_days']} days; penalty "
                   f"{pct(o.get('penalty_bps', 0))} a year; origination fee "
                   f"{pct(o.get('origination_fee_bps', 0))}; collateral "
                   f"{pct(o['collateral_bps'])} of the amount")
        _table("tiers", ["min score", "rate", "max principal", "APR*"],
               [[a["min_score"], pct(a["rate_bps"]), money(t[2]),
                 pct(a["apr_bps"]) if a["apr_bps"] is not None else "-"]
                for a, t in zip(o["apr"], o["tiers"])])
        _apr_note([o])
        return
    q = f"?lender={_address_of_wallet(wallet_name)}" if wallet_name else ""
    offers = get(node_url, "/v1/offers" + q)["offers"]
    if as_json:
        emit({"offers": offers}, True)
        return
    _table("offers", ["offer", "active", "available", "terms", "tiers (score: rate)",
                      "APR* (score: APR)", "fee"],
           [[o["offer"][:14], "yes" if o["active"] else "no", money(o["available"]),
             f"{o['min_term']}-{o['max_term']}",
             ", ".join(f"{t[0]}: {pct(t[1])}" for t in o["tiers"]), _aprs(o),
             pct(o.get("origination_fee_bps", 0))] for o in offers])
    _apr_note(offers)


@lender.command("applications")
@click.option("--offer", default=None, help="Show whether each would fit this offer.")
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_applications(offer, node_url, as_json):
    """Open applications with each applicant's credit score."""
    apps = get_all(node_url, "/v1/applications?status=open", "applications")
    o = get(node_url, f"/v1/offers/{offer}") if offer else None
    for a in apps:
        a["score"] = get(node_url, f"/v1/scores/{a['borrower']}")["score"]
        a["fits"] = _why_unfit(o, a, a["score"]) if o else None
    if as_json:
        emit({"applications": apps}, True)
        return
    _table("open applications", ["application", "borrower", "score", "amount", "term",
                                 "product", "collateral", "fits"],
           [[a["application"][:14], a["borrower"][:14], a["score"], money(a["amount"]),
             f"{a['term']} {a['period']}", a["product"], len(a["collateral"]),
             _fits(a["fits"])]
            for a in apps])


def _accepted(text: str) -> list:
    aid, sep, value = text.rpartition("=")
    if not sep or "/" not in aid:
        raise click.BadParameter(f"{text!r}: give ASSET_ID=VALUE, e.g. "
                                 f"ln1234…/sewing-machine=600.00")
    from .common import parse_amount
    return [aid, parse_amount(value)]


@lender.command("fund")
@wallet_option
@click.option("--application", required=True)
@click.option("--offer", required=True)
@click.option("--accept", "accept", multiple=True, metavar="ASSET_ID=VALUE",
              help="Count this pledged asset at this value (LND) toward the offer's cover, "
                   "for this loan; without it, an asset counts at its appraised value or "
                   "not at all (repeat, up to 16).")
@click.option("--share", type=AMOUNT, default=None, metavar="AMOUNT",
              help="Fund only a slice of AMOUNT LND, with other lenders (shared funding): "
                   "the first slice comes from the offer's lender; the loan starts when "
                   "the slices reach the application's amount, and the pool refunds every "
                   "slice if not full within 14 chain days. See `lender pool`.")
@send_options
def l_fund(wallet_name, application, offer, accept, share, **send):
    """Fund an application from one of your offers: the loan starts at once, if the
    terms are within the application's limits. With --share, fund a slice of it."""
    if share is not None:
        if accept:
            raise click.UsageError("--accept is for a whole funding: a shared loan's cover "
                                   "counts appraised values only")
        sign_and_send(unlock(wallet_name), "fund_share", application=application,
                      offer=offer, amount=share, **send)
        return
    pairs = [_accepted(a) for a in accept]
    sign_and_send(unlock(wallet_name), "fund", application=application, offer=offer,
                  accept=pairs, **send)


@lender.command("pool")
@click.argument("application")
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_pool(application, node_url, as_json):
    """An application's shared funding: its slices and their lenders, filled of target,
    status, expiry, the loan, and what each lender has received."""
    p = get(node_url, f"/v1/pools/{application}")
    if as_json:
        emit(p, True)
        return
    loan = f", loan {p['loan']}" if p["loan"] else ""
    click.echo(f"pool {p['pool']} for application {p['application']}: {p['status']}, "
               f"filled {money(p['filled'])} of {money(p['target'])}, expires "
               f"{_when(p['expires'])}{loan}; distributed {money(p['distributed'])}, "
               f"waiting {money(p['undistributed'])}")
    _table("slices", ["#", "lender", "amount", "share", "received"],
           [[i + 1, s["lender"], money(s["amount"]), pct(s["share_bps"]),
             money(s["received"])] for i, s in enumerate(p["slices"])])


# --- appraiser -------------------------------------------------------------------------

@click.group()
def appraiser():
    """Attest collateral values (keys the genesis lists as appraisers only)."""


@appraiser.command("appraise")
@wallet_option
@click.argument("asset_id")
@click.argument("value", type=AMOUNT)
@send_options
def a_appraise(wallet_name, asset_id, value, **send):
    """Attest that ASSET_ID (<owner address>/<name>) is worth VALUE (LND). The ledger
    refuses it unless the wallet's key is one of the chain's appraisers
    (GET /v1/lending)."""
    if "/" not in asset_id:
        raise click.BadParameter("an asset id is <owner address>/<name>",
                                 param_hint="ASSET_ID")
    kp = unlock(wallet_name)
    if not send["offline"]:
        appraisers = get(send["node_url"], "/v1/lending")["appraisers"]
        if kp.address not in appraisers:
            raise click.ClickException(f"{kp.address} is not an appraiser on this chain: "
                                       f"only keys the genesis lists in lending.appraisers "
                                       f"may attest a value ({len(appraisers)} listed)")
    sign_and_send(kp, "appraise", asset=asset_id, value=value,
                  describe=f"{asset_id} appraised at {money(value)}", **send)


@lender.command("write-off")
@wallet_option
@click.argument("loan_id", metavar="LOAN")
@click.option("--reason", required=True, help="Why (1 to 140 characters), kept on the ledger.")
@send_options
def l_write_off(wallet_name, loan_id, reason, **send):
    """Write off a defaulted loan; later payments are still recovered."""
    if not 0 < len(reason) <= 140:
        raise click.BadParameter("must be 1 to 140 characters", param_hint="--reason")
    sign_and_send(unlock(wallet_name), "write_off", loan=loan_id, reason=reason,
                  describe=f"wrote off loan {loan_id}", **send)


_restructure_group(lender)


@lender.command("documents")
@wallet_option
@click.option("--borrower", "borrower_addr", default=None,
              help="Read the documents this borrower registered with.")
@click.option("--application", default=None, help="... or attached to this application.")
@click.option("--file", "from_file", type=click.Path(dir_okay=False, exists=True,
                                                      path_type=Path), default=None,
              help="Sealed documents kept in a file instead of on the node.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@node_option
def l_documents(wallet_name, borrower_addr, application, from_file, out, node_url):
    """Decrypt a borrower's sealed documents (only an authorised lender can) and check
    them against the hash on the ledger."""
    from .documents import DocumentError, open_sealed
    if bool(borrower_addr) == bool(application):
        raise click.UsageError("give --borrower or --application")
    rec = get(node_url, f"/v1/applications/{application}" if application else
              f"/v1/borrowers/{borrower_addr}")
    want = rec["docs_hash"]
    if from_file is not None:
        envelope = from_file.read_bytes()
    else:
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"{client(node_url).url}/v1/blobs/{want}",
                                        timeout=10) as r:
                envelope = r.read()
        except urllib.error.HTTPError as e:
            raise click.ClickException(f"the node has no documents {want}: {e.code}")
    if hashlib.sha256(envelope).hexdigest() != want:
        raise click.ClickException("these sealed documents are not the ones on the ledger")
    try:
        plain = open_sealed(envelope, unlock(wallet_name))
    except DocumentError as e:
        raise click.ClickException(str(e))
    out.write_bytes(plain)
    click.echo(f"{len(plain)} bytes, matching the ledger's hash {want[:16]}…, -> {out}")


@lender.command("portfolio")
@click.option("--wallet", "wallet_name", default=None)
@click.option("--address", default=None)
@click.option("--network", is_flag=True, help="The whole network's book, every lender's.")
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_portfolio(wallet_name, address, network, node_url, as_json):
    """Your loan book (or the network's): outstanding, loans by days past due, PAR1,
    PAR30, PAR90, and the net yield after losses."""
    addr = address or (wallet_name and _address_of_wallet(wallet_name))
    if network == bool(addr):
        raise click.UsageError("give --wallet or --address, or --network")
    book = get(node_url, "/v1/portfolio" + (f"?lender={addr}" if addr else ""))
    if as_json:
        items = get_all(node_url, f"/v1/loans?lender={addr}", "loans") if addr else None
        emit({**book, "address": addr, **({"items": items} if addr else {})}, True)
        return
    addr = addr or "the network"
    st = book["by_status"]
    click.echo(f"portfolio of {addr}: {book['loans']} loans, lent {money(book['lent'])}, "
               f"received {money(book['received'])}, outstanding {money(book['outstanding'])}")
    click.echo("  " + ", ".join(f"{name} {n}" for name, n in st.items()))
    click.echo("  by days past due: " + ", ".join(
        f"{b} {v['loans']} ({money(v['outstanding'])})" for b, v in book["buckets"].items()))
    click.echo(f"  PAR1 {_pct_or_dash(book['par1_bps'])}, PAR30 "
               f"{_pct_or_dash(book['par30_bps'])}, PAR90 "
               f"{_pct_or_dash(book['par90_bps'])}; net yield "
               f"{_pct_or_dash(book['net_yield_bps'])} of what was lent, "
               f"after {money(book['lost'])} of principal in default or written off")
    for s in book.get("shares", []):
        click.echo(f"  shared loan {s['loan']} ({s['status']}): your slice "
                   f"{money(s['amount'])} of {money(s['of'])} ({pct(s['share_bps'])}), "
                   f"outstanding {money(s['outstanding'])}, received {money(s['received'])}")


def _pct_or_dash(bps) -> str:
    return "-" if bps is None else pct(bps)


# --- registrar ------------------------------------------------------------------------

def _identity(text: str) -> bytes:
    """An identity given as 64 hex digits is that hash; any other text is hashed (the
    registrar's own reference for the person, which never goes on the ledger)."""
    t = text.strip()
    if len(t) == 64 and not t.lower().strip("0123456789abcdef"):
        return bytes.fromhex(t)
    return hashlib.sha256(t.encode()).digest()


@click.group()
def registrar():
    """Attest that a borrower's address belongs to a person (registrars named in the
    genesis only): every address attested as one person shares one credit history."""


@registrar.command("attest")
@click.argument("address")
@click.option("--identity", required=True,
              help="The person: 64 hex digits, or any text (only its sha256 is sent).")
@wallet_option
@send_options
def r_attest(address, identity, wallet_name, **send):
    """Bind ADDRESS to an identity. Refused unless the wallet is a registrar, and for an
    address already attested."""
    sign_and_send(unlock(wallet_name), "attest_identity", borrower=address,
                  identity=_identity(identity), describe=f"attested {address[:12]}…", **send)
