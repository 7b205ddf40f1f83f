"""`lendnet watch`: a wallet's loans as they happen, from a node's event stream."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import aiohttp
import click

from .common import client, node_option

ALERTS = {"instalment_due": "instalment coming due", "instalment_late": "instalment LATE",
          "defaulted": "loan DEFAULTED", "instalment_paid": "instalment paid",
          "repaid": "loan repaid", "disbursed": "loan disbursed", "payment": "payment",
          "recovery": "recovery after default", "settled": "loan settled after default",
          "written_off": "loan WRITTEN OFF", "write_off_reason": "write-off reason",
          "restructured": "loan restructured",
          # a group's notices about a member's loan (ledger/groups.py), to every member
          "member_due": "group member's instalment coming due",
          "member_late": "group member's instalment LATE",
          "member_defaulted": "group member DEFAULTED",
          "member_covered": "group member's loan covered", "group_loan": "group loan made"}


@click.command("watch")
@click.option("--wallet", "wallet_name", default=None, help="Whose loans [or --address].")
@click.option("--address", default=None)
@click.option("--count", type=click.IntRange(1, 1_000_000), default=None,
              help="Stop after this many alerts.")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 86_400 * 365), default=None,
              help="Stop after this many seconds.")
@node_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def watch(wallet_name, address, count, timeout_s, node_url, as_json):
    """Follow the loans where this wallet is borrower or lender and print instalments
    coming due, late, and defaulted (and payments) as the chain commits them; and, for a
    member of a borrowers' group, its fellow members' late instalments, defaults and
    covers."""
    if address is None:
        if wallet_name is None:
            raise click.UsageError("give --wallet or --address")
        from .lending import _address_of_wallet
        address = _address_of_wallet(wallet_name)
    api = client(node_url)
    try:
        asyncio.run(_follow(api, address, count, timeout_s, as_json))
    except (aiohttp.ClientError, OSError) as e:
        raise click.ClickException(f"lost the node's event stream: {e}")


async def _follow(api, address: str, count, timeout_s, as_json) -> None:
    mine: dict[str, str] = {}                     # loan -> our role in it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s else None
    seen = 0

    groups: dict[str, str] = {}                   # group -> "group member" or ""

    async def role(ev: dict) -> str | None:
        group = ev.get("group")
        if group is not None:
            if group not in groups:
                g = await loop.run_in_executor(None, api.get, f"/v1/groups/{group}")
                groups[group] = ("group member" if any(m["address"] == address
                                                       for m in g["members"]) else "")
            return groups[group] or None
        loan = ev["loan"]
        if loan not in mine:
            ln = await loop.run_in_executor(None, api.get, f"/v1/loans/{loan}")
            mine[loan] = ("borrower" if ln["borrower"] == address else
                          "lender" if ln["lender"] == address else "")
        return mine[loan] or None

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(api.url + "/v1/events?types=loan", heartbeat=20) as ws:
            # (on stderr, so --json's stdout stays one object a line): from here on no
            # event is missed, so a script may act once it reads this
            click.echo(f"following {address}'s loans at {api.url}", err=True)
            while count is None or seen < count:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return
                try:
                    msg = await ws.receive(timeout=left)
                except TimeoutError:
                    return
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise click.ClickException("the node closed the event stream")
                ev = json.loads(msg.data)
                who = await role(ev)
                if who is None or ev["event"] not in ALERTS:
                    continue
                seen += 1
                if as_json:
                    click.echo(json.dumps({**ev, "role": who}))
                else:
                    when = dt.datetime.fromtimestamp(ev["time"], dt.UTC)
                    click.echo(f"[chain {when:%Y-%m-%d}] height {ev['height']}: "
                               f"{ALERTS[ev['event']]} on loan {ev['loan'][:14]}… "
                               f"(you are the {who}) {ev['values']}")
