"""Figures of a checkpoint or a run, as files: conv1's kernels (Figure 3), fc7 neighbours
(Figure 4; pooled conv5 for the global-average-pool head, as its caption says), the training
curves. The drawing itself is `alexnet_mp.eval.figures`."""
import os

import numpy as np
import torch
from PIL import Image

from alexnet_mp.data.images import to_256
from alexnet_mp.data.store import Store, StoreDataset
from alexnet_mp.data.transforms import EvalTransform
from alexnet_mp.distributed.placement import input_device
from alexnet_mp.errors import UsageError
from alexnet_mp.eval import figures
from alexnet_mp.eval.inference import load_for_inference
from alexnet_mp.files import atomic_write
from alexnet_mp.files import read_records
from alexnet_mp.numerics import configure

COMMON = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".bmp", ".webp")     # named first in messages


def _common_first(extensions):
    return sorted(extensions, key=lambda e: (COMMON.index(e) if e in COMMON else len(COMMON), e))


def image_formats():
    """{'.png': 'PNG', ...}: the file types PIL can write, the common ones first."""
    Image.init()
    formats = {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    return {ext: formats[ext] for ext in _common_first(formats)}


def figure_formats():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("curves and arch need matplotlib: pip install 'alexnet_mp[viz]' "
                         "(or pip install matplotlib)")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    return _common_first("." + ext for ext in Figure().canvas.get_supported_filetypes())


def save_image(img, path):
    fmt = image_formats()[os.path.splitext(path)[1].lower()]
    atomic_write(path, lambda f: img.save(f, format=fmt))


def filters_file(checkpoint, out):
    """conv1's kernels, one block per column, into `out`; (colour-specificity per column, per kernel)."""
    model, _, _, _ = load_for_inference(checkpoint)
    w = model.canonical_state_dict()["conv1.weight"].numpy()
    columns = model.config.columns
    save_image(figures.filters_grid(w, columns), out)
    scores = figures.colour_specificity(w)
    per_column = len(w) // columns
    return [float(scores[per_column * c:per_column * (c + 1)].mean()) for c in range(columns)], scores


def curves_file(metrics, out, warn):
    if not os.path.isfile(metrics):
        raise UsageError(f"no metrics file at {metrics}: pass the metrics.jsonl in a training --output-dir")
    records = read_records(metrics, warn=warn)
    if not records:
        raise UsageError(f"{metrics} holds no records yet: plot it after the first logged step "
                         f"(every --print-freq steps)")
    ext = os.path.splitext(out)[1].lower()
    atomic_write(out, lambda f: figures.curves_figure(records, f, ext[1:]))


def neighbours_file(checkpoint, data_path, query, out, k=6, batch_size=32, workers=0, device=None):
    """Each query image's k nearest training images in fc7 (pooled conv5 for the "gap" head), drawn
    into `out` with a caption naming the space; (indices, store).
    `device`: where the network runs (--device: `alexnet_mp.distributed.placement.one_device`);
    None: the first GPU, else the CPU."""
    model, _, _, mean = load_for_inference(checkpoint, data_path, devices=None if device is None else [device],
                                           need_mean=True, match_classes=False)      # fc7 needs no classes
    configure(input_device(model))      # fc7 in float32, as tools/evaluate.py computes (a GPU would run TF32)
    store = Store(data_path, "train")
    if k > len(store):
        raise UsageError(f"-k {k} is more than the {len(store)} training images of {data_path}: lower -k")
    centre = EvalTransform(mean, crops=1, input_scale=model.config.input_scale, crop=model.config.crop)
    queries = []
    for path in query:
        try:
            queries.append(to_256(path))
        except Exception as e:
            raise UsageError(f"cannot read query image {path} ({type(e).__name__}): pass a JPEG or PNG file")
    q = torch.stack([centre(img) for img in queries])
    loader = torch.utils.data.DataLoader(StoreDataset(store, centre), batch_size=batch_size, num_workers=workers)
    _, idx = figures.nearest(model, q, loader, input_device(model), k=k)
    caption = f"each query (left), then its {k} nearest training images in {figures.feature_space(model.config)}"
    save_image(figures.neighbours_grid(queries, [[store[i][0] for i in row] for row in idx], caption=caption), out)
    return idx, store


def run_figures(out, store, warn=print):
    """The three figures of a training run in `out` (its model_best.pt and metrics.jsonl), into
    <out>/figures/, with one validation image of every third class as the queries."""
    fig = os.path.join(out, "figures")
    os.makedirs(fig, exist_ok=True)
    ckpt = os.path.join(out, "model_best.pt")
    val = Store(store, "val")
    queries = []
    for c in range(0, len(val.classes), 3):
        i = int(np.flatnonzero(val.labels == c)[0])
        path = os.path.join(fig, f"query_{c}.png")
        Image.fromarray(np.asarray(val[i][0])).save(path)
        queries.append(path)
    filters_file(ckpt, os.path.join(fig, "filters.png"))
    curves_file(os.path.join(out, "metrics.jsonl"), os.path.join(fig, "curves.png"), warn)
    neighbours_file(ckpt, store, queries, os.path.join(fig, "neighbours.png"))
    return fig
