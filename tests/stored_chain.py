"""A real node home with a stored chain, made in-process in well under a second: a
one-validator genesis, the node's own `Node` and `SQLiteStore` (so real blocks, real
commit certificates, real roots), the simulator's lending workload as its clients, and a
virtual clock. No network: with one validator the replica commits alone."""
from __future__ import annotations

import random
from pathlib import Path

from lendnet.ledger.keys import Keypair
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.shell import Shell, carry_out
from lendnet.node.daemon import home as H
from lendnet.node.daemon.sqlstore import SQLiteStore
from lendnet.node.harness.workload import LendingWorkload

T0 = 1_767_225_600          # 2026-01-01T00:00:00Z
CHAIN = "lendnet-verify"


class Alone(Shell):
    """A lone validator's shell: nobody to send to."""

    def send(self, to: int, msg: dict) -> None:
        return None

    def broadcast(self, msg: dict) -> None:
        return None

    def audience(self) -> list[int]:
        return []


def _ahead(node: Node, raw: bytes) -> bool:
    """A transaction the mempool refused only because its nonce is ahead: offer it
    again (one whose nonce is used, or that the mempool already holds, is done with)."""
    tx = node.parse(raw)
    return (tx.nonce > node.ledger.account(tx.sender)[1]
            and tx.nonce not in node.mempool.by_sender.get(tx.sender, {}))


def run_alone(node: Node, workload, txs: int, burst: int = 1) -> None:
    """Drive a lone validator on a virtual clock (25 ms a step, `burst` workload steps
    each: more makes bigger blocks) until the workload has made its transactions and a
    second of chain time passes with nothing new to commit."""
    now, shell = node.now, Alone()
    waiting: list[bytes] = []               # signed, not yet admitted (ahead of its
    idle = 0                                # sender's nonce): offered again
    for _ in range(200 * txs + 10_000):     # bounded, whatever happens
        for _ in range(burst):
            waiting = [raw for raw in waiting + workload.step(node.ledger)
                       if not node.receive_tx(raw) and _ahead(node, raw)]
        now += 25
        before = node.height
        carry_out(node, node.tick(now), shell)
        done = workload.done_creating and not waiting
        idle = idle + 1 if done and node.height == before else 0
        if idle >= 40:                      # a second of chain time with nothing new
            return


def build_home(home: Path, txs: int, seed: int = 1) -> dict:
    """Write a home whose store holds a chain of about `txs` lending transactions (every
    product of the workload, and transfers). Returns {"height", "txs"} as stored."""
    kp = Keypair.from_name(f"verify-validator-{seed}")
    workload = LendingWorkload(CHAIN, seed, random.Random(seed), txs)
    genesis = Genesis(CHAIN, T0, workload.balances(), (kp.pubkey,), dict(H.DAEMON_PARAMS),
                      lending=H.dev_lending())
    H.init_home(home, H.NodeConfig(), kp=kp, genesis=genesis)
    store = SQLiteStore(str(home / "node.db"))
    try:
        node = Node(genesis, kp, store, T0 * 1000)
        run_alone(node, workload, txs)
        committed = sum(len(store.get_block(h)[0]["txs"]) for h in range(1, store.height + 1))
        return {"height": store.height, "txs": committed}
    finally:
        store.close()
