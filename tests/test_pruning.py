"""Pruned and archive nodes (issue 19 point 4): a node keeping its last K blocks forgets
the older ones and their transactions' index entries, restarts (after kill -9 too) from
its kept snapshot to the same root, verify-chain replays it from that snapshot and still
catches a damaged block, and its API says which blocks it keeps (410 "pruned" below)."""
from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from lendnet.cli.main import main as cli
from lendnet.ledger import codec
from lendnet.ledger.keys import Keypair
from lendnet.node.core import pruning
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.shell import carry_out
from lendnet.node.daemon import home as H
from lendnet.node.daemon.daemon import Daemon
from lendnet.node.daemon.sqlstore import SQLiteStore
from lendnet.node.daemon.verify import Mismatch, verify_chain
from lendnet.node.harness.workload import LendingWorkload

from .stored_chain import Alone, _ahead
from .test_store import run_until_killed

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_225_600
CHAIN = "lendnet-prune"
KP = Keypair.from_name("prune-validator")
# A small consensus window, so the least safe K (4 windows) is small and a test chain a
# few hundred blocks long is pruned several times; an empty block every 25 ms step.
PARAMS = dict(H.DAEMON_PARAMS, window=8, checkpoint_interval=4, snapshot_every=16,
              empty_block_ms=25)
KEEP = 32                                  # = pruning.min_keep_blocks at window 8
EVERY = 8                                  # blocks between prunes in these tests


def make_genesis(seed: int, txs: int) -> tuple[Genesis, LendingWorkload]:
    workload = LendingWorkload(CHAIN, seed, random.Random(seed), txs)
    return Genesis(CHAIN, T0, workload.balances(), (KP.pubkey,), dict(PARAMS),
                   lending=H.dev_lending()), workload


class PruningAlone(Alone):
    """A lone validator's shell that prunes as the daemon does, once a block is durable,
    and notes the height of each committed transaction in `txs` (tx hash -> height)."""

    def __init__(self, node: Node, pruner: pruning.Pruner | None):
        self.node, self.pruner = node, pruner
        self.txs: dict[str, int] = {}

    def committed(self, e) -> None:
        self.txs.update((self.node.parse(raw).id, e.height) for raw in e.block["txs"])
        if self.pruner is not None:
            self.pruner.after_commit(e.height)


def drive(node: Node, shell: PruningAlone, workload, now: int, steps: int) -> int:
    waiting: list[bytes] = []
    for _ in range(steps):
        waiting = [raw for raw in waiting + workload.step(node.ledger)
                   if not node.receive_tx(raw) and _ahead(node, raw)]
        now += 25
        carry_out(node, node.tick(now), shell)
    return now


def build(home: Path, keep: int | None, steps: int = 400, seed: int = 1) -> dict:
    """A home whose store holds a lone validator's chain, pruned to `keep` (None: an
    archive); returns {height, base, txs: {tx hash: height}}."""
    genesis, workload = make_genesis(seed, 400)
    H.init_home(home, H.NodeConfig(keep_blocks=keep or 0), kp=KP, genesis=genesis)
    store = SQLiteStore(str(home / "node.db"))
    try:
        node = Node(genesis, KP, store, T0 * 1000)
        shell = PruningAlone(node, pruning.Pruner(store, keep, EVERY) if keep else None)
        drive(node, shell, workload, T0 * 1000, steps)
        return {"height": store.height, "base": store.base, "txs": shell.txs,
                "root": store.get_block(store.height)[2]}
    finally:
        store.close()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    home = tmp_path_factory.mktemp("pruned")
    return home, build(home, KEEP)


def test_the_rule_for_k():
    config = make_genesis(1, 1)[0].config()
    assert pruning.min_keep_blocks(config) == 4 * 8 == KEEP
    assert pruning.check_keep_blocks(0, config) is None            # archive
    assert pruning.check_keep_blocks(None, config) is None
    assert pruning.check_keep_blocks(KEEP, config) == KEEP
    with pytest.raises(pruning.KeepBlocksError) as e:
        pruning.check_keep_blocks(KEEP - 1, config)
    assert e.value.code == "keep-blocks-too-small" and "at least 32" in str(e.value)
    off = make_genesis(1, 1)[0]
    off.params = dict(PARAMS, snapshot_every=0)
    with pytest.raises(pruning.KeepBlocksError) as e:
        pruning.check_keep_blocks(KEEP, off.config())
    assert e.value.code == "keep-blocks-no-snapshots"
    # never above the latest snapshot's block; nothing before a snapshot exists
    assert pruning.keep_from(100, 32, [80, 96]) == 69
    assert pruning.keep_from(100, 32, [48, 64]) == 64
    assert pruning.keep_from(100, 32, []) is None


def test_a_pruned_store_keeps_about_k_blocks_and_forgets_their_txs(pruned):
    home, got = pruned
    height, base = got["height"], got["base"]
    assert height > 6 * KEEP, got                  # pruned many times over
    kept = height - base
    # the last K, plus at most one prune interval, plus what lies above the snapshot
    assert KEEP <= kept <= KEEP + EVERY + PARAMS["snapshot_every"], (height, base)
    store = SQLiteStore(str(home / "node.db"))
    try:
        assert store.get_block(base) is None and store.get_block(base + 1) is not None
        assert min(store.snapshot_heights()) > base      # every kept snapshot's block is kept
        gone = [t for t, h in got["txs"].items() if h <= base]
        still = [t for t, h in got["txs"].items() if h > base]
        assert gone and still
        assert all(store.tx_location(t) is None for t in gone)
        assert all(store.tx_location(t)["height"] == got["txs"][t] for t in still)
    finally:
        store.close()


def test_verify_chain_replays_a_pruned_store_from_its_snapshot(pruned, tmp_path):
    home, got = pruned
    out = verify_chain(home)
    assert out["from"] == "snapshot" and out["first_block"] == got["base"] + 1
    assert got["base"] < out["snapshot"] and out["blocks"] == got["height"] - out["snapshot"]
    assert out["root"] == got["root"].hex()
    result = CliRunner().invoke(cli, ["node", "verify-chain", "--home", str(home)])
    assert result.exit_code == 0 and f"from the snapshot at height {out['snapshot']}" \
        in result.output, result.output
    archive = tmp_path / "archive"
    assert build(archive, None)["base"] == 0
    assert verify_chain(archive)["from"] == "genesis"


def test_verify_chain_catches_a_damaged_block_after_the_snapshot(pruned, tmp_path):
    home, got = pruned
    copy = tmp_path / "damaged"
    copy.mkdir()
    for name in ("genesis.json", "config.json", "node.key"):
        (copy / name).write_bytes((home / name).read_bytes())
    src = sqlite3.connect(home / "node.db")
    dst = sqlite3.connect(copy / "node.db")
    src.backup(dst)
    src.close()
    h = verify_chain(home)["snapshot"] + 3
    (root,) = dst.execute("SELECT root FROM blocks WHERE height = ?", (h,)).fetchone()
    bad = codec.encode(bytes(31) + b"\x01")
    assert bad != root
    dst.execute("UPDATE blocks SET root = ? WHERE height = ?", (bad, h))
    dst.commit()
    dst.close()
    with pytest.raises(Mismatch) as e:
        verify_chain(copy)
    assert e.value.height == h and e.value.what == "root"


def test_verify_chain_refuses_a_pruned_store_without_a_usable_snapshot(pruned, tmp_path):
    home, _ = pruned
    copy = tmp_path / "nosnap"
    copy.mkdir()
    for name in ("genesis.json", "config.json", "node.key"):
        (copy / name).write_bytes((home / name).read_bytes())
    src, dst = sqlite3.connect(home / "node.db"), sqlite3.connect(copy / "node.db")
    src.backup(dst)
    src.close()
    dst.execute("UPDATE snapshot_chunks SET data = x'00'")      # both snapshots damaged
    dst.commit()
    dst.close()
    result = CliRunner().invoke(cli, ["node", "verify-chain", "--home", str(copy), "--json"])
    assert result.exit_code == 2, result.output
    assert "no usable snapshot" in result.output and "passed over" in result.output


# --- kill -9 on a pruned store ---------------------------------------------------------

# A lone validator pruning to KEEP as the daemon does; it prints each height once
# flushed, and is killed at whatever it is doing (a prune included).
_CHILD = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from lendnet.node.core import pruning
from lendnet.node.core.node import Node
from lendnet.node.daemon.sqlstore import SQLiteStore
from tests.test_pruning import KEEP, EVERY, KP, T0, PruningAlone, drive, make_genesis
genesis, workload = make_genesis(7, 100_000)
store = SQLiteStore(sys.argv[1])
node = Node(genesis, KP, store, T0 * 1000)
shell = PruningAlone(node, pruning.Pruner(store, KEEP, EVERY))
now, last = T0 * 1000, store.height
while True:
    now = drive(node, shell, workload, now, 1)
    if store.height != last:
        last = store.height
        print(last, flush=True)
"""


def test_kill_9_on_a_pruned_store_restarts_to_the_stored_root(tmp_path):
    path = str(tmp_path / "node.db")
    reported = run_until_killed([_CHILD, path, str(ROOT)], 300, str(tmp_path / "err"),
                                timeout=120)
    genesis, _ = make_genesis(7, 100_000)
    store = SQLiteStore(path)
    try:
        assert store.height >= reported and store.base > 0
        node = Node(genesis, KP, store, T0 * 1000)
        assert node.recovery[-1].startswith("opened the stored state")
        assert node.ledger.state_root() == store.get_block(store.height)[2]
        # without its stored state (an older store, or one found damaged) the pruned
        # store still has the snapshot and every block after it
        store._db.execute("DELETE FROM meta WHERE key = 'state_height'")
        node = Node(genesis, KP, store, T0 * 1000)
        assert any(r.startswith("restored the state from the snapshot")
                   for r in node.recovery), node.recovery
        assert node.ledger.state_root() == store.get_block(store.height)[2]
    finally:
        store.close()


# --- what the API says -----------------------------------------------------------------

async def _ask(home: Path, paths: list[str]) -> list[tuple[int, object]]:
    d = Daemon(home)
    await d.start()
    try:
        out = []
        async with aiohttp.ClientSession() as s:
            for p in paths:
                async with s.get(f"http://127.0.0.1:{d.port}{p}") as r:
                    body = await r.read()
                    out.append((r.status, json.loads(body) if r.content_type ==
                                "application/json" else body))
        return out
    finally:
        await d.stop()


async def test_a_pruned_node_says_so_and_answers_410_below_its_first_block(pruned):
    home, got = pruned
    first, top = got["base"] + 1, got["height"]        # (top: kept however it prunes on)
    old_tx = next(t for t, h in got["txs"].items() if h < first)
    (st, status), (b1, block1), (s1, sync1), (bt, _), (stop, _), (e1, _), (t1, tx1) = \
        await _ask(home, ["/v1/status", "/v1/blocks/1", "/v1/sync/1", f"/v1/blocks/{top}",
                          f"/v1/sync/{top}", "/block/1", f"/v1/tx/{old_tx}"])
    assert t1 == 404 and "an older transaction is not indexed here" in tx1["error"]
    assert st == 200 and status["archive"] is False and status["keep_blocks"] == KEEP
    assert status["first_block"] >= first             # it may prune again as it runs
    for code, body in ((b1, block1), (s1, sync1)):
        assert code == 410 and body["code"] == "pruned", body
        assert body["first_block"] >= first and body["error"].startswith(
            "block 1 is pruned: this node keeps blocks from")
    assert (bt, stop, e1) == (200, 200, 410)


async def test_an_archive_node_answers_every_height(tmp_path):
    got = build(tmp_path, None, steps=120)
    answers = await _ask(tmp_path, ["/v1/status"] + [
        f"/v1/blocks/{h}" for h in range(1, got["height"] + 1)] + ["/v1/sync/1"])
    status = answers[0][1]
    assert (status["archive"], status["keep_blocks"], status["first_block"]) == \
        (True, None, 1)
    assert {code for code, _ in answers[1:]} == {200}


def test_keep_blocks_is_set_by_init_overridden_by_start_and_refused_if_unsafe(tmp_path):
    run = CliRunner().invoke
    small = run(cli, ["node", "init", "--home", str(tmp_path / "a"), "--keep-blocks", "10"])
    assert small.exit_code != 0 and "keep-blocks-too-small" in small.output
    assert not (tmp_path / "a" / "node.key").exists()          # nothing written
    ok = run(cli, ["node", "init", "--home", str(tmp_path / "b"), "--keep-blocks", "300"])
    assert ok.exit_code == 0, ok.output
    assert H.load_config(tmp_path / "b").keep_blocks == 300
    assert "keeps the last 300 blocks (a pruned node)" in ok.output
    d = Daemon(tmp_path / "b", keep_blocks=0)                           # start's flag wins
    try:
        assert d.keep_blocks is None and d.pruner is None
    finally:
        d.store.close()
    with pytest.raises(H.HomeError, match="keep-blocks-too-small"):
        Daemon(tmp_path / "b", keep_blocks=5)


async def _until(cond, timeout: float, what: str):
    """tests/waiting.until for a test whose nodes run on this very event loop: poll
    without blocking it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := cond()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return value


async def test_a_full_node_told_pruned_says_so_once_and_syncs_from_another_peer(
        pruned, tmp_path, caplog):
    home, got = pruned
    archive = tmp_path / "archive"
    assert build(archive, None)["root"] == got["root"]    # the same chain, kept whole
    caplog.set_level(logging.INFO, logger="lendnet.node")
    servers = [Daemon(home), Daemon(archive)]
    full = None
    try:
        for d in servers:
            await d.start()
        peers = [f"127.0.0.1:{d.port}" for d in servers]         # the pruned one first
        H.init_home(tmp_path / "full", H.NodeConfig(peers=peers), kp=Keypair.from_name(
            "prune-follower"), genesis=H.load_genesis(home))
        full = Daemon(tmp_path / "full")
        await full.start()
        await _until(lambda: full.node.height >= got["height"], 30, "the full node syncs")
        assert full.store.get_block(got["height"])[2] == got["root"]
        told = [r.getMessage() for r in caplog.records if "keeps blocks from" in
                r.getMessage()]                 # (the number moves as the peer prunes on)
        assert len(told) == 1 and told[0].startswith(f"peer {peers[0]} keeps blocks from ") \
            and told[0].endswith(" only: start with --state-sync or add an archive peer"), told
    finally:
        for d in ([full] if full else []) + servers:
            await d.stop()


async def test_the_daemon_prunes_as_it_commits_and_counts_it(pruned):
    home, _ = pruned
    d = Daemon(home)
    await d.start()
    try:
        base = d.store.base
        await _until(lambda: d.store.base > base, 30, "the daemon prunes")
        assert pruning.min_keep_blocks(d.node.config) == KEEP <= d.store.height - d.store.base
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{d.port}/metrics") as r:
                text = await r.text()
        pruned_total = next(float(line.split()[1]) for line in text.splitlines()
                            if line.startswith("lendnet_blocks_pruned_total "))
        assert pruned_total >= d.store.base - base > 0
    finally:
        await d.stop()


def test_a_keep_blocks_the_config_would_refuse_is_refused_by_init_and_start(tmp_path):
    """`node init --keep-blocks` took any size, and wrote a config.json that the next
    `node start` refused (load_config bounds it by home.MAX_KEEP_BLOCKS): a home that
    cannot start. One bound for the flag, the config and `start --keep-blocks`."""
    run = CliRunner().invoke
    huge = str(H.MAX_KEEP_BLOCKS + 1)
    got = run(cli, ["node", "init", "--home", str(tmp_path / "a"), "--keep-blocks", huge])
    assert got.exit_code != 0 and str(H.MAX_KEEP_BLOCKS) in got.output, got.output
    assert not (tmp_path / "a" / "config.json").exists()          # nothing written
    ok = run(cli, ["node", "init", "--home", str(tmp_path / "b"), "--keep-blocks",
                   str(H.MAX_KEEP_BLOCKS)])
    assert ok.exit_code == 0 and H.load_config(tmp_path / "b").keep_blocks == H.MAX_KEEP_BLOCKS
    with pytest.raises(H.HomeError, match=str(H.MAX_KEEP_BLOCKS)):
        Daemon(tmp_path / "b", keep_blocks=H.MAX_KEEP_BLOCKS + 1)
