"""The `lendnet` command, driven through click's runner."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lendnet.cli.main import main
from lendnet.ledger import tx as txm


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
    # actual/365 on calendar months: January has 31 days, so 1,019 of interest, not 1,000
    assert rows[0]["interest"] == 1_019 and rows[1]["interest"] == 848    # 28 days
    assert out["total_interest"] == sum(x["interest"] for x in rows) == 6_587
    assert out["total_paid"] == 106_587
    assert [x["due_date"] for x in rows[:3]] == ["2027-02-01", "2027-03-01", "2027-04-01"]


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


LOAN = "ln" + "ab" * 20
PROPOSAL = "cd" * 32


def offline(tmp_path, *args):
    out = tmp_path / "tx.json"
    r = run(*args, "--wallet", "w", "--offline", "--nonce", "3", "--chain", "c", "--out",
            str(out), "--json")
    assert r.exit_code == 0, r.output
    return txm.parse(bytes.fromhex(json.loads(out.read_text())["tx"])).body


@pytest.mark.parametrize("args,kind,fields", [
    (("borrower", "prepay", LOAN, "12.50", "--reduce", "instalment"), "prepay",
     {"loan": LOAN, "amount": 1250, "reduce": "instalment"}),
    (("borrower", "prepay", LOAN, "3"), "prepay",
     {"loan": LOAN, "amount": 300, "reduce": "term"}),
    (("lender", "write-off", LOAN, "--reason", "borrower unreachable"), "write_off",
     {"loan": LOAN, "reason": "borrower unreachable"}),
    (("borrower", "restructure", "propose", LOAN, "--term", "9"), "propose_restructure",
     {"loan": LOAN, "term": 9}),
    (("lender", "restructure", "propose", LOAN, "--term", "9"), "propose_restructure",
     {"loan": LOAN, "term": 9}),
    (("lender", "restructure", "accept", LOAN, PROPOSAL), "accept_restructure",
     {"loan": LOAN, "proposal": PROPOSAL}),
    (("borrower", "restructure", "accept", LOAN, PROPOSAL), "accept_restructure",
     {"loan": LOAN, "proposal": PROPOSAL}),
])
def test_loan_commands_sign_their_transactions(wallet, args, kind, fields):
    body = offline(wallet, *args)
    assert body["kind"] == kind and {k: body[k] for k in fields} == fields


@pytest.mark.parametrize("args,code,why", [
    (("borrower", "prepay", LOAN, "1", "--reduce", "both"), 2, "'both' is not one of"),
    (("lender", "write-off", LOAN, "--reason", "x" * 141), 2, "1 to 140 characters"),
    (("lender", "write-off", LOAN), 2, "Missing option '--reason'"),
    (("borrower", "restructure", "propose", LOAN, "--term", "0"), 2, "--term"),
    (("lender", "restructure", "accept", LOAN, "not-an-id"), 1, "'proposal' must be an id"),
    (("borrower", "prepay", "nope", "1"), 1, "'loan' must be an address"),
])
def test_loan_commands_say_what_is_wrong(wallet, args, code, why):
    r = run(*args, "--wallet", "w", "--offline", "--nonce", "0", "--chain", "c", "--out",
            str(wallet / "tx.json"))
    assert r.exit_code == code and why in r.output and "Traceback" not in r.output, r.output
