"""The API's description (`/openapi.json`) is valid OpenAPI and tells the truth about a real
node: schemathesis, driven by it against a node on 127.0.0.1, finds no server error, no
request the description calls valid that the node refuses, no request it calls invalid
that the node takes, and no answer (errors included) whose status or body it does not
describe.

The fuzzer's run is bounded (examples per operation, a timeout); LENDNET_FUZZ_EXAMPLES and
LENDNET_FUZZ_SEED make it longer or different (docs/NODE.md says how to run it by hand).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lendnet.ledger import guarantees, keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon import home as H
from lendnet.node.daemon.api import OPENAPI
from lendnet.node.daemon.client import NodeClient
from lendnet.node.harness.cluster import free_ports

from .waiting import stop

openapi_spec_validator = pytest.importorskip("openapi_spec_validator")
pytest.importorskip("schemathesis")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection,positive_data_acceptance")
EXAMPLES = int(os.environ.get("LENDNET_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("LENDNET_FUZZ_SEED", "17"))
FUZZ_TIMEOUT = 150                                   # seconds: a hard bound on one run
CHAIN = "lendnet-dev"


def test_the_description_is_valid_openapi():
    from openapi_spec_validator.validation import OpenAPIV30SpecValidator
    errors = [e.message for e in OpenAPIV30SpecValidator(OPENAPI).iter_errors()]
    assert errors == []


def test_every_api_route_is_described_and_every_described_path_served(tmp_path):
    from lendnet.node.daemon.api import build_app

    class Stub:                              # build_app reads these while building
        node = None
        cfg = H.NodeConfig()
        metrics = type("M", (), {"rate_limited": None})()
        subscribers: set = set()             # the explorer's event log joins these
    app = build_app(Stub())
    served = {re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", r.resource.canonical)
              for r in app.router.routes() if r.method != "HEAD"}
    described = set(OPENAPI["paths"])
    assert described <= served
    assert {p for p in served if p.startswith("/v1/")} <= described


def test_every_operation_answers_429_with_retry_after_and_errors_have_one_shape():
    for path, ops in OPENAPI["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert "Retry-After" in responses["429"]["headers"], (method, path)
            for status, r in responses.items():
                if status.startswith(("4", "5")):
                    schema = r["content"]["application/json"]["schema"]
                    schema = OPENAPI["components"]["schemas"]["Error"] if "$ref" in schema \
                        else schema
                    # error and code on every one; a few say more (410: first_block)
                    assert schema["required"][:2] == ["error", "code"], (method, path, status)


# ---- a real node, seeded with a loan, fuzzed ------------------------------------------

class _Sender:
    def __init__(self, api: NodeClient):
        self.api = api
        self.nonces: dict[str, int] = {}

    def send(self, kp, kind: str, **fields) -> str:
        nonce = self.nonces.get(kp.address, self.api.account(kp.address)["nonce"])
        raw = txm.sign(txm.build(kp, CHAIN, kind, nonce, **fields), [kp]).raw
        self.nonces[kp.address] = nonce + 1
        h = self.api.submit(raw)
        got = self.api.wait_committed(h, 30)
        assert got["status"] == "committed", (kind, got)
        return h


def _seed(api: NodeClient) -> dict:
    """An offer, an application, a collateral asset and a funded loan: records for the
    fuzzer's reads to find (through the description's links), not only 404s."""
    s = _Sender(api)
    lender, borrower = keys.Keypair.from_name("lender"), keys.Keypair.from_name("borrower")
    h32 = hashlib.sha256(b"openapi").digest()
    s.send(lender, "register_lender", profile_hash=h32)
    offer = s.send(lender, "publish_offer", amount=300_000, products=["business"],
                   methods=["annuity"], periods=["weekly"], min_term=1, max_term=12,
                   max_grace=0, tiers=[[300, 1800, 200_000]], late_fee_bps=500,
                   tolerance_days=0, default_days=60, collateral_bps=0,
                   origination_fee_bps=100, penalty_bps=0)
    s.send(borrower, "register_borrower", profile_hash=h32, docs_hash=h32)
    app = s.send(borrower, "apply", amount=50_000, purpose="stock", term=4, period="weekly",
                 method="annuity", product="business", grace=0, docs_hash=h32,
                 max_rate_bps=1800, max_late_fee_bps=500, min_default_days=60,
                 max_penalty_bps=0, max_origination_fee_bps=100)
    s.send(borrower, "register_collateral", asset="goats", description_hash=h32,
           value=10_000)
    guarantee = s.send(lender, "guarantee", to=app, amount=10_000)
    s.send(lender, "fund", application=app, offer=offer, accept=[])
    loan = api.get(f"/v1/applications/{app}")["loan"]
    # a second application, filling in slices: a pool for GET /v1/pools (ledger/pools.py)
    pooled = s.send(borrower, "apply", amount=20_000, purpose="feed", term=4,
                    period="weekly", method="annuity", product="business", grace=0,
                    docs_hash=h32, max_rate_bps=1800, max_late_fee_bps=500,
                    min_default_days=60, max_penalty_bps=0, max_origination_fee_bps=100)
    s.send(lender, "fund_share", application=pooled, offer=offer, amount=5_000)
    return {"offer": offer, "application": app, "loan": loan,
            "asset": f"{borrower.address}/goats", "pooled": pooled,
            "guarantee": guarantees.address_of(bytes.fromhex(guarantee))}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = tmp_path_factory.mktemp("openapi-node")
    port = free_ports(1)[0]
    H.init_home(home, H.NodeConfig(port=port))          # 127.0.0.1: not rate limited
    log = open(home / "node.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "node", "start", "--home",
                             str(home)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        api = NodeClient(f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (home / "node.log").read_text()
            try:
                api.wait_height(1, timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield api, _seed(api), home
    finally:
        stop(proc)
        log.close()


def test_the_seeded_records_match_the_description(node):
    """The same records the fuzzer reads, checked against the description's 200 schemas
    by hand (a link the fuzzer does not follow still has its record checked)."""
    from openapi_schema_validator import OAS30Validator, validate
    api, ids, _ = node
    for path, op_id in ((f"/v1/loans/{ids['loan']}", "get_loan"),
                        (f"/v1/offers/{ids['offer']}", "get_offer"),
                        (f"/v1/applications/{ids['application']}", "get_application"),
                        (f"/v1/assets/{ids['asset']}", "get_asset"),
                        (f"/v1/quote?application={ids['application']}&offer={ids['offer']}",
                         "get_quote"),
                        (f"/v1/pools/{ids['pooled']}", "get_pool"),
                        ("/v1/loans?limit=5", "list_loans"), ("/v1/portfolio", "get_portfolio"),
                        (f"/v1/guarantees/{ids['guarantee']}", "get_guarantee"),
                        (f"/v1/guarantees?to={ids['application']}", "list_guarantees"),
                        ("/v1/status", "get_status"), ("/v1/lending", "get_lending")):
        op = next(o for ops in OPENAPI["paths"].values() for o in ops.values()
                  if o["operationId"] == op_id)
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        validate(api.get(path), schema, cls=OAS30Validator)
    got = api.get(f"/v1/guarantees?loan={ids['loan']}")["guarantees"]
    assert [(g["guarantee"], g["status"], g["held"]) for g in got] == [
        (ids["guarantee"], "held", 10_000)]
    assert api.get(f"/v1/loans/{ids['loan']}")["guarantees"][0]["guarantee"] == \
        ids["guarantee"]


def test_schemathesis_finds_nothing_against_a_real_node(node, tmp_path):
    api, _, home = node
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
           f"{api.url}/openapi.json", "--checks", CHECKS,
           "--exclude-path", "/v1/events",         # a WebSocket: nothing to fuzz over HTTP
           "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--request-timeout", "10", "--no-color", "--generation-database", "none"]
    started = time.monotonic()
    try:
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                             timeout=FUZZ_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"schemathesis ran over {FUZZ_TIMEOUT} s: {e.stdout}")
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated, (\d+) (?:passed|found)", out)
    print(f"schemathesis: {summary.group(0) if summary else '?'} in {took:.0f} s, "
          f"seed {SEED}, {EXAMPLES} examples per operation")
    assert run.returncode == 0, out[-20_000:]
    assert summary and "failures" not in out.splitlines()[-1], out[-5_000:]
    # and the node survived it
    assert api.status()["height"] >= 1, (home / "node.log").read_text()[-5_000:]
