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


@borrower.command("apply")
@wallet_option
@click.option("--amount", type=AMOUNT, required=True, help="In LND, e.g. 1000.00")
@click.option("--term", type=click.IntRange(1, 520), required=True, help="Instalments.")
@click.option("--period", type=click.Choice(list(PERIODS_PER_YEAR)), default="monthly",
              show_default=True)
@click.option("--method", type=click.Choice(list(METHOD_CODES)), default="annuity",
              show_default=True)
@click.option("--product", type=click.Choice(txm.PRODUCTS), default="consumer",
              show_default=True)
@click.option("--grace", type=click.IntRange(0, 12), default=0, show_default=True)
@click.option("--purpose", default="loan", show_default=True)
@docs_options
@send_options
def b_apply(wallet_name, amount, term, period, method, product, grace, purpose, docs,
            authorise, docs_out, **send):
    """Apply for a loan; its id is the transaction hash."""
    kp = unlock(wallet_name)
    h = seal_docs(docs, authorise, send["node_url"], docs_out, kp)
    sign_and_send(kp, "apply", amount=amount, term=term, period=period,
                  method=method, product=product, grace=grace, purpose=purpose, docs_hash=h,
                  **send)


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
    return ""


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
           ["offer", "lender", "available", "terms", "tiers (score: rate, max)", "fits"],
           [[o["offer"][:12], o["lender"][:12], money(o["available"]),
             f"{o['min_term']}-{o['max_term']} {'/'.join(o['periods'])}",
             ", ".join(f"{t[0]}: {pct(t[1])}, {money(t[2])}" for t in o["tiers"]),
             _fits(o["fits"])]
            for o in offers])


@borrower.command("accept")
@wallet_option
@click.option("--application", required=True)
@click.option("--offer", required=True)
@send_options
def b_accept(wallet_name, application, offer, **send):
    """Take an offer for your application: the loan starts at once."""
    sign_and_send(unlock(wallet_name), "accept_offer", application=application, offer=offer,
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
    if as_json:
        emit({"loan": ln, "schedule": rows}, True)
        return
    click.echo(f"loan {loan_id}: {ln['status']}, {money(t['P'])} at {pct(t['a'])} a "
               f"year; instalment {ln['instalment']} due {_when(ln['due_time'])}: "
               f"{money(ln['amount_due'])}; payoff {money(ln['payoff'])}")
    _table("schedule", ["#", "due", "principal", "interest", "total"],
           [[r["n"], _when(r["due"]), money(r["principal"]), money(r["interest"]),
             money(r["total"])] for r in rows])


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
        amount = ln["payoff"] if payoff else ln["amount_due"]
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
    click.echo(f"score {s['score']} (range {s['range'][0]}-{s['range'][1]}, base {s['base']})")
    for k, v in s["components"].items():
        click.echo(f"  {k:<16} {v:+d}")
    if s["reasons"]:
        click.echo("  held back by: " + ", ".join(s["reasons"]))


@borrower.command("pledge")
@wallet_option
@click.option("--asset", required=True, help="The asset's name (unique on the ledger).")
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
        registered = sign_and_send(
            kp, "register_collateral", asset=asset, value=register_value,
            description_hash=hashlib.sha256(description.encode()).digest(),
            quiet=send["as_json"], **send)
        pledged = sign_and_send(kp, "pledge", asset=asset, to=target, quiet=send["as_json"],
                                **send)
        emit({"register_collateral": registered, "pledge": pledged}, send["as_json"])
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
@click.option("--default-days", type=int, default=60, show_default=True)
@click.option("--collateral-bps", type=int, default=0, show_default=True,
              help="Collateral value required, in basis points of the amount.")
@click.option("--penalty-bps", type=int, default=0, show_default=True,
              help="Penalty interest a year on overdue principal, in basis points.")
@send_options
def l_offer(wallet_name, amount, tiers, products, methods, periods, min_term, max_term,
            max_grace, late_fee_bps, tolerance_days, default_days, collateral_bps, penalty_bps,
            **send):
    """Publish an offer; its id is the transaction hash."""
    sign_and_send(unlock(wallet_name), "publish_offer", amount=amount,
                  tiers=sorted(_tier(t) for t in tiers),
                  products=list(products or txm.PRODUCTS),
                  methods=list(methods or METHOD_CODES), periods=list(periods or PERIODS_PER_YEAR),
                  min_term=min_term, max_term=max_term, max_grace=max_grace,
                  late_fee_bps=late_fee_bps, tolerance_days=tolerance_days,
                  default_days=default_days, collateral_bps=collateral_bps,
                  penalty_bps=penalty_bps, **send)


@lender.command("withdraw")
@wallet_option
@click.option("--offer", required=True)
@send_options
def l_withdraw(wallet_name, offer, **send):
    """Withdraw an offer; what is not lent returns to you."""
    sign_and_send(unlock(wallet_name), "withdraw_offer", offer=offer, **send)


@lender.command("offers")
@click.option("--wallet", "wallet_name", default=None)
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_offers(wallet_name, node_url, as_json):
    """Your offers (all offers without --wallet)."""
    q = f"?lender={_address_of_wallet(wallet_name)}" if wallet_name else ""
    offers = get(node_url, "/v1/offers" + q)["offers"]
    if as_json:
        emit({"offers": offers}, True)
        return
    _table("offers", ["offer", "active", "available", "terms", "tiers"],
           [[o["offer"][:14], "yes" if o["active"] else "no", money(o["available"]),
             f"{o['min_term']}-{o['max_term']}", len(o["tiers"])] for o in offers])


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


@lender.command("fund")
@wallet_option
@click.option("--application", required=True)
@click.option("--offer", required=True)
@send_options
def l_fund(wallet_name, application, offer, **send):
    """Fund an application from one of your offers: the loan starts at once."""
    sign_and_send(unlock(wallet_name), "fund", application=application, offer=offer, **send)


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
@node_option
@click.option("--json", "as_json", is_flag=True)
def l_portfolio(wallet_name, address, node_url, as_json):
    """Your loans: outstanding, repaid, late, defaulted, and what they have earned."""
    addr = address or (wallet_name and _address_of_wallet(wallet_name))
    if not addr:
        raise click.UsageError("give --wallet or --address")
    loans = get_all(node_url, f"/v1/loans?lender={addr}", "loans")
    lent = sum(x["terms"]["P"] for x in loans)
    received = sum(x["terms"]["paid"] or 0 for x in loans)
    summary = {
        "loans": len(loans), "lent": lent, "received": received,
        "outstanding": sum(x["principal_outstanding"] or 0 for x in loans
                           if x["status"] == "active"),
        "active": sum(x["status"] == "active" for x in loans),
        "repaid": sum(x["status"] == "repaid" for x in loans),
        "late": sum(x["status"] == "active" and x["days_past_due"] > 0 for x in loans),
        "defaulted": sum(x["status"] == "defaulted" for x in loans),
    }
    closed = [x for x in loans if x["status"] == "repaid"]
    principal_closed = sum(x["terms"]["P"] for x in closed)
    summary["yield_bps_on_repaid"] = (
        (sum(x["terms"]["paid"] or 0 for x in closed) - principal_closed) * 10_000
        // principal_closed if principal_closed else None)
    if as_json:
        emit({**summary, "address": addr, "items": loans}, True)
        return
    click.echo(f"portfolio of {addr}: {summary['loans']} loans, lent {money(lent)}, "
               f"received {money(received)}, outstanding {money(summary['outstanding'])}")
    click.echo(f"  active {summary['active']} (late {summary['late']}), repaid "
               f"{summary['repaid']}, defaulted {summary['defaulted']}"
               + (f"; yield on repaid loans {pct(summary['yield_bps_on_repaid'])}"
                  if summary["yield_bps_on_repaid"] is not None else ""))
