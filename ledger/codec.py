"""The one canonical encoding of every signed or hashed object.

Canonical msgpack: only None, bool, int, bytes, str, list and str-keyed maps; maps are
written with their keys sorted; integers take msgpack's shortest form (which msgpack
already guarantees). The same object therefore always gives the same bytes, and a
decoded object re-encodes to the bytes it came from — `decode` checks that, so a
signature or hash can never be made to cover two different byte strings.
"""
from __future__ import annotations

import hashlib

import msgpack

MAX_INT = 2**64 - 1
MIN_INT = -(2**63)


class EncodingError(ValueError):
    """An object that has no canonical encoding, or bytes that are not canonical."""


def _canonical(obj, depth=0):
    # Maps are rebuilt with sorted keys; everything else is checked for an allowed type.
    if depth > 32:
        raise EncodingError("nesting deeper than 32")
    t = type(obj)
    if t is int:
        if not MIN_INT <= obj <= MAX_INT:
            raise EncodingError(f"integer {obj} outside the 64-bit range")
        return obj
    if t is bytes or t is str or obj is None or t is bool:
        return obj
    if t is list or t is tuple:
        return [_canonical(x, depth + 1) for x in obj]
    if t is dict:
        for k in obj:
            if type(k) is not str:
                raise EncodingError(f"map key {k!r} is not a string")
        return {k: _canonical(obj[k], depth + 1) for k in sorted(obj)}
    raise EncodingError(f"type {t.__name__} has no canonical encoding")


def canonical(obj):
    """The same object with every map's keys in order: what `pack_canonical` may pack."""
    return _canonical(obj)


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_SCALARS = (bytes, str, bool, type(None))


def encode(obj) -> bytes:
    t = type(obj)
    if t in _SCALARS or (t is int and MIN_INT <= obj <= MAX_INT):
        return _packb(obj)          # fast path: a scalar is its own canonical form
    return _packb(_canonical(obj))


def decode(data: bytes, max_size: int = 1 << 20):
    """Decode canonical msgpack; reject anything that would not re-encode identically."""
    if len(data) > max_size:
        raise EncodingError(f"{len(data)} bytes is over the {max_size}-byte limit")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                              max_bin_len=max_size, max_str_len=max_size,
                              max_array_len=65536, max_map_len=65536)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise EncodingError(f"not valid msgpack: {e}") from None
    # Decoded maps keep the wire's key order, so packing the object again reproduces the
    # input exactly iff every map was sorted and every int minimal; the walk checks keys
    # are sorted and no float slipped in.
    if not _is_canonical(obj) or _packb(obj) != data:
        raise EncodingError("not in canonical form")
    return obj


def _is_canonical(obj, depth=0) -> bool:
    # Plain loops: this runs on every transaction and message that arrives.
    t = type(obj)
    if t is dict:
        if depth >= 32:
            return False
        prev = None
        for k, v in obj.items():
            if type(k) is not str or (prev is not None and k <= prev):
                return False
            prev = k
            tv = type(v)
            if tv is float or ((tv is dict or tv is list) and not _is_canonical(v, depth + 1)):
                return False
        return True
    if t is list:
        if depth >= 32:
            return False
        for v in obj:
            tv = type(v)
            if tv is float or ((tv is dict or tv is list) and not _is_canonical(v, depth + 1)):
                return False
        return True
    return t is not float


def pack_canonical(obj) -> bytes:
    """Pack an object already known to be canonical (e.g. just decoded by `decode`)."""
    return _packb(obj)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hash_obj(obj) -> bytes:
    return hashlib.sha256(encode(obj)).digest()
