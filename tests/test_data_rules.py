"""Issue 22, items 2, 5 and 6: one class numbering for training and evaluation (``classes=``), one rule for
hidden folders, file-list lines starting with '#', WebDataset tars with PAX headers, EXIF orientation as
torchvision reads it."""

import io
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dali_mixup import compat
from dali_mixup.apps import cli, train
from dali_mixup.apps.args import count_classes, find_splits
from dali_mixup.loader import create_dali_loader

EVAL = dict(batch_size=64, image_size=8, num_threads=1, device="cpu", train=False)


def _jpeg(path, value, size=(8, 8), exif=None):
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0] = value
    img = Image.fromarray(arr)
    img.save(path, "JPEG", quality=95, **({"exif": exif} if exif is not None else {}))


def _folder(root, classes, per_class=2):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _jpeg(root / name / f"{i}.jpg", 40 * c)
    return root


# -- item 2: classes= ------------------------------------------------------------------------------------------

def test_eval_numbers_classes_by_the_training_names(tmp_path):
    train_dir = _folder(tmp_path / "train", ["ant", "bee", "cat", "dog"])
    val_dir = _folder(tmp_path / "val", ["ant", "cat", "dog"])  # no bee: cat and dog keep 2 and 3
    tr = create_dali_loader(train_dir, num_classes=4, **EVAL)
    assert tr.dataset.classes == ["ant", "bee", "cat", "dog"]
    for classes in (tr.dataset.classes, {"ant": 0, "bee": 1, "cat": 2, "dog": 3}):
        ev = create_dali_loader(val_dir, num_classes=4, classes=classes, **EVAL)
        assert ev.dataset.classes == ["ant", "bee", "cat", "dog"]
        labels = [int(v) for _, t in ev for v in t]
        assert labels == [0, 0, 2, 2, 3, 3]
    alone = create_dali_loader(val_dir, num_classes=4, **EVAL)  # without: val/'s own numbering, as before
    assert [int(v) for _, t in alone for v in t] == [0, 0, 1, 1, 2, 2]


def test_classes_refuses_an_unknown_folder_and_bad_values(tmp_path, indexed_list):
    val_dir = _folder(tmp_path / "val", ["ant", "cow"])
    with pytest.raises(ValueError, match=r"val/cow: a class folder that classes= does not name"):
        create_dali_loader(val_dir, num_classes=4, classes=["ant", "bee"], **EVAL)
    with pytest.raises(ValueError, match=r"classes: the index of 'cow' is 7, out of range for num_classes=4"):
        create_dali_loader(val_dir, num_classes=4, classes={"ant": 0, "cow": 7}, **EVAL)
    with pytest.raises(TypeError, match="classes must be a sequence of class names"):
        create_dali_loader(val_dir, num_classes=4, classes="ant", **EVAL)
    with pytest.raises(ValueError, match="classes names 'ant' twice"):
        create_dali_loader(val_dir, num_classes=4, classes=["ant", "ant", "cow"], **EVAL)
    with pytest.raises(ValueError, match="classes: applies to ImageFolder data"):
        create_dali_loader(indexed_list, num_classes=23, classes=["a"], **EVAL)


def test_train_numbers_val_by_train_classes(tmp_path):
    _folder(tmp_path / "data" / "train", ["ant", "bee", "cat"], per_class=4)
    _folder(tmp_path / "data" / "val", ["ant", "cat"])
    args = cli.parse_args(["train", "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
                           "--img-size", "8", "-b", "4", "--model", "test_resnet", "-j", "1",
                           "--device", "cpu", "--epochs", "1"])
    ctx = train.setup("cpu")
    train_dir, val_dir = find_splits(args.data, None)
    t = train.build(args, ctx, train_dir, val_dir, count_classes(train_dir))
    assert [int(v) for _, y in t.val_loader for v in y] == [0, 0, 2, 2]


def test_torchvision_builder_takes_the_training_classes(tmp_path):
    train_dir = _folder(tmp_path / "train", ["ant", "bee", "cat"], per_class=4)
    val_dir = _folder(tmp_path / "val", ["ant", "cat"])
    args = SimpleNamespace(batch_size=4, workers=1, device="cpu", ra_sampler=False, train_crop_size=8,
                           interpolation="bilinear", auto_augment=None, random_erase=0.0, mixup_alpha=0.0,
                           cutmix_alpha=0.0, val_resize_size=8, val_crop_size=8, weights=None)
    tr = compat.from_torchvision_args(args, train=True, data=str(train_dir))
    ev = compat.from_torchvision_args(args, train=False, data=str(val_dir), classes=tr.dataset.classes)
    assert ev.num_classes == 3 and [int(v) for _, y in ev for v in y] == [0, 0, 2, 2]


# -- item 6: hidden folders, one rule --------------------------------------------------------------------------

def test_hidden_folders_are_not_classes_for_loader_train_and_compat(tmp_path):
    root = _folder(tmp_path / "data", ["ant", "bee"])
    (root / ".ipynb_checkpoints").mkdir()
    _jpeg(root / ".ipynb_checkpoints" / "x.jpg", 9)
    loader = create_dali_loader(root, num_classes=2, **EVAL)
    assert loader.dataset.classes == ["ant", "bee"]
    assert count_classes(root) == 2
    args = SimpleNamespace(batch_size=4, workers=1, device="cpu", ra_sampler=False, val_resize_size=8,
                           val_crop_size=8, interpolation="bilinear", weights=None)
    assert compat.from_torchvision_args(args, train=False, data=str(root)).num_classes == 2


# -- item 6: file lists ----------------------------------------------------------------------------------------

def test_file_list_line_starting_with_hash_is_a_sample(tmp_path):
    _jpeg(tmp_path / "#12.jpg", 10)
    _jpeg(tmp_path / "a.jpg", 20)
    (tmp_path / "list.txt").write_text("a.jpg 0\n#12.jpg 1\n")
    loader = create_dali_loader(tmp_path / "list.txt", num_classes=2, **EVAL)
    assert len(loader.dataset) == 2 and loader.dataset.files[1].endswith("#12.jpg")
    assert [int(v) for _, t in loader for v in t] == [0, 1]
    (tmp_path / "notes.txt").write_text("# my images\na.jpg 0\n")
    with pytest.raises(ValueError, match=r"notes.txt:1: label must be an integer"):
        create_dali_loader(tmp_path / "notes.txt", num_classes=2, **EVAL)


# -- item 6: WebDataset tars with PAX headers ------------------------------------------------------------------

def _tar(path, fmt, folder, stem="s"):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(4):
            for ext, data in (("jpg", buf.getvalue()), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"{folder}/{stem}{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_pax_long_names_are_refused_naming_the_shard_gnu_ones_read(tmp_path):
    folder = "d" * 120  # over ustar's 100 characters
    pax = _tar(tmp_path / "pax.tar", tarfile.PAX_FORMAT, folder)  # Python's default format
    with pytest.raises(ValueError, match=r"pax.tar: member .* PAX extended header.*GNU format"):
        create_dali_loader(str(pax), num_classes=2, **EVAL)
    gnu = _tar(tmp_path / "gnu.tar", tarfile.GNU_FORMAT, folder)
    assert [int(v) for _, t in create_dali_loader(str(gnu), num_classes=2, **EVAL) for v in t] == [0, 1, 0, 1]
    short = _tar(tmp_path / "short.tar", tarfile.PAX_FORMAT, "d")  # PAX format, no header needed: read
    assert len(create_dali_loader(str(short), num_classes=2, **EVAL).dataset) == 4
    # a non-ASCII name has a PAX header too, but the header's own (replaced) name keeps the samples apart: read
    accents = _tar(tmp_path / "accents.tar", tarfile.PAX_FORMAT, "d", stem="é")
    assert [int(v) for _, t in create_dali_loader(str(accents), num_classes=2, **EVAL) for v in t] == [0, 1, 0, 1]


# -- item 5: EXIF orientation ----------------------------------------------------------------------------------

def test_exif_orientation_ignored_by_default_as_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    arr[:, :12] = 0  # left half dark: a rotation is obvious
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    (tmp_path / "c").mkdir()
    Image.fromarray(arr).save(tmp_path / "c" / "a.jpg", "JPEG", quality=95)
    Image.fromarray(arr).save(tmp_path / "c" / "b.jpg", "JPEG", quality=95, exif=exif.tobytes())
    kw = dict(batch_size=2, num_classes=1, image_size=24, crop_pct=1.0, num_threads=1, device="cpu", train=False,
              layout="NHWC", mean=(0, 0, 0), std=(1 / 255,) * 3)
    with Image.open(tmp_path / "c" / "b.jpg") as img:  # torchvision's ImageFolder loader: PIL, no transpose
        torchvision_pixels = torch.from_numpy(np.array(img.convert("RGB"))).float()
    (a, b), _ = next(iter(create_dali_loader(tmp_path, **kw)))
    assert torch.equal(a, b)  # the tag ignored: the same pixels
    assert (b - torchvision_pixels).abs().max() <= 2  # DALI's and PIL's JPEG decoders, to the rounding
    (a, b), _ = next(iter(create_dali_loader(tmp_path, exif_orientation=True, **kw)))
    assert torch.equal(b, torch.rot90(a, -1, dims=(0, 1)))  # upright, as DALI's default did
    loader = create_dali_loader(tmp_path, **kw)
    other = create_dali_loader(tmp_path, exif_orientation=True, **kw)
    with pytest.raises(ValueError, match="augment"):  # in the stream identity
        other.load_state_dict(loader.state_dict())
