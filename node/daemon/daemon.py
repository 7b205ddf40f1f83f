"""The node daemon: the sans-IO `Node` with a real clock, real sockets and a real disk.

One asyncio loop owns the node; every event — a peer's frame, a client's transaction, a
timer — runs to completion on it, so the core needs no locks. The effects of the events
in one turn of the loop are held back until one SQLite transaction (one fsync) has
written all their votes and blocks (`Node.flush`), then carried out: under load a turn
holds many frames, and a commit per event had cost more than the events. The same port
serves the peer link (/p2p), the client API (/v1/...), the event stream, the OpenAPI
description and /metrics.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from lendnet.consensus import messages as M
from lendnet.consensus.effects import Committed, Evidence, Refused, ViewChange, ViewEntered
from lendnet.consensus.replica import Diverged
from lendnet.ledger import codec
from lendnet.ledger.state import StateDamaged
from lendnet.ledger.groups import GROUP_LOAN_EVENTS
from lendnet.ledger import tx as txm
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.pruning import Pruner
from lendnet.node.core.shell import Shell, carry_out

from . import home as H
from .api import build_app, jsonable
from .blobs import BlobStore
from .hooks import Hooks
from .metrics import Metrics
from .sqlstore import SQLiteStore
from .statesync import StateSync
from .transport import Transport

log = logging.getLogger("lendnet.node")
RECENT_REJECTIONS = 10_000
# What a peer's gossiped transaction is refused for that no honest node passes on (it
# gossips only what its mempool admitted, on the same chain, under the same limits): a
# strike against the peer. Duplicates and stale nonces are normal in gossip.
HOSTILE_TX_CODES = frozenset({"malformed", "too-large", "wrong-chain", "bad-signature"})
GOSSIP_FRAME_BYTES = 1 << 20       # transactions per gossip frame: up to about this much
REFUSAL_LOG_MS = 10_000            # a refusal's reason is logged at most this often


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Daemon(Shell):
    """The node's shell in a real process: it carries out the node's effects
    (`carry_out`) on sockets, the clock and the disk."""

    def __init__(self, home: Path, hooks: Hooks | None = None,
                 keep_blocks: int | None = None, state_sync: bool = False):
        """`keep_blocks`: `node start --keep-blocks`, over the config's (None: the
        config's). `state_sync`: on start, fill an empty store from a peer's snapshot
        (statesync.py) rather than replay the chain from genesis."""
        self.hooks = hooks = hooks or Hooks()
        self.home = Path(home)
        self.kp = H.load_key(self.home)
        self.cfg = H.load_config(self.home)
        self.genesis = H.load_genesis(self.home)
        # K, or None for an archive node; refused before the store is opened
        self.keep_blocks = H.check_keep_blocks(
            self.cfg.keep_blocks if keep_blocks is None else keep_blocks, self.genesis)
        self.store = SQLiteStore(str(self.home / "node.db"), self.cfg.state_cache_rows)
        self.blobs = BlobStore(self.home / "blobs")
        self.config = (hooks.config or Genesis.config)(self.genesis)
        self.node = Node(self.genesis, self.kp, self.store, now_ms(), self.config)
        self.state_sync = state_sync
        self.synced_from: int | None = None           # the snapshot state sync took
        self.lie = hooks.lie
        if hooks.warning:
            log.warning("%s", hooks.warning)
        self.metrics = Metrics(lambda: len(self.transport.connected()),
                               lambda: self.node.replica)
        self.metrics.height.set(self.node.height)
        self.pruner = (Pruner(self.store, self.keep_blocks)
                       if self.keep_blocks is not None else None)
        self.evidence_count = sum(1 for k in self.store.load_records() if k[0] == "evidence")
        self.metrics.evidence.inc(self.evidence_count)
        self._refusals_logged: dict[str, tuple] = {}  # reason -> (when logged, since then)
        self.exit_code = 0
        self.transport = Transport(self.genesis.chain_id, self.kp, self._on_frame,
                                   self.metrics.p2p, hooks.links, self.genesis.validators)
        self.peers = []                               # (host:port, its key or None)
        for p in self.cfg.peers:
            pubkey, host, port = H.parse_peer(p)
            self.peers.append((f"{host}:{port}", pubkey))
        self.rejected: dict[str, tuple] = {}          # tx hash hex -> (why, code), recent
        self.subscribers: set[asyncio.Queue] = set()  # event-stream clients
        self.submitted_at: dict[str, int] = {}        # tx hash hex -> ms, for latency
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._tick_pending = False
        self._gossip_out: list[bytes] = []            # admitted this turn, not yet passed on
        self._held: list = []                         # effects waiting for this turn's flush
        self._flush_pending = False
        self._validator_keys = set(self.genesis.validators)
        self._sync_wanted = asyncio.Event()           # a full node heard of a newer block
        self._tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.state_sync:
            await self._state_sync()
        app = build_app(self)
        app.router.add_get("/p2p", self.transport.handle)
        if self.hooks.routes is not None:
            self.hooks.routes(app)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=3)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.host, self.cfg.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        await self.transport.start(self.peers)
        if self.node.replica is None:
            self._tasks.append(asyncio.create_task(self._sync_forever()))
        self._tasks.append(asyncio.create_task(self._regossip_forever()))
        log.info("node %s up: chain %s, %s, height %d, api http://%s:%d",
                 self.kp.address, self.genesis.chain_id,
                 f"validator {self.node.index}" if self.node.index is not None
                 else "full node", self.node.height, self.cfg.host, self.port)
        everywhere = self.cfg.host in ("0.0.0.0", "::", "")      # all interfaces
        log.info("peers reach this node as %s%s", H.peer_string(
            self.kp.pubkey, "<this machine's name or address>" if everywhere
            else self.cfg.host, self.port), " (it listens on every interface)"
            if everywhere else "")
        self._hold(self.node.tick(now_ms()))

    async def _state_sync(self) -> None:
        """Before anything reads the node: fill an empty store from the best snapshot a
        peer proves, then rebuild the node over it (statesync.py)."""
        if self.store.height:
            log.info("state sync skipped: the store already holds the chain to height %d; "
                     "the node resumes from it", self.store.height)
            return
        if not self.peers:
            log.warning("state sync: no peers configured: syncing block by block from "
                        "genesis")
            return
        got = await StateSync([addr for addr, _ in self.peers], self.genesis.chain_id,
                              self.config.validators, self.config.window).sync(self.store)
        if got is None:
            log.warning("state sync: no peer served a snapshot that checks: falling back "
                        "to block-by-block sync from genesis")
            return
        self.node = Node(self.genesis, self.kp, self.store, now_ms(), self.config)
        self.metrics.height.set(self.node.height)
        self.synced_from = got.height
        log.info("state-synced to height %d in %.1f s (%d chunks, %d bytes, %d blocks "
                 "replayed to its certified root, peers avoided: %s)", got.height,
                 got.seconds, got.chunks, got.bytes, got.replayed,
                 "; ".join(f"{a} ({why})" for a, why in got.avoided.items()) or "none")

    async def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.subscribers.clear()                       # their handlers see it and close
        await self.transport.stop()
        if self.runner:
            await self.runner.cleanup()
        self.store.close()
        log.info("node stopped at height %d", self.node.height)

    async def serve_forever(self) -> int:
        """Run until SIGTERM/SIGINT (exit code 0) or a fault that must stop the node."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.start()
        await self.stopping.wait()
        await self.stop()
        return self.exit_code

    def _halt(self, e: Exception) -> None:
        """This node's state differs from what a quorum certified (Diverged), or its
        stored state was found damaged (StateDamaged: recorded in the store, so the
        next start rebuilds it): it must not vote or serve another block. Stop, and say
        so (exit code 3)."""
        log.critical("stopping: %s", e)
        self.exit_code = 3
        self.stopping.set()

    # --- events -------------------------------------------------------------------------

    async def _on_frame(self, kind: str, payload: bytes, peer: bytes) -> None:
        if kind == "msg":
            if self.exit_code:
                return
            self.metrics.messages.inc()
            before = self.node.rejected_messages
            try:
                effects = self.node.deliver(payload, now_ms())
            except (Diverged, StateDamaged) as e:
                self._halt(e)
                return
            if self.node.rejected_messages != before:
                self.metrics.rejected_messages.inc()     # badly signed, or not a validator's
                self.transport.penalise(peer, "sent a consensus message that does not "
                                              "verify")
            self._hold(effects)
        elif kind == "txs":
            raws = self._gossiped_txs(payload)
            if raws is None:
                self.metrics.p2p["bad_frames"] += 1      # a buggy or hostile peer
                self.transport.ban(peer, "sent a txs frame that is not a list of "
                                         "transactions")
                return
            for raw in raws:
                try:
                    self.node.submit(raw)
                except txm.TxError as e:
                    if e.code in HOSTILE_TX_CODES and self.transport.penalise(
                            peer, f"gossiped a transaction refused as {e.code}"):
                        return                           # banned: the rest is not read
                    continue
                self._gossip(raw)                        # first sight: pass it on
        elif kind == "block" and self.node.replica is None:
            self._follow(payload, peer)

    @staticmethod
    def _gossiped_txs(payload: bytes) -> list[bytes] | None:
        """The transactions of a peer's "txs" frame, or None if it is not a list of them."""
        try:
            raws = codec.decode(payload, M.MAX_MSG_BYTES)
        except codec.EncodingError:
            return None
        if type(raws) is not list or not all(type(r) is bytes for r in raws):
            return None
        return raws

    def _gossip(self, raw: bytes) -> None:
        """Pass a newly admitted transaction on to the peers. Everything admitted in one
        turn of the loop leaves as one frame per peer: a frame per transaction cost each
        receiver more than checking the transaction."""
        if not self._gossip_out:
            asyncio.get_running_loop().call_soon(self._flush_gossip)
        self._gossip_out.append(raw)
        self._tick_soon()

    def _flush_gossip(self) -> None:
        out, self._gossip_out = self._gossip_out, []
        self._broadcast_txs(out)

    def _broadcast_txs(self, raws: list[bytes]) -> None:
        frame, size = [], 0
        for raw in raws:
            if size + len(raw) > GOSSIP_FRAME_BYTES and frame:
                self.transport.broadcast("txs", codec.encode(frame))
                frame, size = [], 0
            frame.append(raw)
            size += len(raw)
        if frame:
            self.transport.broadcast("txs", codec.encode(frame))

    def submit(self, raw: bytes) -> str:
        """A client's transaction: its hash, or TxError saying why it was refused."""
        tx = self.node.parse(raw)                      # malformed: nothing to remember
        try:
            self.node.submit(raw)
        except txm.TxError as e:
            self._remember_rejection(tx.id, str(e), e.code)
            raise
        self.submitted_at[tx.id] = now_ms()
        if len(self.submitted_at) > 100_000:
            del self.submitted_at[next(iter(self.submitted_at))]
        self._gossip(raw)
        self.metrics.mempool.set(len(self.node.mempool))
        return tx.id

    def _remember_rejection(self, tx_id: str, why: str, code: str) -> None:
        self.rejected[tx_id] = (why, code)
        if len(self.rejected) > RECENT_REJECTIONS:
            del self.rejected[next(iter(self.rejected))]

    def _tick_soon(self) -> None:
        # The primary batches for batch_delay_ms; a tick right away lets it start the
        # batch. One pending tick serves every transaction that arrives before it runs:
        # a tick per transaction cost more than the transactions themselves.
        if not self._tick_pending:
            self._tick_pending = True
            asyncio.get_running_loop().call_soon(self._on_timer)

    def _on_timer(self) -> None:
        self._tick_pending = False
        self._timer = None
        self._timer_at = None
        if not self.exit_code:
            try:
                self._hold(self.node.tick(now_ms()))
            except StateDamaged as e:
                self._halt(e)

    def _follow(self, payload: bytes, peer: bytes) -> None:
        try:
            block, cert = codec.decode(payload, M.MAX_MSG_BYTES)
            self._follow_one(block, cert)
        except StateDamaged as e:
            self._halt(e)
        except (codec.EncodingError, ValueError, TypeError, KeyError, M.MessageError) as e:
            log.warning("ignored a committed block from a peer: %s", e)
            self.transport.penalise(peer, f"pushed a block that does not verify: {e}")

    def _follow_one(self, block, cert) -> bool:
        """Take one committed block (ValueError/MessageError if it is bad); False if it
        is not the next one — then a newer chain exists and we pull what we miss."""
        got = self.node.follow(block, cert)
        if got is None:
            if block["header"]["height"] > self.node.height + 1:
                self._sync_wanted.set()
            return False
        carry_out(self.node, [got], self)
        return True

    async def _regossip_forever(self, every_s: float = 1.0, limit: int = 1_000) -> None:
        """Pass on again each account's next transaction if it was already waiting a
        round ago: gossip is best effort (a full queue drops frames, a peer may have been
        down), and the primary proposes only what reached it. Only the next one: under
        load everything waits a while, and passing on all of it again made the load."""
        waiting: set[bytes] = set()
        while True:
            await asyncio.sleep(every_s)
            heads = self.node.mempool.heads(limit)
            again = [tx.raw for tx in heads if tx.hash in waiting]
            if again:
                self._broadcast_txs(again)
                self.metrics.regossiped.inc(len(again))
            waiting = {tx.hash for tx in heads}

    async def _sync_forever(self) -> None:
        """A full node pulls the blocks it misses from its peers' /v1/sync, checking
        every certificate; then pushed blocks keep it current. Peers in turn."""
        peers = [addr for addr, _ in self.peers]
        turn = 0
        pruned: dict[str, int] = {}                # peer -> the first block it keeps
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while peers:
                peer = peers[turn % len(peers)]
                turn += 1
                got = 0
                try:
                    async with http.get(f"http://{peer}/v1/sync/{self.node.height + 1}",
                                        params={"count": "128"}) as resp:
                        if resp.status == 200:
                            entries = codec.decode(await resp.read(), M.MAX_MSG_BYTES)
                            for block, cert in entries:
                                if not self._follow_one(block, cert):
                                    break
                                got += 1
                        elif resp.status == 410:           # (a short JSON error: bounded)
                            self._peer_pruned(peer, await resp.content.read(4096), pruned)
                except StateDamaged as e:
                    self._halt(e)
                    return
                except (TimeoutError, aiohttp.ClientError, OSError, codec.EncodingError,
                        ValueError, TypeError, M.MessageError) as e:
                    log.info("sync from %s: %s", peer, e)
                if got:
                    continue                               # more may be waiting
                if peer in pruned and any(pruned.get(p, 0) <= self.node.height + 1
                                          for p in peers):
                    continue                  # a peer that may have the blocks: ask it now
                self._sync_wanted.clear()
                try:
                    await asyncio.wait_for(self._sync_wanted.wait(), 2.0)
                except TimeoutError:
                    continue                               # look again anyway, now and then

    @staticmethod
    def _peer_pruned(peer: str, body: bytes, pruned: dict[str, int]) -> None:
        """A peer answered 410 to a sync request: it does not keep the blocks we need.
        Say so once per peer (it stays true), with what would help."""
        try:
            first = json.loads(body)["first_block"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"a 410 without a first_block: {e}") from None
        if type(first) is not int or first < 1:
            raise ValueError(f"a 410 whose first_block is {first!r}")
        if peer not in pruned:
            log.warning("peer %s keeps blocks from %d only: start with --state-sync or add "
                        "an archive peer", peer, first)
        pruned[peer] = first

    # --- effects ------------------------------------------------------------------------

    def _hold(self, effects: list) -> None:
        """Keep an event's effects until the end of this turn of the loop."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        self._held += effects

    def _flush(self) -> None:
        """Write every vote and block of this turn in one transaction, then carry out
        the effects that were waiting for it."""
        self._flush_pending = False
        held, self._held = self._held, []
        carry_out(self.node, held, self)

    # --- the shell: what the node's effects do here --------------------------------------

    def send(self, to: int, msg: dict) -> None:
        self.transport.send_to_key(self.node.vals.pubkeys[to], "msg", M.encode(msg))

    def broadcast(self, msg: dict) -> None:
        self.transport.broadcast("msg", M.encode(msg))

    def audience(self) -> list[int]:
        return [i for i in range(self.node.vals.n) if i != self.node.index]

    def arm(self, at: int) -> None:
        if self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer:
            self._timer.cancel()
        delay = max(0, at - now_ms()) / 1000
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
        self._timer_at = at

    def _prune(self, height: int) -> None:
        started = time.perf_counter()
        gone = self.pruner.after_commit(height)
        if gone is None:
            return                                    # not due
        seconds = time.perf_counter() - started
        self.metrics.pruned_blocks.inc(gone)
        self.metrics.prune_seconds.inc(seconds)
        log.debug("pruned %d blocks in %.3f s: keeping blocks from %d (keep_blocks %d)",
                  gone, seconds, self.store.base + 1, self.keep_blocks)

    def evidence(self, e: Evidence) -> None:
        self.evidence_count += 1
        self.metrics.evidence.inc()
        log.warning("evidence: %s by validator %d (kept in the store)", e.kind, e.replica)

    def view_change(self, e: ViewChange) -> None:
        log.info("view change %d -> %d: %s", e.old, e.new, e.reason)
        self.metrics.view.set(e.new)
        self.metrics.view_changes.set(self.node.replica.view_changes)

    def view_entered(self, e: ViewEntered) -> None:
        log.info("entered view %d (primary validator %d, %d blocks carried over)",
                 e.view, e.primary, e.carried)

    def refused(self, e: Refused) -> None:
        """Count every refused proposal by reason; log each reason at most once per
        REFUSAL_LOG_MS, saying how many went unlogged since."""
        self.metrics.refused.labels(e.reason).inc()
        t = now_ms()
        last, quiet = self._refusals_logged.get(e.reason, (None, 0))
        if last is not None and t < last + REFUSAL_LOG_MS:
            self._refusals_logged[e.reason] = (last, quiet + 1)
            return
        self._refusals_logged[e.reason] = (t, 0)
        log.warning("refused the proposal for height %d in view %d from validator %d: %s "
                    "(%s)%s", e.height, e.view, e.proposer, e.reason, e.detail,
                    f"; {quiet} more refused for this reason since the last report"
                    if quiet else "")

    def committed(self, e: Committed) -> None:
        self.transport.push_inbound("block", codec.encode([e.block, e.cert]),
                                    skip=self._validator_keys)   # full nodes follow
        if self.pruner is not None:                   # the block is durable: see carry_out
            self._prune(e.height)
        node = self.node
        m = self.metrics
        m.height.set(e.height)
        m.commits.inc()
        m.committed_txs.inc(len(e.block["txs"]))
        m.mempool.set(len(node.mempool))
        if node.replica is not None:
            m.view.set(node.replica.view)
            m.view_changes.set(node.replica.view_changes)
        t = now_ms()
        for raw in e.block["txs"]:
            tx_id = node.parse(raw).id
            start = self.submitted_at.pop(tx_id, None)
            if start is not None:
                m.commit_latency.observe((t - start) / 1000)
        result = e.result
        event = {"type": "block", "height": e.height, "hash": M.block_hash(e.block["header"]).hex(),
                 "txs": len(e.block["txs"]), "time": e.block["header"]["time"],
                 "state_root": e.state_root.hex()}
        self._publish(event)
        for ev in result.events:
            if ev["contract"] in node.ledger.state.loans:   # instalment_due, _late, defaulted...
                self._publish({"type": "loan", "event": ev["name"], "loan": ev["contract"],
                               "height": ev["height"], "time": ev["time"], "tx": ev["tx"],
                               "values": jsonable(ev["values"])})
            elif (ev["name"] in GROUP_LOAN_EVENTS          # a group's notice about a
                  and ev["contract"] in node.ledger.state.groups):   # member's loan
                loan = ev["values"][GROUP_LOAN_EVENTS[ev["name"]]].decode()
                self._publish({"type": "loan", "event": ev["name"], "loan": loan,
                               "group": ev["contract"], "height": ev["height"],
                               "time": ev["time"], "tx": ev["tx"],
                               "values": jsonable(ev["values"])})

    def _publish(self, event: dict) -> None:
        for q in list(self.subscribers):
            if event["type"] not in q.types:
                continue
            if q.full():
                self.subscribers.discard(q)    # a reader this far behind is cut off
            else:
                q.put_nowait(event)

    # --- what the API shows -------------------------------------------------------------

    def status(self) -> dict:
        node = self.node
        rep = node.replica
        return {
            "chain_id": self.genesis.chain_id, "address": self.kp.address,
            "validator": node.index, "height": node.height,
            "view": rep.view if rep else None,
            "primary": rep.vals.primary(rep.view) if rep else None,
            "normal": rep.normal if rep else None,
            "validators": node.vals.n, "peers": self.transport.connected(),
            "inbound_peers": len(self.transport.inbound),
            "banned_peers": self.transport.active_bans(),
            "mempool": len(node.mempool),
            "view_changes": rep.view_changes if rep else None,
            "refusals": dict(sorted(rep.refusals.items())) if rep else None,
            "evidence": self.evidence_count,
            "last_block_hash": (node.block_hash(node.height) or M.GENESIS_HASH).hex(),
            "state_root": node.ledger.state_root().hex(),
            "fees": dict(zip(("min_gas_price", "byte_price"), node.ledger.prices())),
            # chain seconds per real second (genesis `time_scale`; 1 but on dev chains)
            "time_scale": self.genesis.params.get("time_scale", 1),
            # the dev faucet's address when the genesis funds it (a dev chain), else null
            "dev_faucet": H.faucet_address() if H.is_dev(self.genesis) else None,
            # pruning (node/core/pruning.py): blocks below first_block are not served
            "archive": self.keep_blocks is None and self.store.base == 0,
            "keep_blocks": self.keep_blocks,
            "first_block": self.store.base + 1,
            # the snapshot height this run state-synced to (--state-sync), else null
            "synced_from": self.synced_from,
        }


def run(home: Path, log_format: str = "text", level: str = "INFO",
        hooks: Hooks | None = None, keep_blocks: int | None = None,
        state_sync: bool = False) -> None:
    """Run a node in the foreground until SIGTERM/SIGINT."""
    configure_logging(log_format, level)
    daemon = Daemon(home, hooks, keep_blocks, state_sync)
    profile_to = os.environ.get("LENDNET_PROFILE")   # a file ({pid} allowed): cProfile the run
    if not profile_to:
        code = asyncio.run(daemon.serve_forever())
    else:
        import cProfile
        with cProfile.Profile(time.process_time) as prof:   # CPU, not time spent waiting
            code = asyncio.run(daemon.serve_forever())
        prof.dump_stats(profile_to.replace("{pid}", str(os.getpid())))
    if code:
        raise SystemExit(code)


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        import json
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
