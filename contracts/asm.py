"""Assembler and disassembler for the contract VM.

The assembly is the form lending agreements are written, reviewed and audited in, so it
stays close to the bytecode: one instruction per line, labels, named constants and
scratch slots, and parameterless macros. Every program the assembler produces has passed
`Program.load`; `assemble(disassemble(code)) == code` for every valid program.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

from .vm import (
    IMM_BYTES, IMM_INT, IMM_MSG, IMM_NONE, IMM_PROTO, IMM_ROUND, IMM_TARGET, IMM_U8,
    MAX_PROGRAM, OPS_BY_NAME, ROUNDING_NAMES, VERSION, BytecodeError, OpSpec, Program, decode,
    encode_instruction,
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(%[0-9]+)?\Z")   # after macro renaming
_INT = re.compile(r"-?(0[xX][0-9a-fA-F]+|[0-9](_?[0-9])*)\Z")
_HEX_BYTES = re.compile(r"0[xX]([0-9a-fA-F]{2})*\Z")
_DECIMAL_MAX_BITS = 256        # wider ints are disassembled in hex (and str() has a limit)


class AsmError(ValueError):
    """An assembly error; the message starts with "line N:"."""


class _Token(NamedTuple):
    text: str
    quoted: bool       # a "string" literal, escapes already resolved


class _Where(NamedTuple):
    line: int
    context: str = ""  # " (in macro M expanded at line K)" for expanded lines

    def error(self, message: str) -> AsmError:
        return AsmError(f"line {self.line}: {message}{self.context}")


class _Stmt(NamedTuple):
    where: _Where
    label: str | None
    tokens: list[_Token]


def _tokenize(text: str, where: _Where) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\r":
            i += 1
        elif ch == ";":
            break
        elif ch == '"':
            i += 1
            chars = []
            while True:
                if i >= len(text):
                    raise where.error("unterminated string")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= len(text) or text[i + 1] not in '"\\':
                        raise where.error('unknown escape in string (only \\" and \\\\)')
                    ch = text[i + 1]
                    i += 1
                chars.append(ch)
                i += 1
            tokens.append(_Token("".join(chars), True))
        else:
            j = i
            while j < len(text) and text[j] not in ' \t\r;"':
                j += 1
            tokens.append(_Token(text[i:j], False))
            i = j
    return tokens


def _split_label(tokens: list[_Token], where: _Where) -> tuple[str | None, list[_Token]]:
    if tokens and not tokens[0].quoted and tokens[0].text.endswith(":"):
        name = tokens[0].text[:-1]
        if not _IDENT.match(name.removeprefix("%")):
            raise where.error(f"invalid label name {name!r}")
        return name, tokens[1:]
    return None, tokens


class _Source:
    """The result of the first pass: directives applied, macros collected."""

    def __init__(self, source: str):
        self.consts: dict[str, int] = {}          # .const and .slot share one namespace
        self.macros: dict[str, list[_Stmt]] = {}
        self.body: list[_Stmt] = []
        macro: str | None = None
        macro_where: _Where | None = None
        seen_statement = False
        for n, text in enumerate(source.split("\n"), start=1):
            where = _Where(n)
            label, tokens = _split_label(_tokenize(text, where), where)
            if label is None and not tokens:
                continue
            head = tokens[0].text if tokens and not tokens[0].quoted else ""
            if label is not None and head.startswith("."):
                raise where.error("a label cannot be attached to a directive")
            if head == ".endm":
                if macro is None:
                    raise where.error(".endm without .macro")
                if len(tokens) > 1:
                    raise where.error(".endm takes no operands")
                macro = None
            elif macro is not None:
                if head.startswith("."):
                    raise where.error(f"directive {head} is not allowed inside a macro")
                self.macros[macro].append(_Stmt(where, label, tokens))
            elif head.startswith("."):
                if head == ".macro":
                    macro = self._define_macro(tokens, where)
                    macro_where = where
                else:
                    self._directive(head, tokens[1:], where, seen_statement)
            else:
                self.body.append(_Stmt(where, label, tokens))
            seen_statement = True
        if macro is not None:
            assert macro_where is not None      # set with macro
            raise macro_where.error(f"macro {macro} has no .endm")

    def _define_macro(self, tokens: list[_Token], where: _Where) -> str:
        if len(tokens) != 2 or not _IDENT.match(tokens[1].text) or tokens[1].quoted:
            raise where.error(".macro needs exactly one name")
        name = tokens[1].text
        if name in OPS_BY_NAME:
            raise where.error(f"macro name {name} is an opcode")
        if name in self.macros:
            raise where.error(f"macro {name} is already defined")
        self.macros[name] = []
        return name

    def _directive(self, head: str, args: list[_Token], where: _Where, seen: bool) -> None:
        if head == ".version":
            if seen:
                raise where.error(".version must come first")
            if len(args) != 1 or args[0].text != str(VERSION):
                raise where.error(f"only .version {VERSION} is supported")
        elif head in (".const", ".slot"):
            if len(args) != 2 or args[0].quoted or not _IDENT.match(args[0].text):
                raise where.error(f"{head} needs a name and an integer")
            name = args[0].text
            if name in self.consts:
                raise where.error(f"{name} is already defined")
            value = _parse_int(args[1], where, self.consts)
            if head == ".slot" and not 0 <= value <= 255:
                raise where.error(f"slot {name} is out of range 0..255")
            self.consts[name] = value
        else:
            raise where.error(f"unknown directive {head}")


def _parse_int(tok: _Token, where: _Where, names: dict[str, int]) -> int:
    if tok.quoted:
        raise where.error("expected an integer, got a string")
    text = tok.text
    if text in names:
        return names[text]
    if not _INT.match(text):
        raise where.error(f"expected an integer or a defined name, got {text!r}")
    try:
        return int(text, 0) if "x" in text.lower() else int(text, 10)
    except ValueError:      # Python refuses decimal strings over 4300 digits
        raise where.error("integer literal too long for decimal; write it in hex") from None


def _expand(src: _Source) -> list[_Stmt]:
    """Inline macros. `%name` labels get a suffix unique to each expansion."""
    out: list[_Stmt] = []
    expansions = 0

    def rename(text: str, where: _Where, suffix: str | None) -> str:
        if not text.startswith("%"):
            return text
        if suffix is None:
            raise where.error(f"{text}: % labels are only allowed inside macros")
        return text[1:] + suffix

    def walk(stmts: list[_Stmt], active: tuple[str, ...], suffix: str | None, context: str):
        nonlocal expansions
        for st in stmts:
            where = _Where(st.where.line, context)
            label = None if st.label is None else rename(st.label, where, suffix)
            tokens = [t if t.quoted else t._replace(text=rename(t.text, where, suffix))
                      for t in st.tokens]
            if tokens and not tokens[0].quoted and tokens[0].text in src.macros:
                name = tokens[0].text
                if len(tokens) > 1:
                    raise where.error(f"macro {name} takes no operands")
                if name in active:
                    raise where.error(f"macro {name} expands itself (recursion)")
                if label is not None:
                    out.append(_Stmt(where, label, []))
                expansions += 1
                walk(src.macros[name], active + (name,), f"%{expansions}",
                     f" (in macro {name} expanded at line {st.where.line}{context})")
            else:
                out.append(_Stmt(where, label, tokens))

    walk(src.body, (), None, "")
    return out


def _operand(op, args: list[_Token], where: _Where, consts: dict[str, int]):
    """Parse the operands of one instruction into the immediate `encode_instruction` takes
    (a label name, still unresolved, for jump targets)."""
    kind = op.imm
    counts = {IMM_NONE: (0, 0), IMM_PROTO: (2, 2), IMM_MSG: (0, 1)}
    low, high = counts.get(kind, (1, 1))
    if len(args) < low:
        raise where.error(f"{op.name}: missing operand")
    if len(args) > high:
        raise where.error(f"{op.name}: unexpected operand {args[high].text!r}")
    if kind == IMM_NONE:
        return None
    if kind in (IMM_INT, IMM_U8):
        return _parse_int(args[0], where, consts)
    if kind == IMM_PROTO:
        return (_parse_int(args[0], where, consts), _parse_int(args[1], where, consts))
    if kind == IMM_ROUND:
        if args[0].text in ROUNDING_NAMES and not args[0].quoted:
            return ROUNDING_NAMES.index(args[0].text)
        return _parse_int(args[0], where, consts)
    if kind == IMM_TARGET:
        if args[0].quoted or not _LABEL_REF.match(args[0].text):
            raise where.error(f"{op.name}: expected a label, got {args[0].text!r}")
        return args[0].text
    if kind == IMM_BYTES:
        tok = args[0]
        if tok.quoted:
            return tok.text.encode("utf-8")
        if not _HEX_BYTES.match(tok.text):
            raise where.error('pushb: expected "text" or 0x followed by pairs of hex digits')
        return bytes.fromhex(tok.text[2:])
    assert kind == IMM_MSG
    if args and not args[0].quoted:
        raise where.error(f'{op.name}: the message must be a "string"')
    return args[0].text if args else ""


def assemble(source: str) -> bytes:
    """Assemble source text into verified bytecode. Raises AsmError."""
    src = _Source(source)
    labels: dict[str, tuple[int, _Where]] = {}
    # (offset, op, imm, where); imm as _operand parsed it (a label name for targets)
    pending: list[tuple[int, OpSpec, Any, _Where]] = []
    offset = 1                                                # after the version byte
    for st in _expand(src):
        if st.label is not None:
            if st.label in labels:
                first = labels[st.label][1]
                raise st.where.error(f"label {st.label} is already defined at line {first.line}")
            labels[st.label] = (offset, st.where)
        if not st.tokens:
            continue
        head = st.tokens[0]
        op = None if head.quoted else OPS_BY_NAME.get(head.text)
        if op is None:
            raise st.where.error(f"unknown opcode {head.text!r}")
        imm = _operand(op, st.tokens[1:], st.where, src.consts)
        try:
            size = len(encode_instruction(op, 0 if op.imm == IMM_TARGET else imm))
        except ValueError as e:
            raise st.where.error(f"{op.name}: {e}") from None
        pending.append((offset, op, imm, st.where))
        offset += size
        if offset > MAX_PROGRAM:
            raise st.where.error(f"program exceeds {MAX_PROGRAM} bytes")

    buf = bytearray((VERSION,))
    line_at: dict[int, _Where] = {}
    for at, op, imm, where in pending:
        if op.imm == IMM_TARGET:
            if imm not in labels:
                raise where.error(f"undefined label {imm}")
            imm = labels[imm][0]
        line_at[at] = where
        buf += encode_instruction(op, imm)
    code = bytes(buf)
    try:
        Program.load(code)
    except BytecodeError as e:
        bad_at = line_at.get(e.offset) if e.offset is not None else None
        if bad_at is None:
            raise AsmError(f"line 1: {e}") from None
        raise bad_at.error(e.reason) from None
    return code


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_int(x: int) -> str:
    if x.bit_length() <= _DECIMAL_MAX_BITS:
        return str(x)
    return ("-" if x < 0 else "") + hex(abs(x))


def _format_operand(ins, labels: dict[int, str]) -> str:
    kind, imm = ins.op.imm, ins.imm
    if kind == IMM_NONE:
        return ""
    if kind in (IMM_INT, IMM_U8):
        return _format_int(imm)
    if kind == IMM_TARGET:
        return labels[imm]
    if kind == IMM_PROTO:
        return f"{imm[0]} {imm[1]}"
    if kind == IMM_ROUND:
        return ROUNDING_NAMES[imm]
    if kind == IMM_BYTES:
        if imm and all(0x20 <= b <= 0x7E for b in imm):
            return _quote(imm.decode("ascii"))
        return '""' if not imm else "0x" + imm.hex()
    assert kind == IMM_MSG
    return _quote(imm) if imm else ""


def disassemble(code: bytes, *, offsets: bool = False) -> str:
    """Bytecode back to assembly. Jump targets become labels `L<offset>`; with
    `offsets=True` each line ends with a comment giving its byte offset (the pc that
    ContractError reports). Only structural checks are made, so a program the verifier
    rejects for its stack heights can still be inspected."""
    instrs = decode(code)
    labels = {ins.imm: f"L{ins.imm}" for ins in instrs if ins.op.imm == IMM_TARGET}
    lines = [f".version {VERSION}"]
    for ins in instrs:
        if ins.offset in labels:
            lines.append(f"{labels[ins.offset]}:")
        operand = _format_operand(ins, labels)
        text = f"    {ins.op.name} {operand}" if operand else f"    {ins.op.name}"
        lines.append(f"{text:<40} ; {ins.offset}" if offsets else text)
    if len(code) in labels:
        lines.append(f"{labels[len(code)]}:")
    return "\n".join(lines) + "\n"
