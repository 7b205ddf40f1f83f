"""`lendnet savings ...`: deposit accounts that earn interest and back loans as cash collateral.

A provider publishes a savings product with a yearly rate and an interest reserve (the
savings agreement holds both, and every deposit: ledger/savings.py). Members deposit and
withdraw; they may pledge part or all of their balance to their own open application or
active loan, where it counts at face value toward the lender's collateral cover. While
anything is pledged, withdrawals are blocked; the pledge is released when the loan is
repaid or settled (or the application withdrawn) and drawn into the claim on default.
"""
from __future__ import annotations

import click

from lendnet.ledger import keys
from lendnet.ledger.savings import (MAX_PLEDGES_PER_ACCOUNT, MAX_PLEDGES_PER_TARGET,
                                    MAX_RATE_BPS)

from .common import (AMOUNT, address_param, emit, get, money, node_option, pct, send_options,
                     sign_and_send, unlock, wallet_option)


def product_address(tx_hash: str) -> str:
    """A product's agreement address: derived from the hash of the transaction that
    published it."""
    return keys.derive_address(b"savings", bytes.fromhex(tx_hash))


@click.group()
def savings():
    """Savings products and accounts: product, deposit, withdraw, pledge, fund, show."""


@savings.command("product", help=f"Publish a savings product paying --rate-bps a year "
                                 f"(0..{MAX_RATE_BPS}; simple interest, actual/365, by "
                                 f"whole days, rounded down) from an interest reserve you "
                                 f"fund now with --reserve. Interest stops when the reserve "
                                 f"runs dry; the reserve cannot be taken back.")
@wallet_option
@click.option("--name", required=True, help="The product's name (1 to 64 characters).")
@click.option("--rate-bps", required=True, type=click.IntRange(0, MAX_RATE_BPS),
              help="Yearly interest rate in basis points (500 = 5.00%).")
@click.option("--reserve", required=True, type=AMOUNT,
              help="The interest reserve you fund now, in LND.")
@send_options
def s_product(wallet_name, name, rate_bps, reserve, **send):
    as_json = send["as_json"]
    out = sign_and_send(unlock(wallet_name), "savings_product", name=name,
                        rate_bps=rate_bps, reserve=reserve, quiet=True, **send)
    if send["offline"]:
        return                          # save_tx has reported the signed file
    product = product_address(out["hash"])
    emit({**out, "product": product}, as_json,
         f"savings product {name!r} ({pct(rate_bps)} a year, reserve {money(reserve)}): "
         f"{product} [{out['status']} {out['hash']}]")


@savings.command("deposit")
@wallet_option
@click.argument("product", callback=address_param)
@click.argument("amount", type=AMOUNT)
@send_options
def s_deposit(wallet_name, product, amount, **send):
    """Deposit AMOUNT into your account in PRODUCT (the first deposit opens it). Interest
    accrued so far is credited first."""
    sign_and_send(unlock(wallet_name), "savings_deposit", product=product, amount=amount,
                  **send)


@savings.command("withdraw")
@wallet_option
@click.argument("product", callback=address_param)
@click.argument("amount", type=AMOUNT)
@send_options
def s_withdraw(wallet_name, product, amount, **send):
    """Withdraw AMOUNT from your account in PRODUCT (interest to now included). Refused
    while any of the account is pledged to an application or loan."""
    sign_and_send(unlock(wallet_name), "savings_withdraw", product=product, amount=amount,
                  **send)


@savings.command("pledge", help=f"Pledge --amount of your account in PRODUCT as cash "
                                f"collateral to your own open application (its id) or "
                                f"active loan (its address). It counts at face value toward "
                                f"the offer's collateral cover and blocks withdrawals until "
                                f"the loan is repaid or the application withdrawn; on "
                                f"default it pays the claim. At most "
                                f"{MAX_PLEDGES_PER_ACCOUNT} applications or loans per "
                                f"account, {MAX_PLEDGES_PER_TARGET} accounts per "
                                f"application or loan.")
@wallet_option
@click.argument("product", callback=address_param)
@click.option("--to", "target", required=True,
              help="Your application's id or your loan's address.")
@click.option("--amount", required=True, type=AMOUNT, help="How much to pledge, in LND.")
@send_options
def s_pledge(wallet_name, product, target, amount, **send):
    sign_and_send(unlock(wallet_name), "savings_pledge", product=product, to=target,
                  amount=amount, **send)


@savings.command("fund")
@wallet_option
@click.argument("product", callback=address_param)
@click.argument("amount", type=AMOUNT)
@send_options
def s_fund(wallet_name, product, amount, **send):
    """Provider: add AMOUNT to PRODUCT's interest reserve (it cannot be taken back)."""
    sign_and_send(unlock(wallet_name), "savings_fund", product=product, amount=amount,
                  **send)


@savings.command("show")
@click.argument("product", callback=address_param)
@click.option("--owner", default=None, callback=address_param,
              help="Show this owner's account instead of the product.")
@node_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def s_show(product, owner, node_url, as_json):
    """A savings product (rate, reserve left, accounts) or, with --owner, one account
    (balance, interest, what is pledged and to what)."""
    if owner is None:
        r = get(node_url, f"/v1/savings/{product}")
        emit(r, as_json, f"savings product {r['name']!r} {product} by {r['provider']}: "
                         f"{pct(r['rate_bps'])} a year; reserve {money(r['reserve'])}; "
                         f"{r['accounts']} accounts")
        return
    r = get(node_url, f"/v1/savings/{product}/{owner}")
    pledges = "; ".join(f"{money(p['amount'])} to {p['to']}" for p in r["pledges"])
    emit(r, as_json, f"account of {owner} in {product}: balance {money(r['balance'])} "
                     f"(interest earned {money(r['interest_earned'])}, unpaid "
                     f"{money(r['interest_unpaid'])}); pledged {money(r['pledged'])}"
                     + (f" ({pledges}): withdrawals blocked" if pledges else "")
                     + f"; available {money(r['available'])}")
