"""Private supporting documents for borrowers, sealed to a set of ed25519 keys.

A random content key encrypts the document once; the content key is then put in a
SealedBox for each recipient, using the curve25519 form of their ed25519 wallet key, so
no separate encryption keys have to be published. The ledger holds sha256 of the whole
envelope, so the exact sealed bytes are fixed by the chain. The envelope also carries a
hash of the plaintext keyed with the content key (`doc_hash`), which `open_sealed`
checks: only a recipient can compute it, so — unlike a plain sha256 in the clear — it
does not let anyone confirm a guess of a document with little variety in it.

Envelope = codec.encode({"v": 1, "hash": blake2b(plaintext, key=content_key),
                         "boxes": [[ed25519_pubkey, sealed_content_key], ...] by pubkey,
                         "ct": SecretBox(content_key).encrypt(plaintext)})
"""
from __future__ import annotations

import hashlib
import secrets

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.secret

from lendnet.ledger import codec
from lendnet.ledger.keys import PUBKEY_LEN, Keypair

VERSION = 1
MAX_RECIPIENTS = 16
# A node's blob store keeps at most 1 MiB per blob, so that bounds the whole envelope;
# the plaintext gets what is left after room for 16 key boxes, the hash and framing.
MAX_ENVELOPE = 1 << 20
MAX_PLAINTEXT = MAX_ENVELOPE - 4096
_KEY_LEN = nacl.secret.SecretBox.KEY_SIZE
_SEALED_LEN = _KEY_LEN + nacl.bindings.crypto_box_SEALBYTES      # ephemeral key + MAC
_CT_OVERHEAD = nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES


class DocumentError(Exception):
    """A document that cannot be sealed or opened, with a message fit for a user."""


class NotAuthorised(DocumentError):
    pass


def seal(plaintext: bytes, recipients: list[bytes]) -> bytes:
    """An envelope only the holders of `recipients` (ed25519 public keys) can open."""
    if type(plaintext) is not bytes or len(plaintext) > MAX_PLAINTEXT:
        raise DocumentError(f"a document is bytes, at most {MAX_PLAINTEXT} of them")
    if any(type(pk) is not bytes or len(pk) != PUBKEY_LEN for pk in recipients):
        raise DocumentError(f"a recipient is a {PUBKEY_LEN}-byte ed25519 public key")
    keys = sorted(set(recipients))
    if not 1 <= len(keys) <= MAX_RECIPIENTS:
        raise DocumentError(f"a document has 1 to {MAX_RECIPIENTS} recipients")
    content_key = secrets.token_bytes(_KEY_LEN)
    boxes = []
    for pk in keys:
        try:
            curve_pk = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(pk)
        except nacl.exceptions.CryptoError:
            raise DocumentError(f"recipient {pk.hex()} is not a valid ed25519 public key") from None
        sealed = nacl.public.SealedBox(nacl.public.PublicKey(curve_pk)).encrypt(content_key)
        boxes.append([pk, bytes(sealed)])
    ct = bytes(nacl.secret.SecretBox(content_key).encrypt(plaintext))
    envelope = codec.encode({"v": VERSION, "hash": _keyed_hash(plaintext, content_key),
                             "boxes": boxes, "ct": ct})
    assert len(envelope) <= MAX_ENVELOPE, "MAX_PLAINTEXT leaves too little room"
    return envelope


def _parse(envelope: bytes) -> dict:
    """The decoded envelope, with every field's type and size checked."""
    if type(envelope) is not bytes or len(envelope) > MAX_ENVELOPE:
        raise DocumentError(f"an envelope is bytes, at most {MAX_ENVELOPE} of them")
    try:
        env = codec.decode(envelope, max_size=MAX_ENVELOPE)
    except codec.EncodingError as e:
        raise DocumentError(f"not a document envelope: {e}") from None
    if type(env) is not dict or set(env) != {"v", "hash", "boxes", "ct"}:
        raise DocumentError("not a document envelope: wrong fields")
    if env["v"] != VERSION:
        raise DocumentError(f"unknown document envelope version {env['v']!r}")
    if type(env["hash"]) is not bytes or len(env["hash"]) != 32:
        raise DocumentError("the envelope's hash is not 32 bytes")
    ct = env["ct"]
    if type(ct) is not bytes or not _CT_OVERHEAD <= len(ct) <= MAX_PLAINTEXT + _CT_OVERHEAD:
        raise DocumentError("the envelope's ciphertext has an impossible size")
    boxes = env["boxes"]
    if type(boxes) is not list or not 1 <= len(boxes) <= MAX_RECIPIENTS:
        raise DocumentError(f"an envelope has 1 to {MAX_RECIPIENTS} recipients")
    prev = b""
    for box in boxes:
        if (type(box) is not list or len(box) != 2
                or type(box[0]) is not bytes or len(box[0]) != PUBKEY_LEN
                or type(box[1]) is not bytes or len(box[1]) != _SEALED_LEN):
            raise DocumentError("the envelope has a malformed recipient box")
        # Strictly increasing: one canonical envelope per content, and no duplicate keys.
        if box[0] <= prev:
            raise DocumentError("the envelope's recipients are not sorted and unique")
        prev = box[0]
    return env


def _keyed_hash(plaintext: bytes, content_key: bytes) -> bytes:
    return hashlib.blake2b(plaintext, key=content_key, digest_size=32).digest()


def doc_hash(envelope: bytes) -> bytes:
    """The keyed hash of the plaintext the envelope claims to hold (checked on opening;
    the ledger's docs_hash is sha256 of the whole envelope)."""
    return _parse(envelope)["hash"]


def recipients(envelope: bytes) -> list[bytes]:
    return [pk for pk, _ in _parse(envelope)["boxes"]]


def open_sealed(envelope: bytes, kp: Keypair) -> bytes:
    """The plaintext, if kp is a recipient and the plaintext matches the envelope's hash."""
    env = _parse(envelope)
    sealed = next((s for pk, s in env["boxes"] if pk == kp.pubkey), None)
    if sealed is None:
        raise NotAuthorised("this wallet is not among the document's recipients")
    # libsodium's ed25519 secret key is seed || pubkey.
    curve_sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(kp.seed + kp.pubkey)
    try:
        content_key = nacl.public.SealedBox(nacl.public.PrivateKey(curve_sk)).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise DocumentError("this wallet's key box in the envelope is damaged") from None
    try:
        plaintext = nacl.secret.SecretBox(content_key).decrypt(env["ct"])
    except nacl.exceptions.CryptoError:
        raise DocumentError("the document's ciphertext is damaged") from None
    if _keyed_hash(plaintext, content_key) != env["hash"]:
        raise DocumentError("document does not match its hash")
    return plaintext
