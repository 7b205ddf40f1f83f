"""What a byzantine validator sends instead of the honest message: one definition for
the simulator's nemesis and for a real node started with the test-only `--byzantine`.

Each mode takes the honest message and its destinations and returns (destination, wire
bytes) pairs: `equivocate` (as primary, a second block to half the replicas), `conflict`
(votes for another block to half), `garbage` (a broken signature), `silent` (nothing),
`replay` (also an old message of its own).
"""
from __future__ import annotations

import hashlib

from consensus import messages as M

MODES = ("equivocate", "silent", "garbage", "conflict", "replay")


class Byzantine:
    def __init__(self, mode: str, chain_id: str, keypair, rng, on_signed=None):
        if mode not in MODES:
            raise ValueError(f"byzantine mode must be one of {', '.join(MODES)}")
        self.mode = mode
        self.chain_id = chain_id
        self.kp = keypair
        self.rng = rng                      # seeded by the caller: replayable choices
        self.on_signed = on_signed          # sees every extra message it signs
        self.history: list[bytes] = []

    def outgoing(self, msg: dict, dsts: list, raw: bytes) -> list[tuple]:
        mode = self.mode
        if mode == "silent":
            return []
        if mode == "garbage":
            sig = msg["sig"]
            return [(d, M.encode(dict(msg, sig=bytes([sig[0] ^ 1]) + sig[1:]))) for d in dsts]
        body = msg["body"]
        half = set(dsts[: len(dsts) // 2])
        other = None
        if mode == "equivocate" and body["t"] == M.PROPOSE and "txs" in msg:
            # Its own proposal (a relayed one travels without transactions): the same
            # transactions under another header.
            other = dict(body, header=dict(body["header"], time=body["header"]["time"] + 1))
        elif mode == "conflict" and body["t"] in (M.PREPARE, M.COMMIT):
            other = dict(body, d=hashlib.sha256(body["d"]).digest())
        if other is not None:
            signed = M.sign(self.chain_id, self.kp, other)
            if self.on_signed:
                self.on_signed(signed)
            if "txs" in msg:
                signed = M.with_txs(signed, msg["txs"])
            return [(d, M.encode(signed) if d in half else raw) for d in dsts]
        if mode == "replay":
            self.history.append(raw)
            del self.history[:-200]
            old = self.history[self.rng.randrange(len(self.history))]
            return [(d, raw) for d in dsts] + [(d, old) for d in dsts]
        return [(d, raw) for d in dsts]
