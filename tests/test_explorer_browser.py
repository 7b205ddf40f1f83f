"""The web explorer in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright) against a real 4-node cluster after the demo's lending and one more loan
whose borrower typed markup into every text field a transaction lets them fill.

Skipped, with the reason, where Playwright or Chromium is not installed (.ci/run installs
both). With LENDNET_SCREENSHOTS=DIR the tests also save screenshots of the main pages
there (the README's come from `LENDNET_SCREENSHOTS=docs/explorer pytest
tests/test_explorer_browser.py`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lendnet.cli.demo import DEMO_PARAMS, Demo, _run
from lendnet.cli.main import main
from lendnet.ledger import keys
from lendnet.node.daemon.client import NodeClient
from lendnet.node.daemon.explorer_html import money, when
from lendnet.node.harness.cluster import Cluster

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE_PURPOSE = '<script>alert("pwned")</script>'
HOSTILE_ASSET = "<img src=x onerror=alert(1)>"
SHOTS = os.environ.get("LENDNET_SCREENSHOTS")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -e '.[test]')")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)",
                allow_module_level=True)


def _hostile_loan(d: Demo, lender: keys.Keypair) -> str:
    """Mallory's loan: markup in the purpose and in the collateral's name."""
    from lendnet.cli.keystore import create
    mallory = create("mallory", None)
    alice = keys.Keypair.from_name("alice")
    d.send(alice, "transfer", "fund mallory", to=mallory.address, amount=10_000)
    h32 = hashlib.sha256(b"mallory").digest()
    d.send(mallory, "register_borrower", "mallory registers", profile_hash=h32, docs_hash=h32)
    app = d.send(mallory, "apply", "mallory applies", amount=50_000, purpose=HOSTILE_PURPOSE,
                 term=4, period="weekly", method="annuity", product="business", grace=0,
                 docs_hash=h32, max_rate_bps=1800, max_late_fee_bps=500, min_default_days=2,
                 max_penalty_bps=0, max_origination_fee_bps=100)["hash"]
    d.send(mallory, "register_collateral", "mallory's asset", asset=HOSTILE_ASSET,
           description_hash=h32, value=50_000)
    d.send(mallory, "pledge", "mallory pledges", asset=HOSTILE_ASSET, to=app)
    offer = d.api.get(f"/v1/offers?lender={lender.address}")["offers"][0]["offer"]
    d.send(lender, "fund", "lender funds mallory", application=app, offer=offer,
           accept=[[f"{mallory.address}/{HOSTILE_ASSET}", 50_000]])
    return d.api.get(f"/v1/applications/{app}")["loan"]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    saved = os.environ.get("LENDNET_WALLETS")
    os.environ["LENDNET_WALLETS"] = str(root / "wallets")
    c = Cluster(root / "cluster")
    try:
        members = c.up(4, wait_s=60, params=DEMO_PARAMS)
        apis = [NodeClient(m.api, timeout=10) for m in members]
        d = Demo(apis[0], apis[0].status()["chain_id"], lambda _text: None)
        _run(d, apis, lambda _text: None)
        from lendnet.cli.keystore import load
        lender = load("lender", None)
        mallory_loan = _hostile_loan(d, lender)
        loans = [x["loan"] for x in apis[0].get("/v1/loans")["loans"]]
        yield {"url": members[1].api, "members": members, "loans": loans,
               "mallory_loan": mallory_loan, "lender": lender.address}
    finally:
        c.down()
        if saved is None:
            os.environ.pop("LENDNET_WALLETS", None)
        else:
            os.environ["LENDNET_WALLETS"] = saved


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """A page that records every console error, uncaught exception and dialog."""

    def __init__(self, browser):
        self.ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        self.page = self.ctx.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error"
                     and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

        def dialog(dlg):
            self.problems.append(f"dialog: {dlg.message}")
            dlg.dismiss()
        self.page.on("dialog", dialog)

    def open(self, url: str, shot: str | None = None):
        answer = self.page.goto(url, wait_until="load")
        assert answer is not None and answer.status == 200, (url, answer and answer.status)
        if SHOTS and shot:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{shot}.png"), full_page=False)
        return answer

    def close(self):
        self.ctx.close()


@pytest.fixture
def tab(browser):
    t = Tab(browser)
    yield t
    t.close()


def test_every_main_page_loads_without_console_errors(net, tab):
    url = net["url"]
    loan = net["loans"][0]
    status = NodeClient(url).status()
    block = NodeClient(url).get(f"/v1/blocks/{status['height']}")
    for path, shot in (("/", "blocks"), (f"/block/{status['height']}", None),
                       (f"/loan/{loan}", "loan"), (f"/loan/{net['mallory_loan']}", None),
                       (f"/account/{net['lender']}", "account"), ("/offers", "offers"),
                       ("/applications", "applications"), ("/loans", None),
                       ("/validators", "validators"), ("/portfolio", "portfolio")):
        tab.open(url + path, shot)
        assert tab.page.locator("h1").count() == 1, path
    # a transaction page: status and the events it caused
    tx = next(t for t in _recent_txs(url, status["height"]))
    tab.open(f"{url}/tx/{tx}", "transaction")
    assert "committed" in tab.page.locator("dl").first.inner_text()
    assert block["certificate"]["signers"]
    assert tab.problems == []


def _recent_txs(url: str, top: int):
    api = NodeClient(url)
    for h in range(top, 0, -1):
        yield from api.get(f"/v1/blocks/{h}")["txs"]


def test_a_loans_page_shows_the_schedule_the_cli_shows(net, tab):
    for loan in (net["loans"][0], net["mallory_loan"]):
        r = CliRunner().invoke(main, ["borrower", "schedule", "--loan", loan, "--json"],
                               env={"LENDNET_NODE": net["url"]})
        assert r.exit_code == 0, r.output
        cli = json.loads(r.output[r.output.index("{"):])["schedule"]
        tab.open(f"{net['url']}/loan/{loan}")
        cells = tab.page.locator("#schedule tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")
        assert [c[:5] for c in cells] == [
            [str(x["n"]), when(x["due"]), money(x["principal"]), money(x["interest"]),
             money(x["total"])] for x in cli]
    # the repaid loan shows every instalment paid, and when
    repaid = next(lo for lo in net["loans"]
                  if NodeClient(net["url"]).get(f"/v1/loans/{lo}")["status"] == "repaid")
    tab.open(f"{net['url']}/loan/{repaid}")
    states = tab.page.locator("#schedule tbody tr td:nth-child(6)").all_inner_texts()
    assert states and set(states) == {"paid"}
    assert tab.page.locator("#schedule tbody tr td:nth-child(8) a").count() >= 1
    assert tab.problems == []


def test_search_finds_a_loan_an_account_a_transaction_and_a_block(net, tab):
    loan = net["loans"][0]
    api = NodeClient(net["url"])
    app = api.get(f"/v1/loans/{loan}")["application"]
    records = {x["application"] for x in api.get("/v1/applications")["applications"]} | {
        x["offer"] for x in api.get("/v1/offers")["offers"]}
    tx = next(t for t in _recent_txs(net["url"], api.status()["height"]) if t not in records)
    tab.open(net["url"] + "/")
    for query, want in ((loan, f"/loan/{loan}"), (net["lender"], f"/account/{net['lender']}"),
                        (app, f"/application/{app}"), (tx, f"/tx/{tx}"), ("3", "/block/3")):
        box = tab.page.get_by_role("searchbox")
        box.fill(query)
        box.press("Enter")
        tab.page.wait_for_url("**" + want)
        assert query in tab.page.locator("h1").inner_text()
    assert tab.problems == []


def test_the_live_feed_shows_a_new_block(net, tab):
    tab.open(net["url"] + "/live", "live")
    first = tab.page.locator("#feed li.block").first
    first.wait_for(timeout=15_000)                      # the demo chain blocks every 250 ms
    assert first.inner_text().startswith("block ")
    tab.page.locator("#feed li.block").nth(2).wait_for(timeout=15_000)
    if SHOTS:
        tab.page.screenshot(path=str(Path(SHOTS) / "live.png"))
    assert tab.page.locator("#feed-state").inner_text() == "connected"
    assert tab.problems == []


def test_hostile_text_from_a_transaction_is_shown_not_run(net, tab):
    api = NodeClient(net["url"])
    loan = api.get(f"/v1/loans/{net['mallory_loan']}")
    tab.open(f"{net['url']}/application/{loan['application']}")
    assert HOSTILE_PURPOSE in tab.page.locator("dl").first.inner_text()
    tab.open(f"{net['url']}/loan/{net['mallory_loan']}")
    assert HOSTILE_ASSET in tab.page.inner_text("body")
    tab.open(f"{net['url']}/applications")
    assert HOSTILE_PURPOSE in tab.page.inner_text("body")
    asset = loan["collateral"][0]
    tab.open(f"{net['url']}/asset/{asset.split('/')[0]}%2F{asset.split('/')[1]}")
    assert tab.page.locator("h1").inner_text().endswith(HOSTILE_ASSET)
    assert tab.page.locator("img").count() == 0          # no element came from the text
    assert tab.page.locator("script").count() == 0
    assert tab.problems == []                             # and no alert() ran


def test_bad_input_gets_an_html_error_that_echoes_it_escaped(net, tab):
    import urllib.error
    import urllib.parse
    import urllib.request
    for path, status in ((f"/search?q={urllib.parse.quote(HOSTILE_PURPOSE)}", 404),
                         ("/loan/nope", 400), ("/block/99999999", 404),
                         ("/tx/" + "ab" * 32, 404), ("/offers?active=maybe", 400)):
        try:
            urllib.request.urlopen(net["url"] + path, timeout=10)
            raise AssertionError(f"{path} answered 200")
        except urllib.error.HTTPError as e:
            body = e.read().decode()
            assert e.code == status and e.headers["Content-Type"].startswith("text/html")
            assert "<script>" not in body, path
    tab.page.goto(f"{net['url']}/search?q={urllib.parse.quote(HOSTILE_PURPOSE)}")
    assert HOSTILE_PURPOSE in tab.page.locator("main").inner_text()
    assert tab.page.locator("script").count() == 0
    assert [p for p in tab.problems if "404" not in p] == []     # the page's own status
