"""The sans-IO PBFT replica, fed really-signed message sequences by hand.

Four validators, each a real `node.core.node.Node` (mempool, ledger, MemoryStore) around its
replica. The test is the network: it takes the Broadcast/Send effects one node returns
and hands the encoded bytes to the nodes it chooses, so each test decides exactly what
each replica sees, and in which order.
"""
from __future__ import annotations

import pytest

from lendnet.consensus import messages as M
from lendnet.consensus import replica as R
from lendnet.consensus.effects import (Broadcast, Committed, Evidence, Persist, Refused, Send,
                                       Timer, ViewChange)
from lendnet.ledger import codec, tx as txm
from lendnet.ledger.keys import Keypair
from lendnet.node.core.node import Genesis, Node
from lendnet.node.core.shell import Shell, carry_out
from lendnet.node.core.store import MemoryStore

CHAIN = "lendnet-replica-test"
T0 = 1_767_225_600                     # genesis chain time (s)
START = T0 * 1000                      # the shell's clock at genesis (ms)
N, F, Q = 4, 1, 3
PARAMS = {"view_timeout_ms": 1000, "checkpoint_interval": 4, "batch_delay_ms": 0}
VKEYS = [Keypair.from_name(f"v{i}") for i in range(N)]
CLIENTS = {name: Keypair.from_name(name) for name in ("alice", "bob", "carol")}
ALL = range(N)


class Net:
    """Four nodes and a hand-driven network. Every message a node emits is recorded in
    `queue` as (src, dst, msg); `run` delivers the queue, a test may filter it."""

    def __init__(self, params: dict | None = None):
        self.genesis = Genesis(CHAIN, T0, {kp.address: 1_000_000 for kp in CLIENTS.values()},
                               tuple(k.pubkey for k in VKEYS), dict(PARAMS, **(params or {})))
        self.now = START
        self.stores = [MemoryStore() for _ in ALL]
        self.nodes = [Node(self.genesis, VKEYS[i], self.stores[i], self.now) for i in ALL]
        self.nonces = {name: 0 for name in CLIENTS}
        self.queue: list[tuple[int, int, dict]] = []
        self.committed: dict[int, list[Committed]] = {i: [] for i in ALL}
        self.evidence: dict[int, list[Evidence]] = {i: [] for i in ALL}

    # clients
    def tx(self, name: str = "alice", amount: int = 10, to: str = "bob") -> bytes:
        kp = CLIENTS[name]
        body = txm.build(kp, CHAIN, "transfer", self.nonces[name], to=CLIENTS[to].address,
                         amount=amount)
        self.nonces[name] += 1
        return txm.sign(body, [kp]).raw

    def submit(self, raw: bytes, to=ALL) -> bytes:
        for i in to:
            self.nodes[i].submit(raw)
        return raw

    # the network
    def _emit(self, src: int, effects: list) -> list:
        carry_out(self.nodes[src], effects, Wire(self, src))   # the shells' one loop
        if self.nodes[src].replica is not None:
            assert self.nodes[src].replica.invariants() == [], src
        return effects

    def tick(self, i: int, dt: int = 0) -> list:
        self.now += dt
        return self._emit(i, self.nodes[i].tick(self.now))

    def deliver(self, i: int, msg) -> list:
        """Deliver one message; like a real shell, tick at once if the replica asks for
        a timer that is already due (e.g. fetched blocks wait for the next tick)."""
        raw = msg if type(msg) is bytes else M.encode(msg)
        eff = self._emit(i, self.nodes[i].deliver(raw, self.now))
        if any(type(e) is Timer and e.at <= self.now for e in eff):
            eff += self.tick(i)
        return eff

    def run(self, keep=lambda src, dst, msg: True, max_steps: int = 20_000) -> list:
        """Deliver the queue (and what it causes) until quiet; return what `keep` held back."""
        held = []
        while self.queue:
            max_steps -= 1
            assert max_steps > 0, "the network never went quiet"
            src, dst, msg = self.queue.pop(0)
            if keep(src, dst, msg):
                self.deliver(dst, msg)
            else:
                held.append((src, dst, msg))
        return held

    # observations
    def root(self, i: int) -> bytes:
        return self.nodes[i].ledger.state_root()

    def chain(self, i: int) -> list[bytes]:
        return [self.nodes[i].block_hash(h) for h in range(1, self.nodes[i].height + 1)]

    def replica(self, i: int) -> R.Replica:
        return self.nodes[i].replica


class Wire(Shell):
    """What the hand-driven network does with node `src`'s effects: queue its messages,
    keep what it committed and the evidence it found."""

    def __init__(self, net: Net, src: int):
        self.net, self.src = net, src

    def send(self, to: int, msg: dict) -> None:
        self.net.queue.append((self.src, to, msg))

    def broadcast(self, msg: dict) -> None:
        self.net.queue += [(self.src, d, msg) for d in self.audience()]

    def audience(self) -> list[int]:
        return [d for d in ALL if d != self.src]

    def committed(self, e: Committed) -> None:
        self.net.committed[self.src].append(e)

    def evidence(self, e: Evidence) -> None:
        self.net.evidence[self.src].append(e)


def of(effects: list, t: str, **match) -> list[dict]:
    """The signed messages of type t among effects (Broadcast or Send), body fields matching."""
    return [e.msg for e in effects if type(e) in (Broadcast, Send) and e.msg["body"]["t"] == t
            and all(e.msg["body"].get(k) == v for k, v in match.items())]


def only(effects: list, t: str, **match) -> dict:
    got = of(effects, t, **match)
    assert len(got) == 1, f"expected one {t} {match}, got {len(got)}"
    return got[0]


def committed(effects: list) -> list[Committed]:
    return [e for e in effects if type(e) is Committed]


def signed(r: int, body: dict, key: Keypair | None = None) -> dict:
    """A message from replica r (signed with its key unless another is given)."""
    return M.sign(CHAIN, key or VKEYS[r], dict(body, r=r))


def block_for(node: Node, h: int, txs: list[bytes], *, prev: bytes | None = None,
              time: int | None = None, proposer: int = 0, exec_height: int | None = None,
              exec_root: bytes | None = None) -> dict:
    """A well-formed block at h on top of what `node` has executed, fields overridable."""
    eh = node.height if exec_height is None else exec_height
    if prev is None:
        prev = node.block_hash(h - 1) if h > 1 else M.GENESIS_HASH
    if time is None:
        time = node.header_at(h - 1)["time"] if 1 < h <= node.height + 1 else T0
    header = {"height": h, "prev": prev, "time": time,
              "proposer": proposer, "txs_root": M.txs_root(txs), "exec_height": eh,
              "exec_root": node.root_at(eh) if exec_root is None else exec_root}
    return {"header": header, "txs": txs}


def propose(v: int, block: dict, key: Keypair | None = None, r: int | None = None) -> dict:
    """A PROPOSE of `block` (signed header, transactions beside it)."""
    r = v % N if r is None else r
    return M.with_txs(signed(r, {"t": M.PROPOSE, "v": v, "h": block["header"]["height"],
                                 "header": block["header"]}, key), block["txs"])


def commit_one(net: Net, nodes=ALL, tx: bytes | None = None) -> int:
    """Submit a transaction, let the view's primary propose it and the nodes run it to
    commit; return the new height."""
    net.submit(tx or net.tx(), to=nodes)
    net.tick(net.replica(nodes[0]).vals.primary(net.replica(nodes[0]).view))
    net.run(keep=lambda s, d, m: s in nodes and d in nodes)
    heights = {net.nodes[i].height for i in nodes}
    assert len(heights) == 1
    return heights.pop()


def assert_quiet(effects: list) -> None:
    """Nothing but the timer: no vote, no commit, no evidence."""
    assert all(type(e) is Timer for e in effects), effects


# --- 1. the normal case -------------------------------------------------------------------

def test_normal_case_propose_prepare_commit_execute():
    net = Net()
    raw = net.submit(net.tx("alice", 25))
    assert_quiet(net.tick(1))                             # a backup never proposes

    eff0 = net.tick(0)
    prop = only(eff0, M.PROPOSE, v=0, h=1)
    block = M.block_of(prop)
    d = M.block_hash(block["header"])
    assert block["txs"] == [raw] and block["header"]["prev"] == M.GENESIS_HASH
    prepares = {0: only(eff0, M.PREPARE, v=0, h=1, d=d)}  # the primary votes its own block
    assert not of(eff0, M.COMMIT)

    for i in (1, 2, 3):
        eff = net.deliver(i, prop)
        prepares[i] = only(eff, M.PREPARE, v=0, h=1, d=d)
        assert not of(eff, M.COMMIT)

    commits = {}
    for i in ALL:                                         # 2f+1 PREPAREs, counting its own
        first, second = [prepares[j] for j in ALL if j != i][:2]
        assert not of(net.deliver(i, first), M.COMMIT)
        commits[i] = only(net.deliver(i, second), M.COMMIT, v=0, h=1, d=d)
        assert net.replica(i).slots[1].prepared[:2] == (0, d)

    for i in ALL:                                         # 2f+1 COMMITs: execute
        first, second = [commits[j] for j in ALL if j != i][:2]
        assert not committed(net.deliver(i, first))
        assert net.nodes[i].height == 0
        [c] = committed(net.deliver(i, second))
        assert c.height == 1 and M.block_hash(c.block["header"]) == d
        assert c.state_root == net.root(i)
        signers = M.cert_signers(c.cert, M.COMMIT, 0, 1, d)
        assert len(signers) >= Q and i in signers
        for m in c.cert:
            M.check_message(m, net.replica(i).vals)       # every signature checks out

    assert [n.height for n in net.nodes] == [1] * N
    assert len({net.root(i) for i in ALL}) == 1
    assert {net.nodes[i].store.get_block(1)[2] for i in ALL} == {net.root(0)}
    bob = CLIENTS["bob"].address
    assert all(n.ledger.balance(bob) == 1_000_025 for n in net.nodes)
    assert all(len(n.mempool) == 0 for n in net.nodes)


# --- 2. pipelining ------------------------------------------------------------------------

def test_votes_and_blocks_reach_the_store_when_the_shell_flushes():
    # The node holds an event's records and executed blocks until flush(); a shell
    # flushes before it carries out any effect, so no vote leaves unrecorded.
    net = Net()
    net.submit(net.tx("alice", 25))
    eff = net.nodes[0].tick(net.now)                      # the node itself, no shell
    prop = only(eff, M.PROPOSE, v=0, h=1)
    assert not any(type(e) is Persist for e in eff)       # the node keeps them, not the shell
    assert net.stores[0].load_records() == {}
    net.nodes[0].flush()
    d = M.block_hash(prop["body"]["header"])
    assert net.stores[0].load_records()[("vote", M.PROPOSE, 0, 1)] == d
    assert net.stores[0].load_records()[("vote", M.PREPARE, 0, 1)] == d
    net.queue += [(0, i, e.msg) for e in eff if type(e) is Broadcast for i in (1, 2, 3)]
    net.run()
    assert all(n.height == 1 for n in net.nodes)
    assert all(s.height == 1 for s in net.stores)         # the shell flushed each event


def test_pipelined_heights_execute_strictly_in_order():
    net = Net()
    proposals = []
    for _ in range(3):                                    # three heights in flight at once
        net.submit(net.tx("alice"), to=[0])
        proposals.append(only(net.tick(0), M.PROPOSE))
    assert [p["body"]["h"] for p in proposals] == [1, 2, 3]
    hashes = [M.block_hash(p["body"]["header"]) for p in proposals]
    assert [p["body"]["header"]["prev"] for p in proposals] == \
        [M.GENESIS_HASH] + hashes[:2]

    held = net.run(keep=lambda s, d, m: m["body"]["t"] != M.COMMIT)
    assert all(r.slots[h].prepared is not None for r in map(net.replica, ALL) for h in (1, 2, 3))
    assert [n.height for n in net.nodes] == [0] * N
    commits = {(s, m["body"]["h"]): m for s, d, m in held}
    assert len(commits) == N * 3                          # everyone committed-voted every height

    # Replica 1 hears the COMMITs for 3, then 2, then 1: nothing executes before 1.
    for h in (3, 2):
        for s in (0, 2):
            assert not committed(net.deliver(1, commits[(s, h)]))
    assert net.nodes[1].height == 0
    assert not committed(net.deliver(1, commits[(0, 1)]))
    done = committed(net.deliver(1, commits[(2, 1)]))
    assert [c.height for c in done] == [1, 2, 3]
    assert [M.block_hash(c.block["header"]) for c in done] == hashes
    # ... each with its own block's result (the daemon publishes loan events from it; a
    # "last result" read after the step gave all three height 3's)
    assert [(c.result.height, len(c.result.receipts)) for c in done] == [(1, 1), (2, 1), (3, 1)]
    assert net.nodes[1].ledger.account(CLIENTS["alice"].address)[1] == 3

    # Replica 2 hears 2's before 1's and 3's last: it executes 1 and 2, then 3.
    for s in (0, 1):
        net.deliver(2, commits[(s, 2)])
    assert net.nodes[2].height == 0
    for s in (0, 1):
        net.deliver(2, commits[(s, 1)])
    assert net.nodes[2].height == 2
    for s in (0, 1):
        net.deliver(2, commits[(s, 3)])
    assert [c.height for c in net.committed[2]] == [1, 2, 3]
    assert net.chain(1) == net.chain(2) == hashes and net.root(1) == net.root(2)


def test_no_commit_vote_above_a_height_this_replica_has_not_commit_voted():
    """Replica 1 prepares heights 2 and 3 but never sees 1 prepared (its PREPAREs for 1
    are lost). It must COMMIT none of them: had it committed 3 with 1 unprepared, a
    commit quorum for 3 could exist whose members' view changes do not carry 1, and a
    new view would drop 1 and with it the committed 3 (the simulator found this, seed 22,
    network faults)."""
    net = Net()
    for _ in range(3):
        net.submit(net.tx("alice"), to=[0])
        net.tick(0)
    held = net.run(keep=lambda s, d, m: not (d == 1 and m["body"]["t"] == M.PREPARE
                                             and m["body"]["h"] == 1)
                   and m["body"]["t"] != M.COMMIT)
    rep = net.replica(1)
    assert rep.slots[1].prepared is None
    assert rep.slots[2].prepared is not None and rep.slots[3].prepared is not None
    assert not [k for k in rep.my_votes if k[0] == M.COMMIT]
    assert all(s != 1 for s, d, m in held if m["body"]["t"] == M.COMMIT)
    # Once 1 is prepared, it commit-votes 1, 2 and 3 in order.
    eff = []
    for _s, d, m in held:
        if d == 1 and m["body"]["t"] == M.PREPARE:
            eff += net.deliver(1, m)
    assert [m["body"]["h"] for m in of(eff, M.COMMIT)] == [1, 2, 3]


# --- 3. checkpoints and garbage collection ------------------------------------------------

def test_checkpoint_becomes_stable_and_collects_garbage():
    net = Net()
    for h in (1, 2, 3):
        assert commit_one(net) == h
    assert all(net.replica(i).low == 0 for i in ALL)
    net.submit(net.tx())
    net.tick(0)
    held = net.run(keep=lambda s, d, m: m["body"]["t"] != M.CHECKPOINT)
    assert [n.height for n in net.nodes] == [4] * N
    checkpoints = {s: m for s, d, m in held}
    assert set(checkpoints) == set(ALL)
    d4, root4 = net.nodes[0].block_hash(4), net.root(0)
    assert all(m["body"]["h"] == 4 and m["body"]["d"] == d4 and m["body"]["root"] == root4
               for m in checkpoints.values())

    rep, store = net.replica(1), net.stores[1]
    assert rep.low == 0 and set(rep.slots) >= {1, 2, 3, 4}
    assert ("vote", R.PREPARED, 0, 4) in store.records     # votes and certificates kept ...
    net.deliver(1, checkpoints[0])                        # 2 of 3: not yet
    assert rep.low == 0 and ("checkpoint",) not in store.records
    net.deliver(1, checkpoints[2])
    assert rep.low == 4
    assert not [h for h in rep.slots if h <= rep.low]
    assert not [k for k in rep.my_votes if k[2] <= 4]
    low, proof = store.records[("checkpoint",)]
    assert low == 4 and len({m["body"]["r"] for m in proof}) >= Q
    assert not [k for k in store.records if k[0] == "vote" and k[3] <= 4]   # ... until now
    net.deliver(1, checkpoints[3])                        # a late one changes nothing
    assert rep.low == 4

    # The next block still commits on top of the checkpoint, on all four.
    for i in (0, 2, 3):
        for s, m in checkpoints.items():
            if s != i:
                net.deliver(i, m)
    assert all(net.replica(i).low == 4 for i in ALL)
    net.queue.clear()
    assert commit_one(net) == 5
    assert len({net.root(i) for i in ALL}) == 1


# --- 4. view changes ----------------------------------------------------------------------

def cut(*down):
    """A network filter that drops everything to and from the `down` replicas."""
    return lambda s, d, m: s not in down and d not in down


def time_out(net: Net, nodes) -> dict[int, dict]:
    """Tick `nodes` until each gives up on the view; return their VIEWCHANGEs."""
    for i in nodes:
        net.tick(i)                                       # arms the progress timer
    net.now += PARAMS["view_timeout_ms"]
    vcs = {}
    for i in nodes:
        vcs[i] = only(net.tick(i), M.VIEWCHANGE)
    return vcs


def viewchange(r: int, v: int, h: int = 0, checkpoint=(), prepared=(), e=None) -> dict:
    return signed(r, {"t": M.VIEWCHANGE, "v": v, "h": h, "e": h if e is None else e,
                      "checkpoint": list(checkpoint),
                      "prepared": list(prepared)})


def test_silent_primary_is_replaced_and_the_transaction_commits():
    net = Net()
    raw = net.submit(net.tx())
    vcs = time_out(net, (1, 2, 3))
    assert all(m["body"]["v"] == 1 and m["body"]["h"] == 0 for m in vcs.values())
    assert all(not net.replica(i).normal and net.replica(i).view == 1 for i in (1, 2, 3))
    assert net.stores[2].records[("view",)] == 1            # persisted before it left

    # The new primary needs 2f+1 VIEWCHANGEs (its own is one) before it starts the view.
    assert not of(net.deliver(1, vcs[2]), M.NEWVIEW)
    eff = net.deliver(1, vcs[3])
    nv = only(eff, M.NEWVIEW, v=1)
    assert {m["body"]["r"] for m in nv["body"]["vcs"]} == {1, 2, 3}
    prop = only(eff, M.PROPOSE, v=1, h=1)
    assert prop["txs"] == [raw] and prop["body"]["header"]["proposer"] == 1
    assert net.replica(1).normal and net.replica(1).view == 1

    net.run(keep=cut(0))
    for i in (1, 2, 3):
        rep = net.replica(i)
        assert rep.view == 1 and rep.normal
        [c] = net.committed[i]
        assert c.block["txs"] == [raw]
        assert M.cert_signers(c.cert, M.COMMIT, 1, 1, M.block_hash(c.block["header"]))
    assert len({net.root(i) for i in (1, 2, 3)}) == 1
    assert net.nodes[0].height == 0 and net.replica(0).view == 0


def test_prepared_block_survives_the_view_change_with_the_same_hash():
    net = Net()
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE)
    d = M.block_hash(prop["body"]["header"])
    net.run(keep=lambda s, d_, m: m["body"]["t"] != M.COMMIT)     # every COMMIT is lost
    assert all(net.replica(i).slots[1].prepared[:2] == (0, d) for i in ALL)
    assert [n.height for n in net.nodes] == [0] * N

    vcs = time_out(net, (1, 2, 3))
    for m in vcs.values():                                  # each carries its certificate
        [(cert_prop, prepares)] = m["body"]["prepared"]
        assert cert_prop == M.signed_part(prop) and "txs" not in cert_prop
        assert len(M.cert_signers(prepares, M.PREPARE, 0, 1, d)) >= Q
    net.deliver(1, vcs[2])
    eff = net.deliver(1, vcs[3])
    only(eff, M.NEWVIEW, v=1)
    reprop = only(eff, M.PROPOSE, v=1, h=1)
    assert M.block_of(reprop) == M.block_of(prop)      # the same block, re-signed
    assert reprop["sig"] != prop["sig"]

    net.run(keep=cut(0))
    for i in (1, 2, 3):
        [c] = net.committed[i]
        assert M.block_hash(c.block["header"]) == d
        assert len(M.cert_signers(c.cert, M.COMMIT, 1, 1, d)) >= Q


def test_f_plus_one_viewchanges_for_a_higher_view_make_a_replica_join():
    net = Net()
    rep = net.replica(3)
    assert_quiet(net.deliver(3, viewchange(1, 2)))          # one could be a liar: stay
    assert rep.view == 0 and rep.normal
    eff = net.deliver(3, viewchange(2, 3))                  # f+1: join the lowest of them
    mine = only(eff, M.VIEWCHANGE, v=2, r=3)
    assert rep.view == 2 and not rep.normal
    assert net.stores[3].records[("view",)] == 2
    assert mine["body"]["h"] == 0 and mine["body"]["prepared"] == []
    # A replayed or lower VIEWCHANGE moves nothing.
    assert not of(net.deliver(3, viewchange(2, 3)), M.VIEWCHANGE)
    assert not of(net.deliver(3, viewchange(1, 1)), M.VIEWCHANGE)
    assert rep.view == 2
    # Replica 2, primary of view 2, joins on f+1 (1's and 3's) and, with its own
    # VIEWCHANGE the third, starts the view at once.
    rep2 = net.replica(2)
    assert_quiet(net.deliver(2, viewchange(1, 2)))
    eff = net.deliver(2, mine)
    only(eff, M.VIEWCHANGE, v=2, r=2)
    nvm = only(eff, M.NEWVIEW, v=2)
    assert {m["body"]["r"] for m in nvm["body"]["vcs"]} == {1, 2, 3}
    assert rep2.view == 2 and rep2.normal
    net.deliver(3, nvm)
    assert rep.view == 2 and rep.normal


def test_joining_a_later_view_is_a_loop_not_a_recursion():
    """A replica that asks for a view and finds f+1 others already asking for a later one
    joins that one in the same step (a loop in _ask_for_views: its own VIEW-CHANGE is
    not handed back to _on_viewchange), then settles once."""
    net = Net()
    rep = net.replica(3)
    rep.vc.requests = {0: viewchange(0, 2), 1: viewchange(1, 2)}   # f+1 ask for view 2
    rep._start_view_change(1, "asked for the next view")
    eff = rep._finish()
    assert [(e.old, e.new) for e in eff if type(e) is ViewChange] == [(0, 1), (1, 2)]
    assert [m["body"]["v"] for m in of(eff, M.VIEWCHANGE)] == [1, 2]
    assert rep.view == 2 and rep.status is R.Status.VIEW_CHANGE and not rep.normal
    assert sorted(rep.vc.requests) == [0, 1, 3] and rep.vc.attempts == 2
    assert rep.vc.deadline is not None                  # 2f+1 ask to leave view 1 behind
    assert rep.invariants() == []


def test_replica_that_missed_newview_gets_it_when_it_asks_again():
    net = Net()
    raw = net.submit(net.tx())
    vcs = time_out(net, (1, 2, 3))
    net.deliver(1, vcs[2])
    eff = net.deliver(1, vcs[3])
    newview = only(eff, M.NEWVIEW)
    # The NEW-VIEW and the proposal (first-hand or passed on) never reach replica 3.
    net.run(keep=lambda s, d, m: 0 not in (s, d) and not (
        d == 3 and m["body"]["t"] in (M.NEWVIEW, M.PROPOSE)))
    assert net.nodes[1].height == net.nodes[2].height == 0     # 2 of 4: no quorum yet
    rep3 = net.replica(3)
    assert not rep3.normal and rep3.view == 1

    # Before its view-change timer (2 s after one failed attempt) runs out, it re-sends
    # its VIEWCHANGE (after 1 s) rather than moving on to view 2.
    eff = net.tick(3, PARAMS["view_timeout_ms"])
    again = only(eff, M.VIEWCHANGE)
    assert again == vcs[3] and rep3.view == 1
    # Replica 1, already in view 1, answers with the NEW-VIEW and its proposals.
    eff = net.deliver(1, again)
    assert of(eff, M.NEWVIEW) == [newview]
    assert [m["body"]["h"] for m in of(eff, M.PROPOSE)] == [1]
    assert all(e.to == 3 for e in eff if type(e) is Send)
    net.queue = [(s, d, m) for s, d, m in net.queue if d == 3]
    net.run(keep=cut(0))
    assert rep3.normal and rep3.view == 1
    for i in (1, 2, 3):
        [c] = net.committed[i]
        assert c.block["txs"] == [raw]
    assert len({net.root(i) for i in (1, 2, 3)}) == 1


def test_nothing_committed_is_lost_or_reordered_across_a_view_change():
    net = Net()
    sent = []
    for _ in range(2):                                      # heights 1, 2: on all four
        sent.append(net.tx())
        commit_one(net, tx=sent[-1])
    # Height 3: prepared by all, committed only by replica 3 (the others lose COMMITs,
    # and the blocks 3 would send them when it sees them lag).
    sent.append(net.submit(net.tx()))
    prop3 = only(net.tick(0), M.PROPOSE, h=3)
    d3 = M.block_hash(prop3["body"]["header"])
    net.run(keep=lambda s, d, m: m["body"]["t"] not in (M.COMMIT, M.BLOCKS) or d == 3)
    assert net.nodes[3].height == 3 and [net.nodes[i].height for i in (0, 1, 2)] == [2] * 3
    # Height 4: proposed, but its PREPAREs are lost, so it is prepared nowhere.
    sent.append(net.submit(net.tx()))
    prop4 = only(net.tick(0), M.PROPOSE, h=4)
    net.run(keep=lambda s, d, m: m["body"]["t"] == M.PROPOSE)
    assert all(net.replica(i).slots[4].prepared is None for i in ALL)

    # Replica 3 drops off; 0, 1, 2 give up on view 0.
    vcs = time_out(net, (0, 1, 2))
    net.deliver(1, vcs[0])
    eff = net.deliver(1, vcs[2])
    only(eff, M.NEWVIEW, v=1)
    reprops = of(eff, M.PROPOSE, v=1)
    # The prepared 3 is carried over as it was; 4 was never prepared: proposed anew.
    assert [p["body"]["h"] for p in reprops] == [3, 4]
    assert M.block_hash(reprops[0]["body"]["header"]) == d3
    assert reprops[1]["body"]["header"]["proposer"] == 1
    assert reprops[1]["txs"] == [sent[3]]
    net.run(keep=cut(3))
    # View 1 committed 3 (the same block) and then the transaction of the lost height 4.
    for i in (0, 1, 2):
        assert net.nodes[i].height == 4
        assert net.chain(i)[:3] == net.chain(3)
    assert net.nodes[1].block_hash(4) != M.block_hash(prop4["body"]["header"])
    assert net.nodes[1].store.get_block(4)[0]["txs"] == [sent[3]]

    # Replica 3 comes back (what was sent to it meanwhile is lost): f+1 VIEWCHANGEs tell
    # it to join view 1; its own VIEWCHANGE gets it the NEW-VIEW, and since it says it
    # executed only 3, the others send it block 4 with its certificate ...
    net.queue.clear()
    for i in (0, 2):
        net.deliver(3, vcs[i])
    net.run()
    assert net.replica(3).view == 1 and net.replica(3).normal and net.nodes[3].height == 4
    # ... and when it misses all of the next block but the COMMITs, those show it is
    # behind: it fetches 5.
    sent.append(net.submit(net.tx()))
    net.tick(1)
    net.run(keep=lambda s, d, m: d != 3 or m["body"]["t"] == M.COMMIT)
    assert [n.height for n in net.nodes] == [5, 5, 5, 4]
    net.tick(3, 1)
    fetch = only(net.tick(3, R.Config.fetch_timeout_ms), M.FETCH)
    assert fetch["body"]["from_h"] == 5
    net.run()
    assert net.nodes[3].height == 5
    assert len({tuple(net.chain(i)) for i in ALL}) == 1
    assert [net.nodes[3].store.get_block(h)[0]["txs"] for h in range(1, 6)] == \
        [[t] for t in sent]
    assert len({net.root(i) for i in ALL}) == 1
    assert net.nodes[3].ledger.account(CLIENTS["alice"].address)[1] == 5


# --- 5. equivocation ----------------------------------------------------------------------

def test_equivocating_primary_is_reported_and_only_its_first_block_gets_a_vote():
    net = Net()
    net.submit(net.tx())
    first = only(net.tick(0), M.PROPOSE)
    block = M.block_of(first)
    second = propose(0, dict(block, header=dict(block["header"], time=T0 + 1)))
    d1, d2 = (M.block_hash(m["body"]["header"]) for m in (first, second))
    assert d1 != d2

    eff = net.deliver(1, first)
    only(eff, M.PREPARE, d=d1)
    eff = net.deliver(1, second)
    assert not of(eff, M.PREPARE)
    [ev] = [e for e in eff if type(e) is Evidence]
    assert ev.kind == "equivocation" and ev.replica == 0 and \
        ev.messages == (M.signed_part(first), M.signed_part(second))
    assert net.replica(1).slots[1].proposals[0].d == d1
    assert not [e for e in net.deliver(1, second) if type(e) is Evidence]   # reported once
    # kept with the votes, in the same flush: both signed proposals, once
    [(key, msgs)] = [(k, v) for k, v in net.stores[1].load_records().items()
                     if k[0] == "evidence"]
    assert key[1:3] == ("equivocation", 0) and len(msgs) == 2

    # The other way round on replica 2: it votes for whichever came first.
    only(net.deliver(2, second), M.PREPARE, d=d2)
    eff = net.deliver(2, first)
    assert not of(eff, M.PREPARE)
    assert [(e.kind, e.replica, e.messages) for e in eff if type(e) is Evidence] == \
        [("equivocation", 0, (M.signed_part(second), M.signed_part(first)))]


@pytest.mark.parametrize("kind", [M.PREPARE, M.COMMIT])
def test_conflicting_votes_from_one_replica_are_reported_and_not_counted(kind):
    net = Net()
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE)
    d = M.block_hash(prop["body"]["header"])
    other = bytes(32)
    one = signed(2, {"t": kind, "v": 0, "h": 1, "d": d})
    two = signed(2, {"t": kind, "v": 0, "h": 1, "d": other})
    net.deliver(1, prop)
    assert not [e for e in net.deliver(1, one) if type(e) is Evidence]
    eff = net.deliver(1, two)
    [ev] = [e for e in eff if type(e) is Evidence]
    assert (ev.kind, ev.replica, ev.messages) == ("conflicting-vote", 2, (one, two))
    slot = net.replica(1).slots[1]
    votes = slot.prepares if kind == M.PREPARE else slot.commits
    assert 2 in votes[(0, d)] and (0, other) not in votes
    assert not of(eff, M.COMMIT)


# --- 6. byzantine and broken messages: rejected, nothing changes --------------------------

def _snapshot(node: Node):
    r = node.replica
    return (node.height, r.view, r.normal, r.low, dict(r.my_votes), sorted(r.slots),
            len(r.future), len(r.checkpoints), len(r.vc.requests), node.ledger.state_root(),
            dict(node.store.records))


def _undecodable_cases(net: Net) -> dict[str, bytes]:
    """Bytes that Node.deliver must refuse before its replica sees them."""
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE)
    d = M.block_hash(prop["body"]["header"])
    prep = signed(2, {"t": M.PREPARE, "v": 0, "h": 1, "d": d})
    sig = prep["sig"]
    block = M.block_of(prop)
    mallory = Keypair.from_name("mallory")
    forged_cert = [dict(prep, sig=bytes([sig[0] ^ 1]) + sig[1:])]
    raw = M.encode(prep)
    return {
        "bad signature": M.encode(dict(prep, sig=bytes([sig[0] ^ 1]) + sig[1:])),
        "body altered after signing": M.encode(dict(prep, body=dict(prep["body"], h=2))),
        "sender index out of range": M.encode(signed(7, {"t": M.PREPARE, "v": 0, "h": 1,
                                                          "d": d}, VKEYS[3])),
        "signed by a non-validator": M.encode(signed(2, {"t": M.PREPARE, "v": 0, "h": 1,
                                                          "d": d}, mallory)),
        "signed for another chain": M.encode(M.sign("other-chain", VKEYS[2],
                                                    dict(prep["body"]))),
        "txs do not match txs_root": M.encode(propose(0, dict(block, txs=[net.tx("carol")]))),
        "forged signature inside a certificate": M.encode(
            signed(2, {"t": M.BLOCKS, "blocks": [[block, forged_cert]]})),
        "unknown message type": M.encode(signed(2, {"t": "vote", "v": 0, "h": 1, "d": d})),
        "missing field": M.encode(signed(2, {"t": M.PREPARE, "v": 0, "h": 1})),
        "negative view": M.encode(signed(2, {"t": M.PREPARE, "v": -1, "h": 1, "d": d})),
        "truncated": raw[:-7],
        "trailing bytes": raw + b"\x00",
        "garbage": b"\xc1\xff\x00garbage",
        "empty": b"",
        "not a map": M.encode([1, 2, 3]),
    }


def test_undecodable_or_badly_signed_messages_are_counted_and_change_nothing():
    net = Net()
    cases = _undecodable_cases(net)
    for name, raw in cases.items():
        node = net.nodes[1]
        before, rejected = _snapshot(node), node.rejected_messages
        assert node.deliver(raw, net.now) == [], name
        assert node.rejected_messages == rejected + 1, name
        assert _snapshot(node) == before, name
    assert net.nodes[1].rejected_messages == len(cases)


H1_TIME = T0 + 10                      # height 1 is committed 10 s after genesis


def _h2_case(net: Net, make) -> tuple[Node, dict]:
    """Height 1 committed on all; return replica 1 and a crafted PROPOSE for height 2."""
    net.now += (H1_TIME - T0) * 1000
    commit_one(net)
    assert net.nodes[1].header_at(1)["time"] == H1_TIME
    net.queue.clear()
    return net.nodes[1], make(net, net.nodes[1])


def _bad_tx_sig(net: Net) -> bytes:
    tx = txm.parse(net.tx("carol"))
    (pk, sig), = tx.sigs
    return codec.encode({"body": tx.body, "sigs": [[pk, bytes([sig[0] ^ 1]) + sig[1:]]]})


BAD_PROPOSALS = {     # case: (voted, the refusal's reason or None, the PROPOSE)
    "a well-formed block (the control: it is voted)": (
        True, None, lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                        time=H1_TIME + 1))),
    "from a replica that is not the primary": (
        False, None, lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")], proposer=2),
                                            r=2)),
    "naming another proposer than its sender": (
        False, "proposer", lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                               proposer=3))),
    "a transaction with a bad signature": (
        False, "txs", lambda net, n: propose(0, block_for(n, 2, [_bad_tx_sig(net)]))),
    "a transaction whose nonce is used": (
        False, "txs",
        lambda net, n: propose(0, block_for(n, 2, [n.store.get_block(1)[0]["txs"][0]]))),
    "the same transaction twice": (
        False, "txs", lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")] * 2))),
    "a wrong state root": (
        False, "exec-root", lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                                exec_root=bytes(32)))),
    "the state root of another height": (
        False, "exec-root", lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                                exec_height=1,
                                                                exec_root=n.root_at(0)))),
    "a wrong previous block": (      # an unknown parent: it waits (and it is unfinished work)
        False, None, lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                         prev=bytes(32)))),
    "time going backwards": (
        False, "time-before-parent", lambda net, n: propose(0, block_for(
            n, 2, [net.tx("carol")], time=H1_TIME - 1))),
    "time further ahead of the replica's clock than the skew allows (1 s)": (
        False, "time-ahead", lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")],
                                                                 time=H1_TIME + 2))),
    "more transactions than a block may hold": (
        False, "too-big", lambda net, n: propose(0, block_for(
            n, 2, [net.tx("carol", amount=a) for a in range(1, R.Config.max_block_txs + 2)]))),
}


@pytest.mark.parametrize("case", list(BAD_PROPOSALS))
def test_a_block_that_must_not_be_voted_gets_no_prepare(case):
    acceptable, reason, make = BAD_PROPOSALS[case]
    net = Net()
    node, msg = _h2_case(net, make)
    rejected = node.rejected_messages
    eff = net.deliver(1, msg)
    assert node.rejected_messages == rejected            # well-formed and well-signed ...
    assert bool(of(eff, M.PREPARE)) == acceptable         # ... but only the control is voted
    assert (M.PREPARE, 0, 2) in node.replica.my_votes if acceptable else \
        not [k for k in node.replica.my_votes if k[2] == 2]
    assert node.height == 1
    # A refusal says why, once, and is counted by its reason.
    assert [e.reason for e in eff if type(e) is Refused] == ([reason] if reason else [])
    assert node.replica.refusals == ({reason: 1} if reason else {})
    assert not [e for e in net.deliver(1, msg) if type(e) is Refused]


def test_a_block_that_arrives_too_late_for_its_time_is_refused():
    # Proposed at the chain time of height 1 (whole seconds), but it reaches the replica
    # when its clock is more than skew + message delay (16 s) later: a primary holding
    # time back.
    net = Net()
    node, msg = _h2_case(net, lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")])))
    net.now += 17_000
    eff = net.deliver(1, msg)
    assert not of(eff, M.PREPARE)
    assert [(e.reason, e.height, e.proposer) for e in eff if type(e) is Refused] == \
        [("time-behind", 2, 0)]
    net2 = Net()                                          # ... where a little less is in time
    node2, msg2 = _h2_case(net2, lambda net, n: propose(0, block_for(n, 2, [net.tx("carol")])))
    net2.now += 16_999
    assert of(net2.deliver(1, msg2), M.PREPARE)


@pytest.mark.parametrize("time,voted", [(T0 - 1, False), (0, False), (T0, True)])
def test_first_block_may_not_be_older_than_genesis(time, voted):
    # The first block's predecessor is genesis: its time is the chain's starting time,
    # not zero (a committed block before it could not be executed: the ledger refuses).
    net = Net()
    eff = net.deliver(1, propose(0, block_for(net.nodes[1], 1, [net.tx("carol")], time=time)))
    assert bool(of(eff, M.PREPARE)) == voted


def test_messages_far_outside_the_window_or_views_ahead_are_dropped():
    net = Net()
    rep = net.replica(1)
    far = rep.low + rep.cfg.window + 1
    d = bytes(range(32))
    for t in (M.PREPARE, M.COMMIT):
        assert_quiet(net.deliver(1, signed(2, {"t": t, "v": 0, "h": far, "d": d})))
    net.submit(net.tx())
    assert_quiet(net.deliver(1, propose(0, block_for(net.nodes[1], far, [net.tx("carol")],
                                                     prev=d))))
    assert rep.slots == {}
    # A view more than two ahead is not held for later; a VIEWCHANGE past 4n views is ignored.
    assert_quiet(net.deliver(1, signed(2, {"t": M.PREPARE, "v": 3, "h": 1, "d": d})))
    assert rep.future == {}
    assert_quiet(net.deliver(1, viewchange(2, 4 * N + 1)))
    assert rep.vc.requests == {}
    assert rep.view == 0 and rep.normal


def test_messages_held_for_a_coming_view_are_bounded(monkeypatch):
    # Held per signer by bytes; a copy is held once; only the view's primary may have a
    # PROPOSE held.
    net = Net()
    rep = net.replica(1)
    one = signed(2, {"t": M.PREPARE, "v": 1, "h": 1, "d": bytes(32)})
    size = len(M.encode(one))
    monkeypatch.setattr(R, "FUTURE_BYTES", 10 * size)
    for _ in range(3):
        net.deliver(1, one)
    assert len(rep.future) == 1 and rep.future_bytes[2] == size
    for h in range(2, 40):
        net.deliver(1, signed(2, {"t": M.PREPARE, "v": 1, "h": h, "d": bytes(32)}))
    assert len(rep.future) == 10 and rep.future_bytes[2] == 10 * size
    net.deliver(1, signed(3, {"t": M.PREPARE, "v": 1, "h": 1, "d": bytes(32)}))
    assert len(rep.future) == 11                      # another signer has its own budget
    block = block_for(net.nodes[1], 1, [net.tx("carol")])
    assert_quiet(net.deliver(1, propose(1, block, r=2)))     # replica 2 is not view 1's primary
    assert ("propose", 1, 1, 2) not in rep.future
    net.deliver(1, propose(1, block, r=1))
    assert ("propose", 1, 1, 1) in rep.future


def test_checkpoint_votes_are_bounded_in_memory():
    # A faulty replica signing CHECKPOINTs for ever new heights and roots must not make
    # the others keep them all.
    net = Net()
    rep = net.replica(1)
    for k in range(1, 200):
        net.deliver(1, signed(2, {"t": M.CHECKPOINT, "h": 4 * k, "d": bytes(32),
                                  "root": k.to_bytes(32, "big")}))
    for k in range(1, 50):
        net.deliver(1, signed(2, {"t": M.CHECKPOINT, "h": 8, "d": k.to_bytes(32, "big"),
                                  "root": bytes(32)}))
    assert len(rep.checkpoints) <= R.MAX_CHECKPOINTS
    assert rep.low == 0


def test_replayed_messages_are_not_counted_twice():
    net = Net()
    net.submit(net.tx())
    eff0 = net.tick(0)
    prop = only(eff0, M.PROPOSE)
    p0 = only(eff0, M.PREPARE)
    eff = net.deliver(1, prop)
    for _ in range(3):                                    # 0's PREPARE thrice: still 2 of 3
        eff = net.deliver(1, p0)
        assert not of(eff, M.COMMIT)
    assert len(net.replica(1).slots[1].prepares[(0, p0["body"]["d"])]) == 2

    # Run the height to its end, then replay every message to every replica.
    log = []
    net.queue += [(0, d, m) for d in (2, 3) for m in (prop, p0)]
    while net.queue:
        s, d, m = net.queue.pop(0)
        log.append((d, m))
        net.deliver(d, m)
    assert [n.height for n in net.nodes] == [1] * N
    before = [_snapshot(n) for n in net.nodes]
    counts = {i: len(net.committed[i]) for i in ALL}
    for d, m in log + [(1, prop), (1, p0)]:
        eff = net.deliver(d, m)
        assert not [e for e in eff if type(e) in (Committed, Evidence)]
        assert not [m for m in of(eff, M.PREPARE) + of(eff, M.COMMIT) + of(eff, M.PROPOSE)
                    + of(eff, M.CHECKPOINT)]
    assert [_snapshot(n) for n in net.nodes] == before
    assert {i: len(net.committed[i]) for i in ALL} == counts


# --- 7. vote safety across a crash --------------------------------------------------------

def test_restarted_replica_never_contradicts_a_vote_it_sent():
    net = Net()
    net.submit(net.tx())
    first = only(net.tick(0), M.PROPOSE)
    block = M.block_of(first)
    second = propose(0, dict(block, header=dict(block["header"], time=T0 + 1)))
    d1, d2 = (M.block_hash(m["body"]["header"]) for m in (first, second))

    # The vote is handed to the shell to persist before the message carrying it.
    effects = net.replica(1).deliver(M.decode(M.encode(first), net.replica(1).vals), net.now)
    [persist] = [k for k, e in enumerate(effects) if type(e) is Persist
                 and e.key == ("vote", M.PREPARE, 0, 1) and e.value == d1]
    [vote] = [k for k, e in enumerate(effects) if type(e) is Broadcast
              and e.msg["body"]["t"] == M.PREPARE]
    assert persist < vote
    for e in effects:                                     # what the shell does with them
        if type(e) is Persist:
            net.stores[1].put_record(e.key, e.value)

    # Crash and restart from the store alone: the conflicting proposal gets no vote.
    net.nodes[1] = Node(net.genesis, VKEYS[1], net.stores[1], net.now)
    assert net.replica(1).my_votes[(M.PREPARE, 0, 1)] == d1
    assert not of(net.deliver(1, second), M.PREPARE)
    assert not of(net.deliver(1, first), M.PREPARE, d=d2)
    # The same replica without its records would have voted: the store is what saves it.
    amnesiac = Node(net.genesis, VKEYS[1], MemoryStore(), net.now)
    assert of(amnesiac.deliver(M.encode(second), net.now), M.PREPARE)


def test_replica_restarted_in_a_view_change_waits_for_the_new_view():
    # Replica 1, primary of view 1, crashes while changing to view 1. Back up, it must
    # neither fall back to view 0 nor start proposing in view 1 before a NEW-VIEW fixes
    # what the view keeps: it asks for the view again, and begins it with 2f+1.
    net = Net()
    raw = net.submit(net.tx())
    vcs = time_out(net, (1, 2, 3))
    assert net.stores[1].records[("view",)] == 1
    node = restart(net, 1)
    assert node.replica.view == 1 and not node.replica.normal
    node.submit(raw)                                      # the client tries again
    eff = net.tick(1)
    assert not of(eff, M.PROPOSE)
    mine = only(eff, M.VIEWCHANGE, v=1)
    assert mine["body"]["prepared"] == []
    # A PROPOSE of view 0 is old news to it now.
    late = propose(0, block_for(node, 1, [net.tx("carol")]))
    assert not of(net.deliver(1, late), M.PREPARE)
    assert not of(net.deliver(1, vcs[2]), M.NEWVIEW)
    eff = net.deliver(1, vcs[3])
    only(eff, M.NEWVIEW, v=1)
    only(eff, M.PROPOSE, v=1, h=1)
    net.run(keep=cut(0))
    assert [net.nodes[i].height for i in (1, 2, 3)] == [1] * 3
    assert all(net.nodes[i].store.get_block(1)[0]["txs"] == [raw] for i in (1, 2, 3))


def test_replica_restarted_in_a_running_view_rejoins_it():
    # After view 1 has begun, a backup restarts: it asks for view 1 again, gets the
    # NEW-VIEW from a peer, and takes part in the next block.
    net = Net()
    net.submit(net.tx())
    vcs = time_out(net, (1, 2, 3))
    net.deliver(1, vcs[2])
    net.deliver(1, vcs[3])
    net.run(keep=cut(0))
    assert [net.nodes[i].height for i in (1, 2, 3)] == [1] * 3
    node = restart(net, 2)
    assert node.height == 1 and not node.replica.normal
    net.tick(2)
    net.run(keep=cut(0))
    assert node.replica.view == 1 and node.replica.normal
    net.queue.clear()
    assert commit_one(net, nodes=(1, 2, 3)) == 2
    assert len({net.root(i) for i in (1, 2, 3)}) == 1


# --- 8. catch-up --------------------------------------------------------------------------

def _lagging(net: Net, blocks: int = 5):
    """Replicas 0-2 commit `blocks` heights while 3 hears nothing; then 3 hears the
    CHECKPOINTs of height 4 (late) and ticks until it asks a peer for blocks."""
    held = []
    for _ in range(blocks):
        net.submit(net.tx())
        net.tick(0)
        held += net.run(keep=cut(3))
    assert [n.height for n in net.nodes] == [blocks] * 3 + [0]
    for _s, d, m in held:
        if d == 3 and m["body"]["t"] == M.CHECKPOINT:
            net.deliver(3, m)
    rep = net.replica(3)
    assert rep.behind_hint == 4 and rep.low == 0           # stable, but above its height
    net.tick(3, 1)
    [ask] = [e for e in net.tick(3, R.Config.fetch_timeout_ms) if type(e) is Send]
    assert ask.msg["body"]["t"] == M.FETCH and ask.msg["body"]["from_h"] == 1
    net.queue.clear()
    return ask.to, ask.msg


def test_lagging_replica_fetches_verifies_and_executes_missed_blocks():
    net = Net()
    peer, fetch = _lagging(net)
    assert fetch["body"]["r"] == 3 and peer == 0
    eff = net.deliver(peer, fetch)
    reply = only(eff, M.BLOCKS)
    assert [b["header"]["height"] for b, _ in reply["body"]["blocks"]] == [1, 2, 3, 4, 5]
    done = committed(net.deliver(3, reply))
    assert [c.height for c in done] == [1, 2, 3, 4, 5]
    assert net.chain(3) == net.chain(0) and net.root(3) == net.root(0)
    rep = net.replica(3)
    assert rep.low == 4 and net.stores[3].records[("checkpoint",)][0] == 4
    assert not [h for h in rep.slots if h <= 4]
    # Caught up, it takes part again: the next block commits on all four.
    net.queue.clear()
    assert commit_one(net) == 6
    assert len({net.root(i) for i in ALL}) == 1


def test_a_viewchange_from_a_replica_left_behind_brings_it_the_blocks():
    """Replica 3 missed two blocks and then the others went quiet: its VIEWCHANGE says
    what it executed, and a replica that is further answers with the blocks (again after
    a fetch timeout if that answer is lost, not on every retransmission)."""
    net = Net()
    for _ in range(2):
        net.submit(net.tx())
        net.tick(0)
        net.run(keep=cut(3))
    assert [n.height for n in net.nodes] == [2, 2, 2, 0]
    net.tick(3)
    net.now += PARAMS["view_timeout_ms"]
    vc = only(net.tick(3), M.VIEWCHANGE, v=1, e=0)
    net.queue.clear()
    reply = only(net.deliver(0, vc), M.BLOCKS)
    assert [b["header"]["height"] for b, _ in reply["body"]["blocks"]] == [1, 2]
    assert not of(net.deliver(0, vc), M.BLOCKS)
    net.now += R.Config.fetch_timeout_ms
    only(net.deliver(0, vc), M.BLOCKS)
    assert [c.height for c in committed(net.deliver(3, reply))] == [1, 2]
    assert net.chain(3) == net.chain(0) and net.root(3) == net.root(0)
    # A COMMIT quorum for a block it never saw makes it fetch that block too.
    net.submit(net.tx())
    net.tick(0)
    held = net.run(keep=cut(3))
    for _s, d, m in held:
        if d == 3 and m["body"]["t"] == M.COMMIT:
            net.deliver(3, m)
    assert net.replica(3).behind_hint == 3 and net.nodes[3].height == 2


def _forged_replies(net: Net) -> dict[str, list]:
    src = net.nodes[0]
    (b1, c1), (b2, c2) = (list(src.get_block(h)) for h in (1, 2))
    d1 = M.block_hash(b1["header"])
    alt = block_for(net.nodes[3], 1, [net.tx("carol")])
    return {
        "nothing": [],
        "a certificate of 2 COMMITs": [[b1, c1[:2]]],
        "one COMMIT three times": [[b1, [c1[0]] * 3]],
        "the COMMITs of another block": [[b1, c2]],
        "PREPAREs instead of COMMITs": [[b1, [signed(r, {"t": M.PREPARE, "v": 0, "h": 1,
                                                           "d": d1}) for r in (0, 1, 2)]]],
        "COMMITs of different views": [[b1, [signed(r, {"t": M.COMMIT, "v": r, "h": 1,
                                                          "d": d1}) for r in (0, 1, 2)]]],
        "another block under a real certificate": [[alt, c1]],
        "a block that does not follow": [[b2, c2]],
    }


def test_blocks_with_forged_or_insufficient_certificates_are_ignored():
    net = Net()
    _lagging(net)
    node = net.nodes[3]
    for name, entries in _forged_replies(net).items():
        eff = net.deliver(3, signed(1, {"t": M.BLOCKS, "blocks": entries}))
        assert not committed(eff) and node.height == 0, name
    assert node.rejected_messages == 0                    # all well-signed: the replica judged
    # A good block followed by a bad one: the good one is taken, the rest of the batch not.
    (b1, c1), (b2, c2), (b3, c3) = (list(net.nodes[0].get_block(h)) for h in (1, 2, 3))
    eff = net.deliver(3, signed(1, {"t": M.BLOCKS, "blocks": [[b1, c1], [b2, c2[:2]],
                                                               [b3, c3]]}))
    assert [c.height for c in committed(eff)] == [1] and node.height == 1
    # The real blocks from an honest peer bring it the rest of the way.
    reply = only(net.deliver(0, signed(3, {"t": M.FETCH, "from_h": 2, "count": 64})), M.BLOCKS)
    assert [c.height for c in committed(net.deliver(3, reply))] == [2, 3, 4, 5]
    assert node.ledger.state_root() == net.root(0) and net.chain(3) == net.chain(0)


# --- crash-restart and the view change ----------------------------------------------------

def restart(net: Net, i: int) -> Node:
    """Crash node i and boot it again from its store alone (its mempool is gone)."""
    net.nodes[i] = Node(net.genesis, VKEYS[i], net.stores[i], net.now)
    net.queue = [(s, d, m) for s, d, m in net.queue if i not in (s, d)]
    return net.nodes[i]


def test_prepared_certificates_survive_a_restart_so_a_committed_block_is_kept():
    # Block B is prepared by all four and committed by replica 3 alone; then 3 is cut
    # off, and 0, 1, 2 each crash and restart before they give up on view 0. Their
    # VIEWCHANGEs must still carry B's prepared certificate, or view 1 would put another
    # block at height 1 while replica 3 has executed B there.
    net = Net()
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE)
    d_b = M.block_hash(prop["body"]["header"])
    net.run(keep=lambda s, d, m: m["body"]["t"] not in (M.COMMIT, M.BLOCKS) or d == 3)
    assert net.nodes[3].height == 1 and net.chain(3) == [d_b]
    for i in (0, 1, 2):
        restart(net, i)
        assert net.nodes[i].height == 0
    later = net.submit(net.tx("carol"), to=(0, 1, 2))       # new work for the new view
    vcs = {}
    for i in (0, 1, 2):
        net.tick(i)
    net.now += 4 * PARAMS["view_timeout_ms"]
    for i in (0, 1, 2):
        vcs[i] = only(net.tick(i), M.VIEWCHANGE, v=1)
        assert [c[0] for c in vcs[i]["body"]["prepared"]] == [M.signed_part(prop)], i
    net.run(keep=cut(3))
    for i in (0, 1, 2):
        assert net.nodes[i].height == 2
        assert net.chain(i)[0] == d_b                        # the committed block is kept
        assert net.nodes[i].store.get_block(2)[0]["txs"] == [later]


@pytest.mark.parametrize("junk", ["checkpoint of another height", "fetch"])
def test_a_viewchange_with_junk_before_its_checkpoint_proof_cannot_drop_a_prepared_block(junk):
    # Heights 1-4 are stable; 5 is prepared by all and committed by replica 3 alone, which
    # is then unreachable. Faulty replica 0 asks for view 1 with a valid checkpoint proof
    # that starts with another signed message. The new view must still start from the
    # checkpoint's block and carry 5 over (and must not crash on the odd message).
    net = Net()
    for _ in range(4):
        commit_one(net)
    assert all(net.replica(i).low == 4 for i in ALL)
    net.submit(net.tx())
    prop5 = only(net.tick(0), M.PROPOSE, h=5)
    d5 = M.block_hash(prop5["body"]["header"])
    net.run(keep=lambda s, d, m: m["body"]["t"] not in (M.COMMIT, M.BLOCKS) or d == 3)
    assert net.chain(3)[4] == d5 and net.nodes[1].height == net.nodes[2].height == 4

    vcs = time_out(net, (1, 2))
    proof = vcs[1]["body"]["checkpoint"]
    assert len(proof) >= Q and vcs[1]["body"]["h"] == 4
    first = {"checkpoint of another height": {"t": M.CHECKPOINT, "h": 8, "d": bytes(32),
                                              "root": bytes(32)},
             "fetch": {"t": M.FETCH, "from_h": 1, "count": 1}}[junk]
    first = signed(0, first)
    vc0 = viewchange(0, 1, h=4, checkpoint=[first] + proof, prepared=[])
    net.queue.clear()
    net.deliver(1, vc0)
    # More than a proof's 2f+1 messages: bigger than an honest VIEW-CHANGE, so refused.
    assert not of(net.deliver(1, vcs[2]), M.NEWVIEW)
    eff = net.deliver(1, viewchange(0, 1, h=4, checkpoint=[first] + proof[1:], prepared=[]))
    assert not of(eff, M.NEWVIEW)                    # junk instead of a vote: no proof
    eff = net.deliver(1, viewchange(0, 1, h=4, checkpoint=proof, prepared=[]))
    nv = only(eff, M.NEWVIEW, v=1)
    assert [m["body"]["r"] for m in nv["body"]["vcs"]] == [0, 1, 2]
    [reprop] = of(eff, M.PROPOSE, v=1)
    assert reprop["body"]["h"] == 5 and M.block_hash(reprop["body"]["header"]) == d5

    # With replica 0 voting along, view 1 commits 5 as replica 3 has it.
    net.run(keep=cut(0, 3))
    for t in (M.PREPARE, M.COMMIT):
        vote = signed(0, {"t": t, "v": 1, "h": 5, "d": d5})
        for i in (1, 2):
            net.deliver(i, vote)
        net.run(keep=cut(0, 3))
    assert net.chain(1) == net.chain(2) == net.chain(3)


def test_catch_up_replies_fit_in_one_message(monkeypatch):
    # 64 full blocks (500 transfers of ~270 bytes) are far more than a message may carry
    # (4 MiB). Here the limit shrinks instead, so that the five missed blocks do not fit
    # in one reply: the peer must send what fits, and the lagging replica ask again.
    net = Net()
    peer, fetch = _lagging(net)
    monkeypatch.setattr(M, "MAX_MSG_BYTES", 2_500)
    node = net.nodes[3]
    rounds = 0
    while node.height < 4:
        rounds += 1
        assert rounds <= 5, "catch-up makes no progress"
        reply = only(net.deliver(peer, fetch), M.BLOCKS)
        raw = M.encode(reply)
        assert len(raw) <= M.MAX_MSG_BYTES and reply["body"]["blocks"]
        eff = net.deliver(3, raw)
        assert committed(eff)
        # the next FETCH leaves with the reply's effects: the peer serves it meanwhile
        [ask] = [e for e in eff if type(e) is Send and e.msg["body"]["t"] == M.FETCH]
        if node.height < 4:
            peer, fetch = ask.to, ask.msg
            assert fetch["body"]["from_h"] == node.height + 1
    assert rounds > 1 and node.rejected_messages == 0
    assert net.chain(3) == net.chain(0)[:node.height]


# --- 9. liveness: no silent stall ---------------------------------------------------------

def test_an_idle_chain_with_empty_blocks_changes_view_when_no_block_comes():
    # The stall `lendnet demo` hit: view 0's first proposal reached nobody (its links
    # were not up yet) and no client work was pending. With empty blocks every 500 ms,
    # a replica that sees none for that long plus the view timeout asks for view 1.
    net = Net({"empty_block_ms": 500})
    eff = net.tick(0, 500)
    only(eff, M.PROPOSE, v=0, h=1)                         # ... lost: nobody gets it
    net.queue.clear()
    for i in (1, 2, 3):                                    # a block was due: the timer starts
        assert_quiet(net.tick(i))
    net.now += PARAMS["view_timeout_ms"] - 1
    for i in (1, 2, 3):
        assert not of(net.tick(i), M.VIEWCHANGE)           # not yet
    net.now += 1
    eff = net.tick(1)
    only(eff, M.VIEWCHANGE, v=1)
    [vc] = [e for e in eff if type(e) is ViewChange]
    assert (vc.old, vc.new) == (0, 1) and "empty block" in vc.reason
    for i in (2, 3):
        net.tick(i)
    net.run()
    assert all(net.replica(i).view == 1 and net.replica(i).normal for i in ALL)
    only(net.tick(1, 500), M.PROPOSE, v=1, h=1)
    net.run()
    assert [n.height for n in net.nodes] == [1] * N          # view 1 commits an empty block


def test_without_empty_blocks_an_idle_chain_stays_quiet():
    net = Net()
    for i in ALL:
        net.tick(i)
    net.now += 100 * PARAMS["view_timeout_ms"]
    for i in ALL:
        assert_quiet(net.tick(i))


def test_a_refused_proposal_is_work_that_ends_in_a_view_change():
    # An idle chain (no client transactions): the primary's one proposal is refused by
    # every replica; they must not wait for ever.
    net = Net()
    net.now += 10_000
    bad = propose(0, block_for(net.nodes[1], 1, [net.tx("carol")], time=T0 + 20))
    net.nodes[1].mempool.ids.clear()
    net.nodes[1].mempool.by_sender.clear()                # nothing pending on the replicas
    for i in (1, 2, 3):
        eff = net.deliver(i, bad)
        assert [e.reason for e in eff if type(e) is Refused] == ["time-ahead"]
    net.queue.clear()
    vcs = time_out(net, (1, 2, 3))
    assert all(m["body"]["v"] == 1 for m in vcs.values())


# --- 10. blocks known by their header --------------------------------------------------

def test_a_replica_that_only_saw_the_relayed_header_asks_for_the_transactions():
    net = Net()
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE, v=0, h=1)
    assert "txs" in prop
    net.queue.clear()
    eff = net.deliver(2, prop)
    relay = only(eff, M.PROPOSE)
    assert relay == M.signed_part(prop) and "txs" not in relay      # the header only
    net.queue.clear()
    assert not of(net.deliver(1, relay), M.PREPARE)                 # nothing to check yet
    assert not [e for e in net.tick(1, R.Config.fetch_timeout_ms - 1) if type(e) is Send]
    [ask] = [e for e in net.tick(1, 1) if type(e) is Send]
    assert ask.to == 0 and ask.msg["body"]["t"] == M.GETBLOCK
    assert ask.msg["body"]["d"] == M.block_hash(prop["body"]["header"])
    net.queue.clear()
    answer = only(net.deliver(0, ask.msg), M.PROPOSE)
    assert answer == prop
    only(net.deliver(1, answer), M.PREPARE, d=ask.msg["body"]["d"])


def test_a_new_primary_fetches_a_carried_block_it_never_received():
    # Height 1 is prepared by 0, 2 and 3; replica 1 saw only the header. View 1's
    # primary is replica 1: the NEW-VIEW carries the block by its header, so replica 1
    # asks a replica that voted for it, then proposes it again.
    net = Net()
    net.submit(net.tx())
    prop = only(net.tick(0), M.PROPOSE)
    d = M.block_hash(prop["body"]["header"])
    net.queue = [(s, t, M.signed_part(m) if t == 1 and m["body"]["t"] == M.PROPOSE else m)
                 for s, t, m in net.queue]
    net.run(keep=lambda s, t, m: m["body"]["t"] != M.COMMIT and
            not (t == 1 and m["body"]["t"] == M.PROPOSE and "txs" in m)
            and m["body"]["t"] != M.GETBLOCK)
    assert net.replica(2).slots[1].prepared[:2] == (0, d)
    assert d not in net.replica(1).slots[1].txs
    vcs = time_out(net, (1, 2, 3))
    net.queue.clear()
    net.deliver(1, vcs[2])
    eff = net.deliver(1, vcs[3])
    only(eff, M.NEWVIEW, v=1)
    assert not of(eff, M.PROPOSE)                            # it cannot yet: it asks
    [ask] = [e for e in eff if type(e) is Send and e.msg["body"]["t"] == M.GETBLOCK]
    assert ask.to in (0, 2, 3)
    answer = only(net.deliver(ask.to, ask.msg), M.PROPOSE)
    reprop = only(net.deliver(1, answer), M.PROPOSE, v=1, h=1)
    assert M.block_hash(reprop["body"]["header"]) == d and reprop["txs"] == prop["txs"]
    net.run(keep=cut(0))
    assert [net.nodes[i].height for i in (1, 2, 3)] == [1, 1, 1]


def test_the_primary_cuts_a_batch_by_bytes_and_a_view_change_stays_small():
    net = Net({"max_block_bytes": 32 * 1024, "max_block_txs": 2_000})
    raws = [net.submit(net.tx(name)) for _ in range(60) for name in CLIENTS]
    prop = only(net.tick(0), M.PROPOSE, h=1)
    assert 0 < M.txs_bytes(prop["txs"]) <= 32 * 1024 < M.txs_bytes(raws)
    assert len(prop["txs"]) < len(raws)
    net.run(keep=lambda s, d, m: m["body"]["t"] != M.COMMIT)
    vc = time_out(net, (1,))[1]
    assert vc["body"]["prepared"]                           # headers, not the blocks:
    assert len(M.encode(vc)) < 1_500 * len(vc["body"]["prepared"]) < 32 * 1024


def test_a_replayed_fetch_buys_a_bounded_number_of_answers(monkeypatch):
    net = Net()
    for _ in range(3):
        commit_one(net)
    net.queue.clear()
    fetch = signed(3, {"t": M.FETCH, "from_h": 1, "count": 64})
    answer = only(net.deliver(0, fetch), M.BLOCKS)
    monkeypatch.setattr(R, "SERVE_BURST", 10 * len(M.encode(answer)))
    net = Net()
    for _ in range(3):
        commit_one(net)
    net.queue.clear()
    answers = sum(len(of(net.deliver(0, fetch), M.BLOCKS)) for _ in range(100))
    assert 10 <= answers <= 11 and net.replica(0).throttled >= 89
    net.now += 1_000                                      # the budget refills with time
    assert of(net.deliver(0, fetch), M.BLOCKS)


def test_the_largest_newview_of_any_accepted_genesis_fits_in_a_message():
    for n in (4, 7, 10, 16, 22, 28):
        vals = M.Validators("x", tuple(bytes([i]) * 32 for i in range(n)))
        R.Config(vals).check()
        assert M.newview_bytes_bound(n, R.Config.window) <= M.MAX_MSG_BYTES
    vals = M.Validators("x", tuple(bytes([i]) * 32 for i in range(31)))
    with pytest.raises(ValueError, match="NEW-VIEW"):
        R.Config(vals).check()
    R.Config(vals, window=32).check()                        # a smaller window fits
    with pytest.raises(ValueError, match="max_block_bytes"):
        R.Config(vals, window=32, max_block_bytes=M.MAX_BLOCK_BYTES + 1).check()


def test_a_replayed_viewchange_buys_a_bounded_number_of_newviews(monkeypatch):
    # A replica that asks for the view it is already in gets the NEW-VIEW and the
    # primary's proposals again, out of its byte budget.
    net = Net()
    net.submit(net.tx())
    time_out(net, (1, 2, 3))
    net.run()
    assert all(net.replica(i).view == 1 and net.replica(i).normal for i in (1, 2, 3))
    monkeypatch.setattr(R, "SERVE_BURST", 4 * R.NEWVIEW_COST)
    ask = viewchange(3, 1)
    answers = sum(len(of(net.deliver(2, ask), M.NEWVIEW)) for _ in range(50))
    assert 3 <= answers <= 5 and net.replica(2).throttled >= 45


def test_a_replica_left_asking_for_an_old_view_learns_the_current_one():
    # Found by the simulator: replica 3 restarted into view 1 and asked for it, while the
    # others had gone on to view 2; they only answered with blocks, and it waited for
    # ever for f+1 replicas to ask for a view they had left. Now a replica in a later
    # view tells it how that view began.
    net = Net()
    net.submit(net.tx())
    vcs = time_out(net, ALL)
    net.queue.clear()
    for i in (0, 1, 2):
        for j in (0, 1, 2):
            if i != j:
                net.deliver(j, vcs[i])
    net.run(keep=cut(3))
    assert [net.replica(i).view for i in ALL] == [1, 1, 1, 1]
    assert [net.replica(i).normal for i in ALL] == [True, True, True, False]
    net.submit(net.tx(), to=(0, 2))                   # work view 1's primary never sees
    time_out(net, (0, 2))
    net.run(keep=cut(3))
    assert all(net.replica(i).view == 2 and net.replica(i).normal for i in (0, 1, 2))
    net.queue.clear()
    net.now += PARAMS["view_timeout_ms"]
    ask = only(net.tick(3), M.VIEWCHANGE, v=1)           # still asking for view 1
    nv = only(net.deliver(2, ask), M.NEWVIEW, v=2)
    net.queue.clear()
    net.deliver(3, nv)
    assert net.replica(3).view == 2 and net.replica(3).normal


def test_a_clock_set_back_does_not_silence_a_replica():
    """Its timers run on a clock that never goes back: a replica in a view change whose
    wall clock is set back a minute still asks again for the view after a timeout, and
    the timer it asks its shell for is on the wall clock (sim seed 1027 stalled here)."""
    net = Net()
    net.submit(net.tx())
    time_out(net, (1, 2, 3))
    rep = net.replica(1)
    assert not rep.normal and rep.view == 1
    net.now -= 60_000                          # NTP or an operator steps the clock back
    eff = net.tick(1)
    [timer] = [e for e in eff if type(e) is Timer]
    assert net.now < timer.at <= net.now + 4 * PARAMS["view_timeout_ms"]
    asked = []
    for _ in range(8):                         # 8 s of wall clock, a tick each second
        asked += of(net.tick(1, 1000), M.VIEWCHANGE)
    assert asked and all(m["body"]["v"] >= 1 for m in asked)


def test_what_only_guards_against_repeats_is_pruned_at_a_stable_checkpoint():
    """Evidence already reported and NEW-VIEWs already sent are remembered so as not to
    repeat them; past views and heights below the checkpoint are forgotten, or a peer
    that talks a replica through view after view would grow them without end."""
    rep = Net().replica(1)
    rep.view = 3
    rep.vc.newview_sent = {1, 2, 3}
    rep.reported = {("equivocation", 0, 1, 2), ("equivocation", 0, 1, 9),
                    ("conflicting-vote", 0, 2, M.PREPARE), ("conflicting-vote", 0, 3, M.COMMIT)}
    rep._stabilise(4, [])
    assert rep.vc.newview_sent == {3}
    assert rep.reported == {("equivocation", 0, 1, 9), ("conflicting-vote", 0, 3, M.COMMIT)}


def test_invariants_name_a_broken_state():
    rep = Net().replica(2)
    assert rep.invariants() == []
    rep._slot(rep.low + rep.cfg.window + 1)          # what a missing watermark would keep
    rep.vc.deadline = rep.now                        # and a deadline outside a view change
    assert [p.split(" ")[0] for p in rep.invariants()] == ["slots", "a"]
    rep = Net().replica(2)
    rep.vc.newview_sent.add(rep.view + 1)            # a NEW-VIEW for a view not reached
    rep.vc.requests[0] = viewchange(1, 1)            # 1's request kept as 0's
    assert [p.split(" ")[2] for p in rep.invariants()] == ["request", "sent"]


def test_evidence_kept_per_validator_is_bounded():
    # However much a faulty validator signs, the store keeps EVIDENCE_KEPT records per
    # kind of evidence and validator; the shell still hears of every case.
    from lendnet.node.core.node import EVIDENCE_KEPT
    net = Net()
    node = net.nodes[1]
    cases = [Evidence("conflicting-vote", 0, (signed(0, {"t": M.PREPARE, "v": 0, "h": h,
                                                          "d": bytes(32)}),))
             for h in range(1, EVIDENCE_KEPT + 10)]
    assert node._persist(cases) == cases
    node.flush()
    kept = [k for k in net.stores[1].load_records() if k[0] == "evidence"]
    assert len(kept) == EVIDENCE_KEPT


def test_a_proposal_asking_for_more_gas_than_a_block_holds_is_refused():
    # Every transaction in a block must find its gas when the block runs (else it sits
    # in that block unrun and is proposed again): a validator refuses a block whose
    # transactions' gas limits together pass TX_GAS_ROOM, as an honest proposer packs.
    from lendnet.ledger.ledger import USER_VM_ROOM
    from lendnet.ledger.tx import MAX_CALL_GAS
    net = Net()
    kp = CLIENTS["alice"]
    calls = [txm.sign(txm.build(kp, CHAIN, "call", n, contract=kp.address, args=[],
                                amount=0, gas=MAX_CALL_GAS), [kp]).raw for n in range(5)]
    node = net.nodes[1]
    fits = USER_VM_ROOM // node.ledger.gas_limit(node.parse(calls[0]))
    assert node.check_txs(calls[:fits]) is None
    assert "gas limits" in node.check_txs(calls[:fits + 1])
