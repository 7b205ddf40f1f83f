"""Snapshots (ledger/snapshot.py): a state restored from its manifest and chunks has the
same root and applies the next blocks exactly like the original; anything a peer could
get wrong (a byte, a row, a group, a chunk, the manifest) is refused, naming where."""
from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from lendnet.ledger import codec, keys, lending, snapshot as snap
from lendnet.ledger.ledger import BlockError
from lendnet.ledger.state import State

from .chain import CHAIN, T0
from .test_products_mix import World, steps as mix_steps
from .test_properties import actions, chain, run

# A workload with loans, repayments, late fees, savings, a guarantee and shared funding.
BUSY = [("apply", 1, 5), ("fund", 0, 7), ("accept", 1, 3), ("repay", 1, 9), ("advance", 0, 3),
        ("deposit", 1, 4), ("guarantee", 0, 2), ("share", 0, 11), ("apply", 2, 8),
        ("fund", 0, 2), ("loop", 1, 77), ("advance", 0, 6), ("repay", 2, 1)]


@functools.cache
def busy():
    c = chain()
    run(c, BUSY)
    return c.ledger


def snapshot_of(state: State, max_bytes: int = snap.DEFAULT_CHUNK_BYTES):
    return snap.manifest(state), list(snap.chunks(state, max_bytes))


def strictly_equal(a, b, where=()):
    """Equal values of the same Python types all the way down (a list is not a tuple)."""
    assert type(a) is type(b), (where, a, b)
    if type(a) in (list, tuple):
        assert len(a) == len(b), where
        for x, y in zip(a, b):
            strictly_equal(x, y, where)
    elif type(a) is dict:
        assert sorted(a, key=repr) == sorted(b, key=repr), where
        for k in a:
            strictly_equal(a[k], b[k], (*where, k))
    else:
        assert a == b, where


# --- round trips ----------------------------------------------------------------------

@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.integers(0, 25), st.sampled_from([16 << 10, snap.DEFAULT_CHUNK_BYTES]))
def test_a_restored_ledger_has_the_root_and_applies_the_next_blocks_like_the_original(
        script, at, max_bytes):
    """Snapshot a random chain after block `at`, restore it, then apply every later
    block to both: the same roots, receipts and events, block after block."""
    c = chain()
    led = c.ledger
    twin: list = []
    _mirror(led, twin)
    mirrored = led.apply_block

    def snapshot_after(height, time, txs, strict=True):
        res = mirrored(height, time, txs, strict=strict)
        if not twin and height >= at:
            m, chunks = snapshot_of(led.state, max_bytes)
            snap.check_manifest(m, res.state_root)
            state = snap.restore(m, chunks, res.state_root)
            assert state.root() == res.state_root
            for name in State.TABLES:
                strictly_equal(led.state.tables[name].rows, state.tables[name].rows, (name,))
            restored = lending.from_state(CHAIN, state, height=height)
            assert (restored.height, restored.time) == (led.height, led.time)
            # the live wake-ups, once each (the original's heap may repeat one)
            assert sorted(restored._duties) == sorted(
                {e for e in led._duties if led.state.wakes.get(e[1]) == e[0]})
            twin.append(restored)
        return res

    led.apply_block = snapshot_after
    run(c, script)
    event("restored" if twin else "snapshot point past the chain's end")
    if twin:
        assert twin[0].state_root() == led.state_root()
        assert twin[0].height == led.height


def test_a_snapshot_is_canonical_and_each_chunk_within_its_size():
    led = busy()
    m, chunks = snapshot_of(led.state, 16 << 10)
    assert codec.decode(codec.encode(m)) == m          # the manifest has one encoding
    assert all(len(c) <= 16 << 10 for c in chunks)
    assert [snap.chunks(led.state, 16 << 10).__next__()] == chunks[:1]   # deterministic
    for c in chunks:
        assert codec.pack_canonical(codec.decode(c, max_size=1 << 24)) == c
    asm = snap.Assembly(m)
    rows = [r for c in chunks for r in snap.check_chunk(m, c, asm)]
    assert len(rows) == sum(len(t) for t in led.state.tables.values())


def _many_accounts(n: int):
    balances = {keys.derive_address(b"snapshot-test", i.to_bytes(4, "big")): 1_000 + i
                for i in range(n)}
    return lending.genesis(CHAIN, balances, time=T0)


# A chunk size that fits the genesis's largest row (an agreement's code, ~5 KB) and not
# a group of big()'s accounts (~150 rows of ~55 bytes): those groups are split.
SPLIT = 6 << 10


@functools.cache
def big():
    return _many_accounts(40_000)


def test_a_group_bigger_than_a_chunk_is_split_and_checked_when_its_last_part_is_in():
    led = big()
    m, chunks = snapshot_of(led.state, SPLIT)
    parts = [c for c in chunks if codec.decode(c)[2][0][2] > 0]
    assert parts, "some groups must be split at SPLIT bytes"
    state = snap.restore(m, chunks, led.state_root())
    assert state.root() == led.state_root()
    # A part is only consistent so far: it completes nothing; the final part completes
    # the group, and only then are its rows handed out.
    asm = snap.Assembly(m)
    first = next(i for i, c in enumerate(chunks) if codec.decode(c)[2][0][3] is False)
    assert snap.check_chunk(m, chunks[first], asm) == []
    k = first + 1
    while codec.decode(chunks[k])[2][0][3] is False:
        assert snap.check_chunk(m, chunks[k], asm) == []
        k += 1
    assert snap.check_chunk(m, chunks[k], asm)


# --- what a bad peer could send ----------------------------------------------------------

def _section_chunk(m, chunks, table):
    """The index of a chunk with a whole group of `table`, and that group."""
    for i, c in enumerate(chunks):
        for sec in codec.decode(c, max_size=1 << 24)[2]:
            if sec[0] == table and sec[2] == 0 and sec[3]:
                return i, sec[1]
    raise AssertionError(f"no whole group of {table}")


def _rebuild(obj) -> bytes:
    return codec.encode(obj)


@pytest.mark.parametrize("table", ["accounts", "loans", "borrowers"])
def test_one_row_changed_is_refused_naming_its_table_and_group(table):
    led = busy()
    m, chunks = snapshot_of(led.state)
    i, g = _section_chunk(m, chunks, table)
    obj = codec.decode(chunks[i], max_size=1 << 24)
    sec = next(s for s in obj[2] if s[0] == table and s[1] == g)
    key, value = sec[4][0]
    sec[4][0] = [key, [value[0] + 1, value[1]] if table == "accounts" else
                 {**value, "since": 1} if table == "borrowers" else {**value, "rate": 1}]
    with pytest.raises(snap.SnapshotError, match=f"table {table} group {g}: its rows hash"):
        snap.restore(m, [*chunks[:i], _rebuild(obj), *chunks[i + 1:]], led.state_root())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_one_byte_changed_in_a_chunk_is_refused(data):
    led = busy()
    m, chunks = snapshot_of(led.state, 16 << 10)
    i = data.draw(st.integers(0, len(chunks) - 1))
    pos = data.draw(st.integers(0, len(chunks[i]) - 1))
    bad = bytearray(chunks[i])
    bad[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(snap.SnapshotError):
        snap.restore(m, [*chunks[:i], bytes(bad), *chunks[i + 1:]], led.state_root())


def test_a_byte_changed_inside_a_row_names_its_table_and_group():
    led = busy()
    m, chunks = snapshot_of(led.state)
    i, g = _section_chunk(m, chunks, "borrowers")
    obj = codec.decode(chunks[i], max_size=1 << 24)
    sec = next(s for s in obj[2] if s[0] == "borrowers" and s[1] == g)
    profile = sec[4][0][1]["profile_hash"]
    at = chunks[i].index(profile) + 31
    bad = bytearray(chunks[i])
    bad[at] ^= 1                                # still canonical: a bin's last byte
    with pytest.raises(snap.SnapshotError, match=f"table borrowers group {g}: its rows hash"):
        snap.restore(m, [*chunks[:i], bytes(bad), *chunks[i + 1:]], led.state_root())


def test_a_row_moved_to_another_group_is_refused_naming_the_group():
    led = big()
    m, chunks = snapshot_of(led.state)
    obj = codec.decode(chunks[0], max_size=1 << 24)
    secs = [s for s in obj[2] if s[0] == "accounts"]
    src, dst = secs[1], secs[0]          # checked first: the row is found in dst
    dst[4].append(src[4].pop())
    with pytest.raises(snap.SnapshotError,
                       match=f"table accounts group {dst[1]}: a row of group {src[1]}"):
        snap.restore(m, [_rebuild(obj), *chunks[1:]], led.state_root())


def test_a_bad_part_of_a_split_group_is_refused_at_its_end_and_the_group_fetched_again():
    led = big()
    m, chunks = snapshot_of(led.state, SPLIT)
    first = next(i for i, c in enumerate(chunks) if codec.decode(c)[2][0][3] is False)
    obj = codec.decode(chunks[first])
    name, g = obj[2][0][0], obj[2][0][1]
    key, value = obj[2][0][4][0]
    obj[2][0][4][0] = [key, [value[0] + 1, value[1]]]
    last = first
    while codec.decode(chunks[last])[2][0][3] is False:
        last += 1
    asm = snap.Assembly(m)
    for c in chunks[:first]:
        asm.add(c)
    asm.add(_rebuild(obj))                         # consistent so far: taken
    for c in chunks[first + 1:last]:
        asm.add(c)
    with pytest.raises(snap.SnapshotError, match=f"table {name} group {g}: its rows hash"):
        asm.add(chunks[last])
    for c in chunks[first:]:                       # the group again, from an honest peer
        asm.add(c)
    assert asm.state().root() == led.state_root()


def test_parts_out_of_order_are_refused():
    led = big()
    m, chunks = snapshot_of(led.state, SPLIT)
    first = next(i for i, c in enumerate(chunks) if codec.decode(c)[2][0][3] is False)
    asm = snap.Assembly(m)
    with pytest.raises(snap.SnapshotError, match="part 1, expected 0"):
        asm.add(chunks[first + 1])


def test_a_chunk_from_another_snapshot_is_refused():
    c = chain()
    run(c, BUSY[:4])
    m_old, chunks_old = snapshot_of(c.ledger.state)
    c.advance(60)
    m, chunks = snapshot_of(c.ledger.state)
    with pytest.raises(snap.SnapshotError, match="another snapshot"):
        snap.restore(m, [chunks_old[0], *chunks[1:]], c.ledger.state_root())
    # relabelled with this snapshot's root, its rows still do not check
    obj = codec.decode(chunks_old[0], max_size=1 << 24)
    obj[1] = m["root"]
    with pytest.raises(snap.SnapshotError, match=r"table meta group \d+: its rows hash"):
        snap.restore(m, [_rebuild(obj), *chunks[1:]], c.ledger.state_root())


def test_a_missing_duplicate_or_extra_chunk_is_refused():
    led = big()
    m, chunks = snapshot_of(led.state, 64 << 10)
    root = led.state_root()
    with pytest.raises(snap.SnapshotError, match=r"groups missing, first table \w+ group"):
        snap.restore(m, chunks[:-1], root)
    with pytest.raises(snap.SnapshotError, match="already restored"):
        snap.restore(m, [*chunks, chunks[3]], root)
    # a group the manifest does not list
    obj = codec.decode(chunks[0], max_size=1 << 24)
    obj[2][0][0] = "savings"
    with pytest.raises(snap.SnapshotError, match="is not in the manifest"):
        snap.restore(m, [_rebuild(obj), *chunks[1:]], root)
    # the final part of a split group never comes
    small_m, small = snapshot_of(led.state, SPLIT)
    last = next(i for i, c in enumerate(small)
                if codec.decode(c)[2][0][2] > 0 and codec.decode(c)[2][0][3])
    with pytest.raises(snap.SnapshotError, match="final part is missing"):
        snap.restore(small_m, [*small[:last], *small[last + 1:]], root)


def test_a_manifest_that_does_not_hash_to_the_certified_root_is_refused():
    led = busy()
    m = snap.manifest(led.state)
    root = led.state_root()
    snap.check_manifest(m, root)
    bad = {**m, "tables": [list(t) for t in m["tables"]]}
    name, groups = bad["tables"][1]
    bad["tables"][1] = [name, [[groups[0][0], bytes(32)], *groups[1:]]]
    with pytest.raises(snap.SnapshotError, match="give root"):
        snap.check_manifest(bad, root)
    with pytest.raises(snap.SnapshotError, match="give root"):
        snap.restore(bad, [], root)
    # a consistent manifest of another state is not the certified one
    other = snap.manifest(big().state)
    with pytest.raises(snap.SnapshotError, match="not the certified root"):
        snap.check_manifest(other, root)


@pytest.mark.parametrize("mangle, message", [
    (lambda m: {**m, "extra": 1}, "not a {version, root, tables} map"),
    (lambda m: {**m, "version": 2}, "manifest version"),
    (lambda m: {**m, "root": b"x"}, "root is not 32 bytes"),
    (lambda m: {**m, "tables": m["tables"][:-1]}, "must list the"),
    (lambda m: {**m, "tables": [m["tables"][1], m["tables"][0], *m["tables"][2:]]},
     "in order"),
    (lambda m: {**m, "tables": [[m["tables"][0][0], [[300, bytes(32)]]], *m["tables"][1:]]},
     "ascending index"),
    (lambda m: {**m, "tables": [[m["tables"][0][0], [[1, bytes(32)]] * 2],
                                *m["tables"][1:]]}, "ascending index"),
    (lambda m: {**m, "tables": [[m["tables"][0][0], [[0, bytes(32)]] * 257],
                                *m["tables"][1:]]}, "at most 256"),
])
def test_a_malformed_manifest_is_refused_with_a_clear_message(mangle, message):
    led = busy()
    with pytest.raises(snap.SnapshotError, match=message.replace("{", r"\{").replace("}", r"\}")):
        snap.check_manifest(mangle(snap.manifest(led.state)), led.state_root())


def test_a_chunk_over_the_bounds_is_refused():
    led = busy()
    m, chunks = snapshot_of(led.state)
    with pytest.raises(snap.SnapshotError, match="at most 1000"):
        snap.Assembly(m, max_chunk_bytes=1000).add(chunks[0])
    with pytest.raises(snap.SnapshotError, match="not canonical"):
        snap.Assembly(m).add(b"\xc1")
    with pytest.raises(snap.SnapshotError, match="1 to 4096 sections"):
        snap.Assembly(m).add(codec.encode([1, m["root"], []]))
    with pytest.raises(snap.SnapshotError, match="not \\[version"):
        snap.Assembly(m).add(codec.encode([True, m["root"], [1]]))
    with pytest.raises(snap.SnapshotError, match="outside"):
        list(snap.chunks(led.state, 100))


def test_a_ledger_is_only_rebuilt_from_a_state_of_its_chain():
    state = snap.restore(*snapshot_of(busy().state), busy().state_root())
    with pytest.raises(ValueError, match="of chain"):
        lending.from_state("another-chain", state)
    with pytest.raises(ValueError, match=f"at height {busy().height}, not 1"):
        lending.from_state(CHAIN, state, height=1)
    assert lending.from_state(CHAIN, state, height=busy().height).height == busy().height


# --- the wake-up index is rebuilt from the state -------------------------------------------

# A deploy whose init arms a wake-up and then fails: the failure undoes the wake-up, but
# the original ledger's heap keeps a stale entry for it. A restored ledger never had it.
ARM_AND_FAIL = """
    arg 1
    wake
    fail "no"
"""


def test_stale_wake_up_entries_the_original_holds_do_not_change_what_runs(monkeypatch):
    """What runs in a block must be a function of the state alone, or a node restored
    from a snapshot (whose heaps hold only live wake-ups) would diverge from one that
    lived through the history. The per-block limit on wake-ups counts the ones that run,
    not the stale entries skipped on the way."""
    from lendnet.contracts.asm import assemble
    from lendnet.ledger import ledger as ledger_module

    from .chain import DAY, Chain
    from .test_duties import DEPLOY_GAS, _deploy_wakers

    monkeypatch.setattr(ledger_module, "MAX_TICKS_PER_BLOCK", 3)
    c = Chain(names=("mallory",), balances={"mallory": 10**12})
    at = c.time + DAY
    _deploy_wakers(c, 1, 4, at)
    for _ in range(8):
        r = c.try_do("mallory", "deploy", code=assemble(ARM_AND_FAIL), args=[at],
                     gas=DEPLOY_GAS, gas_price=c.ledger.vm_price())
        assert not r.ok and r.nonce_used
    led = c.ledger
    stale = [e for e in led._user_wakes if led.state.wakes.get(e[1]) != e[0]]
    assert len(stale) == 8
    twin = lending.from_state(CHAIN, snap.restore(*snapshot_of(led.state), led.state_root()))
    assert len(twin._user_wakes) == 4
    for t in (at, at + 1, at + 2):
        a = led.apply_block(led.height + 1, t, [])
        b = twin.apply_block(twin.height + 1, t, [])
        assert a.state_root == b.state_root
        assert [e["contract"] for e in a.events] == [e["contract"] for e in b.events]


def test_split_groups_held_unchecked_are_bounded_together():
    """A peer that starts many split groups and finishes none cannot make the node hold
    more than max_pending_bytes of unchecked rows."""
    led = big()
    m, chunks = snapshot_of(led.state, SPLIT)
    firsts = [c for c in chunks if codec.decode(c)[2][0][2] == 0
              and codec.decode(c)[2][0][3] is False]
    asm = snap.Assembly(m, max_pending_bytes=3 * SPLIT)
    with pytest.raises(snap.SnapshotError, match="split groups not yet checked"):
        for c in firsts:
            asm.add(c)


def test_a_state_that_changes_while_its_chunks_are_made_is_refused():
    c = chain()
    run(c, BUSY[:4])
    made = snap.chunks(c.ledger.state, SPLIT)
    next(made)
    c.advance(60)
    with pytest.raises(snap.SnapshotError, match="changed while"):
        list(made)


def test_a_restored_multisig_account_spends_as_the_original_does():
    """Multisig records are tuples in the ledger (threshold, members): restored as
    tuples, and a threshold spend and a refused one give the same receipts and root."""
    from lendnet.ledger import tx as txm

    from .chain import Chain

    c = Chain(names=("alice", "bob", "carol", "mallory"))
    members = [c.keys[n].pubkey for n in ("alice", "bob", "carol")]
    res = c.block(c.tx("alice", "create_multisig", threshold=2, members=members))
    pool = [e for e in res.events if e["name"] == "multisig_created"][0]["contract"]
    c.do("alice", "transfer", to=pool, amount=50_000)
    led = c.ledger
    twin = lending.from_state(CHAIN, snap.restore(*snapshot_of(led.state), led.state_root()))
    strictly_equal(led.state.multisigs.rows, twin.state.multisigs.rows)
    strictly_equal(led.state.accounts.rows, twin.state.accounts.rows)
    spend = txm.build(c.keys["alice"], CHAIN, "transfer", 0, sender=pool,
                      to=c.addr("mallory"), amount=10_000)
    one = txm.sign(spend, [c.keys["alice"]])
    two = txm.add_signature(one, c.keys["carol"])
    for txs in ([one], [two]):
        a = led.apply_block(led.height + 1, led.time + 60, txs, strict=False)
        b = twin.apply_block(twin.height + 1, twin.time + 60, txs, strict=False)
        assert [r.to_json() for r in a.receipts] == [r.to_json() for r in b.receipts]
        assert a.state_root == b.state_root


def test_rows_out_of_order_repeated_or_malformed_and_a_group_twice_are_refused():
    led = big()
    m, chunks = snapshot_of(led.state)
    root = led.state_root()
    obj = codec.decode(chunks[0], max_size=1 << 24)
    sec = next(s for s in obj[2] if s[0] == "accounts" and len(s[4]) > 2)
    cases = {
        "out of order or repeated": lambda s: s[4].reverse(),
        "rows out of order or repeated": lambda s: s[4].insert(1, s[4][0]),
        "is not \\[key, value\\]": lambda s: s[4].__setitem__(0, [s[4][0][0]]),
        "part or final flag": lambda s: s.__setitem__(3, 1),
    }
    for message, mangle in cases.items():
        bad = codec.decode(chunks[0], max_size=1 << 24)
        mangle(next(s for s in bad[2] if s[0] == "accounts" and s[1] == sec[1]))
        with pytest.raises(snap.SnapshotError, match=message):
            snap.restore(m, [_rebuild(bad), *chunks[1:]], root)
    twice = codec.decode(chunks[0], max_size=1 << 24)
    twice[2].append(sec)
    with pytest.raises(snap.SnapshotError, match=f"group {sec[1]}: twice in one chunk"):
        snap.Assembly(m).add(_rebuild(twice))


def _mirror(led, twin: list) -> None:
    """From now on, every block applied to `led` is applied to twin[0] too, once there
    is one: the same root, receipts and events, or the same refusal."""
    apply = led.apply_block

    def both(height, time, txs, strict=True):
        try:
            res = apply(height, time, txs, strict=strict)
        except BlockError as e:
            if twin:
                with pytest.raises(BlockError, match=str(e)[:40]):
                    twin[0].apply_block(height, time, txs, strict=strict)
            raise
        if twin:
            other = twin[0].apply_block(height, time, txs, strict=strict)
            assert other.state_root == res.state_root
            assert [r.to_json() for r in other.receipts] == [r.to_json() for r in res.receipts]
            assert other.events == res.events
        return res

    led.apply_block = both


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_product_restored_mid_workload_goes_on_like_the_original(data):
    """tests/test_products_mix.py's workloads (pools, guarantees, savings, a group,
    defaults and sales), restored from a snapshot at a random step."""
    script = data.draw(mix_steps)
    at = data.draw(st.integers(0, len(script)))
    w = World()
    led = w.c.ledger
    twin: list = []
    _mirror(led, twin)
    for i, (kind, who, n) in enumerate(script):
        if i == at:
            m, chunks = snapshot_of(led.state, 16 << 10)
            twin.append(lending.from_state(CHAIN, snap.restore(m, chunks, led.state_root()),
                                           height=led.height))
        w.step(kind, who, n)
    w.c.advance(60 * 86_400)
    if twin:
        assert twin[0].state_root() == led.state_root()


# --- whatever a peer sends, the answer is SnapshotError ---------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=34)
    | st.text(max_size=12) | st.sampled_from(["accounts", "meta", "loans"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=24)


def _replace_at(obj, path, new) -> bool:
    """Put `new` at `path` inside the decoded object; False if it is there already."""
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    if parent[path[-1]] == new:
        return False
    parent[path[-1]] = new
    return True


def _paths(obj, path=()):
    yield path
    if type(obj) is list:
        for i, x in enumerate(obj):
            yield from _paths(x, (*path, i))
    elif type(obj) is dict:
        for k, x in obj.items():
            yield from _paths(x, (*path, k))


@settings(max_examples=200, deadline=None)
@given(_values)
def test_any_object_as_a_chunk_is_refused_with_a_snapshot_error(junk):
    m = snap.manifest(busy().state)
    with pytest.raises(snap.SnapshotError):
        snap.Assembly(m).add(codec.encode(junk))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_part_of_a_chunk_replaced_is_refused_with_a_snapshot_error(data):
    """Only SnapshotError ever comes out of a chunk (never a TypeError from a key that
    cannot be a key, say), whatever part of a real chunk is replaced with whatever."""
    led = busy()
    m, chunks = snapshot_of(led.state, 16 << 10)
    i = data.draw(st.integers(0, len(chunks) - 1))
    obj = codec.decode(chunks[i], max_size=1 << 24)
    paths = [p for p in _paths(obj) if p]
    if not _replace_at(obj, data.draw(st.sampled_from(paths)), data.draw(_values)):
        return
    asm = snap.Assembly(m)
    try:
        asm.add(_rebuild(obj))
    except snap.SnapshotError:
        return
    # accepted only if it still describes the same rows (e.g. a value equal in bytes)
    for c in chunks[:i] + chunks[i + 1:]:
        asm.add(c)
    assert asm.state().root() == led.state_root()


def test_a_key_no_table_could_hold_is_refused():
    m = snap.manifest(busy().state)
    g = m["tables"][1][1][0][0]                 # a group of accounts the manifest lists
    key = next({"k": i} for i in range(100_000)
               if snap._bucket(codec.encode({"k": i})) >> 8 == g)
    chunk = codec.encode([snap.VERSION, m["root"], [["accounts", g, 0, True, [[key, 1]]]]])
    with pytest.raises(snap.SnapshotError, match=f"table accounts group {g}: a key that"):
        snap.Assembly(m).add(chunk)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_part_of_a_manifest_replaced_is_refused_with_a_snapshot_error(data):
    led = busy()
    m = snap.manifest(led.state)
    junk = data.draw(_values)
    with pytest.raises(snap.SnapshotError):
        snap.check_manifest(junk, led.state_root())
    obj = codec.decode(codec.encode(m), max_size=1 << 24)
    path = data.draw(st.sampled_from([p for p in _paths(obj) if p]))
    if not _replace_at(obj, path, data.draw(_values)):
        return
    with pytest.raises(snap.SnapshotError):
        snap.check_manifest(obj, led.state_root())


def test_a_table_restored_from_split_groups_rehashes_later_writes_like_the_original():
    """The restored tables take the leaves computed while checking (Table.load); later
    writes, deletes and undos must hash exactly as in a table that grew row by row."""
    led = _many_accounts(40_000)
    state = snap.restore(*snapshot_of(led.state, SPLIT), led.state_root())
    addrs = sorted(led.state.accounts.rows)
    for st_ in (led.state, state):
        for a in addrs[::997]:
            st_.accounts.put(a, (7, 1))
        for a in addrs[1::1999]:
            st_.accounts.delete(a)
        mark = st_.mark()
        st_.accounts.put(addrs[5], (1, 1))
        st_.accounts.put("0" * 40, (1, 0))
        st_.rollback(mark)
        st_.settle()
    assert state.root() == led.state.root()
    strictly_equal(led.state.accounts.rows, state.accounts.rows)
