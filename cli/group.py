"""`lendnet group ...`: joint-liability groups of 3 to 10 borrowers (ledger/groups.py).

A leader creates the group naming its members; each listed member joins (within 30 chain
days, or the group lapses); once all have joined the group is active. Each member then
applies for its own loan through the group, with its own limits. A fellow member may
cover a member's loan; a group in arrears takes no new loans; the group's record feeds
every member's score.
"""
from __future__ import annotations

import click

from lendnet.ledger.groups import FORMING_DAYS, MAX_MEMBERS, MAX_SAVINGS_BPS, MIN_MEMBERS

from .common import (AMOUNT, address_param, check_address, emit, get, money, node_option, pct,
                     send_options, sign_and_send, unlock, wallet_option)
from .lending import _table, apply_fields, apply_options


@click.group()
def group():
    """Joint-liability groups: create, join, apply, cover, show."""


@group.command("create", help=f"Create a group of {MIN_MEMBERS} to {MAX_MEMBERS} "
                              f"borrowers and lead it: your wallet is a member (added if "
                              f"you do not list it) and joins at once; every other member "
                              f"must join within {FORMING_DAYS} chain days. Its address is "
                              f"printed with the transaction's result (`lendnet group show`"
                              f" takes it).")
@wallet_option
@click.option("--name", "title", required=True, help="The group's name (1 to 64 characters).")
@click.option("--member", "members", multiple=True, required=True, metavar="ADDR",
              help="A member's address (repeat for each).")
@click.option("--savings-bps", type=click.IntRange(0, MAX_SAVINGS_BPS), default=0,
              show_default=True,
              help="Compulsory savings each member's loan needs pledged, in basis points "
                   "of the loan (1000 = 10 %).")
@send_options
def g_create(wallet_name, title, members, savings_bps, **send):
    kp = unlock(wallet_name)
    listed = [check_address(m) for m in members]
    if kp.address not in listed:
        listed.insert(0, kp.address)
    if len(set(listed)) != len(listed):
        raise click.UsageError("a member is listed twice")
    if not MIN_MEMBERS <= len(listed) <= MAX_MEMBERS:
        raise click.UsageError(f"a group has {MIN_MEMBERS} to {MAX_MEMBERS} members, you "
                               f"listed {len(listed)} (with yourself)")
    if not 0 < len(title) <= 64:
        raise click.UsageError("--name must be 1 to 64 characters")
    from lendnet.ledger import keys
    out = sign_and_send(kp, "group_create", quiet=not send["offline"], name=title,
                        members=listed, savings_bps=savings_bps, **send)
    if send["offline"]:
        return                               # the signed file is reported already
    # The group's address is derived from the transaction's hash (ledger/groups.py).
    out["group"] = keys.derive_address(b"group", bytes.fromhex(out["hash"]))
    emit(out, send["as_json"], f"group_create {out['status']}: {out['hash']}; group "
                               f"{out['group']} ({len(listed)} members)")


@group.command("join")
@wallet_option
@click.argument("group_address", metavar="GROUP", callback=address_param)
@send_options
def g_join(wallet_name, group_address, **send):
    """Join GROUP, which lists your address (you must be a registered borrower, and in
    no other group: a borrower belongs to one group, and cannot leave it)."""
    sign_and_send(unlock(wallet_name), "group_join", group=group_address, **send)


@group.command("apply")
@wallet_option
@click.argument("group_address", metavar="GROUP", callback=address_param)
@apply_options
@send_options
def g_apply(wallet_name, group_address, **opts):
    """Apply for your own loan through GROUP (active, not in arrears); its id is the
    transaction hash. The options are `borrower apply`'s: the limits are yours, signed
    by you. One open application or loan through the group at a time."""
    kp = unlock(wallet_name)
    fields, send = apply_fields(kp, opts)
    sign_and_send(kp, "group_apply", group=group_address, **fields, **send)


@group.command("cover")
@wallet_option
@click.argument("loan", callback=address_param)
@click.argument("amount", type=AMOUNT)
@send_options
def g_cover(wallet_name, loan, amount, **send):
    """Pay AMOUNT toward a fellow member's LOAN (one made through your group): it goes
    through the group agreement, which records that you covered it, and is paid in as
    the member's repayment (after a default, as a recovery; any surplus comes back to
    you). The member then owes you within the group; the ledger does not collect it."""
    sign_and_send(unlock(wallet_name), "group_cover", loan=loan, amount=amount, **send)


@group.command("show")
@click.argument("group_address", metavar="GROUP", callback=address_param)
@node_option
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
def g_show(group_address, node_url, as_json):
    """A group's record: status, members and their current loans (days past due),
    covers, lates and defaults, and whether it is in arrears."""
    g = get(node_url, f"/v1/groups/{group_address}")
    if as_json:
        emit(g, True)
        return
    click.echo(f"group {g['group']} \"{g['name']}\": {g['status']}, leader {g['leader']}, "
               f"compulsory savings {pct(g['savings_bps'])}")
    click.echo(f"loans {g['loans']}, covers {g['covers']} ({money(g['covered_amount'])}), "
               f"late instalments {g['lates']}, defaults {g['defaults']}")
    rows = []
    for m in g["members"]:
        ln = m["loan"] or {}
        rows.append([m["address"], "yes" if m["joined"] else "no",
                     (ln.get("loan") or ln.get("application") or "-")[:16],
                     ln.get("status", "-"), str(ln.get("days_past_due", "-")),
                     str(m["lates"]), str(m["defaults"]),
                     f"{m['covers_given']} / {money(m['covered_amount_given'])}",
                     money(sum(m["owed_within_group"].values()))])
    _table("members", ["member", "joined", "current loan", "status", "days past due",
                       "lates", "defaults", "covers given", "owes the group"], rows)
    if g["in_arrears"]:
        click.echo("IN ARREARS (no new loans): " + "; ".join(g["arrears"]))
