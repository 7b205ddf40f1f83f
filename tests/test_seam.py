"""The replica against a page-long application: consensus needs nothing of the ledger
but consensus/app.py's Application. A counter app orders opaque byte strings, four
replicas agree on them, and a silent primary is replaced."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from lendnet.consensus import messages as M
from lendnet.consensus.effects import Broadcast, Committed, Send, Timer
from lendnet.consensus.replica import Config, Replica
from lendnet.ledger.keys import Keypair

CHAIN = "lendnet-seam-test"
T0 = 1_767_225_600
N = 4
KEYS = [Keypair.from_name(f"seam{i}") for i in range(N)]


class Tally:                   # an Application (consensus/app.py), structurally
    """An application whose state is the hash chain of every transaction it executed:
    any two replicas that executed the same transactions in the same order agree."""

    def __init__(self) -> None:
        self.pool: list[bytes] = []
        self.blocks: list[tuple[dict, list]] = []
        self.roots = [hashlib.sha256(b"tally").digest()]
        self.done: list[bytes] = []

    @property
    def height(self) -> int:
        return len(self.blocks)

    def block_hash(self, h: int) -> bytes | None:
        return M.GENESIS_HASH if h == 0 else M.block_hash(self.blocks[h - 1][0]["header"])

    def root_at(self, h: int) -> bytes | None:
        return self.roots[h]

    def header_at(self, h: int) -> dict | None:
        return {"time": T0} if h == 0 else self.blocks[h - 1][0]["header"]

    def get_block(self, h: int) -> tuple[dict, list] | None:
        return self.blocks[h - 1] if 0 < h <= self.height else None

    def make_txs(self, height: int, max_txs: int, max_bytes: int,
                 exclude: set) -> list[bytes]:
        return [t for t in self.pool if t not in exclude and t not in self.done][:max_txs]

    def check_txs(self, raws: list[bytes], in_flight: Sequence[bytes] = ()) -> str | None:
        return "a repeat" if any(t in self.done or t in in_flight for t in raws) else None

    def execute(self, height: int, block: dict, cert: list) -> bytes:
        root = self.roots[-1]
        for t in block["txs"]:
            root = hashlib.sha256(root + t).digest()
            self.done.append(t)
        self.blocks.append((block, cert))
        self.roots.append(root)
        return root

    def has_pending(self) -> bool:
        return any(t not in self.done for t in self.pool)

    def pending_count(self) -> int:
        return sum(t not in self.done for t in self.pool)


def _cluster():
    cfg = Config(M.Validators(CHAIN, tuple(k.pubkey for k in KEYS)), genesis_time=T0,
                 view_timeout_ms=1_000, batch_delay_ms=0)
    apps = [Tally() for _ in range(N)]
    now = T0 * 1000
    replicas = [Replica(cfg, i, KEYS[i], apps[i], now) for i in range(N)]
    return cfg, apps, replicas, now


def _run(cfg, replicas, now, silent=(), until=lambda: False, limit_ms=20_000):
    """Deliver every message (through the wire encoding) and fire every timer, in time
    order, until `until()` or the limit. Replicas in `silent` receive but say nothing."""
    timers = {i: now for i in range(N)}
    queue: list[tuple[int, int, bytes]] = []
    committed: dict[int, list[Committed]] = {i: [] for i in range(N)}

    def carry(i: int, effects: list) -> None:
        for e in effects:
            t = type(e)
            if i in silent and t in (Broadcast, Send):
                continue
            if t is Broadcast:
                queue.extend((now + 1, d, M.encode(e.msg)) for d in range(N) if d != i)
            elif t is Send:
                queue.append((now + 1, e.to, M.encode(e.msg)))
            elif t is Timer:
                timers[i] = e.at
            elif t is Committed:
                committed[i].append(e)
            # Persist: nothing here restarts, so nothing need be written; the rest
            # (ViewChange, Refused, ...) is for a log.

    end = now + limit_ms
    while now < end and not until():
        queue.sort(key=lambda m: m[0])
        if queue and queue[0][0] <= min(timers.values()):
            now, dst, raw = queue.pop(0)
            carry(dst, replicas[dst].deliver(M.decode(raw, cfg.validators), now, len(raw)))
        else:
            i = min(timers, key=lambda k: timers[k])
            now = max(now, timers[i])
            carry(i, replicas[i].tick(now))
    return committed


def test_four_replicas_order_opaque_transactions_through_the_seam():
    cfg, apps, replicas, now = _cluster()
    txs = [f"tx-{k}".encode() for k in range(12)]
    for app in apps:
        app.pool.extend(txs)
    _run(cfg, replicas, now, until=lambda: all(len(a.done) == len(txs) for a in apps))
    assert all(sorted(a.done) == sorted(txs) for a in apps)
    assert len({tuple(a.done) for a in apps}) == 1          # one order
    assert len({a.roots[-1] for a in apps}) == 1


def test_a_silent_primary_is_replaced_behind_the_seam():
    cfg, apps, replicas, now = _cluster()
    for app in apps:
        app.pool.append(b"pay the baker")
    committed = _run(cfg, replicas, now, silent={0},
                     until=lambda: all(a.done for a in apps[1:]))
    assert all(a.done == [b"pay the baker"] for a in apps[1:])
    assert all(replicas[i].view >= 1 for i in (1, 2, 3))
    assert {c[-1].height for c in map(committed.get, (1, 2, 3))} == {apps[1].height}
