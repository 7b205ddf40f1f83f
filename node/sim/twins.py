"""Twins: consensus scenarios built on purpose, not stumbled on by random faults.

After Diem's "Twins: BFT Systems Made Robust": a byzantine validator is modelled as two
honest instances that share one key, each running the real node code; since they see
different messages, they sign different things — equivocation in every message type
(proposals, votes, checkpoints, view changes, NEW-VIEWs) without a line of attack code.
A scenario then says, view by view, who leads and which messages get through; an
enumerated space of such scenarios is searched, and every scenario is replayable from
its number.

The space, for n validators of which `doubled` have a twin (instances 0..n-1 are the
validators, n+k is the twin of validator k), over `rounds` views: in each view v

- a leader (any validator: a leader schedule overrides round-robin for these views);
- an instance cut off from the whole view, or none;
- who receives the view's PREPAREs: everyone, nobody, or a single instance;
- who receives its COMMITs: everyone, nobody, or a single instance.

Those are the schedules PBFT bugs need and random faults rarely build: a block
prepared by one replica only, which a later view must not lose; a block committed where
almost nobody saw it; a replica that sat out a view. And, for the whole scenario, how
the first twin lies, if it does (node/harness/byzantine.py: forged NEW-VIEWs, conflicting votes,
made-up blocks for a replica catching up ...): two honest instances equivocate only as
far as what they see differs; a liar does it on purpose. Scenario k is the mixed-radix
number of the choices; a seed draws one, every choice "everyone"/"none" half the time
(most views run clean, so the few cuts that matter line up often).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from lendnet.consensus import messages as M
from lendnet.consensus.effects import Committed, ViewChange, ViewEntered
from lendnet.node.harness.byzantine import MODES, Byzantine

from .simulation import PARAMS, Simulation

TWINS_PARAMS = dict(PARAMS, view_timeout_ms=300, empty_block_ms=100, batch_delay_ms=2,
                    fetch_timeout_ms=100)
LIVENESS_MS = 30_000              # after the rounds: every honest instance must commit
ROUND_MS = 3_000                  # a scenario lasts at most this much per round
EVERYONE, NOBODY = -1, -2         # who receives a phase's messages, besides one instance


@dataclass(frozen=True)
class Round:
    leader: int
    isolated: int | None          # an instance that gets nothing of this view
    prepares: int                 # EVERYONE, NOBODY or the one instance that gets them
    commits: int

    def describe(self, names) -> str:
        def who(x):
            return {EVERYONE: "everyone", NOBODY: "nobody"}.get(x) or f"only {names[x]}"
        out = f"leader {self.leader}"
        if self.isolated is not None:
            out += f", {names[self.isolated]} cut off"
        if self.prepares != EVERYONE:
            out += f", PREPAREs reach {who(self.prepares)}"
        if self.commits != EVERYONE:
            out += f", COMMITs reach {who(self.commits)}"
        return out

    def reaches(self, t: str, dst: int) -> bool:
        if dst == self.isolated:
            return False
        cut = self.prepares if t == M.PREPARE else self.commits if t == M.COMMIT else EVERYONE
        return cut == EVERYONE or cut == dst


class Space:
    """The scenarios for n validators, `doubled` of them twinned, over `rounds` views."""

    def __init__(self, n: int, doubled: int, rounds: int):
        self.n, self.doubled, self.rounds = n, doubled, rounds
        self.instances = k = n + doubled
        self.radix = (n, k + 1, k + 2, k + 2)          # leader, isolated, prepares, commits
        self.per_round = n * (k + 1) * (k + 2) ** 2
        self.lies = (None, *MODES) if doubled else (None,)     # how the first twin lies
        self.size = self.per_round ** rounds * len(self.lies)
        self.names = [str(i) for i in range(n)] + [f"{j}'" for j in range(doubled)]

    def _round(self, digits) -> Round:
        leader, iso, prep, com = digits
        cut = (EVERYONE, NOBODY)
        return Round(leader, None if iso == 0 else iso - 1,
                     cut[prep] if prep < 2 else prep - 2, cut[com] if com < 2 else com - 2)

    def _digits(self, r: Round) -> tuple:
        def code(x):
            return 0 if x == EVERYONE else 1 if x == NOBODY else x + 2
        return (r.leader, 0 if r.isolated is None else r.isolated + 1,
                code(r.prepares), code(r.commits))

    def scenario(self, index: int) -> tuple[tuple[Round, ...], str | None]:
        """(the rounds, how the first twin lies) of scenario `index`."""
        if not 0 <= index < self.size:
            raise ValueError(f"scenario {index} is outside this space (0 to {self.size - 1})")
        # The lie is the top digit, so that a mode added to the end of MODES leaves every
        # scenario number printed before it naming the same scenario.
        lie, index = divmod(index, self.per_round ** self.rounds)
        rounds = []
        for _ in range(self.rounds):
            digits = []
            for base in self.radix:
                index, d = divmod(index, base)
                digits.append(d)
            rounds.append(self._round(digits))
        return tuple(rounds), self.lies[lie]

    def index(self, rounds: tuple[Round, ...], lie: str | None = None) -> int:
        out = 0
        for r in reversed(rounds):
            for base, d in reversed(list(zip(self.radix, self._digits(r)))):
                out = out * base + d
        return self.lies.index(lie) * self.per_round ** self.rounds + out

    def draw(self, seed: int) -> int:
        """The scenario seed `seed` stands for: every digit uniform, except that each cut
        is "none" (nobody isolated, a phase reaching everyone) half the time, a doubled
        validator leads half the views, and the twin lies in half the scenarios."""
        rng = random.Random(f"twins:{self.n}:{self.doubled}:{self.rounds}:{seed}")
        rounds = []
        for _ in range(self.rounds):
            # A doubled validator leads half the views: a byzantine leader is where most
            # of the danger is.
            digits = [rng.randrange(self.doubled) if self.doubled and rng.randrange(2)
                      else rng.randrange(self.radix[0])]
            for base in self.radix[1:]:
                digits.append(0 if rng.randrange(2) else rng.randrange(1, base))
            rounds.append(self._round(digits))
        lie = None if rng.randrange(2) else self.lies[rng.randrange(len(self.lies))]
        return self.index(tuple(rounds), lie)

    def describe(self, scenario: tuple) -> list[str]:
        rounds, lie = scenario
        out = [f"view {v}: {r.describe(self.names)}" for v, r in enumerate(rounds)]
        if lie:
            out.append(f"{self.names[self.n]} lies throughout: {lie}")
        return out


class TwinsRun(Simulation):
    """One scenario: the real nodes (twins included) on the simulator's network, no
    nemesis and no clients — the scenario is the fault — with empty blocks to decide."""

    def __init__(self, space: Space, index: int, trace: bool = False,
                 quorum_override: int | None = None):
        self.space = space
        self.scenario_index = index
        self.rounds, lie = self.scenario = space.scenario(index)
        super().__init__(index % 2**32, validators=space.n, faults="none", txs=0,
                         liveness_ms=LIVENESS_MS, twins=tuple(range(space.doubled)),
                         leaders=tuple(r.leader for r in self.rounds), trace=trace,
                         params=TWINS_PARAMS, quorum_override=quorum_override)
        if lie:
            self.liars[space.n] = Byzantine(lie, self.genesis.chain_id, self.keys[0],
                                            self.rng, self.votes.record, 0)
        self.up_at = [self.now] * len(self.nodes)         # all start together
        self.hiccup_at = [1 << 62] * len(self.nodes)      # and never stall
        self.new_blocks: dict[tuple, set] = {}            # (view, validator) -> hashes let through
        self.late_commit: set[int] = set()                # instances that committed after it
        self.over_at = self.now + ROUND_MS * len(self.rounds)
        self.over = False

    def replay_spec(self) -> str:
        s = self.space
        return f"twins:{s.n}:{s.doubled}:{s.rounds}:{self.scenario_index}"

    def _deliverable(self, src: int, dst: int, msg: dict) -> bool:
        if self.over or self.now >= self.over_at:
            self.over = True
            return True
        b = msg["body"]
        v = b.get("v")
        if v is None or v >= len(self.rounds):
            return True
        r = self.rounds[v]
        if b["t"] == M.PROPOSE and b["header"]["proposer"] == b["r"]:
            # A new block: each instance of the view's leader gets one through.
            d = M.block_hash(b["header"])
            seen = self.new_blocks.setdefault((v, b["r"]), set())
            if d not in seen:
                if "txs" not in msg or self.index[src] != b["r"] or \
                        len(seen) >= len(self.instances_of(b["r"])):
                    return False
                seen.add(d)
        return r.reaches(b["t"], dst)

    def _stall(self, i: int) -> None:
        return

    def _start(self) -> None:
        for i in range(len(self.nodes)):
            self._at(self.now + 1, ("boot", i))

    def _dispatch(self, i: int, effects: list) -> None:
        honest = self.index[i] not in self.faulty
        for e in effects:
            t = type(e)
            if t is Committed and self.over:
                self.late_commit.add(i)
            elif honest and (t is ViewChange and e.new >= len(self.rounds)
                             or t is ViewEntered and e.view >= len(self.rounds)):
                self.over = True
        super()._dispatch(i, effects)

    def _settled(self) -> bool:
        return all(i in self.late_commit for i in self._honest())

    def liveness_message(self) -> str:
        stuck = sorted(self.space.names[i] for i in self._honest() if i not in self.late_commit)
        return f"instances {', '.join(stuck)} committed nothing after the scenario's " \
               f"{len(self.rounds)} views ({LIVENESS_MS // 1000} s with every message " \
               f"delivered)"


def run_scenario(space: Space, index: int, trace: bool = False,
                 quorum_override: int | None = None):
    """Run scenario `index` of `space` (with a test-only quorum, to convict a mutant)."""
    run = TwinsRun(space, index, trace, quorum_override)
    return run, run.run()


def kind_of(result) -> str:
    """What a failed run broke, as a word: agreement, integrity, evidence, time ..."""
    first = (result.safety_violations + result.time_violations)
    return first[0].split(":")[0] if first else "liveness" if result.liveness_failure else ""


def shrink(space: Space, index: int) -> int:
    """A simpler scenario that fails the same way: each cut and the lie undone where the
    failure survives without it (a few runs per round). The history of the result is
    the shortest this search finds."""
    _, first = run_scenario(space, index)
    want = kind_of(first)
    if not want:
        return index
    rounds, lie = space.scenario(index)
    rounds = list(rounds)

    def fails(rs, lie_) -> bool:
        return kind_of(run_scenario(space, space.index(tuple(rs), lie_))[1]) == want

    for v in reversed(range(len(rounds))):
        for change in ({"isolated": None, "prepares": EVERYONE, "commits": EVERYONE},
                       {"isolated": None}, {"prepares": EVERYONE}, {"commits": EVERYONE}):
            simpler = dict(rounds[v].__dict__, **change)
            if simpler != rounds[v].__dict__:
                tried = rounds[:v] + [Round(**simpler)] + rounds[v + 1:]
                if fails(tried, lie):
                    rounds = tried
    if lie is not None and fails(rounds, None):
        lie = None
    return space.index(tuple(rounds), lie)
