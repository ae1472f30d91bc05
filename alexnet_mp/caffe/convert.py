"""Caffe's bvlc_alexnet as this project's checkpoint: the shape check and the conversion.

bvlc_alexnet (BVLC model zoo, Caffe commit 709dc15, 2014) is this project's
two-column net with its conv2, conv4 and conv5 at `group: 2`, and four
differences, each handled here without a second tower:
* LRN: k = 1, and one window over all 96 (256) maps, crossing the columns (ours
  stays in each column, spec §1): the config fields `lrn_k` and `lrn_across_columns`.
* Input: 227 crops, no padding before conv1 (ours pads 224 to 227; from conv1 on the
  geometry is the same, spec §1): `crop`. BGR order: folded into conv1's input
  channels, so the data pipeline stays RGB. The mean image is Caffe's, turned to RGB.
* Dropout: inverted (x2 while training, identity at test). In the paper's form kept
  here (x0.5 at test, spec §1) the same function needs fc7's and fc8's weights x2,
  1 / (1 - ratio) in general.
* Pooling: Caffe rounds pooled sizes up, torch down; for 55, 27 and 13 with window 3,
  stride 2 both give 27, 13, 6 (checked here for the file's own pooling).
"""
import hashlib
import math
import mmap
from dataclasses import dataclass

import numpy as np
import torch

from alexnet_mp.caffe.netparam import read_blob_file, read_net
from alexnet_mp.caffe.wire import CaffeError
from alexnet_mp.config import IMAGE_SIZE, ModelConfig, TrainConfig, to_dict
from alexnet_mp.errors import ConfigError
from alexnet_mp.model.arch import ARCH, HEAD, RGB, canonical_shapes, map_sizes, width

# Caffe's data layer crops 227 and pads nothing: (227 - 11) / 4 + 1 = 55, conv1's map size (spec §1).
CAFFE_CROP = 227
# Layers around the network that carry no weights and compute nothing the logits need.
AROUND = {"Data", "ImageData", "Input", "MemoryData", "HDF5Data", "WindowData", "DummyData", "Softmax",
          "SoftmaxWithLoss", "Accuracy", "Silence", "Split"}
NOT_ALEXNET = ("only bvlc_alexnet's shape converts (conv1 relu LRN pool, conv2 relu LRN pool, conv3, conv4, "
               "conv5 pool, fc6 dropout, fc7 dropout, fc8)")
MEAN_FIX = "pass Caffe's imagenet_mean.binaryproto (1x3x256x256) or ilsvrc_2012_mean.npy (3x256x256), BGR"
# The layers that read a dropout's output: their weights take the dropout factor.
AFTER_DROPOUT = tuple(ARCH[i].name for i in range(1, len(ARCH)) if ARCH[i - 1].dropout)


@dataclass
class Imported:
    checkpoint: dict        # model, config, classes, data_mean, imported_from
    config: ModelConfig
    encoding: str
    net_name: str
    around: list            # names of the data and loss layers skipped
    names_given: bool
    sorted_classes: bool
    sha1: str


def slots():
    """(ARCH layer, Caffe type) in bvlc_alexnet's order: conv/fc, ReLU, LRN, pool, dropout as the table says."""
    out = []
    for layer in ARCH:
        out.append((layer, "Convolution" if layer.kernel else "InnerProduct"))
        out += [(layer, kind) for kind, present in (("ReLU", layer is not HEAD), ("LRN", layer.lrn),
                                                   ("Pooling", layer.pool), ("Dropout", layer.dropout)) if present]
    return out


def network_layers(net, path):
    """The layers of `net` that compute, in AlexNet's order, chained output to input; else one line."""
    layers, want = [lay for lay in net.layers if lay.type not in AROUND], slots()
    for i, (arch, kind) in enumerate(want):
        if i == len(layers):
            after = f"after layer {layers[-1].name!r}" if layers else "before any layer"
            raise CaffeError(f"{path} ends {after}, where AlexNet has its {arch.name} {kind} layer: "
                             f"{NOT_ALEXNET}")
        if layers[i].type != kind:
            swapped = (layers[i].type, kind) == ("Pooling", "LRN") and layers[i + 1:i + 2] and \
                layers[i + 1].type == "LRN"
            hint = " (CaffeNet pools before its LRN; bvlc_alexnet normalises, then pools)" if swapped else ""
            raise CaffeError(f"{path}: layer {layers[i].name!r} is {layers[i].type} where bvlc_alexnet has the "
                             f"{arch.name} {kind} layer{hint}: {NOT_ALEXNET}")
    if len(layers) > len(want):
        extra = layers[len(want)]
        raise CaffeError(f"{path} has {len(layers) - len(want)} more layer(s) after fc8, the first "
                         f"{extra.name!r} ({extra.type}): {NOT_ALEXNET}")
    for prev, layer in zip(layers, layers[1:]):
        if not (layer.bottom and prev.top and layer.bottom[0] == prev.top[0]):
            raise CaffeError(f"{path}: layer {layer.name!r} reads {layer.bottom[:1] or 'nothing'}, not the "
                             f"output of {prev.name!r} ({prev.top[:1]}): {NOT_ALEXNET}")
    return list(zip(want, layers))


def _geometry(p, name, h, w, default):
    """One of kernel/stride/pad of a ConvolutionParameter: an int where square, else a tuple."""
    if p.get(h) is not None or p.get(w) is not None:
        values = [p.get(h, default), p.get(w, default)]
    else:
        values = p.get(name) or [default]
    return values[0] if len(set(values)) == 1 else tuple(values)


def _differ(path, layer, arch, found, want, hint=""):
    for key, value in want.items():
        if found[key] != value:
            raise CaffeError(f"{path}: layer {layer.name!r} has {key} {found[key]} where bvlc_alexnet's "
                             f"{arch.name} has {value}{hint if key == 'group' else ''}: {NOT_ALEXNET}")


def check_weight_layer(arch, layer, path):
    """conv/fc hyper-parameters against the table (§3.5, Figure 2); returns its output count."""
    p, out = layer.params, width(arch, 2) * 2
    if arch.kernel:
        found = {"num_output": p.get("num_output"), "kernel_size": _geometry(p, "kernel_size", "kernel_h",
                                                                             "kernel_w", None),
                 "stride": _geometry(p, "stride", "stride_h", "stride_w", 1),
                 "pad": _geometry(p, "pad", "pad_h", "pad_w", 0), "group": p["group"], "bias_term": p["bias_term"]}
        want = {"num_output": out, "kernel_size": arch.kernel, "stride": arch.stride, "pad": arch.pad,
                "group": 2 if arch.reads == "own" else 1, "bias_term": 1}
        _differ(path, layer, arch, found, want, " (the two-column net's conv2, conv4 and conv5 read their own "
                                                "group of maps)")
        return out
    want = {"bias_term": 1, "transpose": 0}
    if arch is not HEAD:
        want["num_output"] = out
    _differ(path, layer, arch, {k: p.get(k) for k in ("num_output", "bias_term", "transpose")}, want)
    if not p.get("num_output"):
        raise CaffeError(f"{path}: layer {layer.name!r} (fc8) has no outputs: {NOT_ALEXNET}")
    return p["num_output"]


def _one_setting(path, layers, keys, what):
    """The single setting that all of `layers` (the two LRNs, the three pools, the two dropouts) share."""
    settings = {tuple(lay.params.get(k) for k in keys) for lay in layers}
    if len(settings) > 1:
        raise CaffeError(f"{path}: the {what} layers {', '.join(repr(lay.name) for lay in layers)} differ in "
                         f"{'/'.join(keys)}: this network has one setting for all of them")
    return dict(zip(keys, settings.pop()))


def _float(x):
    return float(f"{x:.7g}")        # a float32 of the file, at the digits it holds (0.0001, not 9.99999975e-05)


def _check_pooling(path, pool, cfg):
    """Caffe rounds pooled sizes up, torch down: the file's pooling must give the same sizes both ways."""
    if pool["pool"] != 0 or pool["pad"] or pool["global_pooling"]:
        raise CaffeError(f"{path}: the pooling is not AlexNet's (max, unpadded; found pool method "
                         f"{pool['pool']}, pad {pool['pad']}): {NOT_ALEXNET}")
    try:
        down, up = map_sizes(cfg), map_sizes(cfg, ceil=True)
    except ConfigError as e:
        raise CaffeError(f"{path}: {e}") from None
    for name in down:
        if up[name] != down[name]:
            raise CaffeError(f"{path}: pooling {cfg.pool_size}/{cfg.pool_stride} after {name} gives {up[name]}x"
                             f"{up[name]} maps in Caffe (rounding up) and {down[name]}x{down[name]} here: {NOT_ALEXNET}")


def model_config(pairs, path):
    """The ModelConfig of the variant the file holds (its LRN, pooling and dropout settings, 227 crops)."""
    of = {kind: [lay for (_, k), lay in pairs if k == kind] for kind in ("LRN", "Pooling", "Dropout")}
    lrn = _one_setting(path, of["LRN"], ("local_size", "alpha", "beta", "k", "norm_region"), "LRN")
    pool = _one_setting(path, of["Pooling"], ("pool", "kernel_size", "stride", "pad", "global_pooling"), "pooling")
    ratio = _one_setting(path, of["Dropout"], ("dropout_ratio",), "dropout")["dropout_ratio"]
    if lrn["norm_region"] != 0 or lrn["local_size"] % 2 == 0:
        raise CaffeError(f"{path}: the LRN is not across channels with an odd window (norm_region "
                         f"{lrn['norm_region']}, local_size {lrn['local_size']}): {NOT_ALEXNET}")
    if not 0 <= ratio < 1:
        raise CaffeError(f"{path}: dropout_ratio {ratio} is outside [0, 1): the file is damaged")
    outputs = [check_weight_layer(arch, lay, path) for (arch, kind), lay in pairs
               if kind in ("Convolution", "InnerProduct")]
    if not pool["kernel_size"]:
        raise CaffeError(f"{path}: the pooling layers give no kernel_size: {NOT_ALEXNET}")
    cfg = ModelConfig(num_classes=outputs[-1], lrn_size=lrn["local_size"], lrn_alpha=_float(lrn["alpha"]),
                      lrn_beta=_float(lrn["beta"]), lrn_k=_float(lrn["k"]), lrn_across_columns=True,
                      pool_size=pool["kernel_size"], pool_stride=pool["stride"], dropout=_float(ratio),
                      crop=CAFFE_CROP)
    _check_pooling(path, pool, cfg)
    return cfg


def _stripped(dims):
    """Dims without leading 1s: Caffe's 4-d blobs store a bias as 1x1x1xN and an fc weight as 1x1xOUTxIN."""
    dims = tuple(int(d) for d in dims)
    while len(dims) > 1 and dims[0] == 1:
        dims = dims[1:]
    return dims


def _release(buf, start, stop):
    """Let the kernel drop the file's pages of a blob already copied: peak memory stays near one copy."""
    if hasattr(buf, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, stop // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            buf.madvise(mmap.MADV_DONTNEED, first, last - first)


def blob_tensor(blob, shape, path, what):
    """A float32 copy of a blob's values in `shape`, after checking its dims and count."""
    if _stripped(blob.dims) != _stripped(shape):
        raise CaffeError(f"{path}: {what} are {'x'.join(map(str, blob.dims))} where this network needs "
                         f"{'x'.join(map(str, shape))}: {NOT_ALEXNET}")
    if blob.data.size != math.prod(shape):
        raise CaffeError(f"{path}: {what} hold {blob.data.size} values where their shape says {math.prod(shape)}: "
                         f"the file is damaged; download it again")
    values = np.array(blob.data, dtype=np.float32).reshape(shape)
    if not (np.isfinite(values.min()) and np.isfinite(values.max())):    # NaN propagates; no temporary array
        raise CaffeError(f"{path}: {what} hold NaN or infinite values: the file is damaged; download it again")
    return torch.from_numpy(values)


def convert_weights(pairs, cfg, buf, path):
    """The canonical state dict: BGR -> RGB in conv1's input channels, the dropout factor in fc7 and fc8."""
    shapes, state = canonical_shapes(config=cfg), {}
    for (arch, kind), layer in pairs:
        if kind not in ("Convolution", "InnerProduct"):
            continue
        if len(layer.blobs) != 2:
            raise CaffeError(f"{path}: layer {layer.name!r} holds {len(layer.blobs)} blob(s) where a trained "
                             f"{arch.name} holds 2 (weights, biases): the file holds no trained net")
        for blob, part in zip(layer.blobs, ("weight", "bias")):
            key = f"{arch.name}.{part}"
            state[key] = blob_tensor(blob, shapes[key], path, f"the {part}s of layer {layer.name!r}")
            _release(buf, blob.start, blob.stop)
    # Caffe's input is BGR (OpenCV's order); this project's is RGB: conv1 reads its channels reversed.
    state["conv1.weight"] = state["conv1.weight"].flip(1).contiguous()
    # spec §1: at test time the paper's dropout scales by (1 - p); Caffe's inverted dropout does not.
    for name in AFTER_DROPOUT:
        state[f"{name}.weight"].mul_(1.0 / (1.0 - cfg.dropout))
    return state


def read_mean(path):
    """Caffe's BGR 3x256x256 mean (.binaryproto or .npy) as this project keeps it: RGB, 256x256x3 float32."""
    with open(path, "rb") as f:
        npy = f.read(6) == b"\x93NUMPY"
    if npy:
        try:
            values = np.load(path, allow_pickle=False)
            dims = values.shape
            values = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise CaffeError(f"--mean {path} is not a numeric .npy array ({str(e)[:80]}): {MEAN_FIX}") from None
    else:
        dims, values = read_blob_file(path)
    want = (RGB, IMAGE_SIZE, IMAGE_SIZE)
    if _stripped(dims) != want or values.size != math.prod(want):
        shown = "x".join(map(str, dims)) + ("" if values.size == math.prod(dims) else f" ({values.size} values)")
        raise CaffeError(f"--mean {path} is {shown or 'empty'}, not a 3x256x256 mean image: {MEAN_FIX}")
    values = values.reshape(want)
    if not np.isfinite(values).all():
        raise CaffeError(f"--mean {path} holds NaN or infinite values: {MEAN_FIX}")
    return np.ascontiguousarray(values[::-1].transpose(1, 2, 0), dtype=np.float32)    # BGR CHW -> RGB HWC


def read_names(path):
    """Caffe's synset_words.txt ('n01440764 tench, Tinca tinca' per line): (wnids in file order, {wnid: name})."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise CaffeError(f"--names {path} is not UTF-8 text: pass Caffe's synset_words.txt") from None
    classes, names = [], {}
    for number, line in enumerate(lines, 1):
        words = line.split(None, 1)
        if not words:
            continue
        if words[0] in names:
            raise CaffeError(f"--names {path} lists {words[0]} twice (line {number}): pass Caffe's "
                             f"synset_words.txt, one class per line")
        classes.append(words[0])
        names[words[0]] = words[1].strip() if len(words) > 1 else ""
    if not classes:
        raise CaffeError(f"--names {path} lists no classes: pass Caffe's synset_words.txt ('n01440764 tench, "
                         f"Tinca tinca' per line)")
    return classes, names


def sha1_of(path):
    """The file's sha1 (the model zoo's readme lists bvlc_alexnet's), read through one 1 MiB buffer."""
    h, buf = hashlib.sha1(), bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def import_caffemodel(model, mean, names=None):
    """An `Imported` (its `checkpoint` ready for torch.save) from a .caffemodel, its mean image and,
    optionally, its class list. Cheap checks first: the mean, the names, the net's shape, then weights."""
    data_mean = read_mean(mean)
    classes, human = read_names(names) if names else (None, {})
    net = read_net(model)
    pairs = network_layers(net, model)
    cfg = model_config(pairs, model)
    if classes is not None and len(classes) != cfg.num_classes:
        raise CaffeError(f"--names {names} lists {len(classes)} classes but {model}'s fc8 has {cfg.num_classes} "
                         f"outputs: pass the class list the net was trained on")
    state = convert_weights(pairs, cfg, net.buffer, model)
    # Without --names the numbers only stand for classes: "placeholder" says so (alexnet_mp.checkpoint),
    # and --weights, evaluate and predict then take a store's classes of the same count in its order.
    meta = ({"classes": classes, "names": human} if classes is not None else
            {"classes": [str(i) for i in range(cfg.num_classes)], "names": {}, "placeholder": True})
    classes = meta["classes"]
    digest = sha1_of(model)
    checkpoint = {"model": state, "config": to_dict(TrainConfig(model=cfg)),
                  "classes": meta, "data_mean": torch.from_numpy(data_mean),
                  "imported_from": {"caffemodel": str(model), "sha1": digest, "encoding": net.encoding,
                                    "net": net.name, "mean": str(mean)}}
    return Imported(checkpoint, cfg, net.encoding, net.name, [lay.name for lay in net.layers if lay.type in AROUND],
                    names is not None, classes == sorted(classes), digest)
