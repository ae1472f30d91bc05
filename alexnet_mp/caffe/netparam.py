"""Caffe's messages (src/caffe/proto/caffe.proto) as schemas of the wire reader, and a
.caffemodel read into a list of layers.

A NetParameter comes in two encodings, and a reader must take both:
* 2014 (bvlc_alexnet as the model zoo ships it): `layers` (field 2), V1LayerParameter,
  the layer type an enum, weights as 4-d BlobProtos (num, channels, height, width;
  a bias is 1x1x1xN, an fc weight 1x1xOUTxIN).
* current: `layer` (field 100), LayerParameter, the type a string, shapes as BlobShape.
Field numbers are caffe.proto's; only the fields this import reads are listed.
"""
import mmap
import os
from dataclasses import dataclass, field

import numpy as np

from alexnet_mp.caffe.wire import (BYTES, DOUBLES, FLOAT, FLOATS, INT, INTS, MESSAGE, MESSAGES, STR, STRS, CaffeError,
                                   Malformed, next_field, parse)

NET = {1: ("name", STR), 2: ("layers", MESSAGES), 100: ("layer", MESSAGES)}
V1_LAYER = {1: ("v0", MESSAGE), 2: ("bottom", STRS), 3: ("top", STRS), 4: ("name", STR), 5: ("type", INT),
            6: ("blobs", MESSAGES), 10: ("convolution", MESSAGE), 12: ("dropout", MESSAGE),
            17: ("inner_product", MESSAGE), 18: ("lrn", MESSAGE), 19: ("pooling", MESSAGE)}
LAYER = {1: ("name", STR), 2: ("type", STR), 3: ("bottom", STRS), 4: ("top", STRS), 7: ("blobs", MESSAGES),
         106: ("convolution", MESSAGE), 108: ("dropout", MESSAGE), 117: ("inner_product", MESSAGE),
         118: ("lrn", MESSAGE), 121: ("pooling", MESSAGE)}
BLOB = {1: ("num", INT), 2: ("channels", INT), 3: ("height", INT), 4: ("width", INT), 5: ("data", FLOATS),
        6: ("diff", FLOATS), 7: ("shape", MESSAGE), 8: ("double_data", DOUBLES), 9: ("double_diff", DOUBLES)}
BLOB_SHAPE = {1: ("dim", INTS)}
# (schema, defaults): caffe.proto's [default = ...] where this import reads the field.
PARAMS = {
    "convolution": ({1: ("num_output", INT), 2: ("bias_term", INT), 3: ("pad", INTS), 4: ("kernel_size", INTS),
                     5: ("group", INT), 6: ("stride", INTS), 9: ("pad_h", INT), 10: ("pad_w", INT),
                     11: ("kernel_h", INT), 12: ("kernel_w", INT), 13: ("stride_h", INT), 14: ("stride_w", INT)},
                    {"bias_term": 1, "group": 1}),
    "inner_product": ({1: ("num_output", INT), 2: ("bias_term", INT), 6: ("transpose", INT)},
                      {"bias_term": 1, "transpose": 0}),
    "lrn": ({1: ("local_size", INT), 2: ("alpha", FLOAT), 3: ("beta", FLOAT), 4: ("norm_region", INT),
             5: ("k", FLOAT)}, {"local_size": 5, "alpha": 1.0, "beta": 0.75, "norm_region": 0, "k": 1.0}),
    "pooling": ({1: ("pool", INT), 2: ("kernel_size", INT), 3: ("stride", INT), 4: ("pad", INT),
                 12: ("global_pooling", INT)}, {"pool": 0, "stride": 1, "pad": 0, "global_pooling": 0}),
    "dropout": ({1: ("dropout_ratio", FLOAT)}, {"dropout_ratio": 0.5}),
}
# V1LayerParameter.LayerType: the enum values of the types a trained AlexNet holds, by their current names.
V1_TYPES = {1: "Accuracy", 4: "Convolution", 5: "Data", 6: "Dropout", 8: "Flatten", 12: "ImageData",
            14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss",
            22: "Split", 24: "WindowData", 29: "MemoryData", 9: "HDF5Data", 32: "DummyData", 36: "Silence"}
PARAM_OF = {"Convolution": "convolution", "InnerProduct": "inner_product", "LRN": "lrn", "Pooling": "pooling",
            "Dropout": "dropout"}
ENCODINGS = {"layers": "2014 encoding (V1LayerParameter, `layers`, field 2)",
             "layer": "current encoding (LayerParameter, `layer`, field 100)"}


@dataclass
class Blob:
    dims: tuple             # as stored: 4-d num/channels/height/width, or BlobShape's dims
    data: np.ndarray        # a view of the file (float32 or float64), not a copy
    start: int = 0          # the byte range of the blob in the file (to release its pages once copied)
    stop: int = 0


@dataclass
class Layer:
    name: str
    type: str
    bottom: list
    top: list
    params: dict = field(default_factory=dict)
    blobs: list = field(default_factory=list)


@dataclass
class Net:
    name: str
    encoding: str
    layers: list
    buffer: object          # the memory-mapped file the blobs' data views read


def read_blob(buf, start, stop):
    """A BlobProto in buf[start:stop]: its dims and a view of its values."""
    b = parse(buf, start, stop, BLOB)
    if b["shape"] is not None:
        dims = tuple(parse(buf, *b["shape"], BLOB_SHAPE)["dim"])
    else:
        dims = tuple(b[k] or 0 for k in ("num", "channels", "height", "width"))
    parts = b["data"] or b["double_data"]
    data = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.zeros(0, np.float32))
    return Blob(dims, data, start, stop)


def _layer(buf, start, stop, v1):
    fields_ = parse(buf, start, stop, V1_LAYER if v1 else LAYER)
    if v1 and fields_["v0"] is not None:
        raise Malformed("holds layers of the V0 encoding (before 2014): convert it with Caffe's "
                        "upgrade_net_proto_binary first")
    kind = fields_["type"]
    if v1:
        kind = V1_TYPES.get(kind, f"V1 type #{kind}") if kind is not None else "(no type)"
    kind = kind or "(no type)"
    layer = Layer(fields_["name"] or "", kind, fields_["bottom"], fields_["top"])
    if kind in PARAM_OF:
        schema, defaults = PARAMS[PARAM_OF[kind]]
        given = fields_[PARAM_OF[kind]]
        values = parse(buf, *given, schema) if given is not None else {}
        layer.params = {**defaults, **{k: v for k, v in values.items() if v not in (None, [])}}
    layer.blobs = [read_blob(buf, *r) for r in fields_["blobs"]]
    return layer


def open_mapped(path, flag=""):
    """The file at `path` memory-mapped read-only (the kernel reads it on demand, once)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise CaffeError(f"{flag}{path} is empty: download it again")
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def read_net(path):
    """The layers of the NetParameter in the .caffemodel at `path`, in file order."""
    buf = open_mapped(path)
    fix = "pass the .caffemodel (a binary NetParameter), e.g. bvlc_alexnet.caffemodel"
    try:
        # Caffe writes a net's fields in number order: its name (1), then `layers` (2) or `layer` (100).
        # Another first field is another file, even where it later runs past the end like a cut download.
        number, wire, _, _ = next_field(buf, 0, len(buf))
        if number not in NET or wire != BYTES:
            raise Malformed(f"starts with field {number} of wire type {wire}, where a net starts with its "
                            f"name or its layers")
        net = parse(buf, 0, len(buf), NET)
        if net["layers"] and net["layer"]:
            raise Malformed("holds layers in both encodings (`layers` and `layer`)")
        key = "layer" if net["layer"] else "layers"
        layers = [_layer(buf, *r, v1=key == "layers") for r in net[key]]
    except Malformed as e:
        if e.truncated:
            raise CaffeError(f"{path} is truncated: it {e}; download it again (the model zoo's readme "
                             f"gives bvlc_alexnet's sha1, 9116a64c0fbe4459d18f4bb6b56d647b63920377)") from None
        raise CaffeError(f"{path} is not a Caffe NetParameter: it {e}; {fix}") from None
    if not layers:
        raise CaffeError(f"{path} holds no layers, so it is not a trained Caffe net; {fix}")
    return Net(net["name"] or "", ENCODINGS[key], layers, buf)


def read_blob_file(path):
    """The BlobProto of a Caffe .binaryproto (a mean image): (dims, float64 values)."""
    buf = open_mapped(path, "--mean ")
    try:
        blob = read_blob(buf, 0, len(buf))
    except Malformed as e:
        what = "truncated" if e.truncated else "not a Caffe BlobProto"
        raise CaffeError(f"--mean {path} is {what}: it {e}; pass Caffe's imagenet_mean.binaryproto "
                         f"or ilsvrc_2012_mean.npy") from None
    return blob.dims, np.array(blob.data, dtype=np.float64)
