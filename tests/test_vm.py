"""Tests of the contract VM, its verifier, and the assembler/disassembler."""
from __future__ import annotations

import contextlib
import hashlib
import math
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from lendnet.contracts import vm
from lendnet.contracts.asm import AsmError, assemble, disassemble
from lendnet.contracts.vm import (
    INT_BITS, OPS_BY_NAME, BytecodeError, ContractError, OutOfGas, Program,
    encode_instruction, execute,
)

BIG = (1 << INT_BITS) - 1          # the largest int a contract can hold


class FakeHost:
    """A test double of the ledger: dict storage and lists recording every effect."""

    def __init__(self, contract_balance: int = 1000):
        self.height = 42
        self.time = 1_700_000_000
        self.caller = b"borrower"
        self.self_address = b"loan-1"
        self.value = 250
        self.storage: dict[bytes, object] = {}
        self.balances = {b"loan-1": contract_balance, b"lender": 7}
        self.payments: list[tuple[bytes, int]] = []
        self.events: list[tuple[str, list]] = []
        self.wakes: list[int] = []
        self.released = 0
        self.seized: list[bytes] = []

    def storage_get(self, key):
        return self.storage.get(key)

    def storage_put(self, key, value):
        self.storage[key] = value

    def storage_del(self, key):
        self.storage.pop(key, None)

    def balance(self, addr):
        return self.balances.get(addr, 0)

    def pay(self, to, amount):
        if amount > self.balances[self.self_address]:
            raise ContractError("insufficient contract balance")
        self.balances[self.self_address] -= amount
        self.balances[to] = self.balances.get(to, 0) + amount
        self.payments.append((to, amount))

    def emit(self, name, values):
        self.events.append((name, values))

    def wake(self, t):
        self.wakes.append(t)

    def release_liens(self):
        self.released += 1

    def seize_liens(self, to):
        self.seized.append(to)


def run(source: str, args=(), gas: int = 100_000, host: FakeHost | None = None):
    return execute(Program.load(assemble(source)), host or FakeHost(), list(args), gas)


def value(source: str, args=(), **kw):
    return run(source, args, **kw).value


def trap(source: str, args=(), **kw) -> ContractError:
    with pytest.raises(ContractError) as info:
        run(source, args, **kw)
    return info.value


def code_of(*instrs) -> bytes:
    """Hand-built bytecode: each item is (name,) or (name, immediate)."""
    return bytes((vm.VERSION,)) + b"".join(
        encode_instruction(OPS_BY_NAME[name], *imm) for name, *imm in instrs)


def rejected(code: bytes) -> BytecodeError:
    with pytest.raises(BytecodeError) as info:
        Program.load(code)
    return info.value


# ---------------------------------------------------------------------------------------
# Arithmetic

@pytest.mark.parametrize("op, a, b, want", [
    ("add", 5, -7, -2), ("sub", 5, 7, -2), ("mul", -6, 7, -42),
    ("div", -7, 2, -4), ("div", 7, -2, -4), ("mod", -7, 2, 1), ("mod", 7, -2, -1),
    ("min", 3, -3, -3), ("max", 3, -3, 3), ("exp", -2, 3, -8), ("exp", 0, 0, 1),
    ("lt", 1, 2, 1), ("gt", 1, 2, 0), ("le", 2, 2, 1), ("ge", 1, 2, 0),
    ("eq", 2, 2, 1), ("ne", 2, 2, 0), ("and", 2, 0, 0), ("and", 2, -1, 1),
    ("or", 0, 0, 0), ("or", 0, 5, 1),
])
def test_binary_int_ops(op, a, b, want):
    assert value(f"push {a}\npush {b}\n{op}\nret") == want


def test_not_and_mixed_type_equality():
    assert value("push 0\nnot\nret") == 1
    assert value("push 9\nnot\nret") == 0
    assert value('push 1\npushb 0x01\neq\nret') == 0
    assert value('push 1\npushb 0x01\nne\nret') == 1
    assert value('pushb "ab"\npushb "ab"\neq\nret') == 1


@pytest.mark.parametrize("source", [
    f"push {hex(BIG)}\npush 1\nadd\nret",
    f"push -{hex(BIG)}\npush 1\nsub\nret",
    f"push {hex(1 << 8192)}\ndup\nmul\nret",
    f"push {hex(BIG)}\npush 2\nmul\nret",
    "push 2\npush 16384\nexp\nret",
    "push 3\npush 65535\nexp\nret",
    f"push {hex(BIG)}\npush 2\npush 1\nmuldiv floor\nret",
])
def test_overflow_traps(source):
    assert trap(source).message == "integer overflow"


def test_limits_are_inclusive_of_the_largest_value():
    assert value(f"push {hex(BIG - 1)}\npush 1\nadd\nret") == BIG
    assert value("push 2\npush 16383\nexp\nret") == 1 << 16383
    assert value("push -1\npush 65535\nexp\nret") == -1
    assert value("push 1\npush 65535\nexp\nret") == 1


def test_exponent_bounds():
    assert "exponent" in trap("push 1\npush 65536\nexp\nret").message
    assert "exponent" in trap("push 2\npush -1\nexp\nret").message


def test_division_by_zero_names_pc_and_op():
    e = trap("push 1\npush 0\ndiv\nret")
    assert e.message == "division by zero"
    assert e.pc == 5 and e.op == "div"
    assert str(e) == "contract failed at pc 5 (div): division by zero"
    assert trap("push 1\npush 0\nmod\nret").message == "division by zero"
    assert trap("push 1\npush 1\npush 0\nmuldiv ceil\nret").message == "division by zero"


MULDIV = Program.load(assemble(
    "arg 0\narg 1\narg 2\narg 3\njnz not_floor\nmuldiv floor\nret\n"
    "not_floor:\narg 3\npush 1\neq\njz half\nmuldiv ceil\nret\nhalf:\nmuldiv half_even\nret"))
ints = st.integers(-10**30, 10**30)


@given(ints, ints, ints.filter(bool))
def test_muldiv_rounding_matches_fractions(a, b, c):
    exact = Fraction(a * b, c)

    def md(mode):
        return execute(MULDIV, FakeHost(), [a, b, c, mode], 1000).value

    assert md(0) == math.floor(exact)
    assert md(1) == math.ceil(exact)
    assert md(2) == round(exact)            # Fraction rounds ties to even


@pytest.mark.parametrize("a, c, want", [(5, 2, 2), (7, 2, 4), (-5, 2, -2), (-7, 2, -4),
                                        (5, -2, -2), (3, 4, 1), (-3, 4, -1), (1, 4, 0)])
def test_muldiv_half_even_ties(a, c, want):
    assert execute(MULDIV, FakeHost(), [a, 1, c, 2], 1000).value == want


# ---------------------------------------------------------------------------------------
# Bytes, stack and crypto

def test_stack_shuffles():
    assert value("push 1\npush 2\nswap\nsub\nret") == 1
    assert value("push 1\npush 2\npush 3\nrot\nret") == 1                  # 2 3 1
    assert value("push 1\npush 2\npush 3\nrot\npop\nret") == 3
    assert value("push 5\npush 2\nover\nsub\nret") == -3                   # 5 2 5
    assert value("push 1\npush 2\ndup2\nadd\nadd\nadd\nret") == 6
    assert value("push 10\npush 20\npush 30\ndig 2\nret") == 10
    assert value("push 10\ndig 0\nadd\nret") == 20


def test_bytes_ops():
    assert value('pushb "ab"\npushb "cd"\nconcat\nret') == b"abcd"
    assert value('pushb "abc"\nlen\nret') == 3
    assert value('pushb ""\nsha256\nret') == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert value("push 258\nitob\nret") == b"\0\0\0\0\0\0\x01\x02"
    assert value("pushb 0x0102\nbtoi\nret") == 258
    assert value("pushb 0x\nbtoi\nret") == 0
    assert value(f"push {2**64 - 1}\nitob\nbtoi\nret") == 2**64 - 1


@pytest.mark.parametrize("source, words", [
    ("push 1\npushb 0x01\nadd\nret", ("int", "bytes")),
    ("pushb 0x01\nnot\nret", ("int",)),
    ("push 1\npush 2\nconcat\nret", ("bytes",)),
    ("push 1\nlen\nret", ("bytes",)),
    ("pushb 0x01\njz end\nend:", ("int",)),
    ("push 1\npush 1\npushb 0x01\nmuldiv floor\nret", ("int",)),
    ("push 1\nsget\nret", ("key", "bytes")),
])
def test_type_errors_name_op_and_expected_type(source, words):
    e = trap(source)
    for word in words:
        assert word in e.message
    assert f"({e.op})" in str(e) and e.op in source


@pytest.mark.parametrize("source, fragment", [
    ("push -1\nitob\nret", "8 unsigned bytes"),
    (f"push {2**64}\nitob\nret", "8 unsigned bytes"),
    ("pushb 0x000000000000000001\nbtoi\nret", "longer than 8"),
    ("pushb 0x" + "aa" * 4000 + "\ndup\nconcat\nret", "exceeds 4096"),
    ('fail "loan is closed"', "loan is closed"),
    ("fail", "fail"),
    ('push 0\nassert "not the borrower"', "not the borrower"),
    ("push 0\nassert", "assertion failed"),
    ("arg 3\nret", "arg 3 requested"),
    ("pushb 0x" + "00" * 65 + "\nsget\nret", "exceeds 64"),
    ("push 7\npush 1\npay", "address must be bytes"),
    ('pushb "x"\npush -1\npay', "outside 0..2**64-1"),
    ("push -5\nwake", "outside 0..2**63-1"),
    (f"push {hex(BIG)}\nwake", "a 16384-bit integer"),     # never str() a huge int
    (f"push {hex(BIG)}\nitob", "a 16384-bit integer"),
    ("pushb 0xff\nemit 0", "utf-8"),
])
def test_trap_messages(source, fragment):
    assert fragment in trap(source).message


def test_ed25519verify():
    key = SigningKey(bytes(range(32)))
    msg = b"repay 100"
    sig = key.sign(msg).signature
    pk = key.verify_key.encode()

    def check(m, s, p):
        return value(f"pushb 0x{m.hex()}\npushb 0x{s.hex()}\npushb 0x{p.hex()}\n"
                     "ed25519verify\nret")

    assert check(msg, sig, pk) == 1
    assert check(b"repay 999", sig, pk) == 0
    assert check(msg, sig[:-1], pk) == 0
    assert check(msg, sig, pk + b"\0") == 0
    assert check(msg, bytes(64), bytes(32)) == 0
    assert "bytes" in trap("push 1\npush 2\npush 3\ned25519verify\nret").message


# ---------------------------------------------------------------------------------------
# Gas

def test_gas_is_exact_and_deterministic():
    assert run("push 2\npush 3\nadd\nret").gas_used == 4
    assert run("push 2\npush 3\nmul\nret").gas_used == 5
    source = "push 0\nstore 0\nl:\nload 0\npush 1\nadd\ndup\nstore 0\npush 50\nlt\njnz l\n" \
             'pushb "k"\nload 0\nsput\nload 0\nret'
    first, second = run(source), run(source)
    assert first == second and first.gas_used == 2 + 50 * 8 + 1 + 1 + 20 + 2


def test_size_surcharges():
    assert run("pushb 0x" + "00" * 128 + "\npop").gas_used == (1 + 2) + 1
    assert run("pushb 0x" + "00" * 4096 + "\nsha256\npop").gas_used == (1 + 64) + (10 + 64) + 1
    assert run('pushb "k"\npushb 0x' + "00" * 64 + "\nsput").gas_used == 1 + (1 + 1) + 20 + 2
    assert run('push 1\npush 2\npushb "e"\nemit 2').gas_used == 3 + 12
    big = hex(1 << 1000)                                       # 1001 bits: 3 words
    assert run(f"push {big}\npush {big}\nmul\npop").gas_used == 1 + 1 + (2 + 7 + 9) + 1


def test_out_of_gas_charges_the_whole_limit():
    with pytest.raises(OutOfGas) as info:
        run("loop:\njmp loop", gas=10_000)
    e = info.value
    assert e.message == "out of gas" and e.gas_used == 10_000 and e.pc == 1
    assert str(e) == "contract failed at pc 1 (jmp): out of gas"


def test_gas_is_charged_before_the_instruction_runs():
    # ed25519verify costs 2000: with 2002 gas left only for the pushes it never runs
    with pytest.raises(OutOfGas):
        run("pushb 0x\npushb 0x\npushb 0x\ned25519verify\nret", gas=2002)
    assert run("pushb 0x\npushb 0x\npushb 0x\ned25519verify\nret", gas=2004).value == 0


def test_surcharge_can_run_out_of_gas():
    with pytest.raises(OutOfGas):
        run("pushb 0x" + "00" * 4096 + "\nsha256\nret", gas=70)


def test_trap_reports_gas_used_so_far():
    e = trap("push 1\npush 0\ndiv\nret")
    assert e.gas_used == 1 + 1 + 2


# ---------------------------------------------------------------------------------------
# Control flow and subroutines

def test_fall_off_end_and_stop_return_none():
    assert run("push 1").value is None
    assert run("push 1\nstop\npush 2\nret").value is None
    assert value("jmp end\npush 1\nret\nend:") is None


SUBS = """
    push 5
    callsub fact
    push 3
    push 4
    callsub hyp2
    add
    ret
fact:                   ; recursive: n -> n!
    proto 1 1
    dup
    push 1
    le
    jnz base
    dup
    push 1
    sub
    callsub fact
    mul
base:
    retsub
hyp2:                   ; a b -> a*a + b*b
    proto 2 1
    dup
    mul
    swap
    dup
    mul
    add
    retsub
"""


def test_subroutines_with_proto():
    assert value(SUBS) == 120 + 25


def test_call_depth_limit():
    source = "push 0\ncallsub f\nret\nf:\nproto 1 1\npush 1\nadd\ncallsub f\nretsub"
    e = trap(source)
    assert "call depth exceeds 64" in e.message and e.op == "callsub"


def test_runtime_stack_limit_across_frames():
    # each frame keeps 8 values; the verifier accepts the frame, the runtime stops the
    # call that could push the whole stack past 256
    body = "\n".join(["push 0"] * 8)
    source = f"callsub f\nstop\nf:\nproto 0 0\n{body}\ncallsub f\n" + "pop\n" * 8 + "retsub"
    e = trap(source, gas=10**6)
    assert "stack overflow" in e.message


def test_assert_passes_on_nonzero():
    assert value('push 3\nassert "x"\npush 1\nret') == 1


# ---------------------------------------------------------------------------------------
# Host interface

def test_context_ops():
    host = FakeHost()
    assert value("height\nret", host=host) == 42
    assert value("time\nret", host=host) == 1_700_000_000
    assert value("caller\nret", host=host) == b"borrower"
    assert value("self\nret", host=host) == b"loan-1"
    assert value("value\nret", host=host) == 250
    assert value("nargs\nret", [1, b"x"]) == 2
    assert value("arg 1\nret", [1, b"x"]) == b"x"


def test_storage_goes_to_the_host():
    host = FakeHost()
    run('pushb "due"\npush 500\nsput\npushb "who"\npushb "bob"\nsput', host=host)
    assert host.storage == {b"due": 500, b"who": b"bob"}
    assert value('pushb "due"\nsget\nret', host=host) == 500
    assert value('pushb "nope"\nsget\nret', host=host) == 0
    assert value('pushb "who"\nshas\nret', host=host) == 1
    run('pushb "who"\nsdel', host=host)
    assert value('pushb "who"\nshas\nret', host=host) == 0


def test_ledger_effects_go_to_the_host():
    host = FakeHost()
    run('pushb "lender"\npush 300\npay\n'
        'push 1\npushb "x"\npushb "repaid"\nemit 2\n'
        'push 1700086400\nwake\nrelease\npushb "lender"\nseize\n'
        'pushb "lender"\nbalance\nret', host=host)
    assert host.payments == [(b"lender", 300)]
    assert host.events == [("repaid", [1, b"x"])]
    assert host.wakes == [1_700_086_400]
    assert host.released == 1 and host.seized == [b"lender"]
    assert value('pushb "lender"\nbalance\nret', host=host) == 307


def test_host_errors_get_pc_and_gas():
    e = trap('pushb "lender"\npush 5000\npay', host=FakeHost(contract_balance=10))
    assert e.message == "insufficient contract balance"
    assert e.pc == 13 and e.op == "pay" and e.gas_used == 1 + 1 + 30


@pytest.mark.parametrize("args, fragment", [
    ([0] * 17, "17 arguments"),
    ([True], "must be int or bytes"),
    ([1.5], "must be int or bytes"),
    ([1 << INT_BITS], "integer range"),
    ([b"x" * 4097], "longer than 4096"),
])
def test_arguments_are_checked(args, fragment):
    assert fragment in trap("stop", args).message


# ---------------------------------------------------------------------------------------
# Verifier

@pytest.mark.parametrize("code, fragment", [
    (b"", "empty program"),
    (b"\x02", "unsupported version 2"),
    (b"\x01\x00", "unknown opcode 0x00"),
    (b"\x01\xff", "unknown opcode 0xff"),
    (b"\x01\x10", "truncated immediate"),                       # push, no varint
    (b"\x01\x10\x80", "truncated immediate"),                   # unfinished varint
    (b"\x01\x10\x80\x00", "non-canonical"),
    (b"\x01\x10" + b"\xff" * 2400 + b"\x01", "longer than"),
    (b"\x01\x11\x00\x05abc", "truncated immediate"),            # pushb short
    (b"\x01\x11\x10\x01" + b"x" * 4097, "limit is 4096"),
    (b"\x01\x50\x00", "truncated immediate"),                   # jmp, one byte
    (b"\x01\x54\x01", "truncated immediate"),                   # proto, one byte
    (b"\x01\x28", "truncated immediate"),                       # muldiv, no mode
    (b"\x01\x10\x02\x10\x02\x10\x02\x28\x03", "rounding mode 3"),
    (b"\x01\x58\x00\x02\xff\xfe", "not valid utf-8"),
    (b"\x01\x58\x00\x02a\n", "control characters"),
    (b"\x01\x58\x00\xc9" + b"a" * 201, "longer than 200"),
    (b"\x01" + b"\x57" * 65535, "limit is 65535"),
])
def test_verifier_rejects_malformed_encoding(code, fragment):
    assert fragment in str(rejected(code))


def test_verifier_rejects_jump_into_an_immediate():
    code = code_of(("push", 1000), ("jmp", 2))       # push's varint starts at offset 2
    e = rejected(code)
    assert e.offset == 4 and "not the start of an instruction" in str(e)
    assert "at offset 4 (jmp)" in str(e)


def test_verifier_rejects_stack_underflow_on_some_path():
    # arg 0 @1, jz @3, stop @6, pop @7: the pop is reached only by the jump, with height 0
    code = code_of(("arg", 0), ("jz", 7), ("stop",), ("pop",))
    e = rejected(code)
    assert e.offset == 7 and "stack underflow" in e.reason


def test_verifier_rejects_inconsistent_heights_at_a_join():
    # arg 0 @1, jz @3, push 1 @6, push 2 @8: height 1 at 8 by fall-through, 0 by the jump
    code = code_of(("arg", 0), ("jz", 8), ("push", 1), ("push", 2), ("stop",))
    e = rejected(code)
    assert e.offset == 8 and "on one path" in e.reason


def test_verifier_rejects_underflow_at_start():
    assert "stack underflow" in rejected(code_of(("add",))).reason


def test_verifier_rejects_callsub_to_non_proto():
    code = code_of(("callsub", 4), ("stop",), ("push", 1), ("retsub",))
    assert "does not start with proto" in rejected(code).reason


def test_verifier_rejects_subroutine_shape_errors():
    assert "retsub outside" in rejected(code_of(("retsub",))).reason
    # wrong number of results: callsub @1, pop @4, stop @5, proto @6, retsub @9
    code = code_of(("callsub", 6), ("pop",), ("stop",), ("proto", (0, 1)), ("retsub",))
    e = rejected(code)
    assert e.offset == 9 and "declares 1 results" in e.reason
    # falling into a proto: callsub @1, pop @4, push @5, proto @7, push @10, retsub @12
    code = code_of(("callsub", 7), ("pop",), ("push", 1), ("proto", (0, 1)), ("push", 1),
                   ("retsub",))
    assert "without callsub" in rejected(code).reason
    # popping more than its arguments: push @1, push @3, callsub @5, stop @8, proto @9
    code = code_of(("push", 1), ("push", 2), ("callsub", 9), ("stop",), ("proto", (1, 0)),
                   ("pop",), ("pop",), ("retsub",))
    assert "stack underflow" in rejected(code).reason
    # main body and subroutine sharing code: callsub @1, jmp @4, proto @7, stop @10
    code = code_of(("callsub", 7), ("jmp", 10), ("proto", (0, 0)), ("stop",))
    assert "reachable from both" in rejected(code).reason


def test_verifier_rejects_static_stack_overflow():
    assert "exceed 256" in rejected(code_of(*[("push", 0)] * 257)).reason
    Program.load(code_of(*[("push", 0)] * 256))


_OPCODE_BYTES = sorted(op.code for op in vm.OPCODES)


@settings(max_examples=400)
@given(st.lists(st.one_of(st.sampled_from(_OPCODE_BYTES), st.integers(0, 255)), max_size=48))
def test_arbitrary_bytecode_fails_only_in_the_documented_ways(body):
    # Mostly-valid opcode bytes so that some programs pass the verifier and run.
    try:
        program = Program.load(bytes([1] + body))
    except BytecodeError:
        return
    with contextlib.suppress(ContractError):   # a trap is a documented outcome
        execute(program, FakeHost(), [1, b"x"], 5000)


def test_program_cache_is_shared_and_bounded():
    code = assemble("push 1\nret")
    assert Program.load(code) is Program.load(bytes(code))
    assert Program.load(code).code_hash == hashlib.sha256(code).digest()
    for i in range(vm.PROGRAM_CACHE_SIZE + 10):
        Program.load(code_of(("push", i), ("ret",)))
    assert len(vm._program_cache) == vm.PROGRAM_CACHE_SIZE


# ---------------------------------------------------------------------------------------
# Assembler

def test_assembler_features():
    source = """
    .version 1
    .const RATE 1200          ; basis points
    .const YEAR 0x2710
    .slot ACC 3
    .macro DOUBLE
        dup
        add
    .endm
    .macro TIMES4
        DOUBLE
        DOUBLE
    .endm
        push RATE
        TIMES4
        store ACC
        load ACC
        push 1_000
        push YEAR
        muldiv half_even
        ret
    """
    assert value(source) == round(Fraction(4800 * 1000, 10000))


def test_macro_local_labels_are_unique_per_expansion():
    source = """
    .macro CLAMP0           ; x -> max(x, 0) with a branch
        dup
        push 0
        lt
        jz %done
        pop
        push 0
    %done:
    .endm
        push -5
        CLAMP0
        push 7
        CLAMP0
        add
        ret
    """
    assert value(source) == 7


def test_pushb_string_escapes():
    assert value(r'pushb "a\"b\\c ; d"' + "\nret") == b'a"b\\c ; d'


@pytest.mark.parametrize("source, fragment", [
    ("push 1\nfrob\nret", "line 2: unknown opcode 'frob'"),
    ("push\nret", "line 1: push: missing operand"),
    ("add 3", "line 1: add: unexpected operand"),
    ("jmp nowhere", "line 1: undefined label nowhere"),
    ("a:\npush 1\na:\nret", "line 3: label a is already defined at line 1"),
    ("load 256", "line 1: load: load immediate must be 0..255"),
    (f"push {hex(1 << INT_BITS)}", "line 1: push:"),
    ("push 1\n.version 1", "line 2: .version must come first"),
    (".version 2", "line 1: only .version 1"),
    (".bogus 1", "line 1: unknown directive"),
    ('pushb "abc', "line 1: unterminated string"),
    (r'pushb "a\n"', "line 1: unknown escape"),
    ("pushb 0xabc", "line 1: pushb: expected"),
    (".const X 1\n.const X 2", "line 2: X is already defined"),
    (".slot S 300", "line 1: slot S is out of range"),
    ("push Y", "line 1: expected an integer or a defined name"),
    ("jmp %x", "line 1: %x: % labels are only allowed inside macros"),
    (".macro M\nM\n.endm\nM", "line 2: macro M expands itself"),
    (".macro M\npush 1", "line 1: macro M has no .endm"),
    (".endm", "line 1: .endm without .macro"),
    (".macro M\nx: .endm", "line 2: a label cannot be attached to a directive"),
    (".macro add\n.endm", "line 1: macro name add is an opcode"),
    (".macro M\nfrob\n.endm\nM", "line 2: unknown opcode 'frob' (in macro M expanded at line 4)"),
    ("muldiv sideways", "line 1: expected an integer or a defined name"),
    ("push 1\npush 0\nmuldiv 5", "line 3: muldiv: muldiv rounding mode"),
    ("push 1\n\nadd\nret", "line 3: stack underflow"),
    ("retsub", "line 1: retsub outside a subroutine"),
    ("push " + "9" * 5000, "line 1: integer literal too long"),
    ('assert "a\tb"', "line 1: assert: message contains control characters"),
])
def test_assembler_errors_have_line_numbers(source, fragment):
    with pytest.raises(AsmError) as info:
        assemble(source)
    assert fragment in str(info.value)


SAMPLES = [
    SUBS,
    "push 0\nloop:\npush 1\nadd\ndup\npush 10\nlt\njnz loop\nret\nend:",
    'jmp end\npushb "he said \\"hi\\" \\\\ ok"\npop\nend:\nfail "done: ünïcode"',
    f"push {hex(BIG)}\npush -{hex(BIG)}\nadd\npushb 0x00ff\npop\nret",
    "push 1\npush 2\npush 3\nmuldiv ceil\npush 1\npush 1\npush 1\nmuldiv floor\n"
    "add\nassert\nstop",
]


@pytest.mark.parametrize("source", SAMPLES)
def test_disassemble_round_trips_samples(source):
    code = assemble(source)
    text = disassemble(code)
    assert assemble(text) == code
    assert disassemble(assemble(text)) == text
    assert assemble(disassemble(code, offsets=True)) == code


# Straight-line programs built by tracking the stack height so they always verify.
_NULLARY = ["height", "time", "caller", "self", "value", "nargs"]
_BINARY = ["add", "sub", "mul", "min", "max", "lt", "eq", "ne", "and", "or", "swap", "over",
           "dup2", "concat"]
_UNARY = ["pop", "dup", "not", "len", "sha256", "itob", "btoi", "sget", "shas", "wake"]


@st.composite
def straight_line(draw):
    instrs, height = [], 0
    for _ in range(draw(st.integers(0, 30))):
        choice = draw(st.sampled_from(["push", "pushb", "nullary", "unary", "binary",
                                       "muldiv", "dig", "load", "store", "assert", "emit"]))
        if choice == "push":
            instrs.append(("push", draw(st.one_of(st.integers(-2**70, 2**70),
                                                 st.integers(-BIG, BIG)))))
        elif choice == "pushb":
            instrs.append(("pushb", draw(st.binary(max_size=40))))
        elif choice == "nullary":
            instrs.append((draw(st.sampled_from(_NULLARY)),))
        elif choice == "load":
            instrs.append(("load", draw(st.integers(0, 255))))
        elif choice == "unary" and height >= 1:
            instrs.append((draw(st.sampled_from(_UNARY)),))
        elif choice == "binary" and height >= 2:
            instrs.append((draw(st.sampled_from(_BINARY)),))
        elif choice == "muldiv" and height >= 3:
            instrs.append(("muldiv", draw(st.integers(0, 2))))
        elif choice == "dig" and height >= 1:
            instrs.append(("dig", draw(st.integers(0, height - 1))))
        elif choice == "store" and height >= 1:
            instrs.append(("store", draw(st.integers(0, 255))))
        elif choice == "assert" and height >= 1:
            instrs.append(("assert", draw(st.text(
                st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=(
                    "Cc",)), max_size=20))))
        elif choice == "emit" and height >= 1:
            instrs.append(("emit", draw(st.integers(0, height - 1))))
        else:
            continue
        op = OPS_BY_NAME[instrs[-1][0]]
        if op.name == "dig":
            height += 1
        elif op.name == "emit":
            height -= instrs[-1][1] + 1
        else:
            height += op.pushes - op.pops
        if height >= 200:
            break
    instrs.append(("stop",))
    return code_of(*instrs)


@settings(max_examples=150)
@given(straight_line())
def test_generated_programs_round_trip_and_run(code):
    program = Program.load(code)
    assert assemble(disassemble(code)) == code
    with contextlib.suppress(ContractError):   # type errors and overflows are expected
        execute(program, FakeHost(), [], 100_000)


def test_docs_opcode_table_matches_the_vm():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "VM.md").read_text("utf-8")
    rows = re.findall(r"^\| `([a-z0-9]+)` \| 0x([0-9a-f]{2}) \|.*\| (\d+)(?: \+(?: n)?)? \|$",
                      doc, re.MULTILINE)
    assert {name: (int(code, 16), int(gas)) for name, code, gas in rows} == {
        op.name: (op.code, op.gas) for op in vm.OPCODES}
