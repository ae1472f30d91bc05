"""prepare reads the datasets users bring as they come (issue 26): each tree is made here in its
real layout, prepared, and every stored image's label checked against the class it was made as."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from alexnet_mp import AlexNet
from alexnet_mp.cli import evaluate as evaluate_cli
from alexnet_mp.cli import prepare_data
from alexnet_mp.data.prepare import prepare
from alexnet_mp.data.sources import hold_out
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes
from alexnet_mp.errors import StoreError
from tests import py2pickle
from tests.helpers import assert_one_line_result


def _image(path, seed, size=(36, 28)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def _made(tree):
    """{path relative to the tree: class} of what a test made, filled in as it makes it."""
    return tree.setdefault("truth", {})


def assert_labels_match(store, split, truth, prefix=""):
    """Every stored image of `split` carries the class its file was made as; none is missing."""
    s = Store(store, split)
    classes = read_classes(store)["classes"]
    got = {prefix + f: classes[int(v)] for f, v in zip(s.files, s.labels)}
    assert got == truth


def _prepare(src, out, *flags):
    lines = []
    prepare(str(src), str(out), workers=1, log=lines.append, **dict(flags))
    return lines


# --- ImageNet-style trees ----------------------------------------------------------------------

def test_train_valid_and_a_labelled_test_folder_become_three_splits(tmp_path):
    src, truth = tmp_path / "kaggle", {"train": {}, "valid": {}, "test": {}}
    for split, per_class in (("train", 3), ("valid", 2), ("test", 1)):
        for c in ("beetle", "moth", "wasp"):
            for i in range(per_class):
                _image(str(src / split / c / f"{i}.jpg"), seed=hash((split, c, i)) % 999)
                truth[split][f"{c}/{i}.jpg"] = c
    (src / "sample_submission.csv").write_text("id,label\n")
    lines = _prepare(src, tmp_path / "store")
    assert_labels_match(str(tmp_path / "store"), "train", truth["train"])
    assert_labels_match(str(tmp_path / "store"), "val", truth["valid"])
    assert_labels_match(str(tmp_path / "store"), "test", truth["test"])
    torch.save(AlexNet(3, seed=0).state_dict(), tmp_path / "bare.pt")
    code = evaluate_cli.main(["--checkpoint", str(tmp_path / "bare.pt"), "--data-path", str(tmp_path / "store"),
                              "--split", "test", "-j", "0", "--crops", "1", "--predictions", str(tmp_path / "p.csv")])
    assert code == 0
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    assert sorted(r.split(",")[:2] for r in rows) == sorted([f, c] for f, c in truth["test"].items())
    # 3 classes: a top-3 and its probabilities, the header as wide as the rows
    assert header.split(",") == ["path", "true", "top1", "top2", "top3", "prob1", "prob2", "prob3"]
    assert all(len(r.split(",")) == 8 for r in rows)
    said = "\n".join(lines)
    assert "read as an ImageNet-style tree (train/, valid/, test/)" in said
    assert "val: valid/<class>/ folders" in said and "not used: sample_submission.csv" in said


def test_class_folders_with_no_split_are_refused_before_anything_is_written(tmp_path, capsys):
    for c in ("a", "b"):
        _image(str(tmp_path / "src" / c / "0.png"), seed=ord(c))
    code = prepare_data.main([str(tmp_path / "src"), str(tmp_path / "store")])
    line = assert_one_line_result(code, capsys, "has no validation split: pass --val-split 0.1")
    assert not (tmp_path / "store").exists()
    assert "--no-val" in line


def test_no_val_makes_a_train_only_store_on_purpose(tmp_path):
    truth = {}
    for c in ("a", "b"):
        for i in range(2):
            _image(str(tmp_path / "src" / c / f"{i}.png"), seed=10 * ord(c) + i)
            truth[f"{c}/{i}.png"] = c
    lines = _prepare(tmp_path / "src", tmp_path / "store", ("no_val", True))
    assert_labels_match(str(tmp_path / "store"), "train", truth)
    assert not (tmp_path / "store" / "val").exists()
    assert "val: none (--no-val)" in "\n".join(lines)


# --- --val-split ------------------------------------------------------------------------------

def test_val_split_holds_out_about_the_fraction_of_each_class():
    """n = 4000 names per class; the hash rule draws each independently, so a class's val share
    has standard error sqrt(F (1 - F) / n) (0.0047 at F = 0.1): 4 of them bound a correct rule."""
    classes, n, fraction = ["a", "b", "c"], 4000, 0.1
    files = [f"{c}/img_{i:05d}.jpg" for c in classes for i in range(n)]
    labels = [k for k in range(len(classes)) for _ in range(n)]
    tfiles, tlabels, vfiles, vlabels = hold_out(classes, files, labels, fraction, "SRC")
    assert not set(tfiles) & set(vfiles) and sorted(tfiles + vfiles) == sorted(files)
    se = (fraction * (1 - fraction) / n) ** 0.5
    for k in range(len(classes)):
        share = vlabels.count(k) / n
        assert abs(share - fraction) < 4 * se, (classes[k], share)


def test_val_split_never_moves_a_file_when_files_are_added(tmp_path):
    src, out = tmp_path / "src", tmp_path / "store"
    for c in ("ant", "bee"):
        for i in range(10):
            _image(str(src / c / f"{i}.png"), seed=100 * len(c) + i)
    _prepare(src, out, ("val_split", 0.4))
    before = {split: set(Store(str(out), split).files) for split in ("train", "val")}
    assert before["train"] and before["val"] and not before["train"] & before["val"]
    for c in ("ant", "bee"):
        for i in range(10, 20):
            _image(str(src / c / f"{i}.png"), seed=100 * len(c) + i)
    _prepare(src, out, ("val_split", 0.4))
    after = {split: set(Store(str(out), split).files) for split in ("train", "val")}
    assert before["train"] <= after["train"] and before["val"] <= after["val"]     # both directions
    assert not after["train"] & after["val"] and len(after["train"] | after["val"]) == 40
    meta = read_classes(str(out))
    assert meta["val_split"]["fraction"] == 0.4 and "SHA-1" in meta["val_split"]["rule"]
    for split, files in after.items():
        assert_labels_match(str(out), split, {f: f.split("/")[0] for f in files})


# --- Kaggle's ImageNet ------------------------------------------------------------------------

def _kaggle_imagenet(top):
    """imagenet-object-localization-challenge/ as Kaggle ships it, with 2 classes."""
    wnids = ["n01440764", "n01443537"]
    cls_loc = top / "ILSVRC" / "Data" / "CLS-LOC"
    truth = {"train": {}, "val": {}}
    for k, w in enumerate(wnids):
        for i in range(2):
            _image(str(cls_loc / "train" / w / f"{w}_{i}.JPEG"), seed=k * 10 + i)
            truth["train"][f"{w}/{w}_{i}.JPEG"] = w
    rows = ["ImageId,PredictionString"]
    for i in range(4):
        w = wnids[i % 2]
        _image(str(cls_loc / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG"), seed=50 + i)
        truth["val"][f"ILSVRC2012_val_{i + 1:08d}.JPEG"] = w
        rows.append(f"ILSVRC2012_val_{i + 1:08d},{w} 1 2 30 20 {w} 3 4 10 10 ")
    _image(str(cls_loc / "test" / "ILSVRC2012_test_00000001.JPEG"), seed=99)
    os.makedirs(top / "ILSVRC" / "Annotations" / "CLS-LOC")
    (top / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (top / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    (top / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n")
    (top / "LOC_sample_submission.csv").write_text("ImageId,PredictionString\n")
    return truth


def test_kaggle_imagenet_from_its_top_folder(tmp_path):
    top = tmp_path / "imagenet-object-localization-challenge"
    truth = _kaggle_imagenet(top)
    lines = _prepare(top, tmp_path / "store")
    for split in ("train", "val"):
        assert_labels_match(str(tmp_path / "store"), split, truth[split])
    meta = read_classes(str(tmp_path / "store"))
    assert meta["names"] == {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus"}
    said = "\n".join(lines)
    assert "read as Kaggle's ImageNet" in said and "LOC_val_solution.csv" in said
    unused = next(line for line in lines if line.startswith("not used: "))
    for entry in ("ILSVRC/Data/CLS-LOC/test (unlabelled)", "LOC_train_solution.csv", "LOC_sample_submission.csv",
                  "ILSVRC/Annotations"):
        assert entry in unused


def test_kaggle_imagenet_from_cls_loc_with_the_csv_given(tmp_path):
    top = tmp_path / "kaggle"
    truth = _kaggle_imagenet(top)
    cls_loc = top / "ILSVRC" / "Data" / "CLS-LOC"
    lines = _prepare(cls_loc, tmp_path / "store", ("labels_csv", str(top / "LOC_val_solution.csv")))
    assert_labels_match(str(tmp_path / "store"), "val", truth["val"])
    assert any("test (unlabelled)" in line for line in lines)


def test_a_loc_solution_row_for_a_missing_file_is_named(tmp_path, capsys):
    top = tmp_path / "kaggle"
    _kaggle_imagenet(top)
    with open(top / "LOC_val_solution.csv", "a") as f:
        f.write("ILSVRC2012_val_00000099,n01440764 1 2 3 4\n")
    code = prepare_data.main([str(top), str(tmp_path / "store"), "-j", "1"])
    assert_one_line_result(code, capsys, f"LOC_val_solution.csv line 6: {top}/ILSVRC/Data/CLS-LOC/val/"
                                         f"ILSVRC2012_val_00000099.JPEG does not exist")
    assert not (tmp_path / "store").exists()


# --- TinyImageNet-200 -------------------------------------------------------------------------

def _tiny(root):
    wnids = ["n02124075", "n04067472", "n01443537"]
    truth = {"train": {}, "val": {}}
    (root / "train").mkdir(parents=True)
    for k, w in enumerate(wnids):
        for i in range(2):
            _image(str(root / "train" / w / "images" / f"{w}_{i}.JPEG"), seed=k * 7 + i, size=(64, 64))
            truth["train"][f"{w}/images/{w}_{i}.JPEG"] = w
        (root / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t10\t10\n")
    rows = []
    for i in range(6):
        w = wnids[(i * 2) % 3]
        _image(str(root / "val" / "images" / f"val_{i}.JPEG"), seed=40 + i, size=(64, 64))
        truth["val"][f"images/val_{i}.JPEG"] = w
        rows.append(f"val_{i}.JPEG\t{w}\t0\t3\t44\t62")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    _image(str(root / "test" / "images" / "test_0.JPEG"), seed=77, size=(64, 64))
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n00001740\tentity\nn02124075\tEgyptian cat\nn04067472\treel\n"
                                    "n01443537\tgoldfish, Carassius auratus\nn00002137\tabstraction\n")
    return truth


def test_tiny_imagenet_reads_wnids_words_and_val_annotations(tmp_path):
    truth = _tiny(tmp_path / "tiny-imagenet-200")
    lines = _prepare(tmp_path / "tiny-imagenet-200", tmp_path / "store")
    for split in ("train", "val"):
        assert_labels_match(str(tmp_path / "store"), split, truth[split])
    meta = read_classes(str(tmp_path / "store"))
    assert meta["classes"] == sorted(["n02124075", "n04067472", "n01443537"])
    assert meta["names"] == {"n02124075": "Egyptian cat", "n04067472": "reel", "n01443537": "goldfish, Carassius auratus"}
    said = "\n".join(lines)
    assert "read as TinyImageNet-200" in said and "test (unlabelled)" in said and "3 box files" in said


def test_an_annotation_naming_an_unknown_wnid_names_its_line(tmp_path, capsys):
    root = tmp_path / "tiny"
    _tiny(root)
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    code = prepare_data.main([str(root), str(tmp_path / "store")])
    assert_one_line_result(code, capsys, "val_annotations.txt line 7: n99999999 is not a class of wnids.txt")
    assert not (tmp_path / "store").exists()


# --- CIFAR ------------------------------------------------------------------------------------

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(seed, labels):
    """CIFAR rows (R, G, B planes of 32x32) and the HWC images they hold."""
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
    return hwc.transpose(0, 3, 1, 2).reshape(len(labels), 3072), hwc


def _cifar10(folder, per_file=4):
    os.makedirs(folder)
    made = {"train": {}, "val": {}}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [(i * 3 + len(name)) % 10 for i in range(per_file)]
        data, hwc = _rows(len(name) * 31 + int(name[-1] if name[-1].isdigit() else 0), labels)
        (folder / name).write_bytes(py2pickle.dumps({"batch_label": f"batch {name}", "labels": labels, "data": data,
                                                      "filenames": [f"img_{i}.png" for i in range(per_file)]}))
        for i, v in enumerate(labels):
            made["val" if name == "test_batch" else "train"][f"{name}:{i}"] = (CIFAR10_NAMES[v], hwc[i])
    (folder / "batches.meta").write_bytes(py2pickle.dumps({"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_file,
                                                           "num_vis": 3072}))
    (folder / "readme.html").write_text("<html></html>")
    return made


def _torchvision_256(hwc):
    """Independent reference: torchvision's Resize(256) + CenterCrop(256) of the 32x32 image."""
    return np.asarray(transforms.CenterCrop(256)(transforms.Resize(256)(Image.fromarray(hwc))))


def test_cifar10_pickles_are_read_with_names_as_classes_and_pixels_enlarged_as_s2(tmp_path):
    made = _cifar10(tmp_path / "cifar-10-batches-py")
    lines = _prepare(tmp_path / "cifar-10-batches-py", tmp_path / "store")
    store = str(tmp_path / "store")
    assert read_classes(store)["classes"] == sorted(CIFAR10_NAMES)
    for split in ("train", "val"):
        assert_labels_match(store, split, {ref: c for ref, (c, _) in made[split].items()})
        s = Store(store, split)
        for i in (0, len(s) - 1):
            assert np.array_equal(s[i][0], _torchvision_256(made[split][s.files[i]][1])), s.files[i]
    said = "\n".join(lines)
    assert "read as CIFAR-10" in said and "val: test_batch" in said and "not used: readme.html" in said


def test_cifar100_keys_fine_labels_and_keeps_the_coarse_ones(tmp_path):
    folder = tmp_path / "download" / "cifar-100-python"
    os.makedirs(folder)
    fine, coarse = ["maple_tree", "apple", "oak_tree", "pear"], ["fruit", "trees"]
    fine_of_coarse = {0: 1, 1: 0, 2: 1, 3: 0}
    made = {}
    for split, seed in (("train", 1), ("test", 2)):
        labels = [seed % 4, 0, 1, 2, 3, 2]
        data, _ = _rows(seed, labels)
        (folder / split).write_bytes(py2pickle.dumps({"filenames": ["x"] * 6, "batch_label": split,
                                                      "fine_labels": labels,
                                                      "coarse_labels": [fine_of_coarse[v] for v in labels],
                                                      "data": data}))
        made["val" if split == "test" else "train"] = {f"{split}:{i}": fine[v] for i, v in enumerate(labels)}
    (folder / "meta").write_bytes(py2pickle.dumps({"fine_label_names": fine, "coarse_label_names": coarse}))
    _prepare(tmp_path / "download", tmp_path / "store")          # the folder that holds cifar-100-python/
    for split in ("train", "val"):
        assert_labels_match(str(tmp_path / "store"), split, made[split])
    meta = read_classes(str(tmp_path / "store"))
    assert meta["coarse_classes"] == {f: coarse[fine_of_coarse[k]] for k, f in enumerate(fine)}


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:5000]), "data_batch_3 is not a readable CIFAR pickle"),
    (lambda p: p.write_bytes(b"\x80\x02cos\nsystem\nU\x04trueq\x85R."),
     "data_batch_3 is not a readable CIFAR pickle (UnpicklingError: it names os.system"),
    (lambda p: p.write_bytes(py2pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]})),
     "data_batch_3: 'labels' is not 2 labels in 0..9"),
    (lambda p: p.unlink(), "is CIFAR-10's python archive without its file data_batch_3: extract the archive again"),
])
def test_a_cut_or_foreign_pickle_is_one_line_naming_the_file(tmp_path, capsys, damage, message):
    folder = tmp_path / "cifar-10-batches-py"
    _cifar10(folder)
    damage(folder / "data_batch_3")
    assert_one_line_result(prepare_data.main([str(folder), str(tmp_path / "store")]), capsys, message)
    assert not (tmp_path / "store").exists()


# --- bad --val-split --------------------------------------------------------------------------

def test_bad_val_splits_are_one_line_and_leave_no_store(tmp_path, capsys):
    src = tmp_path / "src"
    for i in range(6):
        _image(str(src / "many" / f"{i}.png"), seed=i)
    _image(str(src / "lonely" / "only.png"), seed=9)
    (tmp_path / "lab.csv").write_text("x.png,many\n")
    cases = [(["--val-split", "1.5"], "--val-split 1.5 is outside (0, 1)"),
             (["--val-split", "0"], "--val-split 0.0 is outside (0, 1)"),
             (["--val-split", "0.1", "--no-val"], "not allowed with argument"),
             (["--val-split", "0.05"], "leaves class lonely (1 images in"),
             (["--labels", str(tmp_path / "lab.csv"), "--no-val"], "holds class folders with no split: drop --labels")]
    for flags, message in cases:
        assert_one_line_result(prepare_data.main([str(src), str(tmp_path / "store")] + flags), capsys, message)
        assert not (tmp_path / "store").exists()


# --- what a re-run, a zip from a Mac and a half-labelled folder leave -------------------------

def test_a_split_the_source_no_longer_gives_is_removed_not_kept(tmp_path):
    """Kept, a held-out val would hold training images after --no-val, and a test/ that was
    deleted would keep labels numbered by an older class list."""
    src, out = tmp_path / "src", tmp_path / "store"
    for split, n in (("train", 6), ("test", 1)):
        for c in ("x", "y"):
            for i in range(n):
                _image(str(src / split / c / f"{i}.png"), seed=hash((split, c, i)) % 999)
    _prepare(src, out, ("val_split", 0.5))
    assert (out / "val").is_dir() and (out / "test").is_dir()
    for i in range(6):
        _image(str(src / "train" / "a" / f"{i}.png"), seed=500 + i)      # a new first class
    os.rename(src / "test", tmp_path / "test.moved")
    lines = _prepare(src, out, ("no_val", True))
    assert not (out / "val").exists() and not (out / "test").exists()
    assert sum("removed " in line for line in lines) == 2
    assert_labels_match(str(out), "train", {f: f.split("/")[0] for f in Store(str(out), "train").files})


def test_the_rebuild_command_of_a_damaged_store_repeats_its_flags(tmp_path):
    src, out = tmp_path / "src", tmp_path / "store"
    for c in ("x", "y"):
        for i in range(4):
            _image(str(src / c / f"{i}.png"), seed=10 * ord(c) + i)
    (tmp_path / "names.txt").write_text("x ex\ny why\n")
    prepare(str(src), str(out), workers=1, log=lambda *a: None, fmt="jpeg", names_file=str(tmp_path / "names.txt"),
            val_split=0.5)
    os.remove(out / "val" / "status.u8")
    with pytest.raises(StoreError) as e:
        Store(str(out), "val")
    command = str(e.value).split("`")[1].split()
    assert command[:4] == ["python", "tools/prepare_data.py", str(src), str(out)]
    flags = dict(zip(command[4::2], command[5::2]))
    assert flags == {"--val-split": "0.5", "--format": "jpeg", "--names": str(tmp_path / "names.txt")}
    assert prepare_data.main(command[2:] + ["-j", "1"]) == 0
    assert Store(str(out), "val").format == "jpeg" and read_classes(str(out))["names"] == {"x": "ex", "y": "why"}


def test_what_lies_beside_the_classes_is_named_and_never_a_class(tmp_path):
    src = tmp_path / "src"
    for c in ("x", "y"):
        for i in range(2):
            _image(str(src / "train" / c / f"{i}.png"), seed=10 * ord(c) + i)
            _image(str(src / "train" / "__MACOSX" / c / f"._{i}.png"), seed=i)
    _image(str(src / "train" / "stray.png"), seed=3)
    os.makedirs(src / "train" / "x" / ".ipynb_checkpoints")
    for i in range(3):
        _image(str(src / "val" / f"v{i}.png"), seed=90 + i)
    (tmp_path / "val.csv").write_text("v0.png,x\nv1.png,y\n")
    lines = _prepare(src, tmp_path / "store", ("labels_csv", str(tmp_path / "val.csv")))
    assert read_classes(str(tmp_path / "store"))["classes"] == ["x", "y"]
    said = "\n".join(lines)
    assert "train/__MACOSX/" in said and "train/stray.png" in said and "x/.ipynb_checkpoints/" in said
    assert "1 images in val/ with no label row (e.g. v2.png)" in said


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_format_pickles_written_by_python3_read_too(tmp_path, protocol):
    """Sets published in CIFAR's format are often re-pickled by Python 3: bytes keys, protocol 5."""
    import pickle
    made = _cifar10(tmp_path / "cifar-10-batches-py")
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        path = tmp_path / "cifar-10-batches-py" / name
        data = pickle.loads(path.read_bytes(), encoding="latin1")
        again = {k.encode(): ([n.encode() for n in v] if k == "label_names" else v) for k, v in data.items()}
        path.write_bytes(pickle.dumps(again, protocol=protocol))
    _prepare(tmp_path / "cifar-10-batches-py", tmp_path / "store")
    assert_labels_match(str(tmp_path / "store"), "val", {ref: c for ref, (c, _) in made["val"].items()})


def test_an_empty_val_folder_says_so_and_names_the_way_out(tmp_path, capsys):
    for c in ("x", "y"):
        _image(str(tmp_path / "src" / "train" / c / "0.png"), seed=ord(c))
    os.makedirs(tmp_path / "src" / "val")
    code = prepare_data.main([str(tmp_path / "src"), str(tmp_path / "store")])
    assert_one_line_result(code, capsys, "val holds no images: put the val images in it (in class folders), or "
                                         "remove it and pass --val-split 0.1")


def test_statistics_are_the_same_figures_at_any_worker_count(tmp_path, monkeypatch):
    """The spans are summed in a fixed order, so -j changes the speed and never the mean or PCA."""
    from alexnet_mp.data import prepare as prepare_module
    monkeypatch.setattr(prepare_module, "STATS_SPAN", 2)       # 8 spans: the pool is used
    src = tmp_path / "src"
    for i in range(16):
        _image(str(src / "train" / f"c{i % 2}" / f"{i}.png"), seed=i)
    for i in range(2):
        _image(str(src / "val" / f"c{i}" / f"{i}.png"), seed=100 + i)
    _prepare(src, tmp_path / "store")
    one = prepare_module.compute_stats(str(tmp_path / "store"), workers=1)
    two = prepare_module.compute_stats(str(tmp_path / "store"), workers=2)
    assert all(np.array_equal(one[k], two[k]) for k in one)
    pixels = np.stack([Store(str(tmp_path / "store"), "train")[i][0] for i in range(16)]).astype(np.float64)
    np.testing.assert_allclose(one["mean"], pixels.mean(axis=0), rtol=1e-12)
