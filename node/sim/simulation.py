"""The deterministic simulator: n full nodes in one process, a simulated network and a
virtual clock, every random choice from one seed, so any failing run replays exactly.

Nodes are the real `node.core.node.Node` (mempool, PBFT replica, ledger) with a `MemoryStore`
as their disk. As on real machines, each node reads its own clock (an offset and a drift
from the seed, within the skew the protocol tolerates), is now and then late to handle
what arrives (scheduling delays, as on a busy machine), and starts at its own moment,
missing what was sent before it was up; the chain clock runs fast, as in the demo. Like
`lendnet cluster up`, the clients start once the chain has committed a block. The nemesis
drops, delays, duplicates and reorders messages, partitions and heals the network,
crashes nodes and restarts them from what they persisted, pauses them, sets up to f
clocks far off, and makes up to f nodes byzantine. After the faults heal the run
continues until every client transaction has committed on every honest node, or a
liveness bound passes; then the checker looks at every honest node's chain and ledger.
"""
from __future__ import annotations

import hashlib
import heapq
import random
import re
from dataclasses import dataclass, field

from lendnet.consensus import messages as M
from lendnet.consensus.effects import Committed, Evidence, Refused, ViewChange, ViewEntered
from lendnet.consensus.replica import Diverged
from lendnet.ledger.keys import Keypair
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.shell import Shell, carry_out
from lendnet.node.core.store import MemoryStore
from lendnet.node.daemon.home import FAST_CLOCK
from lendnet.node.harness.byzantine import MODES, Byzantine
from lendnet.node.harness.workload import LendingWorkload

from .checker import EvidenceWatch, VoteLedger, check, check_times

T0 = 1_767_225_600                       # chain time at genesis (2026-01-01)
FAULT_CLASSES = ("crash", "network", "byzantine", "clock")
PARAMS = {"view_timeout_ms": 400, "checkpoint_interval": 8, "window": 32,
          "snapshot_every": 4,                 # often, so crash/restart faults restore one
          "batch_delay_ms": 5, "max_block_txs": 200, "fetch_timeout_ms": 200,
          "empty_block_ms": 1_000, "clock_skew_ms": 1_000, "msg_delay_ms": 15_000,
          "time_scale": FAST_CLOCK}          # as in the demo: loans move while it runs
BOOT_SPREAD_MS = 3_000                   # nodes come up this far apart, at most
DRIFT_PPM = 200                          # a clock's drift, at most (a cheap crystal)
HICCUP_EVERY_MS = (500, 5_000)           # a node stalls for a while this often
LATE_RESTART_POLL_MS = 250               # how often the late restart looks at the chain


class Clocks:
    """Each node's own clock, in ms: true time plus an offset and a drift drawn from the
    seed, both small enough that two clocks stay within the tolerated skew, plus a jump
    the clock fault sets beyond it (for up to f nodes at a time) and the heal undoes."""

    def __init__(self, rng, n: int, skew_ms: int, t0: int):
        self.t0 = t0
        self.offset = [rng.randint(-skew_ms * 2 // 5, skew_ms * 2 // 5) for _ in range(n)]
        self.drift = [rng.randint(-DRIFT_PPM, DRIFT_PPM) for _ in range(n)]
        self.jump = [0] * n
        self.steady_since = [0] * n              # when each clock last jumped (0: never)

    def set_jump(self, i: int, ms: int, now: int) -> None:
        self.jump[i] = ms
        self.steady_since[i] = now

    def local(self, i: int, t: int) -> int:
        return t + self.offset[i] + self.jump[i] + (t - self.t0) * self.drift[i] // 1_000_000

    def true(self, i: int, local: int) -> int:
        """The earliest true time at which node i's clock reads at least `local`."""
        x = local - self.offset[i] - self.jump[i] - self.t0
        return self.t0 - (-x * 1_000_000 // (1_000_000 + self.drift[i]))


def faults_for(name: str) -> set[str]:
    if name == "none":
        return set()
    if name == "all":
        return set(FAULT_CLASSES)
    if name not in FAULT_CLASSES:
        raise ValueError(f"faults must be none, all or one of {', '.join(FAULT_CLASSES)}")
    return {name}


@dataclass
class RunResult:
    seed: int
    validators: int
    ok: bool
    safety_violations: list = field(default_factory=list)
    liveness_failure: str | None = None
    time_violations: list = field(default_factory=list)
    committed_txs: int = 0
    height: int = 0
    view_changes: int = 0
    evidence: int = 0
    byzantine: dict = field(default_factory=dict)
    faults_injected: int = 0
    refusals: dict = field(default_factory=dict)    # reason -> proposals refused (honest)
    restarts: dict = field(default_factory=dict)    # crashed nodes booted again, by where
                                                    # their state came from (node.py)
    sim_ms: int = 0
    replay: str = ""                                  # `lendnet sim --replay` this
    history: list = field(default_factory=list)       # on failure, when traced

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Simulation:
    """One run. Nodes are *instances*: in a plain run instance i is validator i; a Twins
    run (node/sim/twins.py) adds instances that share a validator's key. Messages to a
    validator reach every instance of it."""

    def __init__(self, seed: int, validators: int = 4, faults: str = "all", txs: int = 200,
                 fault_ms: int = 6_000, liveness_ms: int = 60_000,
                 quorum_override: int | None = None, twins: tuple = (),
                 leaders: tuple = (), trace: bool = False, params: dict | None = None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = validators
        self.f = (validators - 1) // 3
        self.faults = faults_for(faults)
        self.faults_name = faults
        self.fault_until = T0 * 1000 + (fault_ms if self.faults else 0)
        self.liveness_ms = liveness_ms
        self.now = T0 * 1000
        self.keys = [Keypair(hashlib.sha256(f"sim-validator:{seed}:{i}".encode()).digest())
                     for i in range(validators)]
        self.index = list(range(validators)) + list(twins)     # instance -> validator
        self.names = [str(i) for i in range(validators)] + [f"{v}'" for v in twins]
        chain = f"sim-{seed}"
        self.workload = LendingWorkload(chain, seed, self.rng, txs)
        self.params = dict(params or PARAMS)
        self.genesis = Genesis(chain, T0, self.workload.balances(),
                               tuple(k.pubkey for k in self.keys), self.params)
        self.quorum_override = quorum_override
        self.config = self.genesis.config(quorum_override, tuple(leaders))
        count = len(self.index)
        self.clocks = Clocks(self.rng, count, self.params["clock_skew_ms"], self.now)
        self.stores = [MemoryStore() for _ in range(count)]
        self.nodes = [self._boot(i) for i in range(count)]
        self.up_at = [self.now + self.rng.randint(0, BOOT_SPREAD_MS) for _ in range(count)]
        self.busy_until = [0] * count              # a node handles nothing before this
        self.hiccup_at = [self.now + self.rng.randint(*HICCUP_EVERY_MS) for _ in range(count)]
        self.crashed: set[int] = set()
        self.crash_in_send: set[int] = set()       # crash these part-way through sending
        self.paused: dict[int, list] = {}              # node -> events held while paused
        self.partition: list[set] | None = None
        self.drop_pct = self.dup_pct = 0
        self.byzantine: dict[int, str] = {}
        if "byzantine" in self.faults:
            for i in self.rng.sample(range(validators), self.f):
                self.byzantine[i] = self.rng.choice(MODES)
        self.votes = VoteLedger()                  # every vote on the wire, liars' too
        self.liars = {i: Byzantine(mode, chain, self.keys[i], self.rng, self.votes.record, i)
                      for i, mode in self.byzantine.items()}       # by instance
        self.faulty = set(self.byzantine) | set(twins)          # validators not honest
        self.shells = [Instance(self, i) for i in range(count)]
        self.queue: list = []
        self.seq = 0
        self.next_tick: dict[int, int] = {}
        self.evidence: list = []
        self.faults_injected = 0
        self.committed_at: dict[int, int] = {}     # height -> when a node first committed it
        self.time_violations: list[str] = []
        self.oversleep: str | None = None          # see _check_sleep
        self.invariant: str | None = None          # the first replica invariant broken
        self.watch = EvidenceWatch()
        self.restarts: dict[str, int] = {}         # node.started_from -> restarts so
        self.clients_started = False
        self.trace: list | None = [] if trace else None

    def replay_spec(self) -> str:
        """What `lendnet sim --replay` takes to run this again, byte for byte."""
        return f"sim:{self.n}:{self.faults_name}:{self.workload.total}:{self.seed}"

    def _note(self, *event) -> None:
        if self.trace is not None:
            self.trace.append((self.now - T0 * 1000, *event))

    def _boot(self, i: int) -> Node:
        return Node(self.genesis, self.keys[self.index[i]], self.stores[i],
                    self.clocks.local(i, self.now), self.config)

    # --- the event queue ----------------------------------------------------------------

    def _at(self, t: int, event: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, event))

    def _tick_at(self, i: int, local: int) -> None:
        """Schedule node i's tick when its clock reads `local`, unless an earlier one is
        already pending."""
        t = max(self.clocks.true(i, local), self.now + 1)
        pending = self.next_tick.get(i)
        if pending is None or pending <= self.now or pending > t:
            self.next_tick[i] = t
            self._at(t, ("tick", i))

    def _send(self, src: int, dst: int, kind: str, raw: bytes, msg: dict | None = None) -> None:
        if self.partition and not any(src in g and dst in g for g in self.partition):
            return
        if msg is not None and not self._deliverable(src, dst, msg):
            return
        if self.rng.randrange(100) < self.drop_pct:
            return
        self._at(self.now + self.rng.randint(1, 8), (kind, dst, raw, msg, src))
        if self.rng.randrange(100) < self.dup_pct:
            self._at(self.now + self.rng.randint(1, 40), (kind, dst, raw, msg, src))

    def _deliverable(self, src: int, dst: int, msg: dict) -> bool:
        """Whether the scenario lets this consensus message through (Twins: its cut)."""
        return True

    def _dispatch(self, i: int, effects: list) -> None:
        if i in self.crash_in_send:
            # The crash falls between persisting and sending: a random part of what this
            # event would send leaves, then the node is gone (with what it persisted).
            self.crash_in_send.discard(i)
            effects = effects[:self.rng.randint(0, len(effects))]
            carry_out(self.nodes[i], effects, self.shells[i])
            self.crashed.add(i)
            self._note("crash", i, f"after sending {len(effects)} effects")
            return
        carry_out(self.nodes[i], effects, self.shells[i])

    def _check_sleep(self, i: int, at: int) -> None:
        """A replica never asks to sleep longer than its longest timeout: one that does
        can stall the chain unseen until its clock gets there (a clock set back once left
        replicas silent for a minute). Caught on the spot, not after a stall."""
        cfg = self.config
        longest = (cfg.view_timeout_ms << 4) + cfg.fetch_timeout_ms + cfg.empty_block_ms
        asked = at - self.clocks.local(i, self.now)
        if asked > longest and self.oversleep is None and self.index[i] not in self.faulty:
            self.oversleep = (f"node {i} asked to sleep {asked} ms at "
                              f"{self.now - T0 * 1000} ms, longer than its longest "
                              f"timeout ({longest} ms)")

    def _steady(self, *nodes: int) -> bool:
        """Are these honest nodes' clocks within the tolerated skew, and have they been
        for longer than any proposal can take to be judged?"""
        settle = self.params["clock_skew_ms"] + self.params["msg_delay_ms"]
        return all(self.index[i] not in self.faulty and not self.clocks.jump[i]
                   and self.now >= self.clocks.steady_since[i] + settle for i in nodes)

    def instances_of(self, validator: int) -> list[int]:
        return [j for j, v in enumerate(self.index) if v == validator]

    # --- the nemesis -------------------------------------------------------------------

    def _nemesis(self) -> None:
        if self.now >= self.fault_until:
            return
        self._at(self.now + self.rng.randint(100, 700), ("nemesis",))
        options = []
        if "network" in self.faults:
            options += ["partition", "lossy", "heal-network"]
        if "crash" in self.faults:
            options += ["crash", "pause", "recover"]
        if "clock" in self.faults:
            options += ["clock", "heal-clock"]
        if not options:
            return
        action = self.rng.choice(options)
        self.faults_injected += 1
        if action == "partition":
            nodes = list(range(len(self.nodes)))
            self.rng.shuffle(nodes)
            cut = self.rng.randint(1, self.n - 1)
            self.partition = [set(nodes[:cut]), set(nodes[cut:])]
        elif action == "lossy":
            self.drop_pct, self.dup_pct = self.rng.randint(1, 15), self.rng.randint(0, 10)
        elif action == "heal-network":
            self.partition, self.drop_pct, self.dup_pct = None, 0, 0
        elif action in ("crash", "pause"):
            down = self.crashed | set(self.paused) | self.crash_in_send
            up = [i for i in range(len(self.nodes)) if i not in down]
            if len(down) < self.f and up:
                i = self.rng.choice(up)
                primary = self._primary()
                if primary in up and self.rng.randrange(2):
                    i = primary                         # the node whose loss costs most
                if action == "pause":
                    self.paused[i] = []
                elif self.rng.randrange(2):
                    self.crashed.add(i)                 # between two events
                    self._note("crash", i, "between events")
                else:
                    self.crash_in_send.add(i)           # in the middle of its next one
        elif action == "recover":
            self._recover_one()
        elif action == "clock":
            # A clock set far off (ahead or behind, beyond the tolerated skew): its
            # proposals are refused and it refuses others', so it takes a view change.
            off = [i for i in range(len(self.nodes)) if self.clocks.jump[i]]
            ok = [i for i in range(len(self.nodes)) if not self.clocks.jump[i]]
            if len(off) < self.f and ok:
                skew = self.params["clock_skew_ms"]
                self.clocks.set_jump(self.rng.choice(ok), self.rng.choice((-1, 1)) *
                                     self.rng.randint(skew + 200,
                                                      4 * (skew + self.params["msg_delay_ms"])),
                                     self.now)
        elif action == "heal-clock":
            off = [i for i in range(len(self.nodes)) if self.clocks.jump[i]]
            if off:
                self.clocks.set_jump(self.rng.choice(off), 0, self.now)

    def _primary(self) -> int | None:
        """An instance of the primary of the view most honest replicas are in."""
        views = sorted(n.replica.view for n in self._honest().values())
        if not views:
            return None
        leaders = self.instances_of(self.config.validators.primary(views[len(views) // 2]))
        return self.rng.choice(leaders)

    def _recover_one(self) -> None:
        if self.crashed:
            self._reboot(min(self.crashed))
        elif self.paused:
            i = min(self.paused)
            for event in self.paused.pop(i):
                self._at(self.now + 1, event)
            self._tick_at(i, self.clocks.local(i, self.now) + 1)

    def _reboot(self, i: int) -> None:
        """Start crashed node i again from what it persisted, nothing else."""
        self.crashed.discard(i)
        self.nodes[i] = node = self._boot(i)
        self.restarts[node.started_from] = self.restarts.get(node.started_from, 0) + 1
        self.watch.forget(i)
        self._note("restart", i, node.started_from)
        self._tick_at(i, self.clocks.local(i, self.now) + 1)

    def _late_restart(self, i: int, down_ms: int, height: int, lose_state: bool) -> None:
        """Kill node i once every honest node has committed `height` (looking again
        every LATE_RESTART_POLL_MS), losing its stored state if `lose_state`, and boot
        it again `down_ms` later."""
        low = min(n.height for n in self._honest().values())
        down = i in self.crashed or i in self.paused or i in self.crash_in_send
        if low < height or down:                    # (the nemesis has it down: wait)
            self._at(self.now + LATE_RESTART_POLL_MS,
                     ("restart", i, down_ms, height, lose_state))
            return
        self.crashed.add(i)
        if lose_state:
            self.stores[i].drop_state()
        self._note("crash", i, "late restart" + (", its stored state lost" if lose_state
                                                 else ""))
        self._at(self.now + down_ms, ("reboot", i))

    def _heal(self) -> None:
        self.partition, self.drop_pct, self.dup_pct = None, 0, 0
        self.crash_in_send.clear()
        for i in range(len(self.nodes)):
            if self.clocks.jump[i]:
                self.clocks.set_jump(i, 0, self.now)
        while self.crashed or self.paused:
            self._recover_one()

    # --- clients -----------------------------------------------------------------------

    def _observer(self) -> Node:
        """A reachable honest node whose ledger a wallet reads."""
        up = [i for i in self._honest() if i not in self.crashed and i not in self.paused
              and self.now >= self.up_at[i]]
        return self.nodes[self.rng.choice(up)] if up else None

    def _client(self) -> None:
        """Each wallet gets a turn (in a seeded order) to act on what a node shows it.
        As with `lendnet cluster up`, they begin once the chain has committed a block."""
        if not self.clients_started:
            if not any(n.height for n in self._honest().values()):
                self._at(self.now + 50, ("client",))
                return
            self.clients_started = True
            self._at(self.now + 300, ("resubmit",))
        obs = self._observer()
        if obs is not None:
            for _ in self.workload.clients:
                for raw in self.workload.step(obs.ledger):
                    self._submit(raw)
        if not self.workload.done_creating or self.workload.pending():
            self._at(self.now + self.rng.randint(5, 30), ("client",))

    def _resubmit(self) -> None:
        """Wallets resend what has not committed yet, to a random node."""
        for c in self.workload.clients:
            for _, raw in c.pending[:4]:
                self._submit(raw)
        self._at(self.now + 300, ("resubmit",))

    def _submit(self, raw: bytes) -> None:
        i = self.rng.randrange(len(self.nodes))
        self._at(self.now + self.rng.randint(1, 5), ("tx", i, raw))

    def _stall(self, i: int) -> None:
        """After an event, a node is sometimes slow to get to the next, as a process on a
        busy machine is: often by a few ms, and every HICCUP_EVERY_MS or so for longer —
        one hiccup in ten longer than the view timeout."""
        if self.rng.randrange(10) == 0:
            self.busy_until[i] = self.now + self.rng.randint(1, 5)
        if self.now >= self.hiccup_at[i]:
            self.hiccup_at[i] = self.now + self.rng.randint(*HICCUP_EVERY_MS)
            self.busy_until[i] = self.now + (self.rng.randint(10, 150) if self.rng.randrange(10)
                                             else self.rng.randint(200, 1_000))

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind in ("msg", "tx", "tick"):
            i = event[1]
            if i in self.crashed or self.now < self.up_at[i]:
                return                                  # lost: the node is not up
            if i in self.paused:
                if kind != "tick":
                    self.paused[i].append(event)
                return
            if self.now < self.busy_until[i]:
                self._at(self.busy_until[i], event)     # still busy with the last one
                return
            node = self.nodes[i]
            local = self.clocks.local(i, self.now)
            if kind == "msg":
                self._deliver(i, node, event, local)
            elif kind == "tx":
                if node.receive_tx(event[2]):
                    for j in range(len(self.nodes)):
                        if j != i:
                            self._send(i, j, "tx", event[2])
                    self._tick_at(i, local + 1)
            else:
                if self.next_tick.get(i) == self.now:
                    del self.next_tick[i]
                self._dispatch(i, node.tick(local))
            self._stall(i)
            if self.index[i] not in self.faulty and self.invariant is None:
                broken = node.replica.invariants() if node.replica else []
                if broken:
                    self.invariant = (f"invariant: node {i} at {self.now - T0 * 1000} ms: "
                                      f"{broken[0]}")
        elif kind == "boot":
            i = event[1]
            self.nodes[i] = self._boot(i)
            self._tick_at(i, self.clocks.local(i, self.now) + 1)
        elif kind == "client":
            self._client()
        elif kind == "resubmit":
            if self.workload.pending() or not self.workload.done_creating:
                self._resubmit()
        elif kind == "nemesis":
            self._nemesis()
        elif kind == "heal":
            self._heal()
        elif kind == "restart":
            self._late_restart(*event[1:])
        elif kind == "reboot":
            if event[1] in self.crashed:           # (unless the heal booted it first)
                self._reboot(event[1])

    def _deliver(self, i: int, node: Node, event: tuple, local: int) -> None:
        _, _, raw, msg, src = event
        rep = node.replica
        honest = self.index[i] not in self.faulty
        before = (rep.view, rep.app.height, rep.low) if honest else None
        rejected = node.rejected_messages
        effects = node.deliver(raw, local)
        if node.rejected_messages == rejected:
            if honest:
                self.watch.delivered(i, before, rep, msg)
            if self.trace is not None:
                b = msg["body"]
                got = b.get("d") or (b["t"] == M.PROPOSE and M.block_hash(b["header"]))
                self._note("deliver", i, src, b["t"], b.get("v"), b.get("h"), got or None)
        self._dispatch(i, effects)

    def _honest(self) -> dict[int, Node]:
        return {i: n for i, n in enumerate(self.nodes) if self.index[i] not in self.faulty}

    def _settled(self) -> bool:
        if not self.workload.done_creating:
            return False
        honest = self._honest()
        want = {c.kp.address: c.next_nonce for c in self.workload.clients}
        return all(n.ledger.account(a)[1] >= nonce for n in honest.values()
                   for a, nonce in want.items())

    def liveness_message(self) -> str:
        if not self.clients_started:
            return f"the chain never committed a block in {self.now // 1000 - T0} s"
        return f"{self.workload.pending()} transactions not committed " \
               f"{(self.now - self.fault_until) // 1000}s after the faults healed"

    def _start(self) -> None:
        for i in range(len(self.nodes)):
            self._at(self.up_at[i], ("boot", i))
        self._at(self.now + 1, ("client",))
        if self.faults:
            self._at(self.now + 50, ("nemesis",))
            self._at(self.fault_until, ("heal",))
        if "crash" in self.faults:
            # The nemesis's crashes fall while the chain is short (most chains are
            # still at height 0 when its window closes), so its restarts find empty
            # stores. One late kill and reboot, once the chain is a few snapshots
            # long, restarts an honest node from a store with blocks and snapshots
            # behind it, as a daemon's restart does; in half the runs its stored state
            # is lost too (a damaged or deleted state database), so the node takes the
            # snapshot path: restore the latest snapshot, replay the blocks after it.
            # It draws from an rng of its own, so everything else in a seed's run is
            # drawn as before.
            late = random.Random(f"late-restart:{self.seed}")
            every = self.params.get("snapshot_every") or 4
            honest = [i for i in range(len(self.nodes)) if self.index[i] not in self.faulty]
            self._at(self.now + LATE_RESTART_POLL_MS,
                     ("restart", late.choice(honest), late.randint(50, 1_500),
                      late.randint(2 * every, 5 * every), bool(late.randrange(2))))

    def run(self, max_events: int = 2_000_000) -> RunResult:
        self._start()
        deadline = self.fault_until + self.liveness_ms
        violations, liveness = [], None
        events = 0
        try:
            while self.queue and events < max_events:
                t, _, event = heapq.heappop(self.queue)
                if t > deadline:
                    break
                self.now = t
                self._handle(event)
                events += 1
                if self.now > self.fault_until and events % 64 == 0 and self._settled():
                    break
        except Diverged as e:                       # a replica caught itself diverging
            violations.append(f"divergence: {e}")
        except Exception as e:                      # the node code blew up: report it, with
            violations.append(f"crash: {type(e).__name__} at {self.now - T0 * 1000} ms: "
                              f"{e}")                # the run's replay spec, and stop
        if not violations and not self._settled():
            liveness = self.liveness_message()
        liveness = self.oversleep or liveness
        honest = self._honest()
        cfg = self.config
        quorum = cfg.validators.quorum
        violations += check(honest, self.workload.created, quorum)
        violations += self.votes.conflicts(quorum)
        violations += self.votes.double_votes(set(range(self.n)) - self.faulty)
        violations += self.watch.missing()
        violations += [self.invariant] if self.invariant else []
        # Chain time never runs ahead of true time by more than an in-tolerance clock's
        # offset plus the skew a replica allows (every prepare quorum holds such a clock).
        ahead = self.params["clock_skew_ms"] * 7 // 5 + DRIFT_PPM * (self.now - T0 * 1000) // 10**6
        violations += check_times(honest, self.committed_at, cfg, ahead)
        refusals: dict[str, int] = {}
        for n in honest.values():
            for why, k in n.replica.refusals.items():
                refusals[why] = refusals.get(why, 0) + k
        heights = [n.height for n in honest.values()]
        return RunResult(
            seed=self.seed, validators=self.n,
            ok=not violations and liveness is None and not self.time_violations,
            safety_violations=violations, liveness_failure=liveness,
            time_violations=self.time_violations[:10],
            committed_txs=sum(len(n.store.get_block(h)[0]["txs"])
                              for n in [max(honest.values(), key=lambda n: n.height)]
                              for h in range(1, n.height + 1)),
            height=min(heights), view_changes=max(n.replica.view_changes
                                                  for n in honest.values()),
            evidence=len(self.evidence), byzantine=dict(sorted(self.byzantine.items())),
            faults_injected=self.faults_injected, refusals=dict(sorted(refusals.items())),
            restarts=dict(sorted(self.restarts.items())),
            sim_ms=self.now - T0 * 1000, replay=self.replay_spec())


def run_seed(seed: int, **kw) -> RunResult:
    return Simulation(seed, **kw).run()


def history(run: Simulation, result: RunResult, limit: int = 160) -> list[str]:
    """The part of a traced run that shows its first violation, for a person: every
    view change, crash and restart, and what each node received and committed at the
    height the violation names (the last events if it names none). Messages of one kind
    for one block to one node are one line, with their senders."""
    problem = (result.safety_violations + [result.liveness_failure or ""]
               + result.time_violations)
    problem = next((p for p in problem if p), "")
    m = re.search(r"height (\d+)", problem)
    focus = int(m.group(1)) if m else None
    names = run.names
    lines, grouped = [], {}
    for e in run.trace:
        t, kind, node = e[0], e[1], e[2]
        if kind == "deliver":
            _, _, _, src, mtype, v, h, d = e
            if focus is None or h != focus or mtype not in (M.PROPOSE, M.PREPARE, M.COMMIT):
                continue
            key = (node, mtype, v, h, d)
            if key not in grouped:
                grouped[key] = [t, []]
                lines.append((t, key))
            if names[src] not in grouped[key][1]:
                grouped[key][1].append(names[src])
        elif kind == "commit":
            if focus is None or e[3] == focus:
                lines.append((t, f"node {names[node]} commits height {e[3]}: block "
                                 f"{e[5].hex()[:8]} (certificate of view {e[4]})"))
        elif kind == "view-change":
            lines.append((t, f"node {names[node]} leaves view {e[3]} for {e[4]}: {e[5]}"))
        elif kind == "view-entered":
            lines.append((t, f"node {names[node]} enters view {e[3]} (leader {e[4]}, "
                             f"{e[5]} blocks carried over)"))
        elif kind in ("crash", "restart", "refused"):
            lines.append((t, f"node {names[node]} {kind}: " + " ".join(map(str, e[3:]))))
    out = []
    for t, what in lines:
        if type(what) is tuple:
            node, mtype, v, h, d = what
            what = (f"node {names[node]} receives {mtype.upper()} view {v} height {h} "
                    f"block {d.hex()[:8]} from {', '.join(grouped[what][1])}")
        out.append(f"{t:>7} ms  {what}")
    if len(out) > limit:
        out = out[:limit // 2] + [f"    ... {len(out) - limit} more ..."] + out[-limit // 2:]
    return [f"violation: {problem}"] + out


class Instance(Shell):
    """What the simulated world does with one instance's effects."""

    def __init__(self, sim: Simulation, i: int):
        self.sim = sim
        self.i = i

    @property
    def lie(self):                             # (a Twins run makes its liar after this)
        return None if self.i not in self.sim.liars else self._lie

    def _lie(self, msg: dict, dsts: list[int]) -> list[tuple[int, dict]]:
        self.sim.votes.record(msg)             # the honest message, then what it sends
        return self.sim.liars[self.i].outgoing(msg, dsts)   # (it records what it makes up)

    def send(self, to: int, msg: dict) -> None:
        if self.i not in self.sim.liars:       # (a liar's messages are recorded above)
            self.sim.votes.record(msg)
        self._to(to, msg)

    def broadcast(self, msg: dict) -> None:
        self.sim.votes.record(msg)
        for d in self.audience():
            self._to(d, msg)

    def audience(self) -> list[int]:
        me = self.sim.index[self.i]
        others = [v for v in range(self.sim.n) if v != me]
        twins = len(self.sim.index) > self.sim.n
        return others + [me] if twins else others      # a twin hears its other half

    def _to(self, validator: int, msg: dict) -> None:
        """Every instance of the validator but this one."""
        for j in self.sim.instances_of(validator):
            if j != self.i:
                self.sim._send(self.i, j, "msg", M.encode(msg), msg)

    def arm(self, at: int) -> None:
        self.sim._check_sleep(self.i, at)
        self.sim._tick_at(self.i, at)

    def evidence(self, e: Evidence) -> None:
        sim = self.sim
        sim.evidence.append((self.i, e.kind, e.replica))
        sim.watch.emitted(self.i, e)
        sim._note("evidence", self.i, e.kind, e.replica)

    def committed(self, e: Committed) -> None:           # the checker reads the stores
        self.sim.committed_at.setdefault(e.height, self.sim.now)
        self.sim._note("commit", self.i, e.height, e.cert[0]["body"]["v"] if e.cert else None,
                       M.block_hash(e.block["header"]))

    def view_change(self, e: ViewChange) -> None:
        self.sim._note("view-change", self.i, e.old, e.new, e.reason)

    def view_entered(self, e: ViewEntered) -> None:
        self.sim._note("view-entered", self.i, e.view, e.primary, e.carried)

    def refused(self, e: Refused) -> None:
        sim = self.sim
        sim._note("refused", self.i, e.view, e.height, e.proposer, e.reason)
        if e.reason == "time-ahead" and sim._steady(self.i, e.proposer):
            # Two honest nodes whose clocks are within the tolerated skew must accept
            # each other's times: a refusal here is a broken time rule.
            sim.time_violations.append(
                f"node {self.i} refused validator {e.proposer}'s proposal for height "
                f"{e.height} in view {e.view} ({e.detail}); their clocks are within the "
                f"tolerated skew")
