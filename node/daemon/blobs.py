"""Off-chain blobs a node keeps for its users (sealed loan documents): files named by
their sha256 under HOME/blobs, so only the hash needs to go on the ledger. Bounded in
size and count; written atomically; never executed or interpreted."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOB_MAX = 1 << 20
MAX_BLOBS = 10_000


class BlobError(RuntimeError):
    pass


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(mode=0o700, exist_ok=True)

    def put(self, data: bytes) -> str:
        if not 0 < len(data) <= BLOB_MAX:
            raise BlobError(f"a blob is 1 to {BLOB_MAX} bytes")
        h = hashlib.sha256(data).hexdigest()
        path = self.root / h
        if path.exists():
            return h                                  # same bytes, same name
        if sum(1 for _ in self.root.iterdir()) >= MAX_BLOBS:
            raise BlobError(f"this node already holds {MAX_BLOBS} blobs")
        tmp = self.root / f".{h}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return h

    def get(self, h: str) -> bytes | None:
        path = self.root / h
        return path.read_bytes() if len(h) == 64 and path.is_file() else None
