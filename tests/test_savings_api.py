"""GET /v1/savings/{product} and /v1/savings/{product}/{owner}, and the `lendnet savings`
commands that sign the savings kinds."""
from __future__ import annotations

import json
import types

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lendnet.ledger import tx as txm
from lendnet.node.daemon import api
from lendnet.node.daemon.home import NodeConfig
from lendnet.node.daemon.metrics import Metrics

from .chain import Chain
from .test_cli import run
from .test_savings import NAMES, borrower_applies, make_product


def fake_daemon(c: Chain):
    """What build_app reads of a daemon, around a test chain's ledger."""
    node = types.SimpleNamespace(ledger=c.ledger, height=c.ledger.height)
    return types.SimpleNamespace(node=node, cfg=NodeConfig(), metrics=Metrics(),
                                 subscribers=set())


async def test_the_product_and_an_account_with_its_pledges():
    c = Chain(names=NAMES)
    p = make_product(c, rate_bps=500, reserve=50_000)
    _, app = borrower_applies(c)
    c.do("alice", "savings_deposit", product=p, amount=100_000)
    c.do("alice", "savings_pledge", product=p, to=app, amount=40_000)
    async with TestClient(TestServer(api.build_app(fake_daemon(c)))) as client:
        r = await client.get(f"/v1/savings/{p}")
        body = await r.json()
        assert r.status == 200 and body["product"] == p and body["reserve"] == 50_000
        assert body["rate_bps"] == 500 and body["accounts"] == 1
        r = await client.get(f"/v1/savings/{p}/{c.addr('alice')}")
        body = await r.json()
        assert r.status == 200 and body["balance"] == 100_000 and body["pledged"] == 40_000
        assert body["pledges"][0]["to"] == app and body["available"] == 60_000
        r = await client.get(f"/v1/savings/{p}/{c.addr('bob')}")
        assert r.status == 404 and "no account" in (await r.json())["error"]
        r = await client.get(f"/v1/savings/{c.addr('bob')}")
        assert r.status == 404
        r = await client.get("/v1/savings/nope")
        assert r.status == 400




PRODUCT = "ln" + "ab" * 20
APP = "cd" * 32


@pytest.mark.parametrize("args,kind,fields", [
    (("product", "--name", "basic", "--rate-bps", "500", "--reserve", "1000"),
     "savings_product", {"name": "basic", "rate_bps": 500, "reserve": 100_000}),
    (("deposit", PRODUCT, "12.50"), "savings_deposit", {"product": PRODUCT, "amount": 1250}),
    (("withdraw", PRODUCT, "3"), "savings_withdraw", {"product": PRODUCT, "amount": 300}),
    (("pledge", PRODUCT, "--to", APP, "--amount", "5"), "savings_pledge",
     {"product": PRODUCT, "to": APP, "amount": 500}),
    (("fund", PRODUCT, "7"), "savings_fund", {"product": PRODUCT, "amount": 700}),
])
def test_savings_commands_sign_their_transactions(wallet, args, kind, fields):
    out = wallet / "tx.json"
    r = run("savings", *args, "--wallet", "w", "--offline", "--nonce", "3", "--chain", "c",
            "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["kind"] == kind
    body = txm.parse(bytes.fromhex(json.loads(out.read_text())["tx"])).body
    assert body["kind"] == kind and {k: body[k] for k in fields} == fields


@pytest.mark.parametrize("args,code,why", [
    (("product", "--name", "x", "--rate-bps", "2001", "--reserve", "1"), 2, "--rate-bps"),
    (("product", "--name", "x" * 65, "--rate-bps", "1", "--reserve", "1"), 1,
     "1 to 64 characters"),
    (("deposit", "nope", "1"), 2, "is not an address ('ln' and 40"),
    (("withdraw", PRODUCT, "0"), 2, "must be above zero"),
    (("pledge", PRODUCT, "--to", "nope", "--amount", "1"), 1,
     "'to' must be an application id or a loan address"),
    (("pledge", PRODUCT, "--to", APP), 2, "Missing option '--amount'"),
])
def test_savings_commands_say_what_is_wrong(wallet, args, code, why):
    r = run("savings", *args, "--wallet", "w", "--offline", "--nonce", "0", "--chain", "c",
            "--out", str(wallet / "tx.json"))
    assert r.exit_code == code and why in r.output and "Traceback" not in r.output, r.output


def test_show_needs_addresses_and_a_node():
    r = run("savings", "show", "nope")
    assert r.exit_code == 2 and "an address" in r.output
    r = run("savings", "show", PRODUCT, "--node", "http://127.0.0.1:1", "--json")
    assert r.exit_code == 1 and "cannot reach the node" in r.output
