"""Faults in a real node's own links (the transport's `LinkHook`), for `lendnet chaos`."""
from __future__ import annotations

import random


class LinkFaults:
    """Test-only faults injected in this node's own links, set through the admin endpoint
    (`lendnet chaos`): peers it does not send to, keys whose frames it ignores (together
    a partition, either way or one way), and loss, duplication and delay of what it
    sends. The kernel here has no netem, so the transport does it."""

    def __init__(self):
        self.set({})

    def set(self, spec: dict) -> None:
        self.block_peers = set(spec.get("block_peers", ()))
        self.block_keys = {bytes.fromhex(k) for k in spec.get("block_keys", ())}
        self.drop_pct = int(spec.get("drop_pct", 0))
        self.dup_pct = int(spec.get("dup_pct", 0))
        self.delay_ms = int(spec.get("delay_ms", 0))
        self.jitter_ms = int(spec.get("jitter_ms", 0))
        self.rng = random.Random(int(spec.get("seed", 0)))    # the shell's, seeded by chaos
        self.active = bool(self.block_peers or self.block_keys or self.drop_pct
                           or self.dup_pct or self.delay_ms or self.jitter_ms)

    def copies(self, peer: str) -> list[int]:
        if not self.active:
            return [0]
        if peer in self.block_peers or self.rng.randrange(100) < self.drop_pct:
            return []
        copies = 2 if self.rng.randrange(100) < self.dup_pct else 1
        delay = self.delay_ms + (self.rng.randrange(self.jitter_ms + 1) if self.jitter_ms else 0)
        return [delay] * copies

    def ignores(self, pubkey: bytes) -> bool:
        return pubkey in self.block_keys

    def to_json(self) -> dict:
        return {"block_peers": sorted(self.block_peers),
                "block_keys": sorted(k.hex() for k in self.block_keys),
                "drop_pct": self.drop_pct, "dup_pct": self.dup_pct,
                "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms}
