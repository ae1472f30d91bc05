"""Protocol buffers' wire format, as much of it as a .caffemodel needs: a short reader.

Why a reader of our own and not the `protobuf` package (an optional extra would do):
no new dependency and no generated `caffe_pb2` module to ship; older protobuf
releases refuse messages over 64 MB by default (bvlc_alexnet is 233 MB; Caffe's
own loader raises that limit for this reason); and protobuf hands a repeated float
field to Python as a container read one value at a time, 61 million of them here.
Here a message is a byte range of one buffer (the file, memory-mapped), and float
data become numpy views of it (`numpy.frombuffer` at an offset): no copy and no
per-value Python until the caller converts them.

Wire format (protobuf's encoding documentation): each field is a varint key,
field number << 3 | wire type, then a varint (type 0), 8 bytes (1), a varint
length and that many bytes (2), or 4 bytes (5). A repeated number is "packed"
(one type-2 field holding the values back to back) or not (one keyed field per
value); a reader must take both.
"""
import struct

import numpy as np

from alexnet_mp.errors import UsageError

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5
WIDTH = {FIXED64: 8, FIXED32: 4}

# Kinds of field in a schema: {field number: (name, kind)}. Repeated kinds collect a list.
INT, FLOAT, STR, MESSAGE = "int", "float", "str", "message"
INTS, STRS, MESSAGES, FLOATS, DOUBLES = "ints", "strs", "messages", "floats", "doubles"
_WIRE = {INT: (VARINT,), FLOAT: (FIXED32,), STR: (BYTES,), MESSAGE: (BYTES,), STRS: (BYTES,), MESSAGES: (BYTES,),
         INTS: (VARINT, BYTES), FLOATS: (FIXED32, BYTES), DOUBLES: (FIXED64, BYTES)}
_DTYPE = {FLOATS: np.dtype("<f4"), DOUBLES: np.dtype("<f8")}
REPEATED = (INTS, STRS, MESSAGES, FLOATS, DOUBLES)


class CaffeError(UsageError):
    """A Caffe file that cannot be imported; the message names the file and the fix."""


class Malformed(Exception):
    """The bytes are not the message they should be; `truncated`: they stop inside a field."""

    def __init__(self, problem, truncated=False):
        super().__init__(problem)
        self.truncated = truncated


def varint(buf, pos, end):
    """(value, position after it) of the varint at `pos`."""
    value = shift = 0
    while True:
        if pos >= end:
            raise Malformed("ends inside a number", truncated=True)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise Malformed("holds a number longer than 10 bytes")


def _bounded(start, length, end):
    if start + length > end:
        raise Malformed(f"ends {start + length - end} bytes into a field that should be {length} long",
                        truncated=True)
    return start + length


def next_field(buf, pos, end):
    """(field number, wire type, value, position after the field) of the field at `pos`.
    value: the integer of a varint, or the (start, stop) byte range of any other wire type."""
    key, pos = varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise Malformed("has a field numbered 0")
    if wire == VARINT:
        value, pos = varint(buf, pos, end)
        return number, wire, value, pos
    if wire == BYTES:
        length, pos = varint(buf, pos, end)
        stop = _bounded(pos, length, end)
        return number, wire, (pos, stop), stop
    if wire in WIDTH:
        stop = _bounded(pos, WIDTH[wire], end)
        return number, wire, (pos, stop), stop
    raise Malformed(f"has wire type {wire} (field {number}), which no Caffe message uses")


def _run(buf, pos, end, key, width):
    """Unpacked repeated numbers: the values of the fields with one-byte `key` that follow
    each other from `pos` (key byte, `width` bytes, key byte, ...): (count, position after).
    One numpy pass over the keys instead of one Python step per value."""
    step = 1 + width
    count = (end - pos) // step
    keys = np.frombuffer(buf, np.uint8, count * step, pos)[::step]
    other = np.flatnonzero(keys != key)
    count = int(other[0]) if len(other) else count
    return count, pos + count * step


def _numbers(buf, pos, end, kind, wire, value):
    """(numpy view of the values, position after) for the FLOATS or DOUBLES field whose key is at `pos`."""
    dtype = _DTYPE[kind]
    if wire == BYTES:                                      # packed: the values back to back
        start, stop = value
        if (stop - start) % dtype.itemsize:
            raise Malformed(f"holds packed numbers of {stop - start} bytes, not a multiple of {dtype.itemsize}")
        return np.frombuffer(buf, dtype, (stop - start) // dtype.itemsize, start), stop
    key = buf[pos]
    if key & 0x80:                                         # a field number above 15: no Caffe number field
        raise Malformed("holds repeated numbers with a two-byte key")
    count, after = _run(buf, pos, end, key, dtype.itemsize)
    records = np.frombuffer(buf, np.dtype([("key", "u1"), ("value", dtype)]), count, pos)
    return records["value"], after


def _ints(buf, wire, value):
    if wire == VARINT:
        return [value]
    start, stop = value                                    # packed varints
    out = []
    while start < stop:
        number, start = varint(buf, start, stop)
        out.append(number)
    return out


def parse(buf, start, end, schema):
    """{name: value} of the message in buf[start:end], for the fields `schema` names
    ({number: (name, kind)}), None where absent; other fields are skipped. A repeated kind gives a list
    (FLOATS and DOUBLES: of numpy views, one per packed field or unpacked run); a message
    kind gives its (start, stop) range, for `parse` with its own schema."""
    out = {name: [] if kind in REPEATED else None for name, kind in schema.values()}
    pos = start
    while pos < end:
        field_start = pos
        number, wire, value, pos = next_field(buf, pos, end)
        if number not in schema:
            continue
        name, kind = schema[number]
        if wire not in _WIRE[kind]:
            raise Malformed(f"has field {number} ({name}) of wire type {wire}, not {_WIRE[kind][0]}")
        if kind in (FLOATS, DOUBLES):
            view, pos = _numbers(buf, field_start, end, kind, wire, value)
            out[name].append(view)
        elif kind == INTS:
            out[name] += _ints(buf, wire, value)
        elif kind == FLOAT:
            out[name] = struct.unpack_from("<f", buf, value[0])[0]
        elif kind in (STR, STRS):
            text = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
            out[name] = text if kind == STR else out[name] + [text]
        elif kind == MESSAGES:
            out[name].append(value)
        else:
            out[name] = value
    return out
