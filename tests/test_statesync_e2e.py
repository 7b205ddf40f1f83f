"""End to end: a 4-validator cluster of real processes on the fast clock, a snapshot every
few blocks; a new full node started with `lendnet node start --state-sync` takes a
validator's snapshot instead of replaying the chain, reaches the cluster's head with the
same state root, follows it, and restarts from its own store."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lendnet.ledger import keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon import home as H
from lendnet.node.daemon.client import NodeClient
from lendnet.node.daemon.verify import verify_chain
from lendnet.node.harness.cluster import Cluster
from lendnet.node.harness.workload import LIMITS, OFFER

from .waiting import same_chain, stop, until

CHAIN = "lendnet-dev"
EVERY = 8
PARAMS = {"time_scale": H.FAST_CLOCK, "empty_block_ms": 100, "snapshot_every": EVERY}


def _sign(kp, api: NodeClient, nonces: dict, kind: str, **fields) -> bytes:
    n = nonces.setdefault(kp.address, api.account(kp.address)["nonce"])
    nonces[kp.address] = n + 1
    return txm.sign(txm.build(kp, CHAIN, kind, n, **fields), [kp]).raw


def _start(home: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "lendnet.cli", "node", "start",
                                 "--home", str(home), "--state-sync"],
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _api(log: Path, after: int) -> str | None:
    """The API address the node's log names (its port is chosen at start), in the log
    written after byte `after`."""
    text = log.read_text(errors="replace")[after:]
    got = re.findall(r"api (http://[0-9.]+:[0-9]+)", text)
    return got[-1] if got else None


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster")
    try:
        members = c.up(4, wait_s=60, params=PARAMS)
        yield members, [NodeClient(m.api) for m in members]
    finally:
        c.down()


def test_a_new_node_state_syncs_follows_and_restarts_from_its_store(cluster, tmp_path):
    members, clients = cluster
    api = clients[0]
    lender, borrower = keys.Keypair.from_name("lender"), keys.Keypair.from_name("borrower")
    h32 = hashlib.sha256(b"docs").digest()
    nonces: dict = {}
    sent = [api.submit(_sign(lender, api, nonces, "register_lender", profile_hash=h32)),
            api.submit(_sign(lender, api, nonces, "publish_offer", amount=5_000_000,
                             **OFFER)),
            api.submit(_sign(borrower, api, nonces, "register_borrower", profile_hash=h32,
                             docs_hash=h32))]
    sent.append(api.submit(_sign(borrower, api, nonces, "apply", amount=100_000,
                                 purpose="a loom", term=6, period="monthly",
                                 method="annuity", product="business", grace=0,
                                 docs_hash=h32, **LIMITS)))
    for h in sent:
        assert api.wait_committed(h)["status"] == "committed"
    fund = api.submit(_sign(lender, api, nonces, "fund", application=sent[3], offer=sent[1],
                            accept=[]))
    assert api.wait_committed(fund)["status"] == "committed"
    # a few snapshots behind the head, so the new node has something to skip
    api.wait_height(api.status()["height"] + 3 * EVERY, timeout=60)

    home, log = tmp_path / "full", tmp_path / "full.log"
    H.init_home(home, H.NodeConfig("127.0.0.1", 0, [f"127.0.0.1:{m.port}" for m in members]),
                genesis=H.load_genesis(members[0].home))
    proc = _start(home, log)
    try:
        full = NodeClient(until(lambda: _api(log, 0), 60, "the new node's API address"))
        st = full.status()
        s = st["synced_from"]
        assert s and s % EVERY == 0 and s >= 3 * EVERY, st
        text = log.read_text()
        assert f"state-synced to height {s}" in text, text
        replayed = int(re.search(r"snapshot at height \d+; replaying (\d+) blocks", text)[1])
        assert replayed <= 2, text                  # not the s blocks below it
        # it holds no block below the snapshot, yet has the cluster's state there
        assert full.get(f"/v1/blocks/{s}")["state_root"] == \
            api.get(f"/v1/blocks/{s}")["state_root"]
        status, body = _get(full, "/v1/blocks/1")
        assert status == 410 and body["code"] == "pruned" and body["first_block"] == s, body
        top = same_chain([api, full])
        assert full.get(f"/v1/loans/{api.get(f'/v1/applications/{sent[3]}')['loan']}")[
            "status"] == "active"
        # it follows: a transfer committed by the validators reaches it
        alice = keys.Keypair.from_name("alice")
        h = clients[1].submit(_sign(alice, clients[1], nonces, "transfer",
                                    to=lender.address, amount=7))
        assert full.wait_committed(h, timeout=30) == clients[1].wait_committed(h)
        # and restarts from its own store (state sync is skipped)
        stop(proc, 10)
        assert proc.returncode == 0, log.read_text()[-2000:]
        # its chain checks out from the snapshot it synced to: it has no block below
        checked = verify_chain(home)
        assert checked["from"] == "snapshot" and checked["snapshot"] >= s, checked
        size = log.stat().st_size
        proc = _start(home, log)
        again = NodeClient(until(lambda: _api(log, size), 60, "the restarted node's API"))
        assert again.status()["synced_from"] is None
        assert "state sync skipped" in log.read_text()[size:]
        same_chain([api, again], max(top, api.status()["height"]))
    finally:
        stop(proc, 10)


def _get(client: NodeClient, path: str) -> tuple[int, dict]:
    from lendnet.node.daemon.client import http_json
    return http_json(client.url + path, 5)
