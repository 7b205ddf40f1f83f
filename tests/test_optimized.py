"""Checks that must hold under `python -O`, which strips every `assert`: a real node
started with -O replays its store at restart and refuses a store that replays to another
state root; a replica that diverges from a quorum stops."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lendnet.ledger import codec, keys
from lendnet.ledger import tx as txm
from lendnet.node.daemon.client import NodeClient
from lendnet.node.harness.cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent


def _lendnet(*args, optimize: bool = True):
    return [sys.executable, *(["-O"] if optimize else []), "-m", "lendnet.cli", *args]


def _start(home: Path) -> subprocess.Popen:
    return subprocess.Popen(_lendnet("node", "start", "--home", str(home)), cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _stop(p: subprocess.Popen) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out


def test_a_node_under_python_O_restarts_from_its_store_and_refuses_a_damaged_one(tmp_path):
    home = tmp_path / "node"
    port = free_ports(1)[0]
    subprocess.run(_lendnet("node", "init", "--home", str(home), "--port", str(port),
                            optimize=False), cwd=ROOT, check=True, capture_output=True)
    api = NodeClient(f"http://127.0.0.1:{port}", timeout=5)
    alice, bob = keys.Keypair.from_name("alice"), keys.Keypair.from_name("bob")
    p = _start(home)
    try:
        _wait_up(api, p)
        raw = txm.sign(txm.build(alice, "lendnet-dev", "transfer", 0, to=bob.address,
                                 amount=5), [alice]).raw
        where = api.wait_committed(api.submit(raw), 30)
        assert where["status"] == "committed"
        root = api.get(f"/v1/blocks/{where['height']}")["state_root"]
    finally:
        out = _stop(p)
    assert p.returncode == 0, out
    p = _start(home)                                   # replays its chain, under -O
    try:
        _wait_up(api, p)
        assert api.get(f"/v1/blocks/{where['height']}")["state_root"] == root
        assert api.account(bob.address)["balance"] == 100_000_005
    finally:
        out = _stop(p)
    assert p.returncode == 0, out
    # Damage the store: block 1's recorded state root. The replay must notice, even
    # with asserts stripped, and the node must refuse to start.
    db = sqlite3.connect(home / "node.db")
    db.execute("UPDATE blocks SET root = ? WHERE height = 1", (codec.encode(b"\x01" * 32),))
    db.commit()
    db.close()
    p = _start(home)
    try:
        out, _ = p.communicate(timeout=60)             # it exits by itself
    finally:
        _stop(p)
    assert p.returncode not in (0, None)
    assert "stored block 1 replays to another state root" in out, out


def _wait_up(api: NodeClient, p: subprocess.Popen, timeout: float = 30) -> None:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            pytest.fail(f"the node exited: {p.stdout.read()}")
        try:
            if api.status()["height"] >= 0:
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the node did not come up")


def test_a_replica_that_diverges_from_a_checkpoint_quorum_raises_even_under_O():
    """The check is a raise, not an assert: run the replica's checkpoint handling in a
    child interpreter started with -O."""
    code = """
from tests.test_replica import Net, commit_one, signed, M
from lendnet.consensus.replica import Diverged
net = Net()
for _ in range(3):
    commit_one(net)
try:                  # 2f+1 sign another state root after height 3 than replica 1 has
    for r in (0, 2, 3):
        net.deliver(1, signed(r, {"t": M.CHECKPOINT, "h": 3, "d": net.nodes[1].block_hash(3),
                                  "root": bytes(32)}))
except Diverged as e:
    print("DIVERGED", e)
"""
    r = subprocess.run([sys.executable, "-O", "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert "DIVERGED replica 1 diverged from a quorum at height 3" in r.stdout, r.stdout + r.stderr
