"""The `lendnet` command, driven through click's runner."""
from __future__ import annotations

import json

from click.testing import CliRunner

from lendnet.cli.main import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_schedule_json_is_the_contracts_schedule():
    r = run("loan", "schedule", "--principal", "100000", "--rate-bps", "1200", "--term", "12",
            "--start", "2027-01-01", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows = out["installments"]
    assert [set(x) >= {"n", "due", "principal", "interest", "total"} for x in rows] == [True] * 12
    assert sum(x["principal"] for x in rows) == 100_000
    assert out["total_interest"] == sum(x["interest"] for x in rows) == 6_619
    assert out["total_paid"] == 106_619
    assert rows[0]["due_date"] == "2027-01-31"


def test_schedule_table_and_refusals():
    r = run("loan", "schedule", "--principal", "500000", "--rate-bps", "1800", "--term", "6",
            "--method", "equal-principal", "--period", "weekly", "--grace", "1")
    assert r.exit_code == 0 and "1,000.00" not in r.output and "5,000.00" in r.output
    r = run("loan", "schedule", "--principal", "1", "--rate-bps", "1", "--term", "2")
    assert r.exit_code == 1 and "these terms are refused: principal too small" in r.output
    r = run("loan", "schedule", "--principal", "100", "--rate-bps", "1", "--term", "400")
    assert r.exit_code == 2 and "at most 360 monthly instalments" in r.output
    r = run("loan", "schedule", "--principal", "100", "--rate-bps", "1", "--term", "4",
            "--start", "someday")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output
