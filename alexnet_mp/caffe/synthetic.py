"""A bvlc_alexnet-shaped .caffemodel of random weights, full size, for the benchmark's
import time and peak memory (`alexnet_mp.bench.sections.bench_caffe`): the real file
cannot be downloaded where the benchmark runs. 2014 encoding (V1LayerParameter), packed
float data, as the model zoo's file. Each blob is written straight from its array, so
writing it holds one layer's weights at a time."""
import struct

import numpy as np

from alexnet_mp.caffe.convert import slots
from alexnet_mp.caffe.netparam import PARAM_OF, V1_TYPES
from alexnet_mp.caffe.wire import BYTES, FIXED32, VARINT
from alexnet_mp.model.arch import canonical_shapes

V1_ENUM = {name: number for number, name in V1_TYPES.items()}
# V1LayerParameter: name 4, type 5, bottom 2, top 3, blobs 6; each type's parameters (caffe.proto).
V1_PARAM_FIELD = {"convolution": 10, "dropout": 12, "inner_product": 17, "lrn": 18, "pooling": 19}


def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number, wire):
    return _varint(number << 3 | wire)


def _field(number, payload):
    return _key(number, BYTES) + _varint(len(payload)) + payload


def _params(arch, kind, classes):
    """The parameter message of one layer, as bvlc_alexnet's train_val.prototxt sets them."""
    ints = lambda pairs: b"".join(_key(n, VARINT) + _varint(v) for n, v in pairs)      # noqa: E731
    floats = lambda pairs: b"".join(_key(n, FIXED32) + struct.pack("<f", v) for n, v in pairs)  # noqa: E731
    if kind == "Convolution":
        return ints(((1, canonical_shapes(classes)[f"{arch.name}.weight"][0]), (3, arch.pad), (4, arch.kernel),
                     (5, 2 if arch.reads == "own" else 1), (6, arch.stride)))
    if kind == "InnerProduct":
        return ints(((1, canonical_shapes(classes)[f"{arch.name}.weight"][0]),))
    if kind == "LRN":
        return ints(((1, 5),)) + floats(((2, 1e-4), (3, 0.75)))
    if kind == "Pooling":
        return ints(((1, 0), (2, 3), (3, 2)))
    return floats(((1, 0.5),))


def _blob_head(shape, values):
    four = (1,) * (4 - len(shape)) + tuple(shape)
    dims = b"".join(_key(n, VARINT) + _varint(d) for n, d in zip((1, 2, 3, 4), four))
    return dims + _key(5, BYTES) + _varint(values.nbytes)


def write_synthetic(path, num_classes=1000, seed=0):
    """Write the file; returns its size in bytes."""
    rng, shapes = np.random.default_rng(seed), canonical_shapes(num_classes)
    names = {"ReLU": "relu", "LRN": "norm", "Pooling": "pool", "Dropout": "drop"}
    with open(path, "wb") as f:
        f.write(_field(1, b"AlexNet"))
        prev = "data"
        for arch, kind in slots():
            weighted = kind in ("Convolution", "InnerProduct")
            name = arch.name if weighted else f"{names[kind]}{arch.name[-1]}"
            top = prev if kind in ("ReLU", "Dropout") else name
            head = _field(4, name.encode()) + _key(5, VARINT) + _varint(V1_ENUM[kind])
            head += _field(2, prev.encode()) + _field(3, top.encode())
            if kind in PARAM_OF:
                head += _field(V1_PARAM_FIELD[PARAM_OF[kind]], _params(arch, kind, num_classes))
            blobs = []
            if weighted:
                for part in ("weight", "bias"):
                    shape = shapes[f"{arch.name}.{part}"]
                    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
                    blobs.append((_blob_head(shape, values), values))
            lengths = [len(h) + v.nbytes for h, v in blobs]
            size = len(head) + sum(len(_key(6, BYTES)) + len(_varint(n)) + n for n in lengths)
            f.write(_key(2, BYTES) + _varint(size) + head)
            for (h, v), n in zip(blobs, lengths):
                f.write(_key(6, BYTES) + _varint(n) + h)
                f.write(memoryview(v).cast("B"))
            prev = top
        return f.tell()
