"""The tests' own writer of Caffe files (.caffemodel, .binaryproto), from caffe.proto's field
numbers. It shares no code with `alexnet_mp.caffe`, the importer it checks: a mistake in one
does not cancel out in the other."""
import struct

import numpy as np

# caffe.proto: V1LayerParameter.LayerType values, and each encoding's field numbers.
V1_ENUM = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14,
           "Dropout": 6, "SoftmaxWithLoss": 21, "Accuracy": 1, "Sigmoid": 19}
FIELDS = {
    "v1": {"net_layers": 2, "name": 4, "type": 5, "bottom": 2, "top": 3, "blobs": 6,
           "Convolution": 10, "Dropout": 12, "InnerProduct": 17, "LRN": 18, "Pooling": 19},
    "current": {"net_layers": 100, "name": 1, "type": 2, "bottom": 3, "top": 4, "blobs": 7,
                "Convolution": 106, "Dropout": 108, "InnerProduct": 117, "LRN": 118, "Pooling": 121},
}
# Sub-message fields: (number, "varint" or "float").
PARAM_FIELDS = {
    "Convolution": {"num_output": (1, "varint"), "pad": (3, "varint"), "kernel_size": (4, "varint"),
                    "group": (5, "varint"), "stride": (6, "varint")},
    "LRN": {"local_size": (1, "varint"), "alpha": (2, "float"), "beta": (3, "float"), "k": (5, "float")},
    "Pooling": {"pool": (1, "varint"), "kernel_size": (2, "varint"), "stride": (3, "varint")},
    "InnerProduct": {"num_output": (1, "varint")},
    "Dropout": {"dropout_ratio": (1, "float")},
}


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(number, wire):
    return varint(number << 3 | wire)


def length_field(number, payload):
    return key(number, 2) + varint(len(payload)) + payload


def float_values(number, values, packed):
    """A repeated float field: one packed field, or one keyed 4-byte field per value."""
    values = np.ascontiguousarray(values, dtype="<f4").ravel()
    if packed:
        return length_field(number, values.tobytes())
    records = np.empty(values.size, dtype=[("key", "u1"), ("value", "<f4")])
    records["key"] = number << 3 | 5
    records["value"] = values
    return records.tobytes()


def blob(values, encoding="v1", packed=True, dims=None):
    """A BlobProto: 2014 blobs give num/channels/height/width (leading 1s), current ones a BlobShape."""
    dims = tuple(np.shape(values)) if dims is None else tuple(dims)
    if encoding == "v1":
        four = (1,) * (4 - len(dims)) + dims
        head = b"".join(key(n, 0) + varint(d) for n, d in zip((1, 2, 3, 4), four))
    else:
        head = length_field(7, length_field(1, b"".join(varint(d) for d in dims)))
    return head + float_values(5, values, packed)


def params(kind, values):
    out = b""
    for name, value in values.items():
        number, how = PARAM_FIELDS[kind][name]
        out += key(number, 0) + varint(value) if how == "varint" else key(number, 5) + struct.pack("<f", value)
    return out


def layer(spec, encoding="v1", packed=True):
    """One layer message from {name, type, bottom, top, params, blobs}."""
    f = FIELDS[encoding]
    kind = spec["type"]
    out = length_field(f["name"], spec["name"].encode())
    out += key(f["type"], 0) + varint(V1_ENUM[kind]) if encoding == "v1" else length_field(f["type"], kind.encode())
    for b in spec.get("bottom", ()):
        out += length_field(f["bottom"], b.encode())
    for t in spec.get("top", ()):
        out += length_field(f["top"], t.encode())
    if spec.get("params"):
        out += length_field(f[kind], params(kind, spec["params"]))
    parts = [out] + [length_field(f["blobs"], blob(v, encoding, packed)) for v in spec.get("blobs", ())]
    return b"".join(parts)


def write_net(path, specs, encoding="v1", packed=True, name="AlexNet"):
    """A NetParameter: its name, then each layer as `layers` (2014) or `layer` (current)."""
    with open(path, "wb") as f:
        f.write(length_field(1, name.encode()))
        for spec in specs:
            payload = layer(spec, encoding, packed)
            f.write(key(FIELDS[encoding]["net_layers"], 2) + varint(len(payload)))
            f.write(payload)


def write_mean(path, mean_bgr, packed=True, encoding="v1"):
    """imagenet_mean.binaryproto's form: one BlobProto, 1x3x256x256."""
    with open(path, "wb") as f:
        f.write(blob(np.asarray(mean_bgr)[None], encoding, packed))


CONVS = (("conv1", 96, 11, 4, 0, 1), ("conv2", 256, 5, 1, 2, 2), ("conv3", 384, 3, 1, 1, 1),
         ("conv4", 384, 3, 1, 1, 2), ("conv5", 256, 3, 1, 1, 2))      # name, outputs, kernel, stride, pad, group
LRN_PARAMS = {"local_size": 5, "alpha": 1e-4, "beta": 0.75}       # bvlc_alexnet: k left at Caffe's default, 1
POOL_PARAMS = {"pool": 0, "kernel_size": 3, "stride": 2}


def random_weights(num_classes, seed=0, fc8_scale=0.05):
    """{layer: (weights, biases)} in Caffe's layout, He-scaled so that activations keep their size
    (fc8 `fc8_scale` times that: logits of a few units, so that the softmax is not one-hot).
    conv1: column 0 grey kernels (B = G = R), column 1 kernels on the blue channel alone
    (Caffe's channel 0), so Figure 3's two columns are known in advance."""
    rng = np.random.default_rng(seed)
    shapes = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
              "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216), "fc7": (4096, 4096),
              "fc8": (num_classes, 4096)}
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        out[name] = (w, (0.1 * rng.standard_normal(shape[0])).astype(np.float32))
    out["fc8"][0][:] *= np.float32(fc8_scale)
    w = out["conv1"][0]
    w[:48] = w[:48, :1] * np.float32(np.sqrt(1 / 3))           # grey: one pattern in all three channels
    w[48:, 1:] = 0                                               # blue only
    w[48:, 0] *= np.float32(np.sqrt(3))
    return out


def alexnet_specs(weights, lrn=None, pool=None, order="alexnet", dropout=0.5, classes=10):
    """bvlc_alexnet's train_val layers (data, conv1 ... fc8, loss), ReLU and dropout in place.
    order="caffenet": pooling before LRN, as CaffeNet (bvlc_reference_caffenet) has them."""
    lrn, pool = lrn or LRN_PARAMS, pool or POOL_PARAMS
    specs = [{"name": "data", "type": "Data", "top": ["data", "label"]}]
    prev = "data"

    def add(name, kind, params=None, blobs=(), inplace=False):
        nonlocal prev
        top = prev if inplace else name
        specs.append({"name": name, "type": kind, "bottom": [prev], "top": [top], "params": params,
                      "blobs": blobs})
        prev = top
    for i, (name, out, kernel, stride, pad, group) in enumerate(CONVS, 1):
        conv = {"num_output": out, "kernel_size": kernel, "stride": stride}
        conv.update({"pad": pad} if pad else {})
        conv.update({"group": group} if group > 1 else {})
        add(name, "Convolution", conv, weights.get(name, ()))
        add(f"relu{i}", "ReLU", inplace=True)
        norm_pool = [(f"norm{i}", "LRN", lrn), (f"pool{i}", "Pooling", pool)] if i <= 2 else \
            ([(f"pool{i}", "Pooling", pool)] if i == 5 else [])
        if order == "caffenet":
            norm_pool = norm_pool[::-1]
        for n, kind, p in norm_pool:
            add(n, kind, p)
    for i in (6, 7, 8):
        w = weights.get(f"fc{i}", ())
        outputs = w[0].shape[0] if w else (4096 if i < 8 else classes)
        add(f"fc{i}", "InnerProduct", {"num_output": outputs}, w)
        if i < 8:
            add(f"relu{i}", "ReLU", inplace=True)
            add(f"drop{i}", "Dropout", {"dropout_ratio": dropout}, inplace=True)
    specs.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": [prev, "label"], "top": ["loss"]})
    return specs


def without(specs, name):
    return [s for s in specs if s["name"] != name]
