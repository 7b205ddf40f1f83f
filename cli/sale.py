"""`lendnet sale ...`: the collateral of defaulted loans, sold for the borrower's debt.

A defaulted loan's pledged assets go up for sale for a week of chain time
(ledger/settlement.py). Anyone may bid; once a sale closes anyone may settle it: the best
bid pays the debt and the rest goes to the borrower. An asset nobody bought may be taken by
the lender at the value the loan counted for it, the surplus again the borrower's.
"""
from __future__ import annotations

import click

from lendnet.ledger.settlement import MIN_RAISE_BPS, SALE_DAYS, SALE_STATUSES

from .common import (AMOUNT, emit, get, get_all, money, node_option, send_options,
                     sign_and_send, unlock, wallet_option)
from .lending import _table, _when


@click.group()
def sale():
    """Collateral sales of defaulted loans: list, show, bid, settle, take."""


@sale.command("list")
@click.option("--loan", default=None, help="Only this loan's sales.")
@click.option("--status", type=click.Choice(SALE_STATUSES), default=None)
@node_option
@click.option("--json", "as_json", is_flag=True)
def s_list(loan, status, node_url, as_json):
    """Collateral sales, newest state from the node."""
    query = "&".join(f"{k}={v}" for k, v in (("loan", loan), ("status", status)) if v)
    rows = get_all(node_url, "/v1/sales" + (f"?{query}" if query else ""), "sales")
    if as_json:
        emit({"sales": rows}, True)
        return
    _table("collateral sales", ["sale", "asset", "status", "value", "reserve", "best bid",
                                "closes"],
           [[r["sale"][:16], r["asset"], r["status"], money(r["value"]), money(r["reserve"]),
             money(r["best"]), _when(r["closes"])] for r in rows])


@sale.command("show")
@click.argument("sale_id")
@node_option
@click.option("--json", "as_json", is_flag=True)
def s_show(sale_id, node_url, as_json):
    """One sale: the asset, its loan, the reserve, the best bid and when it closes."""
    r = get(node_url, f"/v1/sales/{sale_id}")
    emit(r, as_json, f"sale {r['sale']} of {r['asset']} for loan {r['loan']}: {r['status']}; "
                     f"value {money(r['value'])}, reserve {money(r['reserve'])}, best bid "
                     f"{money(r['best'])}" + (f" by {r['bidder']}" if r["bidder"] else "")
                     + f", closes {_when(r['closes'])}")


@sale.command("bid", help=f"Bid AMOUNT for a sale's asset (escrowed until outbid or "
                         f"settled). A bid must reach the reserve and beat the best by "
                         f"{MIN_RAISE_BPS // 100} %; bids close {SALE_DAYS} chain days "
                         f"after the default.")
@wallet_option
@click.argument("sale_id")
@click.argument("amount", type=AMOUNT)
@send_options
def s_bid(wallet_name, sale_id, amount, **send):
    sign_and_send(unlock(wallet_name), "bid", sale=sale_id, amount=amount, **send)


@sale.command("settle")
@wallet_option
@click.argument("sale_id")
@send_options
def s_settle(wallet_name, sale_id, **send):
    """Settle a closed sale (anyone may): the asset to the best bidder, the price to the
    debt, the rest to the borrower; with no bid it is marked unsold."""
    sign_and_send(unlock(wallet_name), "settle_sale", sale=sale_id, **send)


@sale.command("take")
@wallet_option
@click.argument("sale_id")
@send_options
def s_take(wallet_name, sale_id, **send):
    """Lender: take an unsold asset at the value the loan counted for it; it pays the
    debt and you pay the borrower whatever it is worth beyond the debt."""
    sign_and_send(unlock(wallet_name), "take_collateral", sale=sale_id, **send)
