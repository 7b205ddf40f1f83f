"""`lendnet node verify-chain`: a stored chain replays from genesis to every stored root;
a changed root, transaction, hash link or certificate is caught at its block, with exit
1 and what differs; a home it cannot read is exit 2 and a message; it never writes to
the home, stopped or running."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lendnet.cli.main import main as cli
from lendnet.consensus import messages as M
from lendnet.ledger import codec
from lendnet.node.daemon.sqlstore import SQLiteStore
from lendnet.node.daemon.verify import Mismatch, verify_chain

from .stored_chain import build_home


@pytest.fixture(scope="module")
def chain_home(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("chain") / "node"
    return home, build_home(home, 400)


@pytest.fixture
def copy(chain_home, tmp_path) -> tuple[Path, dict]:
    """A copy of the chain's home, for a test to damage."""
    home, info = chain_home
    shutil.copytree(home, tmp_path / "node")
    return tmp_path / "node", info


def run(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["node", "verify-chain", *map(str, args)])
    assert r.exception is None or type(r.exception) is SystemExit, r.exception
    return r.exit_code, r.stdout, r.stderr


def fingerprint(home: Path) -> dict:
    """Every file in the home and its bytes' hash: what 'never writes' must preserve."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.iterdir()) if p.is_file()}


def stored(home: Path, h: int) -> tuple[dict, list, bytes]:
    """Block h's stored row, read without creating SQLite's -wal and -shm files."""
    db = sqlite3.connect(f"file:{home / 'node.db'}?immutable=1", uri=True)
    try:
        row = db.execute("SELECT block, cert, root FROM blocks WHERE height = ?",
                         (h,)).fetchone()
    finally:
        db.close()
    return tuple(codec.decode(b, max_size=len(b)) for b in row)


def rewrite(home: Path, h: int, block=None, cert=None, root=None) -> None:
    """Change block h's stored row behind the store's back, as damage or an edit would."""
    old = stored(home, h)
    new = [old[0] if block is None else block, old[1] if cert is None else cert,
           old[2] if root is None else root]
    db = sqlite3.connect(home / "node.db")
    try:
        db.execute("UPDATE blocks SET block = ?, cert = ?, root = ? WHERE height = ?",
                   (*map(codec.encode, new), h))
        db.commit()
    finally:
        db.close()


def block_with_txs(home: Path) -> int:
    """A block in the middle of the chain that holds transactions."""
    db = sqlite3.connect(f"file:{home / 'node.db'}?immutable=1", uri=True)
    try:
        (top,) = db.execute("SELECT max(height) FROM blocks").fetchone()
    finally:
        db.close()
    return next(h for h in range(top // 2, top) if stored(home, h)[0]["txs"])


# --- a good chain -----------------------------------------------------------------------

def test_a_stored_chain_replays_to_every_root_and_the_home_is_untouched(chain_home):
    home, info = chain_home
    before = fingerprint(home)
    code, out, err = run("--home", home)
    assert code == 0, err
    last_root = stored(home, info["height"])[2].hex()
    assert f"height {info['height']}" in out and f"{info['txs']:,} transactions" in out
    assert "every root reproduced" in out and last_root in out and "tx/s" in out
    assert fingerprint(home) == before          # no -wal, no -shm, no byte changed


def test_json_is_one_object_with_the_figures(chain_home):
    home, info = chain_home
    code, out, _ = run("--home", home, "--json")
    assert code == 0
    got = json.loads(out)
    assert got["ok"] is True and got["node_running"] is False
    assert (got["height"], got["blocks"], got["txs"]) == (info["height"], info["height"],
                                                          info["txs"])
    assert got["root"] == stored(home, info["height"])[2].hex()
    assert got["seconds"] >= 0 and got["tx_per_s"] > 0


def test_to_height_stops_there_with_that_root(chain_home):
    home, _ = chain_home
    got = verify_chain(home, to_height=7)
    assert got["height"] == 7 and got["root"] == stored(home, 7)[2].hex()
    code, _, err = run("--home", home, "--to-height", 10_000_000)
    assert code == 2 and "above the" in err


def test_an_empty_store_verifies_as_genesis(tmp_path):
    home = tmp_path / "node"
    build_home(home, 0)
    got = verify_chain(home)
    assert got["height"] == 0 and got["txs"] == 0 and len(got["root"]) == 64


# --- damage is caught at its block ---------------------------------------------------------

def test_a_changed_stored_root_is_caught_at_its_height(copy):
    home, _ = copy
    n = block_with_txs(home)
    true_root, bad = stored(home, n)[2], b"\x5a" * 32
    rewrite(home, n, root=bad)
    code, out, err = run("--home", home)
    assert code == 1 and out == ""
    block_hash = M.block_hash(stored(home, n)[0]["header"]).hex()
    assert f"block {n} (hash {block_hash})" in err
    assert "state root differs" in err and bad.hex() in err and true_root.hex() in err
    code, out, _ = run("--home", home, "--json")
    got = json.loads(out)
    assert code == 1 and got["ok"] is False
    assert (got["height"], got["what"], got["expected"], got["got"], got["block_hash"]) == \
        (n, "root", bad.hex(), true_root.hex(), block_hash)


def test_a_changed_transaction_is_caught_at_its_block(copy):
    home, _ = copy
    n = block_with_txs(home)
    block = stored(home, n)[0]
    raw = bytearray(block["txs"][0])
    raw[-1] ^= 1                                  # one bit of its signature
    block["txs"][0] = bytes(raw)
    rewrite(home, n, block=block)
    code, _, err = run("--home", home)
    assert code == 1 and f"block {n} " in err and "txs_root" in err


def test_a_changed_transaction_with_its_header_redone_fails_the_certificate(copy):
    """Who edits a transaction and recomputes the header's txs_root changes the block's
    hash, which no validator signed: the certificate no longer covers it."""
    home, _ = copy
    n = block_with_txs(home)
    block = stored(home, n)[0]
    block["txs"] = block["txs"][1:]               # one transaction taken out
    block["header"]["txs_root"] = M.txs_root(block["txs"])
    rewrite(home, n, block=block)
    code, out, err = run("--home", home, "--json")
    got = json.loads(out)
    assert code == 1 and (got["height"], got["what"]) == (n, "certificate")
    assert "0 of the 1 COMMITs" in got["detail"]
    assert got["block_hash"] == M.block_hash(block["header"]).hex()


def test_a_broken_hash_link_is_caught(copy):
    home, _ = copy
    n = block_with_txs(home)
    block = stored(home, n)[0]
    block["header"]["prev"] = b"\x01" * 32
    rewrite(home, n, block=block)
    with pytest.raises(Mismatch) as e:
        verify_chain(home)
    want = M.block_hash(stored(home, n - 1)[0]["header"])
    assert (e.value.height, e.value.what, e.value.expected, e.value.got) == \
        (n, "prev", want, b"\x01" * 32)


def test_a_certificate_short_of_a_quorum_is_caught_and_from_height_skips_it(copy):
    home, info = copy
    rewrite(home, 3, cert=[])
    code, _, err = run("--home", home)
    assert code == 1 and "block 3 " in err and "0 of the 1 COMMITs" in err
    # below --from-height blocks are replayed (roots compared), not their certificates
    code, out, _ = run("--home", home, "--from-height", 4, "--json")
    assert code == 0 and json.loads(out)["height"] == info["height"]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_one_changed_root_is_caught_exactly_there(chain_home, tmp_path_factory, data):
    src, info = chain_home
    home = tmp_path_factory.mktemp("any") / "node"
    shutil.copytree(src, home)
    n = data.draw(st.integers(1, info["height"]), label="height")
    root = stored(home, n)[2]
    bad = data.draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != root))
    rewrite(home, n, root=bad)
    with pytest.raises(Mismatch) as e:
        verify_chain(home)
    # the root stored with n is also what n+1's header certifies (exec_root); either
    # way the first block found wrong is n
    assert e.value.height == n and (e.value.expected, e.value.got) == (bad, root)


# --- a home it cannot read ------------------------------------------------------------------

def test_a_missing_home_or_store_is_a_clear_error(tmp_path):
    code, _, err = run("--home", tmp_path / "nowhere")
    assert code == 2 and "is not a directory" in err
    home = tmp_path / "fresh"
    CliRunner().invoke(cli, ["node", "init", "--home", str(home)])
    before = fingerprint(home)
    code, _, err = run("--home", home)
    assert code == 2 and "node.db does not exist" in err and "never been started" in err
    assert fingerprint(home) == before
    (home / "node.db").write_bytes(b"not a database at all" * 100)
    code, _, err = run("--home", home)
    assert code == 2 and "cannot be read" in err
    (home / "genesis.json").unlink()
    code, _, err = run("--home", home)
    assert code == 2 and "genesis.json does not exist" in err


def test_a_missing_block_is_named(copy):
    home, _ = copy
    db = sqlite3.connect(home / "node.db")
    try:
        db.execute("DELETE FROM blocks WHERE height = 5")
        db.commit()
    finally:
        db.close()
    code, _, err = run("--home", home)
    assert code == 2 and "block 5 is missing" in err


def test_a_stopped_node_cannot_start_while_it_is_verified(chain_home):
    """The shared lock that keeps the file still while it is read without SQLite's
    locks (immutable): the node's own open is refused until the reader is done."""
    from lendnet.node.core.store import StoreError
    from lendnet.node.daemon.chainreader import ChainReader
    home, _ = chain_home
    with ChainReader(home / "node.db") as reader:
        assert reader.running is False
        with pytest.raises(StoreError, match="in use|already open"):
            SQLiteStore(str(home / "node.db"))
    SQLiteStore(str(home / "node.db")).close()


# --- a real cluster: verified while running, after kill -9, and stopped --------------------

def test_a_running_four_node_cluster_verifies_before_and_after_kill_9(tmp_path):
    """Real processes, real 3-of-4 certificates. A running node is read through its own
    WAL (every block it committed); one killed -9 has its last commits only in the WAL
    it left, which is read too; a stopped one is left byte for byte as it was."""
    from lendnet.ledger import keys
    from lendnet.ledger import tx as txm
    from lendnet.node.daemon.client import NodeClient
    from lendnet.node.harness.cluster import Cluster

    c = Cluster(tmp_path / "cluster")
    try:
        members = c.up(4, wait_s=60)
        api = NodeClient(members[0].api)
        alice, bob = keys.Keypair.from_name("alice"), keys.Keypair.from_name("bob")
        nonce = api.account(alice.address)["nonce"]
        hashes = [api.submit(txm.sign(txm.build(alice, "lendnet-dev", "transfer", nonce + i,
                                                to=bob.address, amount=1 + i), [alice]).raw)
                  for i in range(40)]
        committed_at = max(api.wait_committed(h)["height"] for h in hashes)
        home = members[1].home
        code, out, err = run("--home", home, "--json")
        assert code == 0, err
        got = json.loads(out)
        assert got["node_running"] is True and got["height"] >= committed_at
        assert got["txs"] >= 40
        c.kill_member(members[1].name)
        code, out, err = run("--home", home, "--json")
        assert code == 0, err
        crashed = json.loads(out)
        assert crashed["node_running"] is False and crashed["height"] >= got["height"]
        c.down()
        before = fingerprint(members[2].home)
        code, out, err = run("--home", members[2].home, "--json")
        assert code == 0, err
        assert json.loads(out)["height"] >= committed_at
        assert fingerprint(members[2].home) == before
        # a certificate two COMMITs strong, where 3 of the 4 validators make a quorum
        shutil.copytree(members[2].home, tmp_path / "damaged")
        cert = stored(tmp_path / "damaged", 2)[1]
        two = list({m["body"]["r"]: m for m in cert}.values())[:2]
        rewrite(tmp_path / "damaged", 2, cert=two)
        code, _, err = run("--home", tmp_path / "damaged")
        assert code == 1 and "block 2 " in err and "2 of the 3 COMMITs" in err
    finally:
        c.down()
