"""A sans-IO PBFT replica: events in (`deliver`, `tick`), effects out.

It never touches a socket, a clock or a random source: the shell passes the time (ms)
with every event and carries out the effects (consensus/effects.py). The application
(the node: mempool and ledger) sits behind a small synchronous interface, as in ABCI:

    app.height                      last executed height
    app.block_hash(h), app.root_at(h), app.header_at(h)   for recent executed heights
    app.get_block(h) -> (block, cert) | None              for catch-up
    app.make_txs(height, max_txs, exclude) -> [raw tx]    the primary's batch
    app.check_txs(raw_txs, in_flight) -> error | None     validity before voting
    app.execute(height, block, cert) -> state_root        apply a committed block
    app.has_pending() -> bool                             client work not yet committed

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
"""
from __future__ import annotations

from dataclasses import dataclass

from . import messages as M
from .effects import Broadcast, Committed, Evidence, Persist, Send, Timer


@dataclass
class Config:
    validators: M.Validators
    genesis_time: int = 0              # chain seconds
    checkpoint_interval: int = 16      # K
    window: int = 64                   # heights accepted above the stable checkpoint
    pipeline: int = 4                  # proposals in flight beyond the executed height
    max_block_txs: int = 500
    batch_delay_ms: int = 20           # wait this long for a fuller batch
    empty_block_ms: int = 0            # idle primary proposes an empty block; 0 = never
    view_timeout_ms: int = 1_000       # no progress on known work this long: view change
    max_future_skew_s: int = 30        # a block may be this far ahead of our chain clock
    time_scale: int = 1                # chain seconds per real second (dev: accelerated)
    fetch_timeout_ms: int = 500

    def chain_time(self, now_ms: int) -> int:
        return self.genesis_time + max(0, now_ms - self.genesis_time * 1000) \
            * self.time_scale // 1000


FETCH_BLOCKS = 64         # blocks asked for at once when catching up
MAX_FUTURE = 4_096       # messages held for views this replica has not entered yet
MAX_CHECKPOINTS = 8      # unstable checkpoint votes held per replica
PREPARED = "prepared"    # persisted as ("vote", PREPARED, view, height): [propose, prepares]


class Slot:
    """What one height has gathered in the views still relevant."""

    __slots__ = ("proposals", "prepares", "commits", "prepared", "votes")

    def __init__(self):
        self.proposals: dict[int, tuple] = {}     # view -> (msg, block, hash)
        self.prepares: dict[tuple, dict] = {}     # (view, hash) -> {replica: msg}
        self.commits: dict[tuple, dict] = {}      # (view, hash) -> {replica: msg}
        self.prepared: tuple | None = None        # (view, hash, propose msg, prepare msgs)
        self.votes: dict[tuple, bytes] = {}       # (type, view, replica) -> hash seen


class Replica:
    def __init__(self, config: Config, index: int, keypair, app, now: int,
                 persisted: dict | None = None):
        self.cfg = config
        self.vals = config.validators
        self.me = index
        self.kp = keypair
        self.app = app
        self.now = now
        persisted = persisted or {}
        self.view = persisted.get(("view",), 0)
        self.normal = True                         # False while changing view
        low, proof = persisted.get(("checkpoint",), (0, []))
        self.low, self.low_proof = min(low, app.height), proof
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
                d = M.block_hash(prop["body"]["block"]["header"])
                self._slot(h).prepared = (v, d, prop, prepares)
        self.checkpoints: dict[tuple, dict] = {}   # (h, hash, root) -> {replica: msg}
        self.viewchanges: dict[int, dict] = {}     # replica -> its latest VIEWCHANGE
        self.newview_sent: set[int] = set()
        self.newview_msg: dict | None = None       # how this view began, for latecomers
        self.selection: dict[int, bytes] = {}      # height -> hash the new view must keep
        self.next_h = app.height + 1               # next height to propose (primary)
        self.progress_deadline: int | None = None
        self.vc_deadline: int | None = None
        self.vc_resent = 0
        self.vc_attempts = 0
        self.batch_since: int | None = None
        self.last_block_at = now
        self.behind_hint = 0
        self.fetch_deadline = 0
        self.fetched: list[tuple] = []            # (h, hash, block, cert) to execute next tick
        self.behind_since: int | None = None
        if persisted:                              # a restart: others may have moved on
            self.behind_hint = app.height + 1
        self.fetch_peer = (index + 1) % self.vals.n
        self.reported: set[tuple] = set()
        self.helped: dict[int, int] = {}          # replica -> when blocks were last sent it
        self.out: list = []
        self.view_changes = 0
        self.future: dict[int, list] = {}
        self.future_count = 0
        if self.view > 0:
            # It may have stopped in the middle of a view change, and it does not keep how
            # the view began (what the NEW-VIEW told it to keep): rather than act in the
            # view unchecked, it asks for it again; a replica already in it answers.
            self._start_view_change(self.view)

    # --- events -----------------------------------------------------------------------

    def deliver(self, msg: dict, now: int) -> list:
        """A message already decoded and signature-checked (messages.decode)."""
        self.now = now
        b = msg["body"]
        if b["t"] in (M.PROPOSE, M.PREPARE, M.COMMIT) and b["v"] > self.view:
            # The network may deliver a new view's messages before its NEW-VIEW: keep a
            # bounded number for the next few views and replay them on entering.
            if b["v"] <= self.view + 2 and self.future_count < MAX_FUTURE:
                self.future.setdefault(b["v"], []).append(msg)
                self.future_count += 1
            return self._finish()
        handler = getattr(self, "_on_" + b["t"])
        handler(msg, b)
        return self._finish()

    def tick(self, now: int) -> list:
        self.now = now
        self._execute_fetched()
        if self.normal:
            work = self.app.has_pending() or any(
                self.slots[h].proposals for h in self.slots if h > self.app.height)
            if not work:
                self.progress_deadline = None
            elif self.progress_deadline is None:
                self.progress_deadline = now + self._timeout()
            elif now >= self.progress_deadline:
                self._start_view_change(self.view + 1)
        elif self.vc_deadline is not None and now >= self.vc_deadline:
            self._start_view_change(self.view + 1)
        elif now >= self.vc_resent + self.cfg.view_timeout_ms:
            # A lost NEW-VIEW would strand this replica: keep asking for the view it wants
            # (a replica already in it answers with the NEW-VIEW and its proposals).
            self.vc_resent = now
            self.out.append(Broadcast(self.viewchanges[self.me]))
        if self.behind_hint > self.app.height:
            if self.behind_since is None:
                self.behind_since = now           # often it is only the pipeline: wait a little
            elif now >= max(self.fetch_deadline, self.behind_since + self.cfg.fetch_timeout_ms):
                self._fetch()
        else:
            self.behind_since = None
        return self._finish()

    # --- helpers ----------------------------------------------------------------------

    def _finish(self) -> list:
        self._progress()
        out, self.out = self.out, []
        out.append(Timer(self._next_deadline()))
        return out

    def _next_deadline(self) -> int:
        times = [t for t in (self.progress_deadline, self.vc_deadline) if t is not None]
        if not self.normal:
            times.append(self.vc_resent + self.cfg.view_timeout_ms)
        if self.is_primary() and self.normal:
            if self.batch_since is not None:
                times.append(self.batch_since + self.cfg.batch_delay_ms)
            if self.cfg.empty_block_ms:
                times.append(self.last_block_at + self.cfg.empty_block_ms)
        if self.fetched:
            times.append(self.now)
        if self.behind_hint > self.app.height:
            times.append(max(self.fetch_deadline, (self.behind_since or self.now)
                             + self.cfg.fetch_timeout_ms))
        return min(times) if times else self.now + self.cfg.view_timeout_ms

    def _timeout(self) -> int:
        return self.cfg.view_timeout_ms << min(self.vc_attempts, 4)

    def is_primary(self) -> bool:
        return self.vals.primary(self.view) == self.me

    def _sign(self, body: dict) -> dict:
        body["r"] = self.me
        return M.sign(self.vals.chain_id, self.kp, body)

    def _vote(self, t: str, v: int, h: int, d: bytes, extra: dict | None = None) -> dict | None:
        """Sign a vote unless it would contradict one this replica already signed."""
        key = (t, v, h)
        prior = self.my_votes.get(key)
        if prior is not None and prior != d:
            return None                         # never two different votes for one slot
        if prior is None:
            self.my_votes[key] = d
            self.out.append(Persist(("vote", t, v, h), d))
        body = {"t": t, "v": v, "h": h, **(extra or {"d": d})}
        msg = self._sign(body)
        self.out.append(Broadcast(msg))
        getattr(self, "_on_" + t)(msg, body)     # my own vote counts like anyone's
        return msg

    def _slot(self, h: int) -> Slot:
        s = self.slots.get(h)
        if s is None:
            s = self.slots[h] = Slot()
        return s

    def _in_window(self, h: int) -> bool:
        return self.low < h <= self.low + self.cfg.window

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

    # --- normal case ------------------------------------------------------------------

    def _on_propose(self, msg, b):
        v, h = b["v"], b["h"]
        block = b["block"]
        if b["r"] != self.vals.primary(v):
            return                                # only the view's primary proposes
        if h <= self.app.height:
            self._help_behind(b["r"], h)
            return
        if v != self.view or not self._in_window(h):
            return
        d = M.block_hash(block["header"])
        if block["header"]["proposer"] != b["r"] and self.selection.get(h) != d:
            return                                # a new block names its proposer; only one
                                                  # the new view carried over names another
        slot = self._slot(h)
        have = slot.proposals.get(v)
        if have is not None:
            if have[2] != d:
                key = ("equivocation", b["r"], v, h)
                if key not in self.reported:
                    self.reported.add(key)
                    self.out.append(Evidence("equivocation", b["r"], (have[0], msg)))
            return
        slot.proposals[v] = (msg, block, d)
        if b["r"] != self.me:
            # Pass the primary's proposal on once: a lost copy is replaced, and a primary
            # that sent different blocks to different replicas is seen doing it.
            self.out.append(Broadcast(msg))

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

    def _acceptable(self, h: int, block: dict) -> bool:
        """May this replica prepare-vote the block at h in the current view?"""
        header = block["header"]
        prev_header = self._header_of(h - 1, header["prev"])
        if prev_header is None:
            return False                          # h-1 not known (yet) in this view
        if header["time"] < prev_header["time"]:
            return False                          # chain time never goes backwards
        limit = self.cfg.chain_time(self.now) + self.cfg.max_future_skew_s
        if header["time"] > limit:
            return False                          # proposer's clock runs too far ahead
        eh = header["exec_height"]
        if eh > self.app.height or eh < h - 2 * self.cfg.window:
            return False                          # cannot check (yet), or stale
        if self.app.root_at(eh) != header["exec_root"]:
            return False                          # wrong state root: never vote for it
        # ... and no transaction may repeat one in a block still in flight below it
        in_flight = []
        for hh in range(self.app.height + 1, h):
            d = self.my_votes.get((M.PREPARE, self.view, hh))
            for _, b, bd in self.slots[hh].proposals.values():
                if bd == d:
                    in_flight.extend(b["txs"])
                    break
        return self.app.check_txs(block["txs"], in_flight) is None

    def _header_of(self, h: int, want: bytes):
        """Header of the block at h with hash `want`, if this replica may build on it."""
        if h == 0:       # genesis: the first block may not be older than the chain
            return {"time": self.cfg.genesis_time} if want == M.GENESIS_HASH else None
        if h <= self.app.height:
            return self.app.header_at(h) if self.app.block_hash(h) == want else None
        slot = self.slots.get(h)
        if slot is None or self.my_votes.get((M.PREPARE, self.view, h)) != want:
            return None
        for _, block, d in slot.proposals.values():
            if d == want:
                return block["header"]
        return None

    def _progress(self) -> None:
        """Advance every height in flight as far as the messages gathered allow."""
        changed = True
        while changed:
            changed = False
            if self.normal:
                for h in sorted(self.slots):
                    if h > self.app.height:
                        changed |= self._advance(h)
            changed |= self._execute_ready()
            if self.normal and self.is_primary():
                changed |= self._maybe_propose()

    def _advance(self, h: int) -> bool:
        v = self.view
        slot = self.slots[h]
        acted = False
        prop = slot.proposals.get(v)
        if prop is not None and h in self.selection and self.selection[h] != prop[2]:
            prop = None                           # the new view must keep what it selected
        if prop is not None and (M.PREPARE, v, h) not in self.my_votes:
            if self._acceptable(h, prop[1]):
                self._vote(M.PREPARE, v, h, prop[2])
                acted = True
        mine = self.my_votes.get((M.PREPARE, v, h))
        if mine is not None and prop is not None and (slot.prepared is None
                                                      or slot.prepared[0] < v):
            votes = slot.prepares.get((v, mine), {})
            if len(votes) >= self.vals.quorum:
                slot.prepared = (v, mine, prop[0], list(votes.values()))
                # Durable before the COMMIT it allows: after a restart a VIEWCHANGE must
                # still carry it, or a block committed elsewhere could be replaced.
                self.out.append(Persist(("vote", PREPARED, v, h),
                                        [prop[0], slot.prepared[3]]))
                acted = True
        if (slot.prepared is not None and slot.prepared[0] == v
                and (M.COMMIT, v, h) not in self.my_votes and self._prev_prepared(h)):
            self._vote(M.COMMIT, v, h, slot.prepared[1])
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
        for (v, d), votes in slot.commits.items():
            if len(votes) >= self.vals.quorum:
                for _, block, bd in slot.proposals.values():
                    if bd == d and block["header"]["prev"] == prev:
                        return block, sorted(votes.values(), key=lambda m: m["body"]["r"])
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
        self.vc_attempts = 0
        self.last_block_at = self.now
        self.next_h = max(self.next_h, h + 1)
        if h % self.cfg.checkpoint_interval == 0:
            d = M.block_hash(block["header"])
            msg = self._sign({"t": M.CHECKPOINT, "h": h, "d": d, "root": root})
            self.out.append(Broadcast(msg))
            self._on_checkpoint(msg, msg["body"])

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
        prev_header = prev_hash and self._header_of(h - 1, prev_hash)
        if prev_header is None:
            return False
        if self.batch_since is not None and self.now < self.batch_since + \
                self.cfg.batch_delay_ms and self.app.pending_count() < self.cfg.max_block_txs:
            return False                          # still gathering this batch
        exclude = set()
        for hh in range(self.app.height + 1, h):
            slot = self.slots.get(hh)
            prop = slot and slot.proposals.get(self.view)
            if prop:
                exclude.update(prop[1]["txs"])
        txs = self.app.make_txs(h, self.cfg.max_block_txs, exclude)
        if not txs:
            self.batch_since = None
            idle = self.cfg.empty_block_ms and self.now >= self.last_block_at + \
                self.cfg.empty_block_ms and h == self.app.height + 1
            if not idle:
                return False
        elif len(txs) < self.cfg.max_block_txs:
            if self.batch_since is None:
                self.batch_since = self.now
            if self.now < self.batch_since + self.cfg.batch_delay_ms:
                return False
        self.batch_since = None
        eh = self.app.height
        header = {"height": h, "prev": prev_hash,
                  "time": max(self.cfg.chain_time(self.now), prev_header["time"]),
                  "proposer": self.me, "txs_root": M.txs_root(txs), "exec_height": eh,
                  "exec_root": self.app.root_at(eh)}
        block = {"header": header, "txs": txs}
        d = M.block_hash(header)
        msg = self._vote(M.PROPOSE, self.view, h, d, {"block": block})
        if msg is None:
            return False
        self.last_block_at = self.now
        self.next_h = h + 1
        self._slot(h).proposals[self.view] = (msg, block, d)
        return True

    # --- checkpoints and garbage collection --------------------------------------------

    def _on_checkpoint(self, msg, b):
        h, r = b["h"], b["r"]
        if h <= self.low:
            return
        key = (h, b["d"], b["root"])
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
        assert mine == (b["d"], b["root"]), \
            f"replica {self.me} diverged from a quorum at height {h}"
        self._stabilise(h, list(votes.values()))

    def _stabilise(self, h: int, proof: list) -> None:
        self.low, self.low_proof = h, proof
        self.out.append(Persist(("checkpoint",), (h, proof)))
        for hh in [x for x in self.slots if x <= h]:
            del self.slots[hh]
        for k in [k for k in self.checkpoints if k[0] <= h]:
            del self.checkpoints[k]
        for k in [k for k in self.my_votes if k[2] <= h]:
            del self.my_votes[k]
        self.out.append(Persist(("gc",), h))

    # --- view change ------------------------------------------------------------------

    def _start_view_change(self, nv: int) -> None:
        if nv <= self.view and not self.normal:
            return
        self.view = nv
        self.normal = False
        self.view_changes += 1
        self.selection = {}
        self.vc_attempts += 1
        # As in PBFT, the timer that gives up on this view starts only once 2f+1
        # replicas ask for it too: a replica alone must not run ahead through views.
        self.vc_deadline = None
        self.vc_resent = self.now
        self.progress_deadline = None
        self.out.append(Persist(("view",), nv))
        prepared = [[s.prepared[2], s.prepared[3]] for h, s in sorted(self.slots.items())
                    if s.prepared is not None and h > self.low]
        msg = self._sign({"t": M.VIEWCHANGE, "v": nv, "h": self.low, "e": self.app.height,
                          "checkpoint": self.low_proof, "prepared": prepared})
        self.out.append(Broadcast(msg))
        self._on_viewchange(msg, msg["body"])

    def _valid_viewchange(self, b) -> bool:
        h = b["h"]
        if h:
            ok = [m for m in b["checkpoint"] if m["body"]["t"] == M.CHECKPOINT
                  and m["body"]["h"] == h]
            keys = {(m["body"]["d"], m["body"]["root"]) for m in ok}
            if len(keys) != 1 or len({m["body"]["r"] for m in ok}) < self.vals.quorum:
                return False
        for prop, prepares in b["prepared"]:
            pb = prop["body"]
            if pb["t"] != M.PROPOSE or pb["r"] != self.vals.primary(pb["v"]) or pb["h"] <= h:
                return False
            d = M.block_hash(pb["block"]["header"])
            if len(M.cert_signers(prepares, M.PREPARE, pb["v"], pb["h"], d)) < self.vals.quorum:
                return False
        return True

    def _on_viewchange(self, msg, b):
        nv = b["v"]
        if b["e"] < self.app.height:
            # It asks to leave a view that may have moved on without it: once the others
            # go quiet, nothing else would tell it what they committed.
            self._help_behind(b["r"], b["e"] + 1)
        if nv == self.view and self.normal and self.newview_msg is not None:
            # It missed how this view began: the NEW-VIEW, then the primary's proposals.
            self.out.append(Send(b["r"], self.newview_msg))
            for h in sorted(self.slots):
                prop = self.slots[h].proposals.get(nv)
                if prop is not None and h > self.low:
                    self.out.append(Send(b["r"], prop[0]))
            return
        if nv < self.view or nv > self.view + 4 * self.vals.n:
            return
        prior = self.viewchanges.get(b["r"])
        if prior is not None and prior["body"]["v"] >= nv:
            return
        if not self._valid_viewchange(b):
            return
        self.viewchanges[b["r"]] = msg
        if b["h"] > self.app.height:
            self.behind_hint = max(self.behind_hint, b["h"])
        # f+1 replicas already ask for a later view: join the lowest of them.
        later = sorted(m["body"]["v"] for m in self.viewchanges.values()
                       if m["body"]["v"] > self.view)
        if len(later) > self.vals.f and (self.normal or later[0] > self.view):
            self._start_view_change(later[0])
        vcs = [m for m in self.viewchanges.values() if m["body"]["v"] == self.view]
        # A replica asking for a later view has given up on this one too.
        leaving = sum(1 for m in self.viewchanges.values() if m["body"]["v"] >= self.view)
        if not self.normal and self.vc_deadline is None and leaving >= self.vals.quorum:
            self.vc_deadline = self.now + self._timeout()
        if (not self.normal and self.vals.primary(self.view) == self.me
                and len(vcs) >= self.vals.quorum and self.view not in self.newview_sent):
            self.newview_sent.add(self.view)
            vcs = sorted(vcs, key=lambda m: m["body"]["r"])[:self.vals.quorum]
            nvmsg = self._sign({"t": M.NEWVIEW, "v": self.view, "vcs": vcs})
            self.out.append(Broadcast(nvmsg))
            self._enter_view(self.view, vcs, nvmsg)

    def _select(self, vcs: list):
        """The new view's starting point: (base height, its proof, [(h, propose msg)])."""
        base = max(vcs, key=lambda m: m["body"]["h"])["body"]
        best: dict[int, tuple] = {}
        for m in vcs:
            for prop, _ in m["body"]["prepared"]:
                pb = prop["body"]
                d = M.block_hash(pb["block"]["header"])
                cand = (pb["v"], d, prop)
                if pb["h"] > base["h"] and (pb["h"] not in best
                                            or cand[:2] > best[pb["h"]][:2]):
                    best[pb["h"]] = cand
        # The proof's own CHECKPOINTs (a VIEWCHANGE may carry other signed messages too;
        # _valid_viewchange found 2f+1 of these, all for one block).
        proof = [m for m in base["checkpoint"] if m["body"]["t"] == M.CHECKPOINT
                 and m["body"]["h"] == base["h"]]
        prev = proof[0]["body"]["d"] if base["h"] else M.GENESIS_HASH
        chosen = []
        h = base["h"] + 1
        while h in best and best[h][2]["body"]["block"]["header"]["prev"] == prev:
            chosen.append((h, best[h][2]))
            prev = best[h][1]
            h += 1
        return base["h"], proof, chosen

    def _on_newview(self, msg, b):
        nv = b["v"]
        if nv < self.view or (nv == self.view and self.normal) or \
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
        base, proof, chosen = self._select(vcs)
        self.newview_msg = newview
        self.normal = True
        self.vc_deadline = None
        self.progress_deadline = None
        self.selection = {h: M.block_hash(p["body"]["block"]["header"]) for h, p in chosen}
        if base > self.low and base <= self.app.height:
            self._stabilise(base, proof)
        elif base > self.app.height:
            self.behind_hint = max(self.behind_hint, base)
        for h in [h for h in self.slots if h > self.app.height]:
            slot = self.slots[h]
            slot.prepares = {k: v for k, v in slot.prepares.items() if k[0] >= nv}
        end = max([base, self.app.height] + [h for h, _ in chosen])
        self.next_h = end + 1
        self.last_block_at = self.now
        held = self.future.pop(nv, [])
        for v in [v for v in self.future if v < nv]:
            del self.future[v]
        self.future_count = sum(len(x) for x in self.future.values())
        for m in held:
            getattr(self, "_on_" + m["body"]["t"])(m, m["body"])
        if self.vals.primary(nv) == self.me:
            for h, prop in chosen:
                if h > self.app.height:
                    block = prop["body"]["block"]
                    d = self.selection[h]
                    m = self._vote(M.PROPOSE, nv, h, d, {"block": block})
                    if m is not None:
                        self._slot(h).proposals[nv] = (m, block, d)

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
        entries, size = [], 0
        for h in range(b["from_h"], min(b["from_h"] + b["count"], self.app.height + 1)):
            got = self.app.get_block(h)
            if got is None:
                break
            size += len(M.encode(list(got)))
            if entries and size > M.MAX_MSG_BYTES - 1024:
                break                             # what fits in one message; it asks again
            entries.append(list(got))
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
            views = {m["body"]["v"] for m in cert if m["body"]["t"] == M.COMMIT}
            if h != top + 1 or block["header"]["prev"] != prev or not any(
                    len(M.cert_signers(cert, M.COMMIT, v, h, d)) >= self.vals.quorum
                    for v in views):
                break                             # a gap or a bad certificate: stop here
            self.fetched.append((h, d, block, cert))
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

    def _fetched_top(self) -> tuple[int, bytes]:
        """Height and hash of the last block executed or waiting in `fetched`."""
        if self.fetched:
            return self.fetched[-1][0], self.fetched[-1][1]
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
