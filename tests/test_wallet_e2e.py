"""The wallet commands against a real 4-node cluster: the whole lending lifecycle through
`lendnet` (click's runner, in-process, talking HTTP to real node processes), the
offline-sign-then-submit path, a multisig spend, sealed documents only the authorised
lender can read, alerts, and the one-command demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from lendnet.cli.main import main
from lendnet.ledger import keys
from lendnet.node.harness.cluster import Cluster

ALICE = keys.Keypair.from_name("alice")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wallets")
    c = Cluster(root / "cluster")
    try:
        members = c.up(4, wait_s=60)
        yield {"LENDNET_NODE": members[1].api, "LENDNET_WALLETS": str(root / "keys"),
               "LENDNET_PASSPHRASE": "correct horse battery staple", "LENDNET_KDF": "fast",
               "root": root}
    finally:
        c.down()


def run(env, *args, ok=True):
    runner = CliRunner()
    result = runner.invoke(main, [str(a) for a in args],
                           env={k: v for k, v in env.items() if k != "root"})
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def js(env, *args) -> dict:
    out = run(env, *args, "--json").output
    return json.loads(out[out.index("{"):])        # after any warning lines


@pytest.fixture(scope="module")
def people(env):
    """Wallets for a lender, a borrower and a stranger, funded from the dev faucet."""
    for name in ("lender", "ana", "eve"):
        run(env, "wallet", "create", name)
    run(env, "wallet", "import", "faucet", "--seed-hex", ALICE.seed.hex(), "--dev")
    addr = {n: js(env, "wallet", "show", n)["address"] for n in ("lender", "ana", "eve")}
    for name, amount in (("lender", "5000"), ("ana", "1500"), ("eve", "10")):
        assert js(env, "transfer", "--wallet", "faucet", "--to", addr[name],
                  "--amount", amount)["status"] == "committed"
    return addr


def test_wrong_passphrase_is_a_clear_error(env, people):
    bad = dict(env, LENDNET_PASSPHRASE="wrong")
    r = run(bad, "lender", "register", "--wallet", "lender", ok=False)
    assert r.exit_code == 1 and "wrong passphrase" in r.output and "Traceback" not in r.output


def test_the_whole_lifecycle_through_the_wallet_commands(env, people, tmp_path):
    root = env["root"]
    assert js(env, "lender", "register", "--wallet", "lender")["status"] == "committed"
    offer = js(env, "lender", "offer", "--wallet", "lender", "--amount", "3000",
               "--tier", "300:1800:2000.00", "--period", "weekly", "--max-term", "12",
               "--default-days", "30")["hash"]
    # Ana's documents are sealed to the lender only; the ledger holds their hash.
    pub = root / "lender.pub.json"
    run(env, "wallet", "export-public", "lender", "--out", pub)
    doc = tmp_path / "payslip.txt"
    doc.write_bytes(b"ana earns 420.00 LND a week")
    js(env, "borrower", "register", "--wallet", "ana", "--docs", doc, "--authorise", pub)
    # Ana's limits allow default after 30 days at the soonest (the CLI's default is 90:
    # the quote says the offer is outside it, and a fund would be refused).
    strict = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "500", "--term",
                "4", "--period", "weekly", "--product", "business")["hash"]
    q = js(env, "borrower", "quote", "--application", strict, "--offer", offer)
    assert q["within_limits"] is False
    assert q["problems"] == ["default_days 30 is below the application's min_default_days 90"]
    r = run(env, "lender", "fund", "--wallet", "lender", "--application", strict,
            "--offer", offer, ok=False)
    assert r.exit_code == 1 and "min_default_days 90" in r.output
    js(env, "borrower", "withdraw", "--wallet", "ana", "--application", strict)
    app = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "500", "--term", "4",
             "--period", "weekly", "--product", "business", "--min-default-days",
             "30")["hash"]
    q = js(env, "borrower", "quote", "--application", app, "--offer", offer)
    assert q["within_limits"] is True and q["fits"] == "" and len(q["schedule"]) == 4
    assert q["apr_bps"] > 1800 and q["repaid"] == sum(r["total"] for r in q["schedule"])
    assert "APR" in run(env, "borrower", "quote", "--application", app, "--offer",
                        offer).output
    offers = js(env, "borrower", "offers", "--application", app)
    assert any(o["offer"] == offer and o["fits"] == "" for o in offers["offers"])
    apps = js(env, "lender", "applications", "--offer", offer)["applications"]
    assert any(a["application"] == app and a["fits"] == "" for a in apps)
    # The same listings as tables (a second `_fits` once made these raise TypeError).
    for args in (("borrower", "offers", "--application", app),
                 ("lender", "applications", "--offer", offer)):
        table = run(env, *args).output
        assert "fits" in table and "yes" in table, table
    # Only the authorised lender reads the documents, and they match the ledger's hash.
    out = tmp_path / "read.txt"
    run(env, "lender", "documents", "--wallet", "lender", "--borrower", people["ana"],
        "--out", out)
    assert out.read_bytes() == doc.read_bytes()
    r = run(env, "lender", "documents", "--wallet", "eve", "--borrower", people["ana"],
            "--out", tmp_path / "eve.txt", ok=False)
    assert r.exit_code == 1 and "not among" in r.output
    assert js(env, "lender", "fund", "--wallet", "lender", "--application", app,
              "--offer", offer)["status"] == "committed"
    loans = js(env, "borrower", "loans", "--wallet", "ana")["loans"]
    assert len(loans) == 1 and loans[0]["status"] == "active"
    loan = loans[0]["loan"]
    sched = js(env, "borrower", "schedule", "--loan", loan)
    assert len(sched["schedule"]) == 4
    assert sum(r["principal"] for r in sched["schedule"]) == 50_000
    # One instalment online; the next signed offline and submitted later.
    js(env, "borrower", "repay", "--wallet", "ana", "--loan", loan, "--instalment")
    # A prepayment that lowers the instalment; then a restructuring both sides sign.
    assert js(env, "borrower", "prepay", loan, "20.00", "--reduce", "instalment",
              "--wallet", "ana")["status"] == "committed"
    proposal = js(env, "borrower", "restructure", "propose", loan, "--term", "6",
                  "--wallet", "ana")["hash"]
    r = run(env, "borrower", "restructure", "accept", loan, proposal, "--wallet", "ana",
            ok=False)
    assert r.exit_code == 1 and "the other party must accept it" in r.output
    assert js(env, "lender", "restructure", "accept", loan, proposal,
              "--wallet", "lender")["status"] == "committed"
    ln = js(env, "borrower", "schedule", "--loan", loan)["loan"]
    assert ln["terms"]["n"] == 6 and ln["restructures"][0]["term"] == 6
    ana_nonce = _nonce(env, people["ana"])
    cold = tmp_path / "repay.json"
    signed = js(env, "borrower", "repay", "--wallet", "ana", "--loan", loan, "--amount",
                "100.00", "--offline", "--nonce", ana_nonce, "--out", cold)
    assert signed["status"] == "signed" and cold.exists()
    assert js(env, "tx", "submit", cold)["status"] == "committed"
    assert js(env, "borrower", "repay", "--wallet", "ana", "--loan", loan,
              "--payoff")["status"] == "committed"
    assert js(env, "borrower", "loans", "--wallet", "ana")["loans"][0]["status"] == "repaid"
    score = js(env, "borrower", "score", "--wallet", "ana")
    # paid off within seconds, 50.00 lent: no repaid loan counts (docs/SCORE.md), and
    # ana is unattested: a thin file, her own history shown
    assert score["identity"]["status"] == "thin_file" and score["reasons"] == ["thin_file"]
    assert score["history"]["opened"] == 1 and score["history"]["open_loans"] == 0
    folio = js(env, "lender", "portfolio", "--wallet", "lender")
    assert folio["by_status"]["repaid"] == 1 and folio["received"] > 50_000
    assert folio["par30_bps"] in (0, None) and folio["net_yield_bps"] is not None
    network = js(env, "lender", "portfolio", "--network")
    assert network["lender"] is None and network["loans"] >= folio["loans"]


def test_a_registrar_attests_a_borrower_and_the_score_shows_it(env, people):
    run(env, "wallet", "import", "registrar", "--seed-hex",
        keys.Keypair.from_name("registrar").seed.hex(), "--dev")
    r = run(env, "registrar", "attest", people["eve"], "--identity", "eve", "--wallet", "eve",
            ok=False)
    assert r.exit_code == 1 and "only a registrar" in r.output
    assert "thin file" in run(env, "borrower", "score", "--wallet", "eve").output
    assert js(env, "registrar", "attest", people["eve"], "--identity", "Eve, ID 42",
              "--wallet", "registrar")["status"] == "committed"
    score = js(env, "borrower", "score", "--wallet", "eve")
    assert score["identity"]["status"] == "attested" and score["score"] >= score["floor"]
    assert "identity attested" in run(env, "borrower", "score", "--wallet", "eve").output
    r = run(env, "registrar", "attest", people["eve"], "--identity", "again", "--wallet",
            "registrar", ok=False)
    assert r.exit_code == 1 and "already attested" in r.output


def _nonce(env, address: str) -> int:
    from lendnet.node.daemon.client import NodeClient
    return NodeClient(env["LENDNET_NODE"]).account(address)["nonce"]


def test_a_multisig_spend_needs_its_threshold(env, people, tmp_path):
    pubs = []
    for name in ("lender", "ana", "eve"):
        p = tmp_path / f"{name}.pub.json"
        run(env, "wallet", "export-public", name, "--out", p)
        pubs += ["--member", p]
    created = js(env, "multisig", "create", "--wallet", "lender", "--threshold", "2", *pubs)
    assert created["status"] == "committed"
    account = run(env, "multisig", "create", "--wallet", "lender", "--threshold", "2",
                  *pubs, ok=False).output
    assert "already exists" in account
    from lendnet.ledger.ledger import multisig_address
    ms = multisig_address(2, [bytes.fromhex(js(env, "wallet", "show", n)["pubkey"])
                              for n in ("lender", "ana", "eve")])
    js(env, "transfer", "--wallet", "faucet", "--to", ms, "--amount", "50")
    spend = tmp_path / "spend.json"
    js(env, "multisig", "transfer", "--wallet", "ana", "--account", ms, "--to",
       people["eve"], "--amount", "20", "--out", spend)
    r = run(env, "tx", "submit", spend, ok=False)
    assert r.exit_code == 1 and "refused" in r.output              # 1 of 2 signatures
    assert js(env, "tx", "sign", spend, "--wallet", "eve")["signatures"] == 2
    assert js(env, "tx", "submit", spend)["status"] == "committed"


def test_watch_prints_loan_alerts(env, people):
    # A loan whose first instalment is due in a week of real time: the disbursement and
    # payment alerts are what this run can see.
    offer = js(env, "lender", "offer", "--wallet", "lender", "--amount", "100",
               "--tier", "300:1200:100.00")["hash"]
    app = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "50", "--term", "2")
    cmd = [sys.executable, "-m", "lendnet.cli", "watch", "--wallet", "ana", "--count", "1",
           "--timeout", "30", "--json"]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **{k: str(v) for k, v in
                                                                env.items() if k != "root"}})
    try:
        # it says on stderr once it follows the stream; from then it misses nothing
        assert "following" in watcher.stderr.readline()
        js(env, "lender", "fund", "--wallet", "lender", "--application", app["hash"],
           "--offer", offer)
        out, err = watcher.communicate(timeout=40)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert lines and lines[0]["role"] == "borrower", (out, err)
    assert lines[0]["event"] in ("disbursed", "payment", "instalment_due")


def test_demo_runs_the_lifecycle_and_nodes_agree(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lendnet.cli", "demo", "--json"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list(tmp_path.glob("lendnet-demo-*"))     # its keys and stores went with it
    res = json.loads(r.stdout)
    assert res["identical_on_all_nodes"] is True
    assert res["loans"] == {"ana": "repaid", "ben": "settled"}
    assert res["collateral"] == {"ana-sewing-machine": "ana", "ben-goats": "carol"}
    # carol's 1,300.00 paid ben's debt (1,000.00 and its interest and fees); the rest is his
    assert 25_000 < res["surplus_to_ben"] < 30_000
    assert res["book_at_default"]["par1_bps"] > 0
    assert res["scores"]["ana"] > res["scores"]["ben"]


def test_demo_group_act_shows_a_group_loan_and_a_shared_loan(tmp_path):
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lendnet.cli", "demo", "--group", "--json"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.monotonic() - started < 60                  # the bound
    assert not list(tmp_path.glob("lendnet-demo-*"))
    res = json.loads(r.stdout)
    assert res["identical_on_all_nodes"] is True
    assert set(res["loans"].values()) == {"repaid"}
    assert res["group_record"]["covers"] == 1 and res["covered_by_amy"] > 0
    # fay's lenders got what she paid split 3:2:1 by slice, each within a unit a payment
    got, slices = res["received"], res["slices"]
    whole = sum(got.values())
    for n, share in slices.items():
        assert abs(got[n] * sum(slices.values()) - whole * share) < 4 * sum(slices.values())
    assert all(v > 10_000 for v in res["savings_withdrawn"].values())   # with interest


def test_accept_pledge_withdraw_and_listings(env, people):
    offer = js(env, "lender", "offer", "--wallet", "lender", "--amount", "300",
               "--tier", "300:2000:300.00", "--collateral-bps", "5000")["hash"]
    assert any(o["offer"] == offer for o in js(env, "lender", "offers", "--wallet",
                                              "lender")["offers"])
    app = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "100", "--term",
             "3")["hash"]
    # Without collateral the offer does not fit; pledged, the borrower accepts it.
    r = run(env, "borrower", "accept", "--wallet", "ana", "--application", app, "--offer",
            offer, ok=False)
    assert r.exit_code == 1 and "collateral" in r.output
    both = js(env, "borrower", "pledge", "--wallet", "ana", "--asset", "ana-bicycle",
              "--to", app, "--register-value", "60.00")        # one JSON value for both
    assert both["register_collateral"]["status"] == both["pledge"]["status"] == "committed"
    bicycle = both["asset"]
    assert bicycle == f"{people['ana']}/ana-bicycle"
    # A declared value counts for nothing: an appraiser must attest it first.
    r = run(env, "borrower", "accept", "--wallet", "ana", "--application", app, "--offer",
            offer, ok=False)
    assert r.exit_code == 1 and "collateral pledged is worth 0" in r.output
    r = run(env, "appraiser", "appraise", "--wallet", "ana", bicycle, "60.00", ok=False)
    assert r.exit_code == 1 and "is not an appraiser" in r.output
    from lendnet.node.daemon.home import DEV_REGISTRAR
    run(env, "wallet", "import", "appraiser", "--seed-hex",
        keys.Keypair.from_name(DEV_REGISTRAR).seed.hex(), "--dev", ok=False)
    js(env, "transfer", "--wallet", "faucet", "--to",
       keys.Keypair.from_name(DEV_REGISTRAR).address, "--amount", "10")
    assert js(env, "appraiser", "appraise", "--wallet", "appraiser", bicycle,
              "60.00")["status"] == "committed"
    shown = js(env, "borrower", "collateral", "show", bicycle)
    assert shown["appraised_value"] == 6_000 and shown["declared_value"] == 6_000
    assert js(env, "borrower", "accept", "--wallet", "ana", "--application", app,
              "--offer", offer)["status"] == "committed"
    loan = js(env, "borrower", "loans", "--wallet", "ana")["loans"]
    assert any(x["collateral"] == [bicycle] and x["status"] == "active"
               and x["cover"] == [{"asset": bicycle, "value": 6_000, "source": "appraised"}]
               for x in loan)
    # Registering prints the scoped id; a lender may accept it at a value when funding.
    reg = js(env, "borrower", "collateral", "register", "--wallet", "ana", "--asset",
             "ana-radio", "--value", "80.00")
    assert reg["status"] == "committed" and reg["asset"] == f"{people['ana']}/ana-radio"
    app2 = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "100", "--term",
              "3")["hash"]
    js(env, "borrower", "pledge", "--wallet", "ana", "--asset", "ana-radio", "--to", app2)
    assert js(env, "lender", "fund", "--wallet", "lender", "--application", app2,
              "--offer", offer, "--accept", f"{reg['asset']}=50.00")["status"] == "committed"
    assert js(env, "lender", "withdraw", "--wallet", "lender", "--offer",
              offer)["status"] == "committed"
    assert not [o for o in js(env, "borrower", "offers")["offers"] if o["offer"] == offer]
    # Human output has units; a bad amount is a usage error (exit 2).
    assert "LND" in run(env, "borrower", "loans", "--wallet", "ana").output
    assert run(env, "transfer", "--wallet", "ana", "--to", people["eve"], "--amount",
               "1.234", ok=False).exit_code == 2


def _one_json_value(out: str):
    """The whole output is one JSON value, nothing before or after it."""
    value, end = json.JSONDecoder().raw_decode(out)
    assert not out[end:].strip(), f"more after the JSON value: {out[end:][:200]!r}"
    return value


def test_every_listing_reads_as_a_table_and_as_one_json_value(env, people):
    """Each read command, as a person reads it (a table or lines) and as a program does
    (--json: exactly one JSON value)."""
    for role in ("lender", "borrower"):           # (already, when the lifecycle ran first)
        run(env, role, "register", "--wallet", "lender" if role == "lender" else "ana",
            ok=False)
    offer = js(env, "lender", "offer", "--wallet", "lender", "--amount", "200",
               "--tier", "300:1500:200.00")["hash"]
    app = js(env, "borrower", "apply", "--wallet", "ana", "--amount", "50", "--term",
             "2")["hash"]
    assert js(env, "lender", "fund", "--wallet", "lender", "--application", app,
              "--offer", offer)["status"] == "committed"
    loan = next(x["loan"] for x in js(env, "borrower", "loans", "--wallet", "ana")["loans"]
                if x["status"] == "active")
    commands = {                       # the command -> what its human output must show
        ("borrower", "offers"): "offers",
        ("borrower", "offers", "--application", app): "fits",
        ("borrower", "loans", "--wallet", "ana"): "loans of",
        ("borrower", "schedule", "--loan", loan): "schedule",
        ("borrower", "score", "--wallet", "ana"): "score",
        ("lender", "offers", "--wallet", "lender"): "offers",
        ("lender", "applications"): "open applications",
        ("lender", "applications", "--offer", offer): "fits",
        ("lender", "portfolio", "--wallet", "lender"): "",
        ("wallet", "list"): "wallets in",
        ("wallet", "show", "ana"): "wallet ana",
        ("cluster", "status", "--home", env["root"] / "cluster"): "cluster",
        ("loan", "schedule", "--principal", "10000", "--rate-bps", "1200", "--term", "3"):
            "loan of",
    }
    for args, shows in commands.items():
        text = run(env, *args).output
        assert text.strip() and shows in text and "Traceback" not in text, (args, text)
        _one_json_value(run(env, *args, "--json").output)
