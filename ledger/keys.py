"""Ed25519 keys, signatures and the addresses derived from them.

An address is "ln" + 40 hex digits: the first 20 bytes of a domain-separated sha256 of
what controls the account (one public key, a multisig policy, or a contract instance).
The domain tag means a key address can never collide with a multisig or contract one.
"""
from __future__ import annotations

import hashlib
import re
from typing import TypeGuard

import nacl.bindings
import nacl.exceptions
import nacl.signing

ADDRESS_RE = re.compile(r"^ln[0-9a-f]{40}\Z")     # \Z, not $: no trailing newline
PUBKEY_LEN = 32
SIG_LEN = 64


def derive_address(domain: bytes, material: bytes) -> str:
    return "ln" + hashlib.sha256(domain + b"\x00" + material).digest()[:20].hex()


def address_of(pubkey: bytes) -> str:
    return derive_address(b"key", pubkey)


def is_address(s: object) -> TypeGuard[str]:
    return type(s) is str and ADDRESS_RE.fullmatch(s) is not None


def pubkey_from_hex(text: str) -> bytes | None:
    """A public key written as 64 hex digits, or None when `text` is not one."""
    try:
        pk = bytes.fromhex(text)
    except ValueError:
        return None
    return pk if len(pk) == PUBKEY_LEN else None


# Signatures already found good: key + signature -> sha256 of what was signed. The same
# signed bytes reach a node many times (a relayed proposal, a duplicated frame, votes
# carried again inside certificates and view changes), and checking a digest costs a small
# fraction of an ed25519 verification. Only successes are kept, so a flood of bad
# signatures cannot evict anything useful; the memo is emptied when full. Verification is
# a pure function of its inputs, so the memo changes no result, only the time it takes.
_VERIFIED: dict[bytes, bytes] = {}
VERIFIED_MAX = 1 << 17
stats = {"verified": 0, "memo_hits": 0}


def verify(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is pubkey's ed25519 signature of `message`; never raises on
    bad input."""
    if len(pubkey) != PUBKEY_LEN or len(signature) != SIG_LEN:
        return False
    key = pubkey + signature
    digest = hashlib.sha256(message).digest()
    if _VERIFIED.get(key) == digest:
        stats["memo_hits"] += 1
        return True
    stats["verified"] += 1
    try:
        nacl.bindings.crypto_sign_open(signature + message, pubkey)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    if len(_VERIFIED) >= VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = digest
    return True


class Keypair:
    """A signing key. Signing is deterministic, so simulator keys can come from a seed."""

    __slots__ = ("_sk", "pubkey", "address")

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("an ed25519 seed is 32 bytes")
        self._sk = nacl.signing.SigningKey(seed)
        self.pubkey = bytes(self._sk.verify_key)
        self.address = address_of(self.pubkey)

    @classmethod
    def generate(cls) -> Keypair:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_name(cls, name: str) -> Keypair:
        """A well-known key derived from a name: for demo accounts and tests only."""
        return cls(hashlib.sha256(b"lendnet-dev-key:" + name.encode()).digest())

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature

    def __repr__(self):
        return f"Keypair({self.address})"
