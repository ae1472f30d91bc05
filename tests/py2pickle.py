"""Pickles as Python 2's cPickle wrote CIFAR's archives: protocol 2, byte strings as
BINSTRING opcodes, numpy arrays through numpy.core.multiarray._reconstruct.

Written opcode by opcode, so that a test never feeds the reader what Python 3's
`pickle.dumps` makes of a dict (unicode keys, `_codecs.encode` for bytes), which
the real archives do not contain.
"""
import struct

import numpy as np


def _string(s):
    data = s.encode("latin1") if isinstance(s, str) else s
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data                 # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data           # BINSTRING


def _int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])                                # BININT1
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)                      # BININT2
    return b"J" + struct.pack("<i", v)                          # BININT


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _uint8_array(a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    dtype = (_global("numpy", "dtype") + _string("u1") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _string("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _int(0) + b"tb")
    return (_global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + _int(0) + b"\x85"
            + _string("b") + b"\x87R" + b"(" + _int(1) + shape + dtype + b"\x89" + _string(a.tobytes()) + b"tb")


def _value(v):
    if isinstance(v, np.ndarray):
        return _uint8_array(v)
    if isinstance(v, (str, bytes)):
        return _string(v)
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_value(x) for x in v) + b"e"      # EMPTY_LIST, MARK, ..., APPENDS
    raise TypeError(type(v))


def dumps(d):
    """A dict of str keys to arrays, ints, strings and lists of them, as cPickle protocol 2."""
    return b"\x80\x02}(" + b"".join(_string(k) + _value(v) for k, v in d.items()) + b"u."
