"""An encrypted keystore for wallet keys: one JSON file per wallet.

The seed is sealed with a SecretBox whose key comes from the passphrase through argon2id.
The KDF limits and salt are written into the file, so a wallet always opens with the
limits it was made with, whatever LENDNET_KDF says today. Dev wallets keep the seed in
clear; the library only flags them (`encrypted: False`), the CLI does the shouting.

The directory is $LENDNET_WALLETS, else ~/.lendnet/wallets.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import unicodedata
from pathlib import Path

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret

from lendnet.ledger.keys import Keypair, address_of

VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
NAME_RULE = ("a wallet name is 1 to 32 characters of a-z, 0-9, '_' and '-', "
             "starting with a letter or digit")

# LENDNET_KDF picks the cost of new wallets; "fast" exists for tests and demos only.
KDF_LEVELS = {
    "fast": (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN),
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}
DEFAULT_KDF = "moderate"
# Limits read from a file are bounded so a damaged or hostile file cannot make `load`
# spend minutes or gigabytes before failing.
_OPS_RANGE = (argon2id.OPSLIMIT_MIN, argon2id.OPSLIMIT_SENSITIVE)
_MEM_RANGE = (argon2id.MEMLIMIT_MIN, argon2id.MEMLIMIT_SENSITIVE)


class KeystoreError(Exception):
    """Anything wrong with a wallet or the keystore, with a message fit for a user."""


class WrongPassphrase(KeystoreError):
    pass


def wallets_dir() -> Path:
    env = os.environ.get("LENDNET_WALLETS")
    return Path(env) if env else Path.home() / ".lendnet" / "wallets"


def passphrase_from_env() -> str | None:
    # An empty LENDNET_PASSPHRASE counts as unset: encrypting under "" would look
    # protected while being nothing of the sort.
    return os.environ.get("LENDNET_PASSPHRASE") or None


def check_name(name: str) -> str:
    if type(name) is not str or not NAME_RE.match(name):
        raise KeystoreError(f"bad wallet name {name!r}: {NAME_RULE}")
    return name


def _path(name: str) -> Path:
    return wallets_dir() / f"{check_name(name)}.json"


def _kdf_limits() -> tuple[int, int]:
    level = os.environ.get("LENDNET_KDF") or DEFAULT_KDF
    if level not in KDF_LEVELS:
        raise KeystoreError(f"LENDNET_KDF={level!r}: use one of {', '.join(KDF_LEVELS)}")
    return KDF_LEVELS[level]


def _secret_key(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    # NFC so the same passphrase typed on differently-normalising systems opens the wallet.
    pw = unicodedata.normalize("NFC", passphrase).encode()
    return argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, pw, salt, opslimit=ops, memlimit=mem)


# --- writing --------------------------------------------------------------------------

def create(name: str, passphrase: str | None) -> Keypair:
    """A new random key stored as wallet `name`; passphrase None makes a dev wallet."""
    return _store(name, Keypair.generate(), passphrase)


def import_seed(name: str, seed: bytes, passphrase: str | None) -> Keypair:
    if type(seed) is not bytes or len(seed) != 32:
        raise KeystoreError("a seed is exactly 32 bytes (64 hex digits)")
    return _store(name, Keypair(seed), passphrase)


def _store(name: str, kp: Keypair, passphrase: str | None) -> Keypair:
    path = _path(name)
    if path.exists():
        raise KeystoreError(f"wallet {name} already exists ({path}); refusing to overwrite it")
    doc = {"version": VERSION, "name": name, "address": kp.address, "pubkey": kp.pubkey.hex()}
    if passphrase is None:
        doc.update(seed=kp.seed.hex(), unencrypted=True)
    else:
        if not passphrase:
            raise KeystoreError("the passphrase is empty; use --dev for an unencrypted wallet")
        ops, mem = _kdf_limits()
        salt = secrets.token_bytes(argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(_secret_key(passphrase, salt, ops, mem)).encrypt(kp.seed)
        doc.update(kdf={"alg": "argon2id", "opslimit": ops, "memlimit": mem, "salt": salt.hex()},
                   box=bytes(box).hex())
    _write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())
    return kp


def _ensure_dir(d: Path) -> None:
    if d.is_dir():
        return          # an existing directory's mode is the user's choice
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)          # mkdir's mode is filtered by the umask
    except OSError as e:
        raise KeystoreError(f"cannot create the wallet directory {d}: {e.strerror}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a 0600 temp file and os.replace, so a crash never leaves half a wallet."""
    _ensure_dir(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KeystoreError(f"cannot write {path}: {e.strerror}") from None


# --- reading --------------------------------------------------------------------------

def _read(name: str) -> tuple[Path, dict]:
    """The wallet file, parsed and shape-checked (nothing decrypted yet)."""
    path = _path(name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"no wallet {name} in {path.parent}") from None
    except OSError as e:
        raise KeystoreError(f"cannot read {path}: {e.strerror}") from None

    def corrupt(why):
        return KeystoreError(f"{path}: corrupt wallet file: {why}")

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise corrupt("not JSON") from None
    if type(doc) is not dict or doc.get("version") != VERSION:
        raise corrupt(f"not a version {VERSION} wallet")
    if doc.get("name") != name:
        raise corrupt(f"it says it holds wallet {doc.get('name')!r}")
    pubkey = _hex(doc.get("pubkey"), 32)
    if pubkey is None or doc.get("address") != address_of(pubkey):
        raise corrupt("bad pubkey or address")
    if doc.get("unencrypted") is True:
        if _hex(doc.get("seed"), 32) is None:
            raise corrupt("bad seed")
        return path, doc
    kdf = doc.get("kdf")
    if (type(kdf) is not dict or kdf.get("alg") != "argon2id"
            or _hex(kdf.get("salt"), argon2id.SALTBYTES) is None
            or not _int_in(kdf.get("opslimit"), _OPS_RANGE)
            or not _int_in(kdf.get("memlimit"), _MEM_RANGE)):
        raise corrupt("bad kdf parameters")
    # nonce + MAC + the 32-byte seed
    box = nacl.secret.SecretBox
    if _hex(doc.get("box"), box.NONCE_SIZE + box.MACBYTES + 32) is None:
        raise corrupt("bad box")
    return path, doc


def _hex(v, n: int) -> bytes | None:
    if type(v) is not str or len(v) != 2 * n:
        return None
    try:
        b = bytes.fromhex(v)
    except ValueError:
        return None
    return b if len(b) == n else None       # fromhex skips spaces, so check again


def _int_in(v, bounds: tuple[int, int]) -> bool:
    return type(v) is int and bounds[0] <= v <= bounds[1]


def load(name: str, passphrase: str | None) -> Keypair:
    """The wallet's key. The passphrase is ignored for a dev wallet (check `info` first)."""
    path, doc = _read(name)
    if doc.get("unencrypted") is True:
        seed = bytes.fromhex(doc["seed"])
    else:
        if passphrase is None:
            raise KeystoreError(f"wallet {name} is encrypted: a passphrase is needed")
        kdf = doc["kdf"]
        key = _secret_key(passphrase, bytes.fromhex(kdf["salt"]), kdf["opslimit"], kdf["memlimit"])
        try:
            seed = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(doc["box"]))
        except nacl.exceptions.CryptoError:
            # A damaged box looks the same as a wrong passphrase; the MAC cannot tell.
            raise WrongPassphrase(f"wrong passphrase for wallet {name}") from None
    kp = Keypair(seed)
    # The box does not cover the clear pubkey/address, so check them against the key.
    if kp.pubkey != bytes.fromhex(doc["pubkey"]):
        raise KeystoreError(f"{path}: the stored key does not match the recorded public key "
                            "(the file has been tampered with)")
    return kp


def info(name: str) -> dict:
    """Public facts about a wallet; needs no passphrase."""
    _, doc = _read(name)
    return {"name": name, "address": doc["address"], "pubkey": bytes.fromhex(doc["pubkey"]).hex(),
            "encrypted": doc.get("unencrypted") is not True}


def wallet_path(name: str) -> Path:
    return _path(name)


def list_wallets() -> list[dict]:
    """`info` of every wallet, by name. Temp files and other stray files are skipped."""
    d = wallets_dir()
    if not d.is_dir():
        return []
    names = sorted(p.stem for p in d.glob("*.json") if NAME_RE.match(p.stem))
    return [info(n) for n in names]
