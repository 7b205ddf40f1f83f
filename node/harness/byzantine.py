"""What a byzantine validator sends instead of the honest message: one definition for
the simulator's nemesis and for a real node started with the test-only `--byzantine`.

The node itself runs the honest code; each mode takes an honest outgoing message and
its destinations and returns (destination, message) pairs, signing what it makes up with
the validator's own key (it cannot sign for anyone else):

- `equivocate`: as primary, a second block (another header, same transactions) to half
  of the replicas.
- `conflict`: a PREPARE, COMMIT or CHECKPOINT for another value to half of them.
- `viewchange-lie`: a VIEW-CHANGE that hides what it prepared to half of them, and to
  the others one claiming a stable checkpoint far above its proof; as a new primary, a
  NEW-VIEW built from f+1 VIEW-CHANGEs (those that carry least) to half, and to the
  others one with that forged VIEW-CHANGE of its own; and instead of proposing again a
  block the new view carries over, a new one at that height, which it then votes for in
  place of the one it carried.
- `bad-header`: as primary, its blocks claim a state root that is not the chain's to
  half of the replicas, and a time before their parent's to the others.
- `withhold`: each message reaches only some of its destinations.
- `forge-blocks`: blocks it serves to a replica catching up are made up, with only its
  own COMMIT as their certificate.
- `far`: also votes for heights far beyond any window.
- `silent` (nothing), `garbage` (a broken signature), `replay` (old messages too).
"""
from __future__ import annotations

import hashlib

from lendnet.consensus import messages as M

MODES = ("equivocate", "silent", "garbage", "conflict", "replay", "viewchange-lie",
         "withhold", "forge-blocks", "far", "bad-header")
FAR = 1_000_000                  # how far beyond its height `far` votes
INFLATE = 1_000                  # how far above its proof a forged checkpoint claim is


class Byzantine:
    def __init__(self, mode: str, chain_id: str, keypair, rng, on_signed=None,
                 index: int | None = None):
        if mode not in MODES:
            raise ValueError(f"byzantine mode must be one of {', '.join(MODES)}")
        self.mode = mode
        self.index = index                  # its validator index: it lies in its own name
        self.chain_id = chain_id
        self.kp = keypair
        self.rng = rng                      # seeded by the caller: replayable choices
        self.on_signed = on_signed          # sees every extra message it signs
        self.history: list[dict] = []
        self.swapped: dict[bytes, bytes] = {}    # carried block -> the one it put instead
        self.times: dict[int, int] = {}          # height -> a proposal's time it saw there

    def _sign(self, body: dict) -> dict:
        signed = M.sign(self.chain_id, self.kp, body)
        if self.on_signed:
            self.on_signed(signed)
        return signed

    def outgoing(self, msg: dict, dsts: list) -> list[tuple]:
        mode = self.mode
        if mode == "silent":
            return []
        if mode == "garbage":
            sig = msg["sig"]
            return [(d, dict(msg, sig=bytes([sig[0] ^ 1]) + sig[1:])) for d in dsts]
        if mode == "withhold":
            return [(d, msg) for d in dsts if self.rng.randrange(2)]
        if mode == "replay":
            self.history.append(msg)
            del self.history[:-200]
            old = self.history[self.rng.randrange(len(self.history))]
            return [(d, msg) for d in dsts] + [(d, old) for d in dsts]
        body = msg["body"]
        if body["t"] == M.PROPOSE:
            self.times[body["h"]] = body["header"]["time"]
            self.times.pop(body["h"] - 64, None)
        if body["r"] != self.index:
            return [(d, msg) for d in dsts]             # another's, passed on (a relay)
        if mode == "far" and body["t"] in (M.PREPARE, M.COMMIT):
            far = self._sign(dict(body, h=body["h"] + FAR))
            return [(d, msg) for d in dsts] + [(d, far) for d in dsts]
        if mode == "forge-blocks" and body["t"] == M.BLOCKS and body["blocks"]:
            return [(d, self._forged_blocks(body)) for d in dsts]
        other = self._other(msg, body)
        if other is None:
            return [(d, msg) for d in dsts]
        half = set(dsts[: len(dsts) // 2])
        if type(other) is tuple:                       # one lie for each half
            return [(d, other[0] if d in half else other[1]) for d in dsts]
        return [(d, other if d in half else msg) for d in dsts]

    def _other(self, msg: dict, body: dict):
        """The second version this mode sends to half of the destinations, if any."""
        t, mode = body["t"], self.mode
        if mode == "equivocate" and t == M.PROPOSE and "txs" in msg:
            # Its own proposal: the same transactions under another header.
            other = self._sign(dict(body, header=dict(body["header"],
                                                      time=body["header"]["time"] + 1)))
            return M.with_txs(other, msg["txs"])
        if mode == "conflict" and t in (M.PREPARE, M.COMMIT):
            return self._sign(dict(body, d=hashlib.sha256(body["d"]).digest()))
        if mode == "conflict" and t == M.CHECKPOINT:
            return self._sign(dict(body, root=hashlib.sha256(body["root"]).digest()))
        if mode == "bad-header" and t == M.PROPOSE and "txs" in msg and \
                body["header"]["proposer"] == body["r"]:
            header = body["header"]
            wrong = dict(header, exec_root=hashlib.sha256(header["exec_root"]).digest())
            early = dict(header, time=min(header["time"],
                                          self.times.get(body["h"] - 1, header["time"])) - 1)
            return tuple(M.with_txs(self._sign(dict(body, header=h)), msg["txs"])
                         for h in (wrong, early))
        if mode == "viewchange-lie" and t == M.VIEWCHANGE:
            inflated = self._sign(dict(body, h=body["h"] + INFLATE))
            return (self._sign(dict(body, prepared=[])) if body["prepared"] else msg), inflated
        if mode == "viewchange-lie" and t == M.NEWVIEW:
            vcs = body["vcs"]
            mine = [m for m in vcs if m["body"]["r"] == body["r"]]
            others = sorted((m for m in vcs if m["body"]["r"] != body["r"]),
                            key=lambda m: len(m["body"]["prepared"]))
            short = self._sign(dict(body, vcs=[self._sign(dict(m["body"], prepared=[]))
                                               for m in mine]
                                    + others[:(len(vcs) - 1) // 2]))
            forged = self._sign(dict(body, vcs=[
                self._sign(dict(m["body"], h=m["body"]["h"] + INFLATE)) if m in mine else m
                for m in vcs]))
            return short, forged
        if mode == "viewchange-lie" and t == M.PROPOSE and "txs" in msg and \
                body["header"]["proposer"] != body["r"]:
            # A block the new view carries over: a new, empty one at its height instead.
            header = dict(body["header"], proposer=body["r"], txs_root=M.txs_root([]))
            fresh = M.with_txs(self._sign(dict(body, header=header)), [])
            self.swapped[M.block_hash(body["header"])] = M.block_hash(header)
            return fresh, fresh
        if mode == "viewchange-lie" and t in (M.PREPARE, M.COMMIT) and \
                body["d"] in self.swapped:
            vote = self._sign(dict(body, d=self.swapped[body["d"]]))
            return vote, vote
        return None

    def _forged_blocks(self, body: dict) -> dict:
        """A BLOCKS answer whose first block is made up: another time, the same
        transactions, and a certificate of this validator's COMMIT alone."""
        block, cert = body["blocks"][0]
        header = dict(block["header"], time=block["header"]["time"] + 1)
        commit = self._sign({"t": M.COMMIT, "v": cert[0]["body"]["v"] if cert else 0,
                             "h": header["height"], "d": M.block_hash(header), "r": body["r"]})
        return self._sign(dict(body, blocks=[[{"header": header, "txs": block["txs"]},
                                              [commit]]]))
