"""The paper's Figure 2 as tools/visualize.py arch draws it: every number from the architecture table."""
import os
from dataclasses import replace

import matplotlib
import pytest
from PIL import Image

from alexnet_mp import AlexNet, ModelConfig
from alexnet_mp.checkpoint import atomic_save
from alexnet_mp.cli import visualize
from alexnet_mp.eval.archfig import arch_file, layout

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


def conv_sides(crop, pad, pool, stride=2):
    """(conv output side, side after pooling) of conv1..conv5, by conv arithmetic on spec §1's
    kernels (11 s4, 5 p2, 3 p1 x3), pooled after conv1, conv2 and conv5."""
    out, side = {}, crop + pad
    for name, k, s, p, pooled in (("conv1", 11, 4, 0, True), ("conv2", 5, 1, 2, True), ("conv3", 3, 1, 1, False),
                                  ("conv4", 3, 1, 1, False), ("conv5", 3, 1, 1, True)):
        conv = (side + 2 * p - k) // s + 1
        side = (conv - pool) // stride + 1 if pooled else conv
        out[name] = (conv, side)
    return out


def by_layer(boxes):
    return {name: [b for b in boxes if b.layer == name] for name in ["input"] + LAYERS}


def test_the_papers_net_has_spec_1s_maps_and_sizes_in_each_column():
    boxes = by_layer(layout(ModelConfig()))
    sides = conv_sides(224, 3, 3)
    assert sides["conv1"] == (55, 27) and sides["conv5"] == (13, 6)        # spec §1's table
    per_column = dict(zip(LAYERS, [48, 128, 192, 192, 128, 2048, 2048]))    # spec §1: "per column"
    for name in LAYERS:
        assert [b.column for b in boxes[name]] == [0, 1], name
        for b in boxes[name]:
            assert b.maps == per_column.get(name, 500), name                # fc8: 1000 classes, 500 a column
            assert (b.side, b.pooled) == sides.get(name, (0, 0)), name
    assert [b.maps * b.pooled ** 2 for b in boxes["conv5"]] == [4608, 4608]  # fc6 reads 9216 = 6x6x256
    assert {n for n, bs in boxes.items() if all(b.exchange for b in bs)} == {"conv3", "fc6", "fc7", "fc8"}
    assert {n for n, bs in boxes.items() if bs[0].lrn} == {"conv1", "conv2"}
    assert {n: bs[0].pool for n, bs in boxes.items() if bs[0].pool} == dict.fromkeys(
        ["conv1", "conv2", "conv5"], "max-pool 3/2")
    assert boxes["input"][0].maps == 3 and boxes["input"][0].side == 224
    assert boxes["conv1"][0].label == "conv1\n55x55x48\n11x11 s4"


def test_variants_change_the_boxes_as_the_table_says():
    one = by_layer(layout(ModelConfig(columns=1)))
    # §3.2's footnote: conv1-4 halved, conv5 and fc6/fc7 not; one column, so no exchange
    assert [one[n][0].maps for n in LAYERS] == [48, 128, 192, 192, 256, 4096, 4096, 1000]
    assert all(len(one[n]) == 1 and not one[n][0].exchange for n in LAYERS)
    plain = by_layer(layout(ModelConfig(lrn=False, pool_size=2)))
    assert not any(b.lrn for bs in plain.values() for b in bs)
    sides = conv_sides(224, 3, 2)
    assert {n: (bs[0].side, bs[0].pooled, bs[0].pool) for n, bs in plain.items() if bs[0].pool} == {
        n: sides[n] + ("max-pool 2/2",) for n in ("conv1", "conv2", "conv5")}
    odd = by_layer(layout(ModelConfig(num_classes=11)))
    assert [b.maps for b in odd["fc8"]] == [6, 5]
    caffe = by_layer(layout(ModelConfig(crop=227, lrn_across_columns=True)))     # no pad: 227 -> 55 too
    assert caffe["conv1"][0].side == conv_sides(227, 0, 3)["conv1"][0] == 55
    assert caffe["conv1"][0].lrn == "LRN across columns"


def test_every_label_drawn_is_a_box_of_the_layout(tmp_path):
    """Drawn as SVG with its text kept as text: each box's label lines are in the file."""
    path = str(tmp_path / "arch.svg")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        boxes = arch_file(replace(ModelConfig(), pool_size=2), path)
    svg = open(path, encoding="utf-8").read()
    for b in boxes:
        for line in b.label.splitlines() + [b.pool]:
            assert line in svg, line
    assert "13x13x192" in svg and "max-pool 2/2 -&gt; 6x6" in svg


def test_the_tool_draws_the_paper_net_a_variant_and_a_checkpoints_net(tmp_path, capsys):
    out = str(tmp_path / "arch.png")
    assert visualize.main(["arch", "--out", out]) == 0
    assert Image.open(out).format == "PNG" and "2 column(s), 16 layer boxes" in capsys.readouterr().out
    assert visualize.main(["arch", "--columns", "1", "--no-lrn", "--out", out]) == 0
    assert "1 column(s), 8 layer boxes, 1000 classes" in capsys.readouterr().out
    ckpt = str(tmp_path / "one.pt")
    atomic_save(AlexNet(7, seed=0, config=ModelConfig(columns=1)).state_dict(), ckpt)
    assert visualize.main(["arch", "--checkpoint", ckpt, "--out", out]) == 0
    assert "1 column(s), 8 layer boxes, 7 classes" in capsys.readouterr().out


@pytest.mark.parametrize("args, says", [(["--columns", "1"], "drop --columns"),
                                        (["--pool", "2", "--no-lrn"], "drop --no-lrn, --pool")])
def test_checkpoint_and_variant_flags_together_are_one_line(tmp_path, capsys, args, says):
    ckpt = str(tmp_path / "net.pt")
    atomic_save(AlexNet(3, seed=0).state_dict(), ckpt)
    code = visualize.main(["arch", "--checkpoint", ckpt, "--out", str(tmp_path / "a.png")] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0] and not os.path.exists(tmp_path / "a.png")
