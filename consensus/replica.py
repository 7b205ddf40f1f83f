"""A sans-IO PBFT replica: events in (`deliver`, `tick`), effects out.

It never touches a socket, a clock or a random source: the shell passes the time (ms)
with every event and carries out the effects (consensus/effects.py). The application
(the node: mempool and ledger) sits behind a small synchronous interface, as in ABCI:
consensus/app.py's `Application` — the chain view (height, block_hash, root_at,
header_at, get_block), prepare (make_txs), process (check_txs), finalize (execute), and
the work waiting (has_pending, pending_count).

Protocol (PBFT with chained, view-independent blocks):
- The primary of view v proposes height h; a replica that accepts it sends PREPARE. It
  prepares h only if it prepared-voted h-1 in view v for the block h names as `prev` (or
  executed h-1); it sends COMMIT for h only once h is prepared (2f+1 PREPAREs) and h-1
  is prepared in v or executed. A block with 2f+1 COMMITs of one view is committed; the
  COMMITs are its certificate. Blocks execute strictly in height order.
- Because of those two rules, every committed block comes with prepared certificates for
  its ancestors in the same view, so the new primary's selection — for each height the
  prepared certificate of the highest view, keeping the prefix that chains from the
  stable checkpoint — always contains every committed block.
- Every K heights replicas sign a CHECKPOINT (height, block hash, state root); 2f+1 make
  it stable, everything at or below it is forgotten, and a replica that sees itself
  behind fetches blocks with their certificates from a peer.

Liveness: no stall is silent. A replica with work the current view has not finished —
client transactions waiting, a proposal not committed (refused ones included), or, on a
chain with empty blocks, no block for longer than the primary's idle interval — asks for
the next view once the view timeout passes without a committed block. Every refusal and
every view change leaves as an effect (`Refused`, `ViewChange`, `ViewEntered`) that the
shell counts and logs.

Chain time follows the proposer's clock, checked against the replica's own in real
milliseconds (as CometBFT's proposer-based timestamps do), never in chain seconds: a
new proposal's time may be at most `clock_skew_ms` ahead of the replica's clock when it
judges it, and at most `clock_skew_ms + msg_delay_ms` behind its clock when it arrived,
both scaled to chain time; and never before its parent's. So clocks need agree only to
within `clock_skew_ms`, whatever `time_scale` is. See docs/CONSENSUS.md.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from lendnet.ledger.tx import MAX_TX_BYTES

from . import messages as M
from .app import Application
from .effects import (Broadcast, Committed, Evidence, Persist, Refused, Send, Timer,
                      ViewChange, ViewEntered)


@dataclass
class Config:
    validators: M.Validators
    genesis_time: int = 0              # chain seconds
    checkpoint_interval: int = 16      # K
    window: int = 64                   # heights accepted above the stable checkpoint
    pipeline: int = 4                  # proposals in flight beyond the executed height
    max_block_txs: int = 500
    max_block_bytes: int = 1 << 20     # the transactions' bytes in one block
    batch_delay_ms: int = 20           # wait this long for a fuller batch
    empty_block_ms: int = 0            # idle primary proposes an empty block; 0 = never
    view_timeout_ms: int = 1_000       # no progress on known work this long: view change
    clock_skew_ms: int = 1_000         # honest validators' clocks differ by at most this
    msg_delay_ms: int = 15_000         # a proposal may arrive this late and still be timely
    time_scale: int = 1                # chain seconds per real second (dev: accelerated)
    fetch_timeout_ms: int = 500
    # A node stores a snapshot of its state with every block at a multiple of this
    # height (0: never), and restarts from the latest one instead of replaying the
    # chain from genesis (node/core/node.py). Not a consensus rule: nodes may differ.
    snapshot_every: int = 1_000

    def chain_time(self, now_ms: int) -> int:
        return self.genesis_time + max(0, now_ms - self.genesis_time * 1000) \
            * self.time_scale // 1000

    def check(self) -> None:
        """Raise ValueError naming the parameter if this configuration cannot work (or
        would let a consensus message outgrow the message limit)."""
        n = self.validators.n
        limits = {"checkpoint_interval": (1, self.window), "window": (1, M.MAX_WINDOW),
                  "pipeline": (1, self.window), "max_block_txs": (1, M.MAX_BLOCK_TXS),
                  # at least one transaction of the largest size must fit in a block
                  "max_block_bytes": (MAX_TX_BYTES, M.MAX_BLOCK_BYTES),
                  "batch_delay_ms": (0, 60_000), "empty_block_ms": (0, 3_600_000),
                  "view_timeout_ms": (10, 600_000), "clock_skew_ms": (0, 3_600_000),
                  "msg_delay_ms": (0, 3_600_000), "time_scale": (1, 10**7),
                  "fetch_timeout_ms": (10, 600_000), "snapshot_every": (0, 10**9)}
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if type(v) is not int or not lo <= v <= hi:
                raise ValueError(f"consensus parameter {name} must be an integer from "
                                 f"{lo} to {hi} (is {v!r})")
        if not 1 <= n <= M.MAX_VALIDATORS:
            raise ValueError(f"a chain has 1 to {M.MAX_VALIDATORS} validators (has {n})")
        worst = M.newview_bytes_bound(n, self.window)
        if worst > M.MAX_MSG_BYTES:
            raise ValueError(f"with {n} validators and a window of {self.window} a NEW-VIEW "
                             f"could reach {worst} bytes, over the {M.MAX_MSG_BYTES}-byte "
                             f"message limit: use a smaller window")


FETCH_BLOCKS = 64         # blocks asked for at once when catching up
FUTURE_BYTES = 8 << 20    # bytes of messages for later views held per signing replica
MAX_CHECKPOINTS = 8       # unstable checkpoint votes held per replica
SERVE_BURST = 2 * M.MAX_MSG_BYTES     # blocks served to one replica at once ...
SERVE_BYTES_PER_S = 32 << 20          # ... and per second after that
NEWVIEW_COST = 256 << 10              # what a NEW-VIEW sent again counts against that
PREPARED = "prepared"     # persisted as ("vote", PREPARED, view, height): [propose, prepares]
WAIT = "wait"             # a proposal that cannot be judged yet (not a refusal)


# Named records for what the replica keeps in tuples. NamedTuples: they compare, order
# and hash as the plain tuples they replace did (checkpoint votes are ordered; the rest are
# only read by name), and none is persisted or sent as such.

class Prepared(NamedTuple):
    """A prepared certificate this replica holds for a height: what its VIEW-CHANGE carries."""
    view: int
    d: bytes              # block hash
    propose: dict         # the signed PROPOSE, without transactions
    prepares: list        # 2f+1 signed PREPAREs of that view for d, by signer


class Candidate(NamedTuple):
    """A prepared block a new view's selection weighs for one height."""
    view: int
    d: bytes
    propose: dict

    @property
    def rank(self) -> tuple[int, bytes]:
        # The highest view's certificate wins; two of one view are for one block (2f+1
        # PREPAREs each), so the hash only makes the choice total.
        return self.view, self.d


class Carried(NamedTuple):
    """A block the NEW-VIEW carries over into the view, which must keep it."""
    d: bytes
    header: dict
    propose: dict         # its signed PROPOSE (of an earlier view), without transactions


class HeldKey(NamedTuple):
    """Messages held for a view not entered yet: one per type, view, height and signer."""
    t: str
    v: int
    h: int
    r: int


class Held(NamedTuple):
    msg: dict
    size: int             # its bytes, counted against its signer's FUTURE_BYTES
    at: int               # when it arrived, on the wall clock: what timeliness is judged by


class CheckpointKey(NamedTuple):
    h: int
    d: bytes              # block hash
    root: bytes           # state root


class Fetched(NamedTuple):
    """A block fetched with its certificate, waiting to execute."""
    h: int
    d: bytes
    block: dict
    cert: list


class Proposal:
    """A view's proposal for one height as this replica first saw it."""

    __slots__ = ("msg", "header", "d", "at")

    def __init__(self, msg: dict, header: dict, d: bytes, at: int):
        self.msg = msg          # the signed PROPOSE without transactions
        self.header = header
        self.d = d              # block hash
        self.at = at            # when it arrived (ms): what timeliness is judged against


class Slot:
    """What one height has gathered in the views still relevant."""

    __slots__ = ("proposals", "txs", "refused", "prepares", "commits", "prepared", "votes",
                 "asked", "asks")

    def __init__(self) -> None:
        self.proposals: dict[int, Proposal] = {}  # view -> its primary's proposal
        self.txs: dict[bytes, list] = {}          # block hash -> its transactions
        self.refused: dict[int, str] = {}         # view -> why its proposal was refused
        self.prepares: dict[tuple, dict] = {}     # (view, hash) -> {replica: msg}
        self.commits: dict[tuple, dict] = {}      # (view, hash) -> {replica: msg}
        self.prepared: Prepared | None = None     # the highest view's certificate
        self.votes: dict[tuple, bytes] = {}       # (type, view, replica) -> hash seen
        self.asked: int | None = None             # when missing transactions were asked for
        self.asks = 0


class Status(enum.Enum):
    """Where a replica is in the protocol: working in its view, or asking for the next."""
    NORMAL = "normal"              # in view `view`: proposing, voting, executing
    VIEW_CHANGE = "view-change"    # asking for view `view`; votes nothing until it begins


@dataclass
class ViewChangeState:
    """What a replica keeps about view changes, in one place. `begin` starts a change and
    `end` finishes it: the fields that belong to one change are reset there together."""
    # Outliving any one change:
    requests: dict[int, dict] = field(default_factory=dict)  # replica -> latest VIEW-CHANGE
    newview_sent: set[int] = field(default_factory=set)    # views begun as their primary
    attempts: int = 0            # changes since a block last executed: the timeout doubles
    # This change's; `newview` stays once the view has begun:
    deadline: int | None = None  # it gives up on the view it asks for (set once 2f+1 ask)
    resent: int = 0              # when this replica last broadcast its VIEW-CHANGE
    newview: dict | None = None  # the NEW-VIEW that began the current view, for latecomers

    def begin(self, now: int) -> None:
        self.attempts += 1
        # As in PBFT, the timer that gives up on this view starts only once 2f+1
        # replicas ask for it too: a replica alone must not run ahead through views.
        self.deadline = None
        self.resent = now
        self.newview = None      # the view it began is being left

    def end(self, newview: dict) -> None:
        self.deadline = None
        self.newview = newview


class Diverged(RuntimeError):
    """This replica's executed state differs from what a quorum certified: it must stop."""


class Replica:
    def __init__(self, config: Config, index: int, keypair, app: Application, now: int,
                 persisted: dict | None = None):
        self.cfg = config
        self.vals = config.validators
        self.me = index
        self.kp = keypair
        self.app = app
        # Who handles each message type (a PROPOSE, which also needs its arrival time, is
        # handled apart: see _handle). Every type messages.decode accepts is here.
        self.handlers: dict[str, Callable[[dict | None, dict], None]] = {
            M.PREPARE: self._on_prepare, M.COMMIT: self._on_commit,
            M.CHECKPOINT: self._on_checkpoint, M.VIEWCHANGE: self._on_viewchange,
            M.NEWVIEW: self._on_newview, M.FETCH: self._on_fetch, M.BLOCKS: self._on_blocks,
            M.GETBLOCK: self._on_getblock}
        self.wall = self.now = now
        self.stepped_back = 0                      # see _set_clock
        persisted = persisted or {}
        self.view = persisted.get(("view",), 0)
        self.status = Status.NORMAL
        low, proof = persisted.get(("checkpoint",), (0, []))
        self.low, self.low_proof = min(low, app.height), proof[:self.vals.quorum]
        if self.low != low:
            self.low_proof = []
        # my own votes, by (type, view, height): restored so a restart never contradicts them
        self.my_votes: dict[tuple, bytes] = {k[1:]: v for k, v in persisted.items()
                                             if k[0] == "vote" and k[1] != PREPARED}
        self.slots: dict[int, Slot] = {}
        # ... and the prepared certificates, which a view change must still carry
        for k in sorted(k for k in persisted if k[0] == "vote" and k[1] == PREPARED):
            (_, _, v, h), (prop, prepares) = k, persisted[k]
            if h > self.low:                      # sorted: the highest view's is kept
                d = M.block_hash(prop["body"]["header"])
                slot = self._slot(h)
                slot.prepared = Prepared(v, d, M.signed_part(prop), prepares)
                if "txs" in prop:
                    slot.txs[d] = prop["txs"]
        self.checkpoints: dict[CheckpointKey, dict] = {}   # -> {replica: msg}
        self.vc = ViewChangeState()
        self.selection: dict[int, Carried] = {}   # height -> the block the view keeps
        self.next_h = app.height + 1               # next height to propose (primary)
        self.progress_deadline: int | None = None
        self.work = ""                             # the unfinished work that deadline is for
        self.batch_since: int | None = None
        self.last_block_at = now
        self.behind_hint = 0
        self.fetch_deadline = 0
        self.fetched: list[Fetched] = []          # to execute on the next tick
        self.behind_since: int | None = None
        if persisted:                              # a restart: others may have moved on
            self.behind_hint = app.height + 1
        self.fetch_peer = (index + 1) % self.vals.n
        self.reported: set[tuple] = set()
        self.helped: dict[int, int] = {}          # replica -> when blocks were last sent it
        self.served: dict[int, tuple] = {}        # replica -> (byte budget left, at)
        self.out: list = []
        self.view_changes = 0
        self.refusals: dict[str, int] = {}        # reason -> proposals refused for it
        self.throttled = 0                        # requests for blocks left unanswered
        # Messages for views not entered yet, and the bytes each signer has held.
        self.future: dict[HeldKey, Held] = {}
        self.future_bytes: dict[int, int] = {}
        if self.view > 0:
            # It may have stopped in the middle of a view change, and it does not keep how
            # the view began (what the NEW-VIEW told it to keep): rather than act in the
            # view unchecked, it asks for it again; a replica already in it answers.
            self._start_view_change(self.view, "restarted: asking how this view began")

    # --- events -----------------------------------------------------------------------

    def deliver(self, msg: dict, now: int, size: int = 0) -> list:
        """A message already decoded and signature-checked (messages.decode); `size` is
        its length on the wire."""
        self._set_clock(now)
        b = msg["body"]
        if b["t"] in (M.PROPOSE, M.PREPARE, M.COMMIT) and b["v"] > self.view:
            self._hold_future(msg, b, size)
            return self._finish()
        self._handle(msg, b, self.wall)
        return self._finish()

    def _handle(self, msg: dict, b: dict, at: int) -> None:
        """Hand a message to its type's handler. `at` is when it arrived on the wall
        clock: a PROPOSE's timeliness is judged against it."""
        if b["t"] == M.PROPOSE:
            self._on_propose(msg, b, at)
        else:
            self.handlers[b["t"]](msg, b)

    def tick(self, now: int) -> list:
        self._set_clock(now)
        now = self.now
        self._execute_fetched()
        if self.status is Status.NORMAL:
            work = self._unfinished()
            if not work:
                self.progress_deadline = None
            elif self.progress_deadline is None:
                self.progress_deadline = now + self._timeout()
                self.work = work
            elif now >= self.progress_deadline:
                self._start_view_change(self.view + 1, f"no block committed in view "
                                        f"{self.view} for {self._timeout()} ms: {self.work}")
        elif self.vc.deadline is not None and now >= self.vc.deadline:
            self._start_view_change(self.view + 1, f"the change to view {self.view} did "
                                    f"not complete in {self._timeout()} ms")
        elif now >= self.vc.resent + self.cfg.view_timeout_ms:
            # A lost NEW-VIEW would strand this replica: keep asking for the view it wants
            # (a replica already in it, or in a later one, answers with how its view
            # began and its proposals).
            self.vc.resent = now
            self.out.append(Broadcast(self._viewchange_msg()))
        self._ask_for_txs()
        if self.behind_hint > self.app.height:
            if self.behind_since is None:
                self.behind_since = now           # often it is only the pipeline: wait a little
            elif now >= max(self.fetch_deadline, self.behind_since + self.cfg.fetch_timeout_ms):
                self._fetch()
        else:
            self.behind_since = None
        return self._finish()

    # --- helpers ----------------------------------------------------------------------

    def _set_clock(self, now: int) -> None:
        """`now` is this node's wall clock, which an operator or NTP may step back. The
        timers (view change, heartbeat, fetch, budgets) run on a clock that never goes
        back — the wall clock plus every step back so far — or a clock set back a minute
        would leave this replica silent for a minute (sim seed 1027: three replicas
        waiting on each other's timers). Chain time is judged by the wall clock itself."""
        if now < self.wall:
            self.stepped_back += self.wall - now
        self.wall = now
        self.now = now + self.stepped_back

    def _finish(self) -> list:
        self._progress()
        out, self.out = self.out, []
        out.append(Timer(self._next_deadline() - self.stepped_back))   # on the wall clock
        return out

    def _next_deadline(self) -> int:
        times = [t for t in (self.progress_deadline, self.vc.deadline) if t is not None]
        if self.status is Status.VIEW_CHANGE:
            times.append(self.vc.resent + self.cfg.view_timeout_ms)
        elif self.progress_deadline is None and self._heartbeat_expected():
            times.append(self.last_block_at + self.cfg.empty_block_ms)
        if self.is_primary() and self.status is Status.NORMAL:
            if self.batch_since is not None:
                times.append(self.batch_since + self.cfg.batch_delay_ms)
            if self.cfg.empty_block_ms and self.next_h == self.app.height + 1:
                # (only with nothing in flight: otherwise it cannot propose an empty
                # block, and a deadline already past would tick it without end)
                times.append(self.last_block_at + self.cfg.empty_block_ms)
        if self.fetched:
            times.append(self.now)
        if self.behind_hint > self.app.height:
            times.append(max(self.fetch_deadline, (self.behind_since or self.now)
                             + self.cfg.fetch_timeout_ms))
        for h, slot in self.slots.items():
            if h > self.app.height and self._in_window(h) and \
                    self._missing_txs(h, slot) is not None:
                times.append(self.now if slot.asked is None
                             else slot.asked + self.cfg.fetch_timeout_ms)
        return min(times) if times else self.now + self.cfg.view_timeout_ms

    def _timeout(self) -> int:
        return self.cfg.view_timeout_ms << min(self.vc.attempts, 4)

    def _heartbeat_expected(self) -> bool:
        """On a chain with empty blocks an idle primary still proposes: a replica that is
        not catching up expects a block at least every `empty_block_ms`."""
        return bool(self.cfg.empty_block_ms) and self.behind_hint <= self.app.height

    def _unfinished(self) -> str:
        """Why this view still owes a committed block ('' if it owes none)."""
        if self.app.has_pending():
            return "client transactions are waiting"
        for h in sorted(self.slots):
            slot = self.slots[h]
            if h > self.app.height and self.view in slot.proposals:
                why = slot.refused.get(self.view)
                return (f"refused the proposal for height {h} ({why})" if why
                        else f"the proposal for height {h} is not committed")
        if self._heartbeat_expected() and \
                self.now >= self.last_block_at + self.cfg.empty_block_ms:
            return f"an empty block was due {self.cfg.empty_block_ms} ms after the last block"
        return ""

    def is_primary(self) -> bool:
        return self.vals.primary(self.view) == self.me

    @property
    def normal(self) -> bool:
        """In the normal case of its view (read by the node's status and the tests)."""
        return self.status is Status.NORMAL

    def _sign(self, body: dict) -> dict:
        body["r"] = self.me
        return M.sign(self.vals.chain_id, self.kp, body)

    def _vote(self, t: str, v: int, h: int, d: bytes, extra: dict | None = None,
              txs: list | None = None) -> dict | None:
        """Sign a vote unless it would contradict one this replica already signed. A
        PROPOSE (`extra` holds the header) leaves with its transactions."""
        key = (t, v, h)
        prior = self.my_votes.get(key)
        if prior is not None and prior != d:
            return None                         # never two different votes for one slot
        if prior is None:
            self.my_votes[key] = d
            self.out.append(Persist(("vote", t, v, h), d))
        body = {"t": t, "v": v, "h": h, **(extra or {"d": d})}
        msg = self._sign(body)
        wire = msg if txs is None else M.with_txs(msg, txs)
        self.out.append(Broadcast(wire))
        self._handle(wire, body, self.wall)      # my own vote counts like anyone's
        return msg

    def _slot(self, h: int) -> Slot:
        s = self.slots.get(h)
        if s is None:
            s = self.slots[h] = Slot()
        return s

    def _in_window(self, h: int) -> bool:
        return self.low < h <= self.low + self.cfg.window

    def _selected(self, h: int) -> bytes | None:
        sel = self.selection.get(h)
        return None if sel is None else sel.d

    def _note_vote(self, slot: Slot, t: str, v: int, r: int, d: bytes, msg: dict,
                   others: dict) -> bool:
        """Record that r voted d; on a second, different vote keep evidence, refuse it."""
        seen = slot.votes.get((t, v, r))
        if seen is not None and seen != d:
            key = ("conflicting-vote", r, v, t)
            if key not in self.reported:
                self.reported.add(key)
                first = next((m for (vv, dd), ms in others.items() if vv == v and dd == seen
                              for rr, m in ms.items() if rr == r), None)
                self.out.append(Evidence("conflicting-vote", r, (first, msg)))
            return False
        slot.votes[(t, v, r)] = d
        return True

    def _refuse(self, h: int, v: int, proposer: int, reason: str, detail: str = "") -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        self.out.append(Refused(v, h, proposer, reason, detail))

    def _hold_future(self, msg: dict, b: dict, size: int) -> None:
        """The network may deliver a new view's messages before its NEW-VIEW: keep them
        for the next two views, one per (type, view, height, signer), at most
        FUTURE_BYTES per signer, and a PROPOSE only from that view's primary; replay them
        on entering the view. A proposal over the budget is kept without its
        transactions (they are asked for later)."""
        t, v, r = b["t"], b["v"], b["r"]
        if v > self.view + 2 or not self._in_window(b["h"]) or \
                (t == M.PROPOSE and r != self.vals.primary(v)):
            return
        key = HeldKey(t, v, b["h"], r)
        have = self.future.get(key)
        if have is not None and not (t == M.PROPOSE and "txs" in msg and "txs" not in have.msg
                                     and have.msg["body"] == b):
            return                                 # a copy (or a contradiction: evidence
                                                   # is for when the view is entered)
        size = size or len(M.encode(msg))
        held = self.future_bytes.get(r, 0) - (have.size if have else 0)
        if held + size > FUTURE_BYTES:
            if have is not None or "txs" not in msg:
                return
            msg = M.signed_part(msg)
            size = len(M.encode(msg))
            if held + size > FUTURE_BYTES:
                return
        self.future[key] = Held(msg, size, self.wall)  # the wall clock: chain time
        self.future_bytes[r] = held + size

    # --- normal case ------------------------------------------------------------------

    def _on_propose(self, msg, b, at: int):
        v, h, header, r = b["v"], b["h"], b["header"], b["r"]
        if r != self.vals.primary(v):
            return                                # only the view's primary proposes
        if h <= self.app.height:
            self._help_behind(r, h)
            return
        if not self._in_window(h):
            return
        d = M.block_hash(header)
        slot = self._slot(h)
        txs = msg.get("txs")
        if v != self.view:
            # An earlier view's proposal: the transactions of a block this replica still
            # needs (one the new view carries over, or one a quorum committed).
            if txs is not None and d not in slot.txs and self._needs(h, slot, d):
                slot.txs[d] = txs
            return
        have = slot.proposals.get(v)
        if have is not None:
            if have.d != d:
                key = ("equivocation", r, v, h)
                if key not in self.reported:
                    self.reported.add(key)
                    self.out.append(Evidence("equivocation", r, (have.msg, M.signed_part(msg))))
            elif txs is not None and d not in slot.txs:
                slot.txs[d] = txs
            return
        signed = M.signed_part(msg)
        slot.proposals[v] = Proposal(signed, header, d, at)
        if txs is not None:
            slot.txs.setdefault(d, txs)
        elif d not in slot.txs and slot.asked is None:
            slot.asked = self.now                 # the full copy is likely on its way
        if r != self.me:
            # Pass the primary's signed header on once: a primary that sent different
            # blocks to different replicas is seen doing it, and a replica whose copy was
            # lost learns there is a block to ask for.
            self.out.append(Broadcast(signed))

    def _needs(self, h: int, slot: Slot, d: bytes) -> bool:
        """Does this replica want the transactions of block d at h?"""
        return (self._selected(h) == d or any(p.d == d for p in slot.proposals.values())
                or (slot.prepared is not None and slot.prepared.d == d)
                or any(dd == d and len(votes) >= self.vals.quorum
                       for (_, dd), votes in slot.commits.items()))

    def _on_prepare(self, msg, b):
        v, h, d = b["v"], b["h"], b["d"]
        if h <= self.app.height:
            self._help_behind(b["r"], h)
            return
        if v != self.view or not self._in_window(h):
            return
        slot = self._slot(h)
        if self._note_vote(slot, M.PREPARE, v, b["r"], d, msg, slot.prepares):
            slot.prepares.setdefault((v, d), {})[b["r"]] = msg

    def _on_commit(self, msg, b):
        v, h, d = b["v"], b["h"], b["d"]
        if h <= self.app.height:
            self._help_behind(b["r"], h)
            return
        self.behind_hint = max(self.behind_hint, h - 1)
        if not self._in_window(h):
            return
        slot = self._slot(h)
        if self._note_vote(slot, M.COMMIT, v, b["r"], d, msg, slot.commits):
            votes = slot.commits.setdefault((v, d), {})
            votes[b["r"]] = msg
            if len(votes) >= self.vals.quorum:
                self.behind_hint = max(self.behind_hint, h)   # committed: fetch it if need be

    def _judge(self, h: int, p: Proposal) -> tuple[str, str] | None:
        """May this replica prepare-vote p, the current view's proposal for h? None if
        so; (WAIT, '') if it cannot tell yet; else (reason, detail) for a refusal."""
        header, cfg = p.header, self.cfg
        carried = self._selected(h) == p.d
        t = header["time"]
        if not carried:
            # What a new proposal must be whatever came before it: named after its
            # sender, timely, within the size limits.
            if header["proposer"] != p.msg["body"]["r"]:
                return "proposer", f"the block names validator {header['proposer']} as " \
                                   f"its proposer"
            ahead = cfg.chain_time(self.wall + cfg.clock_skew_ms)
            if t > ahead:
                return "time-ahead", f"time {t} is ahead of this replica's clock " \
                                     f"(latest acceptable {ahead})"
            behind = cfg.chain_time(p.at - cfg.clock_skew_ms - cfg.msg_delay_ms)
            if t < behind:
                return "time-behind", f"time {t} is behind this replica's clock " \
                                      f"(earliest acceptable {behind})"
        txs = self.slots[h].txs.get(p.d)
        if txs is None:
            return WAIT, ""                       # asked for (see _ask_for_txs)
        if not carried and (len(txs) > cfg.max_block_txs
                            or M.txs_bytes(txs) > cfg.max_block_bytes):
            return "too-big", f"{len(txs)} transactions of {M.txs_bytes(txs)} bytes"
        prev_header = self._header_of(h - 1, header["prev"])
        if prev_header is None:
            return WAIT, ""                       # h-1 not known (yet) in this view
        if t < prev_header["time"]:
            return "time-before-parent", f"time {t} is before its parent's " \
                                         f"{prev_header['time']}"
        eh = header["exec_height"]
        if eh > self.app.height:
            return WAIT, ""
        if eh < h - 2 * self.cfg.window:
            return "exec-stale", f"executed height {eh} is too old for height {h}"
        if self.app.root_at(eh) != header["exec_root"]:
            return "exec-root", f"state root at {eh} is not this replica's"
        # ... and no transaction may repeat one in a block still in flight below it
        in_flight: list[bytes] = []
        for hh in range(self.app.height + 1, h):
            d = self.my_votes.get((M.PREPARE, self.view, hh))
            slot = self.slots.get(hh)
            # No vote: no block hash, no transactions. A vote without its slot is one
            # this replica signed before it restarted (votes are kept on disk, slots
            # are not): its transactions are unknown here, as when they never came.
            if d is not None and slot is not None:
                in_flight.extend(slot.txs.get(d, ()))
        err = self.app.check_txs(txs, in_flight)
        return None if err is None else ("txs", err)

    def _header_of(self, h: int, want: bytes) -> dict | None:
        """Header of the block at h with hash `want`, if this replica may build on it."""
        if h == 0:       # genesis: the first block may not be older than the chain
            return {"time": self.cfg.genesis_time} if want == M.GENESIS_HASH else None
        if h <= self.app.height:
            return self.app.header_at(h) if self.app.block_hash(h) == want else None
        slot = self.slots.get(h)
        if slot is None or self.my_votes.get((M.PREPARE, self.view, h)) != want:
            return None
        return self._header_for(slot, h, want)

    def _header_for(self, slot: Slot, h: int, d: bytes) -> dict | None:
        """The header of block d at h, from any proposal, certificate or selection."""
        signed = self._signed_header(slot, h, d)
        return signed and signed["body"]["header"]

    def _signed_header(self, slot: Slot, h: int, d: bytes) -> dict | None:
        """A signed PROPOSE of block d at h (any view), without transactions."""
        for p in slot.proposals.values():
            if p.d == d:
                return p.msg
        if slot.prepared is not None and slot.prepared.d == d:
            return slot.prepared.propose
        sel = self.selection.get(h)
        return sel.propose if sel is not None and sel.d == d else None

    def _progress(self) -> None:
        """Advance every height in flight as far as the messages gathered allow."""
        changed = True
        while changed:
            changed = False
            if self.status is Status.NORMAL:
                for h in sorted(self.slots):
                    if h > self.app.height:
                        changed |= self._advance(h)
            changed |= self._execute_ready()
            if self.status is Status.NORMAL and self.is_primary():
                changed |= self._repropose() or self._maybe_propose()

    def _advance(self, h: int) -> bool:
        v = self.view
        slot = self.slots[h]
        acted = False
        prop = slot.proposals.get(v)
        sel = self._selected(h)
        if prop is not None and sel is not None and sel != prop.d:
            prop = None                           # the new view must keep what it selected
        if prop is not None and (M.PREPARE, v, h) not in self.my_votes \
                and v not in slot.refused:
            verdict = self._judge(h, prop)
            if verdict is None:
                self._vote(M.PREPARE, v, h, prop.d)
                acted = True
            else:
                reason, detail = verdict
                if reason != WAIT:
                    slot.refused[v] = reason
                    self._refuse(h, v, prop.msg["body"]["r"], reason, detail)
        mine = self.my_votes.get((M.PREPARE, v, h))
        if mine is not None and prop is not None and (slot.prepared is None
                                                      or slot.prepared.view < v):
            votes = slot.prepares.get((v, mine), {})
            if len(votes) >= self.vals.quorum:
                cert = [votes[r] for r in sorted(votes)[:self.vals.quorum]]
                slot.prepared = Prepared(v, mine, prop.msg, cert)
                # Durable before the COMMIT it allows: after a restart a VIEWCHANGE must
                # still carry it, or a block committed elsewhere could be replaced; with
                # the transactions, so that this replica can still propose it again.
                self.out.append(Persist(("vote", PREPARED, v, h),
                                        [M.with_txs(prop.msg, slot.txs[mine]), cert]))
                acted = True
        if (slot.prepared is not None and slot.prepared.view == v
                and (M.COMMIT, v, h) not in self.my_votes and self._prev_prepared(h)):
            self._vote(M.COMMIT, v, h, slot.prepared.d)
            acted = True
        return acted

    def _prev_prepared(self, h: int) -> bool:
        """May h get this replica's COMMIT? Only once it COMMIT-voted h-1 in this view (or
        executed it). By induction a replica that commits h in view v holds prepared
        certificates of view v for every height from its executed one up to h, so the
        f+1 honest replicas in any commit quorum carry that whole chain into every later
        view change. Asking only that h-1 be prepared is not enough: a replica could
        commit h with h-2 never prepared, and a NEW-VIEW missing h-2 would drop h."""
        return h - 1 <= self.app.height or (M.COMMIT, self.view, h - 1) in self.my_votes

    def _committed(self, h: int):
        """(block, certificate) if 2f+1 COMMITs of one view agree on a block we hold that
        follows the chain we executed."""
        slot = self.slots.get(h)
        if slot is None:
            return None
        prev = self.app.block_hash(h - 1) if h > 1 else M.GENESIS_HASH
        for (_v, d), votes in slot.commits.items():
            if len(votes) >= self.vals.quorum and d in slot.txs:
                header = self._header_for(slot, h, d)
                if header is not None and header["prev"] == prev:
                    return ({"header": header, "txs": slot.txs[d]},
                            sorted(votes.values(), key=lambda m: m["body"]["r"]))
        return None

    def _execute_ready(self) -> bool:
        done = False
        while True:
            h = self.app.height + 1
            got = self._committed(h)
            if got is None:
                return done
            self._execute(h, *got)
            done = True

    def _execute(self, h: int, block: dict, cert: list) -> None:
        root = self.app.execute(h, block, cert)
        self.out.append(Committed(h, block, cert, root))
        self.progress_deadline = None
        self.vc.attempts = 0
        self.last_block_at = self.now
        self.next_h = max(self.next_h, h + 1)
        if h % self.cfg.checkpoint_interval == 0:
            d = M.block_hash(block["header"])
            msg = self._sign({"t": M.CHECKPOINT, "h": h, "d": d, "root": root})
            self.out.append(Broadcast(msg))
            self._on_checkpoint(msg, msg["body"])

    def _repropose(self) -> bool:
        """As the new view's primary, propose again each block the NEW-VIEW carried over,
        once its transactions are here (asked for if not)."""
        for h in sorted(self.selection):
            if h <= self.app.height:
                continue                          # (before _slot: no slot for it again)
            carried = self.selection[h]
            slot = self._slot(h)
            if self.view in slot.proposals or carried.d not in slot.txs:
                continue
            if self._vote(M.PROPOSE, self.view, h, carried.d, {"header": carried.header},
                          slot.txs[carried.d]) is not None:
                return True
        return False

    def _maybe_propose(self) -> bool:
        h = self.next_h
        if h > self.app.height + self.cfg.pipeline or h > self.low + self.cfg.window:
            return False
        if (M.PROPOSE, self.view, h) in self.my_votes:
            self.next_h += 1                      # already proposed (e.g. before a restart)
            return True
        prev_hash = self.app.block_hash(h - 1) if h - 1 <= self.app.height else \
            self.my_votes.get((M.PREPARE, self.view, h - 1))
        if h == 1:
            prev_hash = M.GENESIS_HASH
        prev_header = self._header_of(h - 1, prev_hash) if prev_hash is not None else None
        if prev_header is None:
            return False
        cfg = self.cfg
        if self.batch_since is not None and self.now < self.batch_since + \
                cfg.batch_delay_ms and self.app.pending_count() < cfg.max_block_txs:
            return False                          # still gathering this batch
        exclude: set[bytes] = set()
        for hh in range(self.app.height + 1, h):
            slot = self.slots.get(hh)
            if slot is None:
                continue
            prop = slot.proposals.get(self.view)
            if prop:
                exclude.update(slot.txs.get(prop.d, ()))
        txs = self.app.make_txs(h, cfg.max_block_txs, cfg.max_block_bytes, exclude)
        if not txs:
            self.batch_since = None
            idle = cfg.empty_block_ms and self.now >= self.last_block_at + \
                cfg.empty_block_ms and h == self.app.height + 1
            if not idle:
                return False
        elif len(txs) < cfg.max_block_txs:
            if self.batch_since is None:
                self.batch_since = self.now
            if self.now < self.batch_since + cfg.batch_delay_ms:
                return False
        self.batch_since = None
        eh = self.app.height
        header = {"height": h, "prev": prev_hash,
                  "time": max(cfg.chain_time(self.wall), prev_header["time"]),
                  "proposer": self.me, "txs_root": M.txs_root(txs), "exec_height": eh,
                  "exec_root": self.app.root_at(eh)}
        d = M.block_hash(header)
        if self._vote(M.PROPOSE, self.view, h, d, {"header": header}, txs) is None:
            return False
        self.last_block_at = self.now
        self.next_h = h + 1
        return True

    # --- transactions of a block known by its header ------------------------------------

    def _missing_txs(self, h: int, slot: Slot) -> bytes | None:
        """The block at h whose transactions this replica needs and lacks: the one the
        new view carries over, the current view's proposal, or one a quorum committed."""
        wanted = [self._selected(h)] if self.is_primary() else []
        prop = slot.proposals.get(self.view)
        if prop is not None and self.view not in slot.refused:
            wanted.append(prop.d)
        wanted += [d for (_, d), votes in slot.commits.items()
                   if len(votes) >= self.vals.quorum]
        return next((d for d in wanted if d is not None and d not in slot.txs), None)

    def _ask_for_txs(self) -> None:
        for h in sorted(self.slots):
            slot = self.slots[h]
            if h <= self.app.height or not self._in_window(h):
                continue
            d = self._missing_txs(h, slot)
            if d is None or (slot.asked is not None
                             and self.now < slot.asked + self.cfg.fetch_timeout_ms):
                continue
            # Those known to hold it: the primaries that proposed it, then its voters.
            holders = [p.msg["body"]["r"] for p in slot.proposals.values() if p.d == d]
            for votes in (slot.prepares, slot.commits):
                holders += [r for (_, dd), rs in votes.items() if dd == d for r in sorted(rs)]
            holders = [r for r in dict.fromkeys(holders) if r != self.me] or \
                [r for r in range(self.vals.n) if r != self.me]
            slot.asked = self.now
            slot.asks += 1
            peer = holders[slot.asks % len(holders)]
            self.out.append(Send(peer, self._sign({"t": M.GETBLOCK, "h": h, "d": d})))

    def _on_getblock(self, msg, b):
        h, d, r = b["h"], b["d"], b["r"]
        if h <= self.app.height:
            self._on_fetch(None, {"r": r, "from_h": h, "count": 1})
            return
        slot = self.slots.get(h)
        signed = slot and d in slot.txs and self._signed_header(slot, h, d)
        if signed and self._may_serve(r):
            self._served(r, M.txs_bytes(slot.txs[d]))
            self.out.append(Send(r, M.with_txs(signed, slot.txs[d])))

    def _may_serve(self, r: int) -> bool:
        """Blocks served to replica r are limited in bytes (a burst, then a rate), so a
        replayed or hostile request cannot buy a stream of answers; see _served."""
        left, at = self.served.get(r, (SERVE_BURST, self.now))
        left = min(SERVE_BURST, left + max(0, self.now - at) * SERVE_BYTES_PER_S // 1000)
        self.served[r] = (left, self.now)
        if r == self.me or left <= 0:
            self.throttled += 1
            return False
        return True

    def _served(self, r: int, size: int) -> None:
        left, at = self.served[r]
        self.served[r] = (left - size, at)

    # --- checkpoints and garbage collection --------------------------------------------

    def _on_checkpoint(self, msg, b):
        h, r = b["h"], b["r"]
        if h <= self.low:
            return
        key = CheckpointKey(h, b["d"], b["root"])
        # Bounded memory: keep each replica's newest few unstable checkpoint votes (the
        # newest is what a lagging replica catches up to); one that floods evicts its own.
        theirs = sorted(k for k, votes in self.checkpoints.items() if r in votes and k != key)
        if len(theirs) >= MAX_CHECKPOINTS:
            if key < theirs[0]:
                return
            del self.checkpoints[theirs[0]][r]
            if not self.checkpoints[theirs[0]]:
                del self.checkpoints[theirs[0]]
        votes = self.checkpoints.setdefault(key, {})
        votes[r] = msg
        if len(votes) < self.vals.quorum:
            return
        if h > self.app.height:
            self.behind_hint = max(self.behind_hint, h)
            return
        mine = (self.app.block_hash(h), self.app.root_at(h))
        if mine != (b["d"], b["root"]):
            raise Diverged(f"replica {self.me} diverged from a quorum at height {h}: it "
                           f"has block {mine[0].hex()[:16]} / state {mine[1].hex()[:16]}, "
                           f"2f+1 replicas signed {b['d'].hex()[:16]} / "
                           f"{b['root'].hex()[:16]}")
        self._stabilise(h, [votes[r] for r in sorted(votes)[:self.vals.quorum]])

    def _stabilise(self, h: int, proof: list) -> None:
        self.low, self.low_proof = h, proof
        self.out.append(Persist(("checkpoint",), (h, proof)))
        for hh in [x for x in self.slots if x <= h]:
            del self.slots[hh]
        for ck in [ck for ck in self.checkpoints if ck.h <= h]:
            del self.checkpoints[ck]
        for key in [(t, v, hh) for t, v, hh in self.my_votes if hh <= h]:
            del self.my_votes[key]
        for k in [k for k in self.future if k.h <= h]:
            self._drop_future(k)
        # What only guards against repeating ourselves in a view or at a height now
        # behind us: kept, it would grow with every view a peer talks us into.
        # (("equivocation", replica, view, height) or ("conflicting-vote", replica, view,
        # type))
        self.reported = {(kind, r, v, x) for kind, r, v, x in self.reported
                         if (x > h if kind == "equivocation" else v >= self.view)}
        self.vc.newview_sent = {v for v in self.vc.newview_sent if v >= self.view}
        # Blocks the view carried over at or below the checkpoint are executed: dead.
        self.selection = {hh: c for hh, c in self.selection.items() if hh > h}
        self.out.append(Persist(("gc",), h))

    def invariants(self) -> list[str]:
        """What holds between any two steps, whatever peers sent: the simulator and the
        replica tests check it after every event (a broken one names itself at once,
        not at the end of a run)."""
        out = []
        if self.low > self.app.height:
            out.append(f"stable checkpoint {self.low} above the executed height "
                       f"{self.app.height}")
        if self.slots and not self.low < min(self.slots) <= max(self.slots) <= \
                self.low + self.cfg.window:
            out.append(f"slots {min(self.slots)}..{max(self.slots)} outside the window "
                       f"({self.low}, {self.low + self.cfg.window}]")
        if any(h <= self.low for _, _, h in self.my_votes):
            out.append(f"own votes kept at or below the stable checkpoint {self.low}")
        if any(not 0 <= held <= FUTURE_BYTES for held in self.future_bytes.values()):
            out.append("a signer holds more than FUTURE_BYTES of messages for later views")
        if any(k.v <= self.view for k in self.future) and self.status is Status.NORMAL:
            out.append(f"messages held for view {self.view} or earlier while in it")
        if self.status is Status.NORMAL and self.vc.deadline is not None:
            out.append("a view-change deadline armed outside a view change")
        if self.status is Status.VIEW_CHANGE and self.vc.newview is not None:
            out.append("a NEW-VIEW kept for a view not begun")
        # Every other container is bounded: by the window (pruned at stable checkpoints),
        # by the validators, or by MAX_CHECKPOINTS per validator.
        n, top = self.vals.n, self.low + self.cfg.window
        if any(h > top for _, _, h in self.my_votes):
            out.append(f"own votes kept above the window's top {top}")
        if any(s.prepared is not None and s.prepared.view > self.view
               for s in self.slots.values()):
            out.append(f"a prepared certificate of a view after {self.view}")
        if self.status is Status.VIEW_CHANGE and self.selection:
            out.append("blocks selected for a view not begun")
        if any(h <= self.low for h in self.selection) or len(self.selection) > self.cfg.window:
            out.append("blocks selected at or below the stable checkpoint, or more than "
                       "the window holds")
        if any(k.h <= self.low or not votes for k, votes in self.checkpoints.items()):
            out.append(f"checkpoint votes kept at or below the stable checkpoint {self.low}, "
                       "or none kept under a key")
        held = [sum(1 for votes in self.checkpoints.values() if r in votes) for r in range(n)]
        if max(held) > MAX_CHECKPOINTS:
            out.append(f"a replica holds {max(held)} unstable checkpoint votes")
        if any(not 0 <= r < n or m["body"]["r"] != r or m["body"]["t"] != M.VIEWCHANGE
               for r, m in self.vc.requests.items()):
            out.append("a view-change request kept under another replica's name")
        if any(v > self.view for v in self.vc.newview_sent):
            out.append(f"a NEW-VIEW sent for a view after {self.view}")
        if any(kind == "equivocation" and h <= self.low for kind, _, _, h in self.reported):
            out.append("an equivocation reported at or below the stable checkpoint")
        if any(not 0 <= r < n for d in (self.helped, self.served, self.future_bytes)
               for r in d):
            out.append("a budget kept for a replica that is not a validator")
        return out

    def _drop_future(self, key: HeldKey) -> Held:
        held = self.future.pop(key)
        self.future_bytes[key.r] -= held.size
        return held

    # --- view change ------------------------------------------------------------------

    def _start_view_change(self, nv: int, reason: str) -> None:
        if nv <= self.view and self.status is Status.VIEW_CHANGE:
            return
        if self._ask_for_views(nv, reason):
            self._settle_view_change()

    def _ask_for_views(self, nv: int, reason: str) -> bool:
        """Ask for view nv; then, as long as f+1 replicas ask for a later view, for the
        lowest of those. A loop: this replica's own VIEW-CHANGE is taken like a peer's
        (_take_viewchange), not handed back to _on_viewchange, which may call here. False
        if its first VIEW-CHANGE was not taken (only when its checkpoint proof was lost,
        see __init__): then there is nothing new to settle."""
        taken = False
        join: tuple[int, str] | None = (nv, reason)
        while join is not None:
            msg = self._ask_for_view(*join)
            if not self._take_viewchange(msg, msg["body"]):
                break
            taken = True
            join = self._view_to_join()
        return taken

    def _ask_for_view(self, nv: int, reason: str) -> dict:
        """Leave this view for nv: the change starts (its fields reset together) and this
        replica's VIEW-CHANGE leaves; returned, to be taken as its own request."""
        self.out.append(ViewChange(self.view, nv, reason))
        self.view = nv
        self.status = Status.VIEW_CHANGE
        self.view_changes += 1
        self.selection = {}
        self.vc.begin(self.now)
        self.progress_deadline = None
        self.out.append(Persist(("view",), nv))
        msg = self._viewchange_msg()
        self.out.append(Broadcast(msg))
        return msg

    def _viewchange_msg(self) -> dict:
        """This replica's VIEW-CHANGE for the view it is changing to. Signed afresh when
        it asks again: its executed height may have grown meanwhile (its prepared
        certificates cannot, while it changes view), and a replica that sees it behind
        sends it the blocks from there."""
        prepared = [[s.prepared.propose, s.prepared.prepares]
                    for h, s in sorted(self.slots.items())
                    if s.prepared is not None and self._in_window(h)]
        return self._sign({"t": M.VIEWCHANGE, "v": self.view, "h": self.low,
                           "e": self.app.height, "checkpoint": self.low_proof,
                           "prepared": prepared})

    def _valid_viewchange(self, b) -> bool:
        """A VIEW-CHANGE whose proof and certificates hold, and no bigger than an honest
        one can be (one certificate per height in the window, 2f+1 votes in each), so a
        NEW-VIEW built from any 2f+1 of them fits in a message."""
        h, q = b["h"], self.vals.quorum
        if len(b["checkpoint"]) > q:
            return False
        if h:
            ok = [m for m in b["checkpoint"] if m["body"]["t"] == M.CHECKPOINT
                  and m["body"]["h"] == h]
            keys = {(m["body"]["d"], m["body"]["root"]) for m in ok}
            if len(keys) != 1 or len({m["body"]["r"] for m in ok}) < q:
                return False
        last = h
        for prop, prepares in b["prepared"]:
            pb = prop["body"]
            if pb["t"] != M.PROPOSE or pb["r"] != self.vals.primary(pb["v"]) or \
                    not last < pb["h"] <= h + self.cfg.window or len(prepares) > q:
                return False
            last = pb["h"]
            d = M.block_hash(pb["header"])
            if len(M.cert_signers(prepares, M.PREPARE, pb["v"], pb["h"], d)) < q:
                return False
        return True

    def _on_viewchange(self, msg, b):
        nv = b["v"]
        if b["e"] < self.app.height:
            # It asks to leave a view that may have moved on without it: once the others
            # go quiet, nothing else would tell it what they committed.
            self._help_behind(b["r"], b["e"] + 1)
        if nv <= self.view and self.status is Status.NORMAL and self.vc.newview is not None:
            # It missed how this view began — or, asking for an earlier view, that the
            # others have moved on (it would wait for ever for f+1 of them to ask for a
            # view they already left): the NEW-VIEW, then the primary's proposals (out
            # of its budget: a replayed VIEW-CHANGE must not buy megabytes each time).
            if not self._may_serve(b["r"]):
                return
            self.out.append(Send(b["r"], self.vc.newview))
            sent = NEWVIEW_COST
            for h in sorted(self.slots):
                slot = self.slots[h]
                prop = slot.proposals.get(self.view)
                if prop is not None and h > self.low:
                    txs = slot.txs.get(prop.d)
                    self.out.append(Send(b["r"], prop.msg if txs is None
                                         else M.with_txs(prop.msg, txs)))
                    sent += M.txs_bytes(txs or ())
            self._served(b["r"], sent)
            return
        if not self._take_viewchange(msg, b):
            return
        join = self._view_to_join()
        if join is not None:
            self._ask_for_views(*join)
        self._settle_view_change()

    def _take_viewchange(self, msg: dict, b: dict) -> bool:
        """Keep a replica's request for view b["v"] (a peer's, or this replica's own) if
        it is for a view this one may still go to, newer than its signer's last, and valid."""
        nv = b["v"]
        if nv < self.view or nv > self.view + 4 * self.vals.n:
            return False
        prior = self.vc.requests.get(b["r"])
        if prior is not None and prior["body"]["v"] >= nv:
            return False
        if not self._valid_viewchange(b):
            return False
        self.vc.requests[b["r"]] = msg
        if b["h"] > self.app.height:
            self.behind_hint = max(self.behind_hint, b["h"])
        return True

    def _view_to_join(self) -> tuple[int, str] | None:
        """f+1 replicas already ask for a view later than this one (one of them at least
        honest): the lowest of those, and why this replica joins it."""
        later = sorted(m["body"]["v"] for m in self.vc.requests.values()
                       if m["body"]["v"] > self.view)
        if len(later) <= self.vals.f:
            return None
        return later[0], f"{len(later)} replicas (f+1 or more) ask for view {later[0]} or later"

    def _settle_view_change(self) -> None:
        """After taking VIEW-CHANGEs: once 2f+1 replicas ask to leave the view this one
        is changing to, its give-up timer starts; once 2f+1 ask for it and this replica is
        its primary, the view begins."""
        vcs = [m for m in self.vc.requests.values() if m["body"]["v"] == self.view]
        # A replica asking for a later view has given up on this one too.
        leaving = sum(1 for m in self.vc.requests.values() if m["body"]["v"] >= self.view)
        if self.status is Status.VIEW_CHANGE and self.vc.deadline is None and \
                leaving >= self.vals.quorum:
            self.vc.deadline = self.now + self._timeout()
        if (self.status is Status.VIEW_CHANGE and self.vals.primary(self.view) == self.me
                and len(vcs) >= self.vals.quorum and self.view not in self.vc.newview_sent):
            self.vc.newview_sent.add(self.view)
            vcs = sorted(vcs, key=lambda m: m["body"]["r"])[:self.vals.quorum]
            nvmsg = self._sign({"t": M.NEWVIEW, "v": self.view, "vcs": vcs})
            self.out.append(Broadcast(nvmsg))
            self._enter_view(self.view, vcs, nvmsg)

    def _select(self, vcs: list):
        """The new view's starting point: (base height, its proof, {h: block carried})."""
        base = max(vcs, key=lambda m: m["body"]["h"])["body"]
        best: dict[int, Candidate] = {}
        for m in vcs:
            for prop, _ in m["body"]["prepared"]:
                pb = prop["body"]
                d = M.block_hash(pb["header"])
                cand = Candidate(pb["v"], d, prop)
                if pb["h"] > base["h"] and (pb["h"] not in best
                                            or cand.rank > best[pb["h"]].rank):
                    best[pb["h"]] = cand
        # The proof's own CHECKPOINTs (a VIEWCHANGE may carry other signed messages too;
        # _valid_viewchange found 2f+1 of these, all for one block).
        proof = [m for m in base["checkpoint"] if m["body"]["t"] == M.CHECKPOINT
                 and m["body"]["h"] == base["h"]]
        prev = proof[0]["body"]["d"] if base["h"] else M.GENESIS_HASH
        carried: dict[int, Carried] = {}
        h = base["h"] + 1
        while h in best and best[h].propose["body"]["header"]["prev"] == prev:
            carried[h] = Carried(best[h].d, best[h].propose["body"]["header"], best[h].propose)
            prev = best[h].d
            h += 1
        return base["h"], proof, carried

    def _on_newview(self, msg, b):
        nv = b["v"]
        if nv < self.view or (nv == self.view and self.status is Status.NORMAL) or \
                b["r"] != self.vals.primary(nv) or nv > self.view + 4 * self.vals.n:
            return
        vcs = b["vcs"]
        signers = {m["body"]["r"] for m in vcs if m["body"]["t"] == M.VIEWCHANGE
                   and m["body"]["v"] == nv}
        if len(signers) < self.vals.quorum or len(vcs) != len(signers) or \
                not all(self._valid_viewchange(m["body"]) for m in vcs):
            return
        if nv > self.view:
            self.view = nv
            self.out.append(Persist(("view",), nv))
        self._enter_view(nv, vcs, msg)

    def _enter_view(self, nv: int, vcs: list, newview: dict) -> None:
        base, proof, carried = self._select(vcs)
        self.status = Status.NORMAL
        self.vc.end(newview)
        self.progress_deadline = None
        # (A NEW-VIEW may start below this replica's stable checkpoint: what it carries
        # up to there is executed here, and never read again.)
        self.selection = {h: c for h, c in carried.items() if h > self.low}
        self.out.append(ViewEntered(nv, self.vals.primary(nv), len(carried)))
        if base > self.low and base <= self.app.height:
            self._stabilise(base, proof)
        elif base > self.app.height:
            self.behind_hint = max(self.behind_hint, base)
        for h in [h for h in self.slots if h > self.app.height]:
            # Earlier views' votes and proposals are spent; keep the transactions of the
            # blocks this view carries over or this replica prepared.
            slot = self.slots[h]
            slot.prepares = {(v, d): votes for (v, d), votes in slot.prepares.items()
                             if v >= nv}
            slot.proposals = {v: p for v, p in slot.proposals.items() if v >= nv}
            slot.refused = {v: why for v, why in slot.refused.items() if v >= nv}
            keep = {self._selected(h), slot.prepared.d if slot.prepared else None}
            keep |= {p.d for p in slot.proposals.values()}
            keep |= {d for (_, d), votes in slot.commits.items()
                     if len(votes) >= self.vals.quorum}
            slot.txs = {d: t for d, t in slot.txs.items() if d in keep}
            slot.asked, slot.asks = None, 0
        end = max([base, self.app.height, *carried])
        self.next_h = end + 1
        self.last_block_at = self.now
        for k in [k for k in self.future if k.v <= nv]:
            m, _, at = self._drop_future(k)
            if k.v == nv:
                self._handle(m, m["body"], at)

    # --- catch-up ---------------------------------------------------------------------

    def _fetch(self, from_h: int | None = None) -> None:
        peer = self.fetch_peer
        if peer == self.me:
            peer = (peer + 1) % self.vals.n
        self.fetch_peer = (peer + 1) % self.vals.n
        self.fetch_deadline = self.now + self.cfg.fetch_timeout_ms
        msg = self._sign({"t": M.FETCH, "from_h": from_h or self.app.height + 1,
                          "count": FETCH_BLOCKS})
        self.out.append(Send(peer, msg))

    def _help_behind(self, r: int, h: int) -> None:
        """r is still working on a height this replica has executed: send it the blocks
        and their certificates, or it may never learn that a quorum committed them — e.g.
        when the others executed them and went quiet. At most once per fetch timeout per
        replica: a byzantine one replaying old messages must not buy a stream of blocks."""
        sent = self.helped.get(r)
        if r == self.me or (sent is not None and self.now < sent + self.cfg.fetch_timeout_ms):
            return
        self.helped[r] = self.now
        self._on_fetch(None, {"r": r, "from_h": h, "count": 16})

    def _on_fetch(self, msg, b):
        if not self._may_serve(b["r"]):
            return                                # it asks another replica after a while
        entries, size = [], 0
        for h in range(b["from_h"], min(b["from_h"] + b["count"], self.app.height + 1)):
            got = self.app.get_block(h)
            if got is None:
                break
            size += len(M.encode(list(got)))
            if entries and size > M.MAX_MSG_BYTES - 1024:
                break                             # what fits in one message; it asks again
            entries.append(list(got))
        self._served(b["r"], size)
        # Always answer: an empty list tells the asker this replica has nothing newer.
        self.out.append(Send(b["r"], self._sign({"t": M.BLOCKS, "blocks": entries})))

    def _on_blocks(self, msg, b):
        """Blocks a peer sent with their certificates. They wait in `fetched` and run on
        the next tick: the FETCH for the blocks after them leaves first, so the peer
        serves it while this replica executes (catch-up runs at execution speed, not
        one round trip per batch)."""
        if not b["blocks"]:
            self.behind_hint = min(self.behind_hint, self.app.height)
            return
        top, prev = self._fetched_top()
        got = 0
        for block, cert in b["blocks"]:
            h = block["header"]["height"]
            if h <= top:
                continue                          # already have it
            d = M.block_hash(block["header"])
            if h != top + 1 or block["header"]["prev"] != prev or \
                    not M.commit_certified(cert, h, d, self.vals.quorum):
                break                             # a gap or a bad certificate: stop here
            self.fetched.append(Fetched(h, d, block, cert))
            top, prev = h, d
            got += 1
        if got:
            # An answer may not be the end (it stops at one message's size): ask for what
            # follows; an empty answer says there is nothing more.
            self.behind_hint = max(self.behind_hint, top + 1)
            if len(self.fetched) <= FETCH_BLOCKS:      # bounded: one batch ahead at most
                self._fetch(top + 1)
            else:
                self.fetch_deadline = self.now
        else:
            self.fetch_deadline = self.now        # ask again (another peer) if behind

    def _fetched_top(self) -> tuple[int, bytes | None]:
        """Height and hash of the last block executed or waiting in `fetched`."""
        if self.fetched:
            return self.fetched[-1].h, self.fetched[-1].d
        h = self.app.height
        return h, self.app.block_hash(h) if h else M.GENESIS_HASH

    def _execute_fetched(self) -> None:
        while self.fetched:
            h, d, block, cert = self.fetched.pop(0)
            if h == self.app.height + 1 and block["header"]["prev"] == (
                    self.app.block_hash(h - 1) if h > 1 else M.GENESIS_HASH):
                self._execute(h, block, cert)
            elif h > self.app.height:
                self.fetched.clear()               # no longer follows what was executed
