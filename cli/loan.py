"""`lendnet loan ...`: loan commands that need no node."""
from __future__ import annotations

import datetime as dt
import json

import click

from lendnet.contracts.agreements import METHOD_CODES, PERIODS_PER_YEAR, schedule
from lendnet.contracts.vm import ContractError
from lendnet.ledger.money import fmt
from lendnet.ledger.apr import apr_bps
from lendnet.ledger.tx import MAX_AMOUNT, MAX_ORIGINATION_FEE_BPS, MAX_RATE_BPS, MAX_TERM


def _start_time(value: str | None) -> int:
    if value is None:
        today = dt.datetime.now(dt.UTC).date()
        return int(dt.datetime(today.year, today.month, today.day,
                               tzinfo=dt.UTC).timestamp())
    if value.isdigit():
        return int(value)
    try:
        d = dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("give a date YYYY-MM-DD or unix seconds",
                                 param_hint="--start") from None
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def _date(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


@click.group()
def loan():
    """Loan terms and schedules."""


@loan.command("schedule")
@click.option("--principal", required=True, type=click.IntRange(1, MAX_AMOUNT),
              help="Amount lent, in minor units (10000 = 100.00 LND).")
@click.option("--rate-bps", required=True, type=click.IntRange(0, MAX_RATE_BPS),
              help="Annual interest rate in basis points (1200 = 12 %).")
@click.option("--term", required=True, type=click.IntRange(1, max(MAX_TERM.values())),
              help="Number of instalments.")
@click.option("--period", type=click.Choice(list(PERIODS_PER_YEAR)), default="monthly",
              show_default=True, help="Instalment period (a calendar month, or 7 days).")
@click.option("--method", type=click.Choice(list(METHOD_CODES)), default="annuity",
              show_default=True, help="annuity: equal instalments; equal-principal; "
              "balloon: interest only, principal with the last instalment.")
@click.option("--grace", type=click.IntRange(0, 12), default=0, show_default=True,
              help="Whole periods before the first instalment (their interest is "
              "due with it).")
@click.option("--start", metavar="DATE", default=None,
              help="Disbursement date, YYYY-MM-DD or unix seconds [default: today, UTC].")
@click.option("--origination-fee-bps", type=click.IntRange(0, MAX_ORIGINATION_FEE_BPS),
              default=0, show_default=True,
              help="An offer's fee at funding, for the APR (taken from the principal).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def schedule_cmd(principal, rate_bps, term, period, method, grace, start,
                 origination_fee_bps, as_json):
    """Print the schedule a loan contract would follow.

    The schedule is computed by running the standard loan agreement in the contract
    VM, the same code every loan on the ledger runs.
    """
    if term > MAX_TERM[period]:
        raise click.BadParameter(f"at most {MAX_TERM[period]} {period} instalments",
                                 param_hint="--term")
    t0 = _start_time(start)
    try:
        rows = schedule(principal, rate_bps, term, period, method, grace, t0)
    except ContractError as e:
        raise click.ClickException(f"these terms are refused: {e.message}") from None
    total_interest = sum(r["interest"] for r in rows)
    total_paid = sum(r["total"] for r in rows)
    fee = principal * origination_fee_bps // 10_000
    try:
        apr = apr_bps(principal, fee, rows, t0)
    except ValueError:
        apr = None
    if as_json:
        out = {"principal": principal, "rate_bps": rate_bps, "term": term,
               "period": period, "method": method, "grace": grace, "start": t0,
               "installments": [{**r, "due_date": _date(r["due"])} for r in rows],
               "total_interest": total_interest, "total_paid": total_paid,
               "origination_fee": fee, "apr_bps": apr}
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{method} loan of {fmt(principal)} at {rate_bps // 100}."
                        f"{rate_bps % 100:02d} % a year, {term} {period} instalments",
                  title_justify="left")
    for col in ("#", "due", "principal", "interest", "total"):
        table.add_column(col, justify="left" if col == "due" else "right")
    for r in rows:
        table.add_row(str(r["n"]), _date(r["due"]), fmt(r["principal"], False),
                      fmt(r["interest"], False), fmt(r["total"], False))
    table.add_section()
    table.add_row("", "total", fmt(sum(r["principal"] for r in rows), False),
                  fmt(total_interest, False), fmt(total_paid, False))
    Console().print(table)
    if apr is not None:
        click.echo(f"APR {apr // 100}.{apr % 100:02d} % (origination fee {fmt(fee)} included; "
                   f"actual days / 365)")
