"""The deterministic contract VM that runs lending agreements inside consensus.

A small stack machine in the spirit of Algorand's AVM and the EVM's gas: values are Python
ints (bounded, checked on every arithmetic result) or bytes (bounded length); there are no
floats, no clock, no randomness and no I/O -- everything outside the program comes from the
`Host` (the ledger), which supplies block time/height and journals every write so that it
can undo them when `execute` raises.

Bytecode is verified once (`Program.load`: structure, jump targets, a static stack-height
check over the control-flow graph) and decoded into a tuple of pre-resolved instructions,
so the interpreter loop never re-parses bytes and never has to check for stack underflow.
`OPCODES` is the single table the VM, verifier, assembler, disassembler and docs agree on.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn, Protocol

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

VERSION = 1
INT_BITS = 16384                 # every int satisfies |x| < 2**INT_BITS
INT_LIMIT = 1 << INT_BITS
MAX_BYTES = 4096                 # longest bytes value
MAX_STACK = 256                  # deepest value stack, across all call frames
MAX_CALL_DEPTH = 64              # deepest callsub nesting
MAX_PROGRAM = 65535              # longest bytecode, so u16 jump offsets reach everywhere
SCRATCH_SLOTS = 256
MAX_ARGS = 16
MAX_KEY = 64                     # longest storage key and event name
MAX_MESSAGE = 200                # longest fail/assert message (utf-8 bytes)
MAX_VARINT = INT_BITS // 7 + 2   # longest push immediate
MAX_EXPONENT = 65535
MAX_U64 = (1 << 64) - 1
MAX_TIME = (1 << 63) - 1         # wake times must stay encodable by the ledger's codec
PROGRAM_CACHE_SIZE = 256

_INT_HI = INT_LIMIT
_INT_LO = -INT_LIMIT


# ---------------------------------------------------------------------------------------
# Errors and results

class ContractError(Exception):
    """A runtime trap. The host undoes every write of the call when it sees one."""

    def __init__(self, message: str, pc: int | None = None, gas_used: int = 0,
                 op: str | None = None):
        super().__init__(message)
        self.message = message
        self.pc = pc            # byte offset of the failing instruction
        self.op = op            # its opcode name
        self.gas_used = gas_used

    def __str__(self) -> str:
        if self.pc is None:
            return f"contract failed: {self.message}"
        return f"contract failed at pc {self.pc} ({self.op}): {self.message}"


class OutOfGas(ContractError):
    """The gas limit was reached; `gas_used` is then the whole limit, as in the EVM."""


class BytecodeError(ValueError):
    """Bytecode rejected by the verifier; `offset` is where, `reason` is why."""

    def __init__(self, reason: str, offset: int | None = None, op: str | None = None):
        where = "" if offset is None else f"at offset {offset}" + (f" ({op})" if op else "") + ": "
        super().__init__(where + reason)
        self.reason = reason
        self.offset = offset


class Outcome(NamedTuple):
    value: int | bytes | None    # what `ret` returned; None after `stop` or the end
    gas_used: int


class Host(Protocol):
    """What the ledger gives a running contract. Any method may raise ContractError."""

    height: int
    time: int
    caller: bytes
    self_address: bytes
    value: int

    def storage_get(self, key: bytes) -> int | bytes | None: ...
    # May return gas to charge for the write (the ledger's storage fee); None is 0.
    def storage_put(self, key: bytes, value: int | bytes) -> int | None: ...
    def storage_del(self, key: bytes) -> None: ...
    def balance(self, addr: bytes) -> int: ...
    def pay(self, to: bytes, amount: int) -> None: ...
    def emit(self, name: str, values: list) -> None: ...
    # May return gas to charge for the wake-up (the ledger's price of a future tick).
    def wake(self, t: int) -> int | None: ...
    def release_liens(self) -> None: ...
    def seize_liens(self, to: bytes) -> None: ...


# ---------------------------------------------------------------------------------------
# The opcode table

IMM_NONE = "none"
IMM_INT = "int"          # signed varint: zigzag + LEB128, canonical
IMM_BYTES = "bytes"      # u16 big-endian length + bytes
IMM_U8 = "u8"
IMM_TARGET = "target"    # u16 big-endian absolute byte offset of an instruction
IMM_PROTO = "proto"      # u8 args, u8 returns
IMM_ROUND = "round"      # u8 rounding mode
IMM_MSG = "msg"          # u16 length + utf-8 text

ROUND_FLOOR, ROUND_CEIL, ROUND_HALF_EVEN = 0, 1, 2
ROUNDING_NAMES = ("floor", "ceil", "half_even")


class OpSpec(NamedTuple):
    name: str
    code: int
    imm: str
    pops: int | None     # None: depends on the immediate or the callee (see _check_stack)
    pushes: int | None
    gas: int             # base gas; size surcharges are charged by the op itself
    effect: str          # stack effect as documented, top of stack rightmost


OPCODES: tuple[OpSpec, ...] = (
    # stack
    OpSpec("pop", 0x01, IMM_NONE, 1, 0, 1, "a →"),
    OpSpec("dup", 0x02, IMM_NONE, 1, 2, 1, "a → a a"),
    OpSpec("dup2", 0x03, IMM_NONE, 2, 4, 1, "a b → a b a b"),
    OpSpec("swap", 0x04, IMM_NONE, 2, 2, 1, "a b → b a"),
    OpSpec("over", 0x05, IMM_NONE, 2, 3, 1, "a b → a b a"),
    OpSpec("rot", 0x06, IMM_NONE, 3, 3, 1, "a b c → b c a"),
    OpSpec("dig", 0x07, IMM_U8, None, None, 1, "x_n … x_0 → x_n … x_0 x_n"),
    # constants and scratch
    OpSpec("push", 0x10, IMM_INT, 0, 1, 1, "→ n"),
    OpSpec("pushb", 0x11, IMM_BYTES, 0, 1, 1, "→ bytes"),
    OpSpec("load", 0x14, IMM_U8, 0, 1, 1, "→ scratch[s]"),
    OpSpec("store", 0x15, IMM_U8, 1, 0, 1, "a →  (scratch[s] = a)"),
    # integer arithmetic
    OpSpec("add", 0x20, IMM_NONE, 2, 1, 1, "a b → a+b"),
    OpSpec("sub", 0x21, IMM_NONE, 2, 1, 1, "a b → a-b"),
    OpSpec("mul", 0x22, IMM_NONE, 2, 1, 2, "a b → a*b"),
    OpSpec("div", 0x23, IMM_NONE, 2, 1, 2, "a b → floor(a/b)"),
    OpSpec("mod", 0x24, IMM_NONE, 2, 1, 2, "a b → a mod b (sign of b)"),
    OpSpec("min", 0x25, IMM_NONE, 2, 1, 1, "a b → min(a,b)"),
    OpSpec("max", 0x26, IMM_NONE, 2, 1, 1, "a b → max(a,b)"),
    OpSpec("exp", 0x27, IMM_NONE, 2, 1, 5, "a b → a**b"),
    OpSpec("muldiv", 0x28, IMM_ROUND, 3, 1, 3, "a b c → round(a*b/c)"),
    # comparison and logic
    OpSpec("lt", 0x30, IMM_NONE, 2, 1, 1, "a b → a<b"),
    OpSpec("gt", 0x31, IMM_NONE, 2, 1, 1, "a b → a>b"),
    OpSpec("le", 0x32, IMM_NONE, 2, 1, 1, "a b → a<=b"),
    OpSpec("ge", 0x33, IMM_NONE, 2, 1, 1, "a b → a>=b"),
    OpSpec("eq", 0x34, IMM_NONE, 2, 1, 1, "a b → a==b"),
    OpSpec("ne", 0x35, IMM_NONE, 2, 1, 1, "a b → a!=b"),
    OpSpec("not", 0x36, IMM_NONE, 1, 1, 1, "a → a==0"),
    OpSpec("and", 0x37, IMM_NONE, 2, 1, 1, "a b → a!=0 and b!=0"),
    OpSpec("or", 0x38, IMM_NONE, 2, 1, 1, "a b → a!=0 or b!=0"),
    # bytes
    OpSpec("concat", 0x40, IMM_NONE, 2, 1, 1, "a b → a||b"),
    OpSpec("len", 0x41, IMM_NONE, 1, 1, 1, "a → len(a)"),
    OpSpec("sha256", 0x42, IMM_NONE, 1, 1, 10, "a → sha256(a)"),
    OpSpec("itob", 0x43, IMM_NONE, 1, 1, 1, "n → 8 bytes big-endian"),
    OpSpec("btoi", 0x44, IMM_NONE, 1, 1, 1, "b → unsigned int"),
    # crypto
    OpSpec("ed25519verify", 0x48, IMM_NONE, 3, 1, 2000, "msg sig pubkey → 1/0"),
    # control
    OpSpec("jmp", 0x50, IMM_TARGET, 0, 0, 1, "→"),
    OpSpec("jz", 0x51, IMM_TARGET, 1, 0, 1, "a →  (jump if a == 0)"),
    OpSpec("jnz", 0x52, IMM_TARGET, 1, 0, 1, "a →  (jump if a != 0)"),
    OpSpec("callsub", 0x53, IMM_TARGET, None, None, 1, "args(A) → results(R)"),
    OpSpec("proto", 0x54, IMM_PROTO, 0, 0, 0, "declares A args, R results"),
    OpSpec("retsub", 0x55, IMM_NONE, None, None, 1, "results(R) →  (return)"),
    OpSpec("ret", 0x56, IMM_NONE, 1, 0, 1, "a →  (halt, returning a)"),
    OpSpec("stop", 0x57, IMM_NONE, 0, 0, 1, "→  (halt)"),
    OpSpec("fail", 0x58, IMM_MSG, 0, 0, 1, "→  (trap with msg)"),
    OpSpec("assert", 0x59, IMM_MSG, 1, 0, 1, "a →  (trap with msg if a == 0)"),
    # context
    OpSpec("height", 0x60, IMM_NONE, 0, 1, 1, "→ block height"),
    OpSpec("time", 0x61, IMM_NONE, 0, 1, 1, "→ block time"),
    OpSpec("caller", 0x62, IMM_NONE, 0, 1, 1, "→ caller address"),
    OpSpec("self", 0x63, IMM_NONE, 0, 1, 1, "→ this contract's address"),
    OpSpec("value", 0x64, IMM_NONE, 0, 1, 1, "→ amount sent with the call"),
    OpSpec("nargs", 0x65, IMM_NONE, 0, 1, 1, "→ number of call arguments"),
    OpSpec("arg", 0x66, IMM_U8, 0, 1, 1, "→ argument n"),
    # storage
    OpSpec("sget", 0x70, IMM_NONE, 1, 1, 10, "key → value (0 if absent)"),
    OpSpec("sput", 0x71, IMM_NONE, 2, 0, 20, "key value →"),
    OpSpec("sdel", 0x72, IMM_NONE, 1, 0, 10, "key →"),
    OpSpec("shas", 0x73, IMM_NONE, 1, 1, 10, "key → 1/0"),
    # ledger
    OpSpec("balance", 0x80, IMM_NONE, 1, 1, 10, "addr → balance"),
    OpSpec("pay", 0x81, IMM_NONE, 2, 0, 30, "to amount →"),
    OpSpec("emit", 0x82, IMM_U8, None, None, 10, "v1 … vn name →"),
    OpSpec("wake", 0x83, IMM_NONE, 1, 0, 10, "t →  (0 clears)"),
    OpSpec("release", 0x84, IMM_NONE, 0, 0, 50, "→  (release all liens)"),
    OpSpec("seize", 0x85, IMM_NONE, 1, 0, 50, "to →  (move all liened assets)"),
)

OPS_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPCODES}
OPS_BY_CODE: dict[int, OpSpec] = {op.code: op for op in OPCODES}
assert len(OPS_BY_NAME) == len(OPS_BY_CODE) == len(OPCODES)
assert 0x00 not in OPS_BY_CODE   # zeroed memory must never decode as a program


class Instruction(NamedTuple):
    offset: int
    op: OpSpec
    # Decoded immediate: int, bytes, str, (args, returns) or None. Which one is fixed by
    # op.imm, which a field's type cannot express, so each use relies on the kind decode()
    # checked.
    imm: Any


# ---------------------------------------------------------------------------------------
# Encoding (shared with the assembler) and structural decoding

def encode_varint(x: int) -> bytes:
    z = x << 1 if x >= 0 else ((-x) << 1) - 1      # zigzag: small magnitudes stay short
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _check_message(raw: bytes) -> str:
    """Messages end up in logs and UIs: bounded, valid utf-8, no control characters."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("message is not valid utf-8") from None
    # An explicit range, not str.isprintable(), which follows the Unicode version of the
    # running Python and so could differ between nodes.
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text):
        raise ValueError("message contains control characters")
    return text


def encode_instruction(op: OpSpec, imm=None) -> bytes:
    """Encode one instruction; `imm` as in `Instruction` (a byte offset for targets).

    Raises ValueError for any immediate the verifier would reject, so the assembler and
    the decoder can never disagree about what is valid.
    """
    kind = op.imm
    head = bytes((op.code,))
    if kind == IMM_NONE:
        if imm is not None:
            raise ValueError(f"{op.name} takes no immediate")
        return head
    if kind == IMM_INT:
        if type(imm) is not int or not _INT_LO < imm < _INT_HI:
            raise ValueError(f"push value must be an int with |x| < 2**{INT_BITS}")
        return head + encode_varint(imm)
    if kind == IMM_BYTES:
        if type(imm) is not bytes or len(imm) > MAX_BYTES:
            raise ValueError(f"pushb value must be at most {MAX_BYTES} bytes")
        return head + len(imm).to_bytes(2, "big") + imm
    if kind == IMM_U8:
        if type(imm) is not int or not 0 <= imm <= 255:
            raise ValueError(f"{op.name} immediate must be 0..255")
        return head + bytes((imm,))
    if kind == IMM_TARGET:
        if type(imm) is not int or not 0 <= imm <= MAX_PROGRAM:
            raise ValueError(f"{op.name} target must be 0..{MAX_PROGRAM}")
        return head + imm.to_bytes(2, "big")
    if kind == IMM_PROTO:
        args, returns = imm
        if not (0 <= args <= 255 and 0 <= returns <= 255):
            raise ValueError("proto args and returns must be 0..255")
        return head + bytes((args, returns))
    if kind == IMM_ROUND:
        if imm not in (ROUND_FLOOR, ROUND_CEIL, ROUND_HALF_EVEN):
            raise ValueError("muldiv rounding mode must be 0 (floor), 1 (ceil) or 2 (half_even)")
        return head + bytes((imm,))
    assert kind == IMM_MSG
    raw = imm.encode("utf-8")
    _check_message(raw)
    return head + len(raw).to_bytes(2, "big") + raw


def _read_varint(code: bytes, pos: int) -> tuple[int, int]:
    z = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(code):
            raise ValueError("truncated immediate")
        if pos - start >= MAX_VARINT:
            raise ValueError(f"push immediate longer than {MAX_VARINT} bytes")
        byte = code[pos]
        pos += 1
        z |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    if byte == 0 and pos - start > 1:
        raise ValueError("non-canonical varint (redundant trailing group)")
    x = (z >> 1) ^ -(z & 1)
    if not _INT_LO < x < _INT_HI:
        raise ValueError(f"push value out of range (|x| must be < 2**{INT_BITS})")
    return x, pos


def _read(code: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(code):
        raise ValueError("truncated immediate")
    return code[pos:pos + n]


def decode(code: bytes) -> list[Instruction]:
    """Split bytecode into instructions, checking everything local to one instruction
    and that every jump/callsub target is an instruction start (or the end of the program).
    Does not check stack heights: see `Program.load`."""
    if type(code) is not bytes:
        raise BytecodeError(f"bytecode must be bytes, got {type(code).__name__}")
    if len(code) > MAX_PROGRAM:
        raise BytecodeError(f"program is {len(code)} bytes, the limit is {MAX_PROGRAM}")
    if not code:
        raise BytecodeError("empty program (no version byte)")
    if code[0] != VERSION:
        raise BytecodeError(f"unsupported version {code[0]} (this VM runs version {VERSION})", 0)
    out: list[Instruction] = []
    pos = 1
    while pos < len(code):
        offset = pos
        op = OPS_BY_CODE.get(code[pos])
        if op is None:
            raise BytecodeError(f"unknown opcode 0x{code[pos]:02x}", offset)
        pos += 1
        kind = op.imm
        imm: int | bytes | str | tuple[int, ...] | None
        try:
            if kind == IMM_NONE:
                imm = None
            elif kind == IMM_INT:
                imm, pos = _read_varint(code, pos)
            elif kind == IMM_U8:
                imm = _read(code, pos, 1)[0]
                pos += 1
            elif kind == IMM_TARGET:
                imm = int.from_bytes(_read(code, pos, 2), "big")
                pos += 2
            elif kind == IMM_PROTO:
                imm = tuple(_read(code, pos, 2))
                pos += 2
            elif kind == IMM_ROUND:
                imm = _read(code, pos, 1)[0]
                pos += 1
                if imm > ROUND_HALF_EVEN:
                    raise ValueError(f"invalid muldiv rounding mode {imm}")
            else:
                n = int.from_bytes(_read(code, pos, 2), "big")
                raw = _read(code, pos + 2, n)
                pos += 2 + n
                if kind == IMM_BYTES:
                    if n > MAX_BYTES:
                        raise ValueError(f"pushb of {n} bytes, the limit is {MAX_BYTES}")
                    imm = raw
                else:
                    imm = _check_message(raw)
        except ValueError as e:
            raise BytecodeError(str(e), offset, op.name) from None
        out.append(Instruction(offset, op, imm))
    starts = {ins.offset for ins in out}
    starts.add(len(code))
    for ins in out:
        if ins.op.imm != IMM_TARGET:
            continue
        if ins.imm not in starts:
            raise BytecodeError(f"target {ins.imm} is not the start of an instruction",
                                ins.offset, ins.op.name)
    return out


# ---------------------------------------------------------------------------------------
# Static stack-height check

def _check_stack(instrs: list[Instruction], index_of: dict[int, int]) -> dict[int, int]:
    """Dataflow over the control-flow graph of every frame: the main body (start height 0)
    and each subroutine (entered after its proto with height A). Each instruction belongs
    to one frame and has one height on every path that reaches it, never below 0 (a frame
    cannot pop what it does not own) and never above MAX_STACK. Returns the maximum height
    of each subroutine, keyed by the index of its proto, for the runtime overflow check.
    """
    n = len(instrs)
    height: list[int | None] = [None] * n
    frame_of: list[int | None] = [None] * n     # -1: main body, else index of the proto
    max_height: dict[int, int] = {}

    def fail(i: int, reason: str) -> NoReturn:
        raise BytecodeError(reason, instrs[i].offset, instrs[i].op.name)

    def describe(frame: int) -> str:
        return "the main body" if frame < 0 else f"the subroutine at offset {instrs[frame].offset}"

    # Every callsub target is analysed, even one only called from dead code: what is
    # deployed is verified whole.
    frames = [(-1, 0, 0)]                       # (proto index or -1, entry index, height)
    for ins in instrs:
        if ins.op.name == "callsub":
            p = index_of[ins.imm]
            if p == n or instrs[p].op.name != "proto":
                raise BytecodeError(f"callsub target {ins.imm} does not start with proto",
                                    ins.offset, "callsub")
            if p not in max_height:
                max_height[p] = instrs[p].imm[0]
                frames.append((p, p + 1, instrs[p].imm[0]))

    for frame, entry, entry_height in frames:
        returns = instrs[frame].imm[1] if frame >= 0 else None
        peak = entry_height
        work: list[tuple[int, int, int | None]] = [(entry, entry_height, None)]
        while work:
            i, h, came_from = work.pop()
            if i == n:                              # falling off the end: stop
                continue
            ins = instrs[i]
            if ins.op.name == "proto":
                fail(i if came_from is None else came_from,
                     f"enters the proto at offset {ins.offset} without callsub")
            other = frame_of[i]
            if other is not None:
                if other != frame:
                    fail(i, f"reachable from both {describe(other)} and {describe(frame)}")
                if height[i] != h:
                    fail(i, f"stack height {height[i]} on one path and {h} on another")
                continue
            frame_of[i] = frame
            height[i] = h
            name = ins.op.name
            nxt = [i + 1]
            if name == "dig":
                need, after = ins.imm + 1, h + 1
            elif name == "emit":
                need, after = ins.imm + 1, h - ins.imm - 1
            elif name == "callsub":
                args, rets = instrs[index_of[ins.imm]].imm
                need, after = args, h - args + rets
            elif name == "retsub":
                if frame < 0:
                    fail(i, "retsub outside a subroutine")
                if h != returns:
                    fail(i, f"retsub with stack height {h}, the proto declares {returns} results")
                continue
            else:
                pops, pushes = ins.op.pops, ins.op.pushes
                assert pops is not None and pushes is not None  # None only for the ops above
                need, after = pops, h - pops + pushes
                if name == "jmp":
                    nxt = [index_of[ins.imm]]
                elif name in ("jz", "jnz"):
                    nxt = [i + 1, index_of[ins.imm]]
                elif name in ("ret", "stop", "fail"):
                    nxt = []
            if h < need:
                fail(i, f"stack underflow: needs {need} values, the frame has {h}")
            if after > MAX_STACK:
                fail(i, f"stack height would exceed {MAX_STACK}")
            peak = max(peak, after)
            for j in nxt:
                work.append((j, after, i))
        if frame >= 0:
            max_height[frame] = peak
    return max_height


# ---------------------------------------------------------------------------------------
# Runtime

class _Machine:
    """Mutable state of one execution (the Program itself is immutable and shared)."""

    __slots__ = ("stack", "scratch", "calls", "host", "args", "gas", "limit")

    def __init__(self, host: Host, args: tuple, limit: int):
        self.stack: list = []
        self.scratch: list = [0] * SCRATCH_SLOTS
        self.calls: list[int] = []
        self.host = host
        self.args = args
        self.gas = 0
        self.limit = limit


def _type_name(v) -> str:
    return "int" if type(v) is int else "bytes"


def _expected(kind: str, *values) -> ContractError:
    return ContractError(f"expected {kind} operands, got {', '.join(map(_type_name, values))}")


def _show(x: int) -> str:
    """An int for an error message: str() of a huge int is slow and, past 4300 digits,
    raises ValueError -- which would escape the VM as something other than a trap."""
    return str(x) if x.bit_length() <= 64 else f"a {x.bit_length()}-bit integer"


def _overflow() -> ContractError:
    return ContractError("integer overflow")


def _charge(m: _Machine, extra: int) -> None:
    """Size surcharge of big-int and bytes work, paid before the work is done.

    Big-int terms count 256-bit words (so values under 2**256 pay nothing extra): a linear
    term for the size and, for multiplication and division, a product-of-sizes term,
    because CPython's long multiply/divide cost grows with the product of the operand
    sizes (a 16k-bit muldiv takes ~1 ms; a linear charge alone would undercharge it ~40x).
    """
    if extra:
        m.gas += extra
        if m.gas > m.limit:
            raise OutOfGas("out of gas")


# Handlers (see the instruction kinds above _HANDLERS for their signatures). The verifier
# guarantees every pop has a value to take.

def _pop(s, _):
    s.pop()


def _dup(s, _):
    s.append(s[-1])


def _dup2(s, _):
    s.extend(s[-2:])


def _swap(s, _):
    s[-1], s[-2] = s[-2], s[-1]


def _over(s, _):
    s.append(s[-2])


def _rot(s, _):
    s[-3], s[-2], s[-1] = s[-2], s[-1], s[-3]


def _dig(s, n):
    s.append(s[-1 - n])


def _push(s, v):
    s.append(v)


def _add(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    r = a + b
    if not _INT_LO < r < _INT_HI:
        raise _overflow()
    s[-1] = r


def _sub(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    r = a - b
    if not _INT_LO < r < _INT_HI:
        raise _overflow()
    s[-1] = r


def _min(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    if b < a:
        s[-1] = b


def _max(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    if b > a:
        s[-1] = b


def _mul(m, _):
    s = m.stack
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    abits, bbits = a.bit_length(), b.bit_length()
    # |a*b| >= 2**(abits-1 + bbits-1): refuse a certain overflow before paying for it.
    if abits + bbits - 2 >= INT_BITS:
        raise _overflow()
    _charge(m, ((abits + bbits) >> 8) + (abits >> 8) * (bbits >> 8))
    r = a * b
    if not _INT_LO < r < _INT_HI:
        raise _overflow()
    s[-1] = r


def _div(m, _):
    s = m.stack
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    if b == 0:
        raise ContractError("division by zero")
    abits, bbits = a.bit_length(), b.bit_length()
    _charge(m, (max(abits, bbits) >> 8) + (abits >> 8) * (bbits >> 8))
    s[-1] = a // b          # |a // b| <= |a|: cannot overflow


def _mod(m, _):
    s = m.stack
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    if b == 0:
        raise ContractError("division by zero")
    abits, bbits = a.bit_length(), b.bit_length()
    _charge(m, (max(abits, bbits) >> 8) + (abits >> 8) * (bbits >> 8))
    s[-1] = a % b


def _exp(m, _):
    s = m.stack
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    if not 0 <= b <= MAX_EXPONENT:
        raise ContractError(f"exponent {_show(b)} outside 0..{MAX_EXPONENT}")
    bits = a.bit_length()
    # |a| >= 2**(bits-1), so |a**b| >= 2**((bits-1)*b): refuse before materialising it.
    if (bits - 1) * b >= INT_BITS:
        raise _overflow()
    words = min(bits * b, INT_BITS) >> 8     # the result's size in 256-bit words, at most
    _charge(m, words + (words * words >> 3))  # repeated squaring grows quadratically
    r = a ** b
    if not _INT_LO < r < _INT_HI:
        raise _overflow()
    s[-1] = r


def _muldiv(m, mode):
    s = m.stack
    c = s.pop()
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int or type(c) is not int:
        raise _expected("int", a, b, c)
    if c == 0:
        raise ContractError("division by zero")
    abits, bbits, cbits = a.bit_length(), b.bit_length(), c.bit_length()
    pbits = abits + bbits                   # bound on the intermediate product a*b
    _charge(m, (max(pbits, cbits) >> 8) + (abits >> 8) * (bbits >> 8)
            + (pbits >> 8) * (cbits >> 8))
    q, r = divmod(a * b, c)     # floor quotient; r has the sign of c, so r/c is in [0, 1)
    if r and mode:
        if mode == ROUND_CEIL:
            q += 1
        else:                   # half-even: compare the fraction r/c with 1/2 exactly
            excess = abs(2 * r) - abs(c)
            if excess > 0 or (excess == 0 and q & 1):
                q += 1
    if not _INT_LO < q < _INT_HI:
        raise _overflow()
    s[-1] = q


def _lt(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a < b else 0


def _gt(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a > b else 0


def _le(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a <= b else 0


def _ge(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a >= b else 0


def _eq(s, _):
    b = s.pop()
    s[-1] = 1 if s[-1] == b else 0      # int == bytes is simply False


def _ne(s, _):
    b = s.pop()
    s[-1] = 0 if s[-1] == b else 1


def _not(s, _):
    a = s[-1]
    if type(a) is not int:
        raise _expected("int", a)
    s[-1] = 1 if a == 0 else 0


def _and(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a and b else 0


def _or(s, _):
    b = s.pop()
    a = s[-1]
    if type(a) is not int or type(b) is not int:
        raise _expected("int", a, b)
    s[-1] = 1 if a or b else 0


def _concat(m, _):
    s = m.stack
    b = s.pop()
    a = s[-1]
    if type(a) is not bytes or type(b) is not bytes:
        raise _expected("bytes", a, b)
    n = len(a) + len(b)
    if n > MAX_BYTES:
        raise ContractError(f"result of {n} bytes exceeds {MAX_BYTES}")
    _charge(m, n >> 6)
    s[-1] = a + b


def _len(s, _):
    a = s[-1]
    if type(a) is not bytes:
        raise _expected("bytes", a)
    s[-1] = len(a)


def _sha256(m, _):
    s = m.stack
    a = s[-1]
    if type(a) is not bytes:
        raise _expected("bytes", a)
    _charge(m, len(a) >> 6)
    s[-1] = hashlib.sha256(a).digest()


def _itob(s, _):
    a = s[-1]
    if type(a) is not int:
        raise _expected("int", a)
    if not 0 <= a <= MAX_U64:
        raise ContractError(f"{_show(a)} does not fit in 8 unsigned bytes")
    s[-1] = a.to_bytes(8, "big")


def _btoi(s, _):
    a = s[-1]
    if type(a) is not bytes:
        raise _expected("bytes", a)
    if len(a) > 8:
        raise ContractError(f"{len(a)} bytes is longer than 8")
    s[-1] = int.from_bytes(a, "big")


def _ed25519verify(s, _):
    pk = s.pop()
    sig = s.pop()
    msg = s[-1]
    if type(msg) is not bytes or type(sig) is not bytes or type(pk) is not bytes:
        raise _expected("bytes", msg, sig, pk)
    ok = 0
    # Lengths are checked here because libsodium reads a fixed-size key without looking.
    if len(sig) == 64 and len(pk) == 32:
        try:
            crypto_sign_open(sig + msg, pk)
            ok = 1
        except CryptoError:     # forged signature or a key libsodium rejects: just false
            ok = 0
    s[-1] = ok


def _call_refused(calls: list, stack: list, max_len: int) -> ContractError:
    if len(calls) >= MAX_CALL_DEPTH:
        return ContractError(f"call depth exceeds {MAX_CALL_DEPTH}")
    assert len(stack) > max_len
    return ContractError(f"stack overflow: the call could exceed {MAX_STACK} values")


def _proto(s, _):
    raise AssertionError("proto executed: the verifier lets only callsub enter a subroutine")


def _fail(s, msg):
    raise ContractError(msg or "fail")


def _assert(s, msg):
    a = s.pop()
    if type(a) is not int:
        raise _expected("int", a)
    if a == 0:
        raise ContractError(msg or "assertion failed")


def _height(m, _):
    m.stack.append(m.host.height)


def _time(m, _):
    m.stack.append(m.host.time)


def _caller(m, _):
    m.stack.append(m.host.caller)


def _self(m, _):
    m.stack.append(m.host.self_address)


def _value(m, _):
    m.stack.append(m.host.value)


def _nargs(m, _):
    m.stack.append(len(m.args))


def _arg(m, n):
    if n >= len(m.args):
        raise ContractError(f"arg {n} requested, the call has {len(m.args)} arguments")
    m.stack.append(m.args[n])


def _key(k) -> bytes:
    if type(k) is not bytes:
        raise ContractError("storage key must be bytes, got int")
    if len(k) > MAX_KEY:
        raise ContractError(f"storage key of {len(k)} bytes exceeds {MAX_KEY}")
    return k


def _sget(m, _):
    s = m.stack
    v = m.host.storage_get(_key(s[-1]))
    s[-1] = 0 if v is None else v


def _sput(m, _):
    s = m.stack
    v = s.pop()
    k = _key(s.pop())
    if type(v) is bytes:
        _charge(m, len(v) >> 5)
    # The host's storage fee is charged after the write: if it runs the call out of
    # gas, the trap rolls the write back with the rest of the call.
    extra = m.host.storage_put(k, v)
    if extra:
        _charge(m, extra)


def _sdel(m, _):
    m.host.storage_del(_key(m.stack.pop()))


def _shas(m, _):
    s = m.stack
    s[-1] = 0 if m.host.storage_get(_key(s[-1])) is None else 1


def _address(a) -> bytes:
    if type(a) is not bytes:
        raise ContractError("address must be bytes, got int")
    return a


def _balance(m, _):
    s = m.stack
    s[-1] = m.host.balance(_address(s[-1]))


def _pay(m, _):
    s = m.stack
    amount = s.pop()
    to = _address(s.pop())
    if type(amount) is not int:
        raise _expected("int", amount)
    if not 0 <= amount <= MAX_U64:
        raise ContractError(f"payment amount {_show(amount)} outside 0..2**64-1")
    m.host.pay(to, amount)


def _emit(m, n):
    s = m.stack
    name = s.pop()
    if type(name) is not bytes:
        raise ContractError("event name must be bytes, got int")
    if len(name) > MAX_KEY:
        raise ContractError(f"event name of {len(name)} bytes exceeds {MAX_KEY}")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("event name is not valid utf-8") from None
    values = s[len(s) - n:]
    del s[len(s) - n:]
    m.host.emit(text, values)


def _wake(m, _):
    t = m.stack.pop()
    if type(t) is not int:
        raise _expected("int", t)
    if not 0 <= t <= MAX_TIME:
        raise ContractError(f"wake time {_show(t)} outside 0..2**63-1")
    extra = m.host.wake(t)
    if extra:
        _charge(m, extra)


def _release(m, _):
    m.host.release_liens()


def _seize(m, _):
    m.host.seize_liens(_address(m.stack.pop()))


# Instruction kinds. The dispatch loop runs the commonest and the control-flow ones inline
# (ordered by how often lending code executes them) and calls a handler for the rest:
#   _PURE     fn(stack, imm): touches only the stack
#   _HOST     fn(machine, imm): reads context or calls the host; fixed gas
#   _METERED  fn(machine, imm): charges a size surcharge into machine.gas first
(_PURE, _PUSH, _LOAD, _STORE, _JZ, _JNZ, _JMP, _HOST, _METERED, _CALLSUB, _RETSUB,
 _RET, _STOP) = range(13)

# A handler: fn(stack or machine, immediate), as its kind says; kinds run inline have None.
_Handler = Callable[[Any, Any], None]
# A linked instruction: (kind, handler, immediate as linked, static gas). The immediate is
# the decoded one, or for jumps an instruction index and for callsub (entry, max_len).
_Linked = tuple[int, _Handler | None, Any, int]

_HANDLERS: dict[str, tuple[int, _Handler | None]] = {
    "pop": (_PURE, _pop), "dup": (_PURE, _dup), "dup2": (_PURE, _dup2),
    "swap": (_PURE, _swap), "over": (_PURE, _over), "rot": (_PURE, _rot),
    "dig": (_PURE, _dig), "push": (_PUSH, None), "pushb": (_PUSH, None),
    "load": (_LOAD, None), "store": (_STORE, None),
    "add": (_PURE, _add), "sub": (_PURE, _sub), "mul": (_METERED, _mul),
    "div": (_METERED, _div), "mod": (_METERED, _mod), "min": (_PURE, _min),
    "max": (_PURE, _max), "exp": (_METERED, _exp), "muldiv": (_METERED, _muldiv),
    "lt": (_PURE, _lt), "gt": (_PURE, _gt), "le": (_PURE, _le), "ge": (_PURE, _ge),
    "eq": (_PURE, _eq), "ne": (_PURE, _ne), "not": (_PURE, _not),
    "and": (_PURE, _and), "or": (_PURE, _or),
    "concat": (_METERED, _concat), "len": (_PURE, _len), "sha256": (_METERED, _sha256),
    "itob": (_PURE, _itob), "btoi": (_PURE, _btoi),
    "ed25519verify": (_PURE, _ed25519verify),
    "jmp": (_JMP, None), "jz": (_JZ, None), "jnz": (_JNZ, None),
    "callsub": (_CALLSUB, None), "proto": (_PURE, _proto), "retsub": (_RETSUB, None),
    "ret": (_RET, None), "stop": (_STOP, None),
    "fail": (_PURE, _fail), "assert": (_PURE, _assert),
    "height": (_HOST, _height), "time": (_HOST, _time),
    "caller": (_HOST, _caller), "self": (_HOST, _self),
    "value": (_HOST, _value), "nargs": (_HOST, _nargs), "arg": (_HOST, _arg),
    "sget": (_HOST, _sget), "sput": (_METERED, _sput), "sdel": (_HOST, _sdel),
    "shas": (_HOST, _shas), "balance": (_HOST, _balance), "pay": (_HOST, _pay),
    "emit": (_HOST, _emit), "wake": (_METERED, _wake),   # a user wake-up is paid
    "release": (_HOST, _release), "seize": (_HOST, _seize),
}
assert set(_HANDLERS) == set(OPS_BY_NAME), "every opcode needs exactly one handler"


def _static_gas(ins: Instruction) -> int:
    """Base gas plus the surcharges the immediate already determines."""
    name = ins.op.name
    if name == "pushb":
        return ins.op.gas + (len(ins.imm) >> 6)
    if name == "emit":
        return ins.op.gas + ins.imm
    return ins.op.gas


_program_cache: OrderedDict[bytes, Program] = OrderedDict()


class Program:
    """Verified, decoded bytecode. Immutable, so one instance is shared by all callers.
    Build it with `Program.load` (cached); the constructor always re-verifies."""

    __slots__ = ("code", "code_hash", "_linked", "_offsets", "_names")

    def __init__(self, code: bytes, code_hash: bytes):
        instrs = decode(code)
        index_of = {ins.offset: i for i, ins in enumerate(instrs)}
        index_of[len(code)] = len(instrs)
        sub_heights = _check_stack(instrs, index_of)
        linked: list[_Linked] = []
        for ins in instrs:
            kind, fn = _HANDLERS[ins.op.name]
            imm = ins.imm
            if ins.op.imm == IMM_TARGET:
                imm = index_of[imm]
                if ins.op.name == "callsub":
                    args = instrs[imm].imm[0]
                    # Enter after the proto; allow the call only while the callee's
                    # deepest frame still fits on the shared stack.
                    imm = (imm + 1, MAX_STACK - sub_heights[imm] + args)
            linked.append((kind, fn, imm, _static_gas(ins)))
        linked.append((_STOP, None, None, 0))       # falling off the end is stop
        self.code = code
        self.code_hash = code_hash
        self._linked = tuple(linked)
        self._offsets = tuple(ins.offset for ins in instrs) + (len(code),)
        self._names = tuple(ins.op.name for ins in instrs) + ("stop",)

    @classmethod
    def load(cls, code: bytes) -> Program:
        """Verify and decode `code`, or return the cached Program for the same bytes."""
        if type(code) is not bytes:
            code = bytes(code)
        code_hash = hashlib.sha256(code).digest()
        program = _program_cache.get(code_hash)
        if program is not None:
            _program_cache.move_to_end(code_hash)
            return program
        program = cls(code, code_hash)
        _program_cache[code_hash] = program
        if len(_program_cache) > PROGRAM_CACHE_SIZE:
            _program_cache.popitem(last=False)
        return program


def _check_args(args) -> tuple:
    if len(args) > MAX_ARGS:
        raise ContractError(f"{len(args)} arguments, the limit is {MAX_ARGS}")
    for i, a in enumerate(args):
        if type(a) is int:
            if not _INT_LO < a < _INT_HI:
                raise ContractError(f"argument {i} is out of the integer range")
        elif type(a) is bytes:
            if len(a) > MAX_BYTES:
                raise ContractError(f"argument {i} is longer than {MAX_BYTES} bytes")
        else:
            raise ContractError(f"argument {i} must be int or bytes, got {type(a).__name__}")
    return tuple(args)


def execute(program: Program, host: Host, args: list, gas_limit: int) -> Outcome:
    """Run `program` to completion. Raises ContractError (with pc and gas_used) on a trap;
    the VM changes nothing outside itself except through `host`, which must undo its
    journalled writes when this raises."""
    if type(gas_limit) is not int or gas_limit < 0:
        raise ValueError(f"gas_limit must be a non-negative int, got {gas_limit!r}")
    m = _Machine(host, _check_args(args), gas_limit)
    code = program._linked
    stack = m.stack
    scratch = m.scratch
    calls = m.calls
    gas = 0
    ip = 0
    try:
        # fn is None only for the kinds run inline: every _PURE, _HOST and _METERED entry
        # of _HANDLERS has a handler, which mypy cannot tell from the kind (type: ignore).
        while True:
            kind, fn, imm, cost = code[ip]
            gas += cost
            if gas > gas_limit:
                raise OutOfGas("out of gas")
            if kind == _PURE:
                fn(stack, imm)  # type: ignore[misc]  # _PURE: fn is not None (see above)
                ip += 1
            elif kind == _PUSH:
                stack.append(imm)
                ip += 1
            elif kind == _LOAD:
                stack.append(scratch[imm])
                ip += 1
            elif kind == _STORE:
                scratch[imm] = stack.pop()
                ip += 1
            elif kind == _JZ:
                v = stack.pop()
                if type(v) is not int:
                    raise _expected("int", v)
                ip = imm if v == 0 else ip + 1
            elif kind == _JNZ:
                v = stack.pop()
                if type(v) is not int:
                    raise _expected("int", v)
                ip = ip + 1 if v == 0 else imm
            elif kind == _JMP:
                ip = imm
            elif kind == _HOST:
                fn(m, imm)  # type: ignore[misc]  # _HOST: fn is not None (see above)
                ip += 1
            elif kind == _METERED:
                m.gas = gas
                fn(m, imm)  # type: ignore[misc]  # _METERED: fn is not None (see above)
                gas = m.gas
                ip += 1
            elif kind == _CALLSUB:
                entry, max_len = imm
                # The verifier bounded the callee's frame; max_len keeps the whole stack
                # within MAX_STACK once the callee has pushed its deepest.
                if len(calls) >= MAX_CALL_DEPTH or len(stack) > max_len:
                    raise _call_refused(calls, stack, max_len)
                calls.append(ip + 1)
                ip = entry
            elif kind == _RETSUB:
                ip = calls.pop()
            elif kind == _RET:
                return Outcome(stack.pop(), gas)
            else:
                return Outcome(None, gas)
    except ContractError as e:
        if e.pc is None:
            e.pc = program._offsets[ip]
            e.op = program._names[ip]
        # A failing _METERED handler may already have charged its surcharge into m.gas.
        e.gas_used = gas_limit if isinstance(e, OutOfGas) else max(gas, m.gas)
        raise
