"""End to end: a 4-node cluster of real processes on 127.0.0.1, driven through its API.

One cluster serves the module (starting it costs seconds); each test leaves it whole,
and the fixture stops every process it started even when a test fails.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from lendnet.consensus import messages as M
from lendnet.ledger import codec, keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon.api import TX_STATUS
from lendnet.node.daemon.client import ApiError, NodeClient, http_json
from lendnet.node.harness.cluster import Cluster
from lendnet.node.daemon.transport import DOMAIN, HandshakeError, client_handshake
from lendnet.node.harness.workload import LIMITS, OFFER
from .waiting import same_chain

CHAIN = "lendnet-dev"
ALICE, BOB = keys.Keypair.from_name("alice"), keys.Keypair.from_name("bob")
LENDER, BORROWER = keys.Keypair.from_name("lender"), keys.Keypair.from_name("borrower")


class Wallet:
    """Signs with one key and keeps its nonce, as a wallet would."""

    def __init__(self, kp, client: NodeClient):
        self.kp = kp
        self.nonce = client.account(kp.address)["nonce"]

    def sign(self, kind: str, **fields) -> bytes:
        raw = txm.sign(txm.build(self.kp, CHAIN, kind, self.nonce, **fields), [self.kp]).raw
        self.nonce += 1
        return raw


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        members = c.up(4, wait_s=60)
        yield c, members, [NodeClient(m.api) for m in members]
    finally:
        c.down()


def test_a_loan_through_one_node_is_committed_identically_on_all_four(cluster):
    _, members, clients = cluster
    api = clients[0]
    lender, borrower = Wallet(LENDER, api), Wallet(BORROWER, api)
    h32 = hashlib.sha256(b"docs").digest()
    first = [api.submit(lender.sign("register_lender", profile_hash=h32)),
             api.submit(lender.sign("publish_offer", amount=5_000_000, **OFFER)),
             api.submit(borrower.sign("register_borrower", profile_hash=h32, docs_hash=h32))]
    app_tx = borrower.sign("apply", amount=100_000, purpose="a sewing machine", term=6,
                           period="monthly", method="annuity", product="business", grace=0,
                           docs_hash=h32, **LIMITS)
    first.append(api.submit(app_tx))
    for h in first:
        st = api.wait_committed(h)
        assert st["status"] == "committed", st
    offer_id, app_id = first[1], first[3]
    fund = api.submit(lender.sign("fund", application=app_id, offer=offer_id, accept=[]))
    st = api.wait_committed(fund)
    assert st["status"] == "committed", st
    app = api.get(f"/v1/applications/{app_id}")
    assert app["status"] == "funded"
    loan = api.get(f"/v1/loans/{app['loan']}")
    assert loan["status"] == "active" and loan["borrower"] == BORROWER.address
    repay = api.submit(borrower.sign("repay", loan=app["loan"], amount=20_000))
    assert api.wait_committed(repay)["status"] == "committed"
    # Read back on every node: the same transactions at the same heights, same chain.
    where = [cl.wait_committed(repay) for cl in clients]
    assert len({(w["height"], w["index"]) for w in where}) == 1
    same_chain(clients, where[0]["height"])
    loans = [cl.get(f"/v1/loans/{app['loan']}") for cl in clients]
    assert all(x == loans[0] for x in loans)
    score = clients[3].get(f"/v1/scores/{BORROWER.address}")
    assert 300 <= score["score"] <= 850 and "components" in score


def test_bad_transactions_get_clear_errors_and_change_nothing(cluster):
    _, _, clients = cluster
    api = clients[1]
    alice = Wallet(ALICE, api)
    before = api.account(ALICE.address)
    good = alice.sign("transfer", to=BOB.address, amount=1)
    forged = bytearray(good)
    forged[-5] ^= 1                                     # inside the signature
    cases = {                                           # body -> the code a program sees
        "not hex": ({"tx": "zz"}, "malformed"),
        "not a transaction": ({"tx": b"\x01\x02".hex()}, "malformed"),
        "forged signature": ({"tx": bytes(forged).hex()}, "bad-signature"),
        "wrong shape": ({"transaction": good.hex()}, "bad-request"),
    }
    for name, (body, code) in cases.items():
        status, answer = http_json(api.url + "/v1/tx", 5, body)
        assert 400 <= status < 500 and answer["error"], (name, status, answer)
        assert answer["code"] == code, (name, answer)
    status, answer = http_json(api.url + "/v1/tx", 5, {"tx": "00" * 200_000})
    assert status == 413 and answer["code"] == "too-large", answer
    h = api.submit(good)
    st = api.wait_committed(h)
    assert st["status"] == "committed" and st["fee"] > 0      # GET /v1/tx shows the fee
    with pytest.raises(ApiError) as e:                  # the same transaction again
        api.submit(good)
    assert e.value.status == 422 and e.value.code == "nonce-used", e.value
    after = api.account(ALICE.address)
    assert after["balance"] == before["balance"] - 1 - st["fee"]
    assert after["nonce"] == before["nonce"] + 1
    sup = api.get("/v1/supply")
    assert sup["total"] == sup["supply"] and sup["fees"] >= st["fee"]
    for path in ("/v1/blocks/nope", "/v1/accounts/xyz", "/v1/tx/123", "/v1/loans/...",
                 "/v1/no-such-route"):
        status, answer = http_json(api.url + path, 5)
        assert status in (400, 404) and answer["error"], path
        assert answer["code"] == {400: "bad-request", 404: "not-found"}[status], answer


def test_listings_are_pages_from_a_cursor_and_any_malformed_body_is_a_400(cluster):
    _, _, clients = cluster
    api = clients[2]
    pager = Wallet(keys.Keypair.from_name("pager"), api)
    h32 = hashlib.sha256(b"pager").digest()
    paid = api.submit(Wallet(ALICE, api).sign("transfer", to=pager.kp.address, amount=10_000))
    assert api.wait_committed(paid)["status"] == "committed"      # for its fees
    sent = [api.submit(pager.sign("register_borrower", profile_hash=h32, docs_hash=h32))]
    sent += [api.submit(pager.sign("apply", amount=10_000 + i, purpose=f"page {i}", term=3,
                                   period="monthly", method="annuity", product="business",
                                   grace=0, docs_hash=h32, **LIMITS)) for i in range(3)]
    for h in sent:
        assert api.wait_committed(h)["status"] == "committed"
    mine = f"/v1/applications?borrower={pager.kp.address}"
    whole = api.get(mine)
    assert whole["next"] is None and sorted(sent[1:]) == [a["application"]
                                                          for a in whole["applications"]]
    paged, after = [], None
    for _ in range(10):
        page = api.get(mine + "&limit=1" + (f"&after={after}" if after else ""))
        assert len(page["applications"]) <= 1
        paged += page["applications"]
        after = page["next"]
        if after is None:
            break
    assert paged == whole["applications"]
    status, answer = http_json(api.url + "/v1/applications?after=nope", 5)
    assert status == 400 and answer["code"] == "bad-request", answer
    # JSON nests by recursion: however deep the body, the answer is a 400 with a reason
    req = urllib.request.Request(api.url + "/v1/tx", data=b"[" * 200_000,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 413 or e.value.code == 400, e.value
    req = urllib.request.Request(api.url + "/v1/txs", data=b"[" * 100_000,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.loads(e.value.read())["code"] == "bad-request"
    # a full node's catch-up answer is bounded by the bytes it will decode
    got = codec.decode(urllib.request.urlopen(api.url + "/v1/sync/1?count=256",
                                              timeout=10).read(), M.MAX_MSG_BYTES)
    assert got and [b["header"]["height"] for b, _ in got] == list(range(1, len(got) + 1))


def test_a_batch_of_transactions_is_judged_one_by_one(cluster):
    _, _, clients = cluster
    api = clients[0]
    carol = Wallet(keys.Keypair.from_name("carol"), api)
    first, second = carol.sign("transfer", to=BOB.address, amount=2), \
        carol.sign("transfer", to=BOB.address, amount=3)
    forged = bytearray(carol.sign("transfer", to=BOB.address, amount=4))
    forged[-5] ^= 1
    status, answer = http_json(api.url + "/v1/txs", 5, {"txs": [
        first.hex(), "zz", bytes(forged).hex(), second.hex(), first.hex()]})
    assert status == 200 and answer["accepted"] == 2, answer
    # each answered as POST /v1/tx would: its HTTP status, and a refusal's code
    assert [(r["http"], r.get("code")) for r in answer["results"]] == [
        (202, None), (400, "malformed"), (400, "bad-signature"), (202, None),
        (422, "duplicate")], answer
    assert "hex" in answer["results"][1]["error"]
    assert "signature" in answer["results"][2]["error"]
    # the accepted two commit, in nonce order, and reach every node by gossip frames
    assert api.wait_committed(answer["results"][3]["hash"])["status"] == "committed"
    same_chain(clients, api.status()["height"])
    for body in ({"txs": []}, {"txs": "00"}, {"tx": first.hex()},
                 {"txs": ["00"] * 2_001}):
        status, answer = http_json(api.url + "/v1/txs", 5, body)
        assert status == 400 and answer["error"], (body, answer)
    status, answer = http_json(api.url + "/v1/txs", 5, {"txs": ["00" * 600_000]})
    assert status == 413, answer


async def _p2p(url: str, kp, frames: list[bytes], raw: bool = False) -> tuple[str, list]:
    """Handshake as `kp`, send frames (sealed under the link's key, or `raw` as they
    are); what the node did with the link."""
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url + "/p2p") as ws:
            try:
                _, session = await client_handshake(ws, CHAIN, kp)
            except HandshakeError as e:
                return "refused at hello", [str(e)]
            try:
                for f in frames:
                    await ws.send_bytes(f if raw else session.seal(f))
                msg = await ws.receive(timeout=2)
            except TimeoutError:
                return "linked", ["open"]
            except ConnectionError:                  # the node cut us off mid-frame
                return "linked", ["CLOSE"]
            return "linked", [msg.type.name]


def test_bad_peer_frames_are_refused_and_the_node_keeps_going(cluster):
    _, members, clients = cluster
    api = clients[2]
    st0 = http_json(api.url + "/v1/status")[1]
    # Garbage after a valid handshake (it does not even authenticate): the link is
    # closed and the key banned, so it cannot come straight back.
    garbage = keys.Keypair.from_name("stranger-garbage")
    state, got = asyncio.run(_p2p(api.url, garbage, [b"\xc1garbage"], raw=True))
    assert state == "linked" and got == ["CLOSE"]
    state, got = asyncio.run(_p2p(api.url, garbage, []))
    assert state == "refused at hello" and "banned" in got[0], got
    # A consensus message signed by a non-validator: counted and dropped (one strike).
    forger = keys.Keypair.from_name("stranger-forger")
    body = {"t": M.PREPARE, "v": 0, "h": st0["height"] + 1, "d": b"\x00" * 32, "r": 1}
    forged = M.encode(M.sign(CHAIN, forger, body))
    asyncio.run(_p2p(api.url, forger, [codec.encode(["msg", forged])]))
    # A well-sealed gossip frame that is not a list of transactions: banned.
    asyncio.run(_p2p(api.url, keys.Keypair.from_name("stranger-txs"),
                     [codec.encode(["txs", b"\x01"])]))
    # A handshake whose proof is for another transcript: refused.
    async def bad_handshake():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(api.url + "/p2p") as ws:
                await ws.send_bytes(codec.encode({"chain": CHAIN, "pubkey": ALICE.pubkey,
                                                  "nonce": os.urandom(32),
                                                  "eph": os.urandom(32)}))
                await ws.receive(timeout=5)
                await ws.send_bytes(codec.encode({"sig": ALICE.sign(DOMAIN + b"replayed")}))
                return (await ws.receive(timeout=5)).type.name
    assert asyncio.run(bad_handshake()) == "CLOSE"
    text = _metrics(api.url)
    assert _metric(text, "lendnet_p2p_bad_frames_total") >= 1
    assert _metric(text, "lendnet_p2p_frames_unauthentic_total") >= 1
    assert _metric(text, "lendnet_p2p_peers_banned_total") >= 2
    assert _metric(text, "lendnet_p2p_links_refused_banned_total") >= 1
    assert _metric(text, "lendnet_p2p_handshakes_failed_total") >= 1
    assert _metric(text, "lendnet_consensus_messages_rejected_total") >= 1
    assert http_json(api.url + "/v1/status")[1]["banned_peers"] >= 2
    # Still committing with the others.
    same_chain(clients, st0["height"] + 2)


def test_a_peer_gossiping_bad_signatures_is_banned_after_a_few(cluster):
    # 2,000 badly signed transactions in one frame: the node checks a few, bans the
    # sender, closes its link and refuses it on reconnecting, and does not check the rest.
    _, _, clients = cluster
    api = clients[1]
    spammer = keys.Keypair.from_name("stranger-spammer")
    alice = Wallet(ALICE, api)
    bad = []
    for i in range(2_000):
        raw = bytearray(txm.sign(txm.build(ALICE, CHAIN, "transfer", alice.nonce + i,
                                           to=BOB.address, amount=1), [ALICE]).raw)
        raw[-5] ^= 1
        bad.append(bytes(raw))
    before = _metric(_metrics(api.url), "lendnet_signatures_verified_total")
    state, got = asyncio.run(_p2p(api.url, spammer, [codec.encode(["txs", codec.encode(bad)])]))
    assert state == "linked" and got == ["CLOSE"], got
    state, got = asyncio.run(_p2p(api.url, spammer, []))
    assert state == "refused at hello" and "banned" in got[0], got
    text = _metrics(api.url)
    assert _metric(text, "lendnet_signatures_verified_total") - before < 200
    assert _metric(text, "lendnet_p2p_peers_banned_total") >= 1
    assert _metric(text, "lendnet_p2p_peer_strikes_total") >= 3
    status = api.status()
    assert status["banned_peers"] >= 1 and status["mempool"] == 0, status


def _metrics(url: str) -> str:
    import urllib.request
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return r.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _load(api: NodeClient, wallet: Wallet, n: int) -> list[str]:
    return [api.submit(wallet.sign("transfer", to=BOB.address, amount=1)) for _ in range(n)]


def test_a_validator_killed_mid_load_catches_up_after_restart(cluster):
    c, members, clients = cluster
    api = clients[0]
    carol = Wallet(keys.Keypair.from_name("carol"), api)
    sent = _load(api, carol, 20)
    c.kill_member("node3", signal.SIGKILL)
    sent += _load(api, carol, 40)                      # the other three keep committing
    last = api.wait_committed(sent[-1])
    assert last["status"] == "committed"
    c.start_member("node3")
    clients[3].wait_height(last["height"], timeout=60)
    same_chain(clients, last["height"])
    assert clients[3].wait_committed(sent[-1])["height"] == last["height"]


def test_killing_the_primary_changes_the_view_and_commits_resume(cluster):
    c, members, clients = cluster
    st = clients[1].status()
    primary = st["primary"]
    survivors = [cl for i, cl in enumerate(clients) if i != primary]
    api = survivors[0]
    dave = Wallet(keys.Keypair.from_name("dave"), api)
    c.kill_member(f"node{primary}", signal.SIGKILL)
    t0 = time.monotonic()
    h = api.submit(dave.sign("transfer", to=BOB.address, amount=5))
    where = api.wait_committed(h, timeout=60)
    assert where["status"] == "committed"
    resumed = time.monotonic() - t0
    views = [cl.status()["view"] for cl in survivors]
    assert min(views) > st["view"], views
    assert resumed < 30, resumed
    c.start_member(f"node{primary}")
    same_chain(clients, where["height"] + 1, timeout=60)


def test_oversized_peer_frame_closes_the_link(cluster):
    _, _, clients = cluster
    from lendnet.node.daemon.transport import MAX_FRAME
    state, got = asyncio.run(_p2p(clients[2].url, keys.Keypair.from_name("stranger-big"),
                                  [b"\x00" * (MAX_FRAME + 1)], raw=True))
    assert state == "linked" and got == ["CLOSE"]
    clients[2].wait_height(clients[2].status()["height"] + 1)


def test_event_stream_and_openapi(cluster):
    _, _, clients = cluster
    api = clients[0]
    spec = api.get("/openapi.json")
    assert {"/v1/tx", "/v1/tx/{hash}", "/v1/events", "/v1/loans/{id}"} <= set(spec["paths"])
    bob = Wallet(BOB, api)

    async def watch() -> list[dict]:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(api.url + "/v1/events") as ws:
                h = api.submit(bob.sign("transfer", to=ALICE.address, amount=3))
                seen = []
                while True:
                    event = await ws.receive_json(timeout=30)
                    seen.append(event)
                    if event["type"] == "block" and event["txs"]:
                        block = api.get(f"/v1/blocks/{event['height']}")
                        if h in block["txs"]:
                            return seen
    events = asyncio.run(watch())
    assert all(e["type"] == "block" and len(e["hash"]) == 64 for e in events)


def test_a_new_full_node_syncs_the_chain_and_follows_it(cluster, tmp_path):
    import subprocess
    import sys
    from lendnet.node.daemon import home as H
    c, members, clients = cluster
    home = tmp_path / "full"
    genesis = H.load_genesis(members[0].home)
    H.init_home(home, H.NodeConfig("127.0.0.1", 0, [f"127.0.0.1:{m.port}" for m in members]),
                genesis=genesis)
    proc = subprocess.Popen([sys.executable, "-m", "lendnet.cli", "node", "start", "--home",
                             str(home)], stdout=subprocess.DEVNULL,
                            stderr=open(home / "node.log", "wb"))
    try:
        # Its port is chosen at start: read it from the log line.
        deadline = time.monotonic() + 20
        url = None
        while url is None and time.monotonic() < deadline:
            for line in (home / "node.log").read_text().splitlines():
                if "api http://" in line:
                    url = line.rsplit("api ", 1)[1].strip()
            time.sleep(0.1)
        assert url, (home / "node.log").read_text()
        full = NodeClient(url)
        top = clients[0].status()["height"]
        full.wait_height(top, timeout=60)
        assert full.status()["validator"] is None
        same_chain([clients[0], full], top)
        # And it keeps up: a transaction committed by the validators reaches it.
        alice = Wallet(ALICE, clients[1])
        h = clients[1].submit(alice.sign("transfer", to=BOB.address, amount=7))
        where = full.wait_committed(h, timeout=30)
        assert where == clients[1].wait_committed(h)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_primary_whose_proposal_is_refused_is_replaced_and_it_is_counted(cluster):
    # The view's primary (its key read from its home) proposes a block stamped an hour
    # ahead: every replica refuses it as `time-ahead`, counts and logs the refusal, and,
    # the chain being otherwise idle, changes view after the timeout all the same.
    from lendnet.node.daemon.home import load_key
    c, members, clients = cluster
    st = clients[1].status()
    v, primary = st["view"], st["primary"]
    pkey = load_key(members[primary].home)
    h = st["height"] + 30
    header = {"height": h, "prev": bytes(32), "time": int(time.time()) + 3_600,
              "proposer": primary, "txs_root": M.txs_root([]), "exec_height": 0,
              "exec_root": bytes(32)}
    prop = M.with_txs(M.sign(CHAIN, pkey, {"t": M.PROPOSE, "v": v, "h": h, "header": header,
                                           "r": primary}), [])
    frame = codec.encode(["msg", M.encode(prop)])
    replicas = [i for i in range(4) if i != primary]
    for i in replicas:
        asyncio.run(_p2p(clients[i].url, keys.Keypair.from_name("stranger"), [frame]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and \
            min(clients[i].status()["view"] for i in replicas) <= v:
        time.sleep(0.1)
    for i in replicas:
        st_i = clients[i].status()
        assert st_i["view"] > v and st_i["refusals"].get("time-ahead", 0) >= 1, st_i
        text = _metrics(clients[i].url)
        assert _metric(text, 'lendnet_proposals_refused_total{reason="time-ahead"}') >= 1
        log = (members[i].home / "node.log").read_text()
        assert f"refused the proposal for height {h} in view {v} from validator " \
               f"{primary}: time-ahead" in log
        assert f"view change {v} -> {v + 1}: " in log and f"height {h}" in log
    top = max(cl.status()["height"] for cl in clients)
    same_chain(clients, top + 2, timeout=60)


def _big_calls(count: int, senders: int = 10) -> list[bytes]:
    """`count` calls of about 29 KiB from `senders` keys (fund them first: a key
    without money cannot pay their fees, so none would be admitted): each will fail,
    and pay for its bytes."""
    contract = keys.Keypair.from_name("no-such-contract").address
    args = [bytes([i]) * 4096 for i in range(7)]
    out = []
    for i in range(count):
        kp = keys.Keypair.from_name(f"stuffer-{i % senders}")
        body = txm.build(kp, CHAIN, "call", i // senders, contract=contract, args=args,
                         amount=0, gas=1_000)
        out.append(txm.sign(body, [kp]).raw)
    return out


def test_a_mempool_of_big_transactions_cannot_stop_the_chain(cluster):
    # 500 transactions of ~29 KiB (about 14 MiB: once over the message limit as one
    # block) reach the three replicas while the primary is paused. The view changes,
    # blocks are cut by bytes, and an honest transfer still commits.
    c, members, clients = cluster
    primary = clients[1].status()["primary"]
    others = [i for i in range(4) if i != primary]
    big = _big_calls(500)
    assert min(map(len, big)) > 28_000
    alice = Wallet(ALICE, clients[0])
    funded = [clients[0].submit(alice.sign("transfer", amount=100_000, to=keys.Keypair.from_name(
        f"stuffer-{i}").address)) for i in range(10)]
    for h in funded:
        assert clients[0].wait_committed(h)["status"] == "committed"
    c.kill_member(f"node{primary}", signal.SIGSTOP)
    try:
        for k in range(0, len(big), 16):
            url = members[others[k // 16 % 3]].api + "/v1/txs"
            status, body = http_json(url, 30, {"txs": [raw.hex() for raw in big[k:k + 16]]})
            assert status == 200 and body["accepted"] == len(big[k:k + 16]), body
        api = clients[others[0]]
        h = api.submit(Wallet(keys.Keypair.from_name("carol"), api).sign(
            "transfer", to=BOB.address, amount=7))
        assert api.wait_committed(h, timeout=90)["status"] == "committed"
    finally:
        c.kill_member(f"node{primary}", signal.SIGCONT)
    # Every big call made it into a block (failed: no such contract), none too big.
    last = [api.wait_committed(txm.parse(raw).id, timeout=90) for raw in big[-10:]]
    assert all(st["status"] == "failed" for st in last), last
    top = max(cl.status()["height"] for cl in clients)
    same_chain(clients, top, timeout=60)
    assert all(cl.status()["view"] > 0 for cl in clients)
    heights = {api.tx(txm.parse(raw).id)["height"] for raw in big}
    sizes = [api.get(f"/v1/blocks/{h}")["txs_bytes"] for h in sorted(heights)]
    assert max(sizes) <= 1 << 20 and len(heights) >= 14, (heights, sizes)


def test_down_stops_every_node_cleanly(cluster):
    c, members, _ = cluster
    stopped = c.down()
    assert sorted(stopped) == [m.name for m in members]
    for m in members:
        assert not m.alive()
        assert "node stopped at height" in Cluster.log_tail(m, 5), Cluster.log_tail(m, 5)



def test_every_refusal_code_has_an_http_status():
    assert set(TX_STATUS) == set(txm.CODES)
