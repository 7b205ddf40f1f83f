"""Off-chain blobs a node keeps for its users (sealed loan documents): files named by
their sha256 under HOME/blobs, so only the hash needs to go on the ledger. Written
atomically; never executed or interpreted.

Storage is not free to strangers: an upload is signed by an account the ledger knows
(one with money, or a registered borrower or lender), and each account has a quota in
blobs and bytes (who stored what is kept under HOME/blobs/.owners/ADDRESS/, one empty
file per blob). The node as a whole holds at most MAX_BLOBS."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lendnet.ledger import keys

BLOB_MAX = 1 << 20
MAX_BLOBS = 10_000
QUOTA_BLOBS = 32                 # blobs one account may store on this node
QUOTA_BYTES = 8 << 20            # and their bytes
DOMAIN = b"lendnet-blob-v1"      # what an upload's signature is over: DOMAIN|chain|sha256


def upload_message(chain_id: str, digest: bytes) -> bytes:
    return DOMAIN + b"|" + chain_id.encode() + b"|" + digest


def sign_upload(kp, chain_id: str, data: bytes) -> dict:
    """The headers that authorise storing `data` on a node of chain `chain_id`."""
    sig = kp.sign(upload_message(chain_id, hashlib.sha256(data).digest()))
    return {"X-Lendnet-Signer": kp.pubkey.hex(), "X-Lendnet-Signature": sig.hex()}


class BlobError(RuntimeError):
    def __init__(self, why: str, code: str = "no-space"):
        super().__init__(why)
        self.code = code


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(mode=0o700, exist_ok=True)
        self.owners = self.root / ".owners"
        self.owners.mkdir(mode=0o700, exist_ok=True)
        self.count = sum(1 for p in self.root.iterdir() if len(p.name) == 64)

    def signer(self, chain_id: str, data: bytes, pubkey_hex: str, sig_hex: str) -> str:
        """The address whose key signed this upload; BlobError if none did."""
        try:
            pubkey, sig = bytes.fromhex(pubkey_hex), bytes.fromhex(sig_hex)
        except ValueError:
            raise BlobError("X-Lendnet-Signer and X-Lendnet-Signature must be hex",
                            "unsigned") from None
        if len(pubkey) != 32 or len(sig) != 64 or not keys.verify(
                pubkey, upload_message(chain_id, hashlib.sha256(data).digest()), sig):
            raise BlobError("the upload's signature is not a signature of these bytes by "
                            "that key (see blobs.sign_upload)", "unsigned")
        return keys.address_of(pubkey)

    def usage(self, owner: str) -> tuple[int, int]:
        """(blobs, bytes) the account stores here."""
        mine = self.owners / owner
        if not mine.is_dir():
            return 0, 0
        names = [p.name for p in mine.iterdir()]
        return len(names), sum((self.root / n).stat().st_size for n in names
                               if (self.root / n).is_file())

    def put(self, data: bytes, owner: str) -> str:
        if not 0 < len(data) <= BLOB_MAX:
            raise BlobError(f"a blob is 1 to {BLOB_MAX} bytes", "too-large")
        h = hashlib.sha256(data).hexdigest()
        path = self.root / h
        if path.exists():
            return h                                  # same bytes, same name: no new space
        count, size = self.usage(owner)
        if count >= QUOTA_BLOBS or size + len(data) > QUOTA_BYTES:
            raise BlobError(f"{owner} already stores {count} blobs ({size} bytes) here; an "
                            f"account may store {QUOTA_BLOBS} blobs of {QUOTA_BYTES} bytes "
                            f"together", "quota")
        if self.count >= MAX_BLOBS:
            raise BlobError(f"this node already holds {MAX_BLOBS} blobs")
        mine = self.owners / owner
        mine.mkdir(mode=0o700, exist_ok=True)
        (mine / h).touch()                            # charged first: a crash errs this way
        tmp = self.root / f".{h}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.count += 1
        return h

    def get(self, h: str) -> bytes | None:
        path = self.root / h
        return path.read_bytes() if len(h) == 64 and path.is_file() else None
