"""The keystore (cli/keystore.py), sealed documents (cli/documents.py) and `lendnet wallet`."""
from __future__ import annotations

import json
import os
import stat

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lendnet.cli import documents, keystore
from lendnet.cli.documents import DocumentError, NotAuthorised
from lendnet.cli.keystore import KeystoreError, WrongPassphrase
from lendnet.cli.main import main
from lendnet.cli.wallet import unlock
from lendnet.ledger import codec
from lendnet.ledger.keys import Keypair

SEED = bytes(range(32))


@pytest.fixture(autouse=True)
def keystore_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LENDNET_KDF", "fast")
    monkeypatch.setenv("LENDNET_WALLETS", str(tmp_path / "wallets"))
    monkeypatch.delenv("LENDNET_PASSPHRASE", raising=False)
    return tmp_path / "wallets"


def run(*args, env=None, input=None):
    return CliRunner().invoke(main, ["wallet", *args], env=env, input=input)


def signer(name):
    """A stand-in for a command that signs with wallet NAME via `unlock`."""
    @click.command()
    def sign():
        click.echo(unlock(name).address)
    return sign


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- keystore -------------------------------------------------------------------------

def test_create_load_round_trip_and_file_modes(keystore_env):
    kp = keystore.create("alice", "correct horse")
    assert keystore.load("alice", "correct horse").seed == kp.seed
    assert mode(keystore_env) == 0o700
    path = keystore_env / "alice.json"
    assert mode(path) == 0o600
    doc = json.loads(path.read_text())
    assert "seed" not in doc and kp.seed.hex() not in path.read_text()
    assert doc["kdf"]["opslimit"] == keystore.KDF_LEVELS["fast"][0]
    assert [p.name for p in keystore_env.iterdir()] == ["alice.json"]   # no temp files left
    assert keystore.info("alice") == {"name": "alice", "address": kp.address,
                                      "pubkey": kp.pubkey.hex(), "encrypted": True}


def test_load_uses_the_limits_in_the_file(monkeypatch):
    keystore.create("alice", "pw")
    monkeypatch.setenv("LENDNET_KDF", "moderate")     # would be slow, and wrong, if used
    keystore.load("alice", "pw")
    monkeypatch.setenv("LENDNET_KDF", "bogus")
    with pytest.raises(KeystoreError, match="LENDNET_KDF"):
        keystore.create("bob", "pw")


def test_import_list_and_refusals():
    kp = keystore.import_seed("bob", SEED, "pw")
    assert kp.seed == SEED and keystore.load("bob", "pw").address == Keypair(SEED).address
    keystore.create("alice", None)
    assert [w["name"] for w in keystore.list_wallets()] == ["alice", "bob"]
    with pytest.raises(KeystoreError, match="already exists"):
        keystore.create("bob", "pw")
    assert keystore.load("bob", "pw").seed == SEED                # untouched
    with pytest.raises(KeystoreError, match="32 bytes"):
        keystore.import_seed("carol", SEED[:31], "pw")
    with pytest.raises(KeystoreError, match="empty"):
        keystore.create("carol", "")
    with pytest.raises(KeystoreError, match="no wallet carol in"):
        keystore.load("carol", "pw")
    with pytest.raises(KeystoreError, match="passphrase is needed"):
        keystore.load("bob", None)


def test_list_of_a_missing_directory_is_empty(keystore_env):
    assert keystore.list_wallets() == [] and not keystore_env.exists()


@pytest.mark.parametrize("name", ["", "Alice", "-x", "_x", "a" * 33, "a/b", "../x", "a.b",
                                  "a b", "é"])
def test_bad_names(name):
    with pytest.raises(KeystoreError, match="wallet name is 1 to 32 characters"):
        keystore.create(name, "pw")


def test_good_names():
    for name in ["a", "0", "a" * 32, "x-y_z9"]:
        keystore.create(name, None)


def test_wrong_passphrase():
    keystore.create("alice", "right")
    with pytest.raises(WrongPassphrase, match="^wrong passphrase for wallet alice$"):
        keystore.load("alice", "wrong")


def test_tampering_is_detected(keystore_env):
    keystore.create("alice", "pw")
    path = keystore_env / "alice.json"
    doc = json.loads(path.read_text())

    def with_(**changes):
        path.write_text(json.dumps({**doc, **changes}))

    # A different key's pubkey and address: the file parses, the key does not match.
    other = Keypair(SEED)
    with_(pubkey=other.pubkey.hex(), address=other.address)
    with pytest.raises(KeystoreError, match="tampered"):
        keystore.load("alice", "pw")
    with_(address=other.address)
    with pytest.raises(KeystoreError, match="alice.json: corrupt"):
        keystore.info("alice")
    box = bytearray(bytes.fromhex(doc["box"]))
    box[-1] ^= 1
    with_(box=box.hex())
    with pytest.raises(WrongPassphrase):
        keystore.load("alice", "pw")
    with_(kdf={**doc["kdf"], "memlimit": 1 << 40})       # refuses absurd limits
    with pytest.raises(KeystoreError, match="bad kdf"):
        keystore.load("alice", "pw")
    with_(name="bob")
    with pytest.raises(KeystoreError, match="holds wallet 'bob'"):
        keystore.load("alice", "pw")
    path.write_text("{not json")
    with pytest.raises(KeystoreError, match=r"alice\.json: corrupt wallet file: not JSON"):
        keystore.load("alice", "pw")


def test_dev_wallet_is_flagged_and_checked(keystore_env):
    kp = keystore.create("dev", None)
    assert keystore.info("dev")["encrypted"] is False
    assert keystore.load("dev", None).seed == kp.seed
    doc = json.loads((keystore_env / "dev.json").read_text())
    assert doc["unencrypted"] is True and doc["seed"] == kp.seed.hex()
    doc["seed"] = SEED.hex()
    (keystore_env / "dev.json").write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="tampered"):
        keystore.load("dev", None)


# --- the CLI --------------------------------------------------------------------------

def test_cli_create_show_list_export_json(tmp_path):
    env = {"LENDNET_PASSPHRASE": "pw"}
    r = run("create", "alice", "--json", env=env)
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["encrypted"] is True and keystore.load("alice", "pw").address == made["address"]
    r = run("show", "alice", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == made
    r = run("list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == [made]
    r = run("export-public", "alice", "--json")
    pub = {k: made[k] for k in ("name", "address", "pubkey")}
    assert r.exit_code == 0 and json.loads(r.stdout) == pub
    out = tmp_path / "alice.pub.json"
    r = run("export-public", "alice", "--out", str(out))
    assert r.exit_code == 0 and json.loads(out.read_text()) == pub
    r = run("show", "alice")
    assert r.exit_code == 0 and made["address"] in r.stdout and made["pubkey"] in r.stdout
    r = run("list")
    assert r.exit_code == 0 and "alice" in r.stdout and made["address"] in r.stdout


def test_cli_prompts_for_the_passphrase_with_confirmation():
    r = run("create", "alice", input="s3cret\ns3cret\n")
    assert r.exit_code == 0, r.output
    assert keystore.load("alice", "s3cret").address in r.stdout and "s3cret" not in r.output
    r = run("create", "bob", input="one\ntwo\none\none\n")      # mismatch, then asked again
    assert r.exit_code == 0 and keystore.load("bob", "one")


def test_cli_wrong_passphrase_is_a_clear_error():
    keystore.create("alice", "right")
    r = run("create", "alice", env={"LENDNET_PASSPHRASE": "x"})
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("show", "nobody")
    assert r.exit_code == 1 and "no wallet nobody in" in r.output and "Traceback" not in r.output
    sign = signer("alice")
    r = CliRunner().invoke(sign, env={"LENDNET_PASSPHRASE": "wrong"})
    assert r.exit_code == 1 and "wrong passphrase for wallet alice" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(sign, input="right\n")                 # one prompt, no confirmation
    assert r.exit_code == 0 and keystore.info("alice")["address"] in r.output


def test_cli_bad_name_and_corrupt_file(keystore_env):
    r = run("create", "Alice", "--dev")
    assert r.exit_code == 1 and "wallet name is 1 to 32 characters" in r.output
    keystore.create("alice", None)
    (keystore_env / "alice.json").write_text("garbage")
    r = run("list")
    assert r.exit_code == 1 and "alice.json: corrupt wallet file" in r.output
    assert "Traceback" not in r.output


def test_cli_dev_wallets_warn_loudly():
    r = run("create", "dev", "--dev", "--json")
    assert r.exit_code == 0
    assert "WARNING: wallet dev is stored UNENCRYPTED (dev mode)" in r.stderr
    assert json.loads(r.stdout)["encrypted"] is False       # stdout stays pure JSON
    r = CliRunner().invoke(signer("dev"))
    assert r.exit_code == 0 and "UNENCRYPTED" in r.stderr
    assert r.stdout.strip() == keystore.info("dev")["address"]


def test_cli_import(tmp_path):
    r = run("import", "bob", "--seed-hex", SEED.hex(), "--json", env={"LENDNET_PASSPHRASE": "pw"})
    assert r.exit_code == 0 and json.loads(r.stdout)["address"] == Keypair(SEED).address
    raw, hexfile = tmp_path / "seed.bin", tmp_path / "seed.hex"
    raw.write_bytes(SEED)
    hexfile.write_text(SEED.hex() + "\n")
    for name, f in (("raw", raw), ("hex", hexfile)):
        r = run("import", name, "--seed-file", str(f), "--dev")
        assert r.exit_code == 0 and keystore.load(name, None).seed == SEED
        assert "UNENCRYPTED" in r.stderr
    r = run("import", "c", "--seed-hex", "abcd", "--dev")
    assert r.exit_code == 2 and "64 hex digits" in r.output
    r = run("import", "c", "--dev")
    assert r.exit_code == 2 and "exactly one of --seed-hex and --seed-file" in r.output
    (tmp_path / "bad").write_text("nonsense")
    r = run("import", "c", "--seed-file", str(tmp_path / "bad"), "--dev")
    assert r.exit_code == 1 and "32 raw bytes or 64 hex digits" in r.output


def test_cli_empty_list():
    r = run("list")
    assert r.exit_code == 0 and "no wallets" in r.output
    assert json.loads(run("list", "--json").stdout) == []


# --- documents ------------------------------------------------------------------------

ALICE, BOB, EVE = (Keypair.from_name(n) for n in ("alice", "bob", "eve"))


def test_documents_open_for_recipients_only():
    doc = b"payslip: 1200 LND a month"
    env = documents.seal(doc, [BOB.pubkey, ALICE.pubkey])
    # The hash in the clear is keyed: it does not confirm a guess of the document.
    assert documents.doc_hash(env) != codec.digest(doc) and len(documents.doc_hash(env)) == 32
    assert documents.open_sealed(env, ALICE) == doc == documents.open_sealed(env, BOB)
    with pytest.raises(NotAuthorised, match="not among the document's recipients"):
        documents.open_sealed(env, EVE)
    # Each recipient's box is sealed to that key alone: relabelling it does not help Eve.
    fields = codec.decode(env)
    fields["boxes"] = sorted([[EVE.pubkey, fields["boxes"][0][1]], fields["boxes"][1]])
    with pytest.raises(DocumentError, match="key box"):
        documents.open_sealed(codec.encode(fields), EVE)


def test_documents_tampering_fails():
    env = documents.seal(b"id card scan", [ALICE.pubkey])
    fields = codec.decode(env)
    ct = bytearray(fields["ct"])
    ct[-1] ^= 1
    with pytest.raises(DocumentError, match="ciphertext is damaged"):
        documents.open_sealed(codec.encode({**fields, "ct": bytes(ct)}), ALICE)
    with pytest.raises(DocumentError, match="^document does not match its hash$"):
        documents.open_sealed(codec.encode({**fields, "hash": bytes(32)}), ALICE)
    with pytest.raises(DocumentError, match="not a document envelope"):
        documents.doc_hash(env[:-1])
    with pytest.raises(DocumentError, match="wrong fields"):
        documents.doc_hash(codec.encode({**fields, "extra": 1}))
    with pytest.raises(DocumentError, match="sorted and unique"):
        documents.doc_hash(codec.encode({**fields, "boxes": fields["boxes"] * 2}))


def test_documents_bounds():
    many = [Keypair.from_name(str(i)).pubkey for i in range(documents.MAX_RECIPIENTS)]
    big = documents.seal(b"x" * documents.MAX_PLAINTEXT, many)
    assert len(big) <= documents.MAX_ENVELOPE == 1 << 20
    assert documents.open_sealed(big, Keypair.from_name("7")) == b"x" * documents.MAX_PLAINTEXT
    with pytest.raises(DocumentError, match="at most"):
        documents.seal(b"x" * (documents.MAX_PLAINTEXT + 1), [ALICE.pubkey])
    with pytest.raises(DocumentError, match="1 to 16 recipients"):
        documents.seal(b"x", many + [ALICE.pubkey])
    with pytest.raises(DocumentError, match="1 to 16 recipients"):
        documents.seal(b"x", [])
    with pytest.raises(DocumentError, match="32-byte"):
        documents.seal(b"x", [ALICE.pubkey[:31]])
    with pytest.raises(DocumentError, match="not a valid ed25519 public key"):
        documents.seal(b"x", [b"\xff" * 32])
    with pytest.raises(DocumentError, match="at most"):
        documents.doc_hash(b"\x00" * (documents.MAX_ENVELOPE + 1))
    fields = codec.decode(documents.seal(b"x", [ALICE.pubkey]))
    too_many = sorted([pk, fields["boxes"][0][1]] for pk in many + [ALICE.pubkey])
    with pytest.raises(DocumentError, match="1 to 16 recipients"):
        documents.doc_hash(codec.encode({**fields, "boxes": too_many}))


@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(max_size=4096), n=st.integers(1, 4), reader=st.integers(0, 3))
def test_documents_round_trip(plaintext, n, reader):
    keys = [ALICE, BOB, EVE, Keypair.from_name("dave")][:n]
    env = documents.seal(plaintext, [k.pubkey for k in keys])
    assert documents.doc_hash(env) != codec.digest(plaintext)
    kp = [ALICE, BOB, EVE, Keypair.from_name("dave")][reader]
    if reader < n:
        assert documents.open_sealed(env, kp) == plaintext
    else:
        with pytest.raises(NotAuthorised):
            documents.open_sealed(env, kp)
