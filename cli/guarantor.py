"""`lendnet guarantor ...`: back someone else's application or loan with your own money.

A guarantee escrows an amount in its own agreement (ledger/guarantees.py). If the loan
defaults, the guarantee pays what the loan's claim still needs, before the borrower's
collateral is sold, and the rest comes back to the guarantor; if the loan is repaid (or
the application withdrawn) it all comes back.
"""
from __future__ import annotations

import click

from lendnet.ledger import tx as txm
from lendnet.ledger.guarantees import MAX_GUARANTEES, MIN_GUARANTEE_BPS, STATUSES, address_of

from .common import (AMOUNT, address_param, emit, get, get_all, money, node_option, send_options,
                     sign_and_send, unlock, wallet_option)
from .lending import _table, _when


def _target(ctx, param, value):
    if value is not None and txm._loan_target(value):
        raise click.BadParameter("must be an application id (64 hex digits) or a loan "
                                 "address (ln + 40 hex digits)")
    return value


@click.group()
def guarantor():
    """Guarantees: pledge money behind an application or a loan, release, list, show."""


@guarantor.command("pledge", help=(
    f"Escrow AMOUNT behind an open application or an active loan (--to). If the loan "
    f"defaults, the guarantee pays what its claim still needs, before the collateral is "
    f"sold, and the rest comes back to you; repaid, it all comes back. You cannot "
    f"guarantee your own loan. At most {MAX_GUARANTEES} guarantees per application or "
    f"loan, each at least {MIN_GUARANTEE_BPS // 100} % of its principal. You may take it "
    f"back only while the application is open."))
@wallet_option
@click.option("--to", "to", required=True, callback=_target, metavar="ID",
              help="The application id or loan address to back.")
@click.option("--amount", required=True, type=AMOUNT, help="How much to escrow, in LND.")
@send_options
def g_pledge(wallet_name, to, amount, **send):
    kp = unlock(wallet_name)
    if send["offline"]:          # the file's hash names the guarantee: address_of(hash)
        sign_and_send(kp, "guarantee", to=to, amount=amount, **send)
        return
    out = sign_and_send(kp, "guarantee", to=to, amount=amount, quiet=True, **send)
    out["guarantee"] = address_of(bytes.fromhex(out["hash"]))
    emit(out, send["as_json"], f"guarantee {out['status']}: {money(amount)} behind {to}, "
                               f"guarantee {out['guarantee']} (tx {out['hash']}"
         + (f", fee {money(out['fee'])})" if out.get("fee") is not None else ")"))


@guarantor.command("release")
@wallet_option
@click.argument("guarantee", callback=address_param)
@send_options
def g_release(wallet_name, guarantee, **send):
    """Take your GUARANTEE back while the application it backs is still open. Once the
    loan is funded it is held until the loan closes, then returned automatically."""
    sign_and_send(unlock(wallet_name), "release_guarantee", guarantee=guarantee, **send)


@guarantor.command("list")
@click.option("--to", "to", default=None, callback=_target, metavar="ID",
              help="Only those pledged to this application id or loan address.")
@click.option("--loan", default=None, callback=address_param,
              help="Only those backing this loan (pledged to it or to its application).")
@click.option("--guarantor", "who", default=None, callback=address_param, metavar="ADDR",
              help="Only this guarantor's.")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def g_list(to, loan, who, status, node_url, as_json):
    """Guarantees, as the node has them now."""
    query = "&".join(f"{k}={v}" for k, v in (("to", to), ("loan", loan), ("guarantor", who),
                                             ("status", status)) if v)
    rows = get_all(node_url, "/v1/guarantees" + (f"?{query}" if query else ""), "guarantees")
    if as_json:
        emit({"guarantees": rows}, True)
        return
    _table("guarantees", ["guarantee", "backs", "amount", "status", "drawn", "refunded"],
           [[r["guarantee"][:12], (r["loan"] or r["to"])[:12], money(r["amount"]),
             r["status"], money(r["drawn"]), money(r["refunded"])] for r in rows])


@guarantor.command("show")
@click.argument("guarantee", callback=address_param)
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def g_show(guarantee, node_url, as_json):
    """One guarantee: who pledged it, what it backs, what it holds, drawn or released."""
    r = get(node_url, f"/v1/guarantees/{guarantee}")
    done = {"held": f"holds {money(r['held'])}",
            "drawn": f"drew {money(r['drawn'])} into the loan at {_when(r['closed'])}, "
                     f"refunded {money(r['refunded'])}",
            "released": f"released {money(r['refunded'])} at {_when(r['closed'])}"}
    emit(r, as_json, f"guarantee {r['guarantee']} by {r['guarantor']} of {money(r['amount'])}"
                     f" behind {r['loan'] or r['to']} (borrower {r['borrower']}): "
                     f"{r['status']}, {done.get(r['status'], '')}")
