"""`lendnet group` against a real one-node cluster: a group created, joined, borrowing
through it, a cover, and its record read back through the API (click's runner,
in-process, talking HTTP to a real node process)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lendnet.cli.main import main
from lendnet.ledger import keys
from lendnet.node.harness.cluster import Cluster

FAUCET = keys.Keypair.from_name("alice")
MEMBERS = ("ana", "ben", "cai")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    c = Cluster(root / "cluster")
    try:
        members = c.up(1, wait_s=60)
        yield {"LENDNET_NODE": members[0].api, "LENDNET_WALLETS": str(root / "keys"),
               "LENDNET_PASSPHRASE": "pass", "LENDNET_KDF": "fast"}
    finally:
        c.down()


def run(env, *args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if ok:
        assert r.exit_code == 0, (args, r.output, r.exception)
    return r


def js(env, *args) -> dict:
    out = run(env, *args, "--json").output
    return json.loads(out[out.index("{"):])


def test_a_group_through_the_command_line(env):
    run(env, "wallet", "import", "faucet", "--seed-hex", FAUCET.seed.hex(), "--dev")
    addr = {}
    for name in ("lender", *MEMBERS):
        run(env, "wallet", "create", name)
        addr[name] = js(env, "wallet", "show", name)["address"]
        assert js(env, "transfer", "--wallet", "faucet", "--to", addr[name], "--amount",
                  "3000")["status"] == "committed"
    for name in MEMBERS:
        js(env, "borrower", "register", "--wallet", name)
    js(env, "lender", "register", "--wallet", "lender")
    offer = js(env, "lender", "offer", "--wallet", "lender", "--amount", "2000", "--tier",
               "300:1800:1000.00", "--period", "weekly", "--max-term", "12",
               "--default-days", "30")["hash"]
    made = js(env, "group", "create", "--wallet", "ana", "--name", "market women",
              "--member", addr["ben"], "--member", addr["cai"], "--savings-bps", "1000")
    assert made["status"] == "committed"
    g = made["group"]
    assert js(env, "group", "show", g)["status"] == "forming"
    # Ben applies too early; then both join and the group is active.
    r = run(env, "group", "apply", g, "--wallet", "ben", "--amount", "100", "--term", "4",
            "--period", "weekly", "--min-default-days", "30", ok=False)
    assert r.exit_code == 1 and "only a joined member" in r.output, r.output
    for name in ("ben", "cai"):
        js(env, "group", "join", g, "--wallet", name)
    app = js(env, "group", "apply", g, "--wallet", "ben", "--amount", "100", "--term", "4",
             "--period", "weekly", "--min-default-days", "30")["hash"]
    # the group's compulsory savings: 10 % of the loan, saved and pledged before funding
    product = js(env, "savings", "product", "--wallet", "lender", "--name", "group savings",
                 "--rate-bps", "300", "--reserve", "10")["product"]
    r = run(env, "lender", "fund", "--wallet", "lender", "--application", app, "--offer",
            offer, ok=False)
    assert r.exit_code == 1 and "compulsory savings of 1000 bps" in r.output, r.output
    js(env, "savings", "deposit", product, "10", "--wallet", "ben")
    js(env, "savings", "pledge", product, "--to", app, "--amount", "10", "--wallet", "ben")
    js(env, "lender", "fund", "--wallet", "lender", "--application", app, "--offer", offer)
    shown = js(env, "group", "show", g)
    ben = [m for m in shown["members"] if m["address"] == addr["ben"]][0]
    loan = ben["loan"]["loan"]
    assert shown["status"] == "active" and shown["loans"] == 1 and not shown["in_arrears"]
    assert js(env, "group", "cover", loan, "5.00", "--wallet", "cai")["status"] == "committed"
    r = run(env, "group", "cover", loan, "5.00", "--wallet", "ben", ok=False)
    assert r.exit_code == 1 and "cannot cover its own loan" in r.output
    shown = js(env, "group", "show", g)
    assert shown["covers"] == 1 and shown["covered_amount"] == 500
    found = run(env, "group", "show", g).output
    assert "market women" in found and "active" in found
