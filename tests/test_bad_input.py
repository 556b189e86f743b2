"""Bad input and misuse: every case gets a clear error that names the thing, or a counted, documented skip
(docs/bad-input.md). CPU-only DALI pipelines on tiny images the tests write."""

import io
import json
import logging
import os
import shutil
import tarfile

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.datasets import find_dataset
from dali_mixup.loader import BACKENDS, create_dali_loader

SMALL = dict(num_classes=5, image_size=8, num_threads=1, device="cpu")


def _jpeg_bytes(seed=0, size=(12, 10)):
    from PIL import Image
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _loader(data, **kw):
    args = dict(batch_size=2, train=False, **SMALL)
    args.update(kw)
    return create_dali_loader(data, **args)


def _folder(root, classes=("a", "b"), per_class=3):
    """ImageFolder of tiny JPEGs: root/<class>/<i>.jpg."""
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.jpg").write_bytes(JPEG)
    return root


def _samples(n, labels=None):
    """WebDataset members of n samples: s0000.jpg, s0000.cls, ..."""
    labels = list(range(n)) if labels is None else labels
    members = []
    for i, label in enumerate(labels):
        members += [(f"s{i:04d}.jpg", _jpeg_bytes(i)), (f"s{i:04d}.cls", str(label).encode())]
    return members


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _labels(loader):
    """Per batch, the labels of an epoch (class-index or one-hot targets)."""
    return [(t.argmax(1) if t.ndim == 2 else t).tolist() for _, t in loader]


@pytest.fixture(scope="module")
def indexed13(tmp_path_factory):
    """File list of 13 JPEGs whose label is the sample's index (num_classes=13)."""
    root = tmp_path_factory.mktemp("indexed13")
    for i in range(13):
        (root / f"{i:02d}.jpg").write_bytes(_jpeg_bytes(i))
    (root / "list.txt").write_text("".join(f"{i:02d}.jpg {i}\n" for i in range(13)))
    return root / "list.txt"


# ---- 1. labels from every source are checked alike ---------------------------------------------------------------

@pytest.mark.parametrize("text,match", [("-1", "label must be >= 0"), ("x", "label must be an integer"),
                                        ("1.5", "label must be an integer"), ("\u0663", "label must be an integer"),
                                        ("", "label must be an integer"), ("7", "label 7 is out of range")])
def test_bad_label_in_webdataset_cls_is_refused_naming_shard_and_key(tmp_path, text, match):
    members = _samples(3, [0, 1, 2])
    members[3] = ("s0001.cls", text.encode())
    shard = _tar(tmp_path / "t.tar", members)
    with pytest.raises(ValueError, match=f"t.tar: s0001.cls: {match}"):
        _loader(shard)


@pytest.mark.parametrize("text,match", [("-1", "label must be >= 0"), ("x", "label must be an integer"),
                                        ("\u0663", "label must be an integer"), ("5", "label 5 is out of range"),
                                        ("", "expected 'path label'")])
def test_bad_label_in_file_list_is_refused_naming_the_line(tmp_path, text, match):
    (tmp_path / "0.jpg").write_bytes(JPEG)
    (tmp_path / "list.txt").write_text(f"0.jpg 1\n0.jpg {text}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"list.txt:2: {match}"):
        _loader(tmp_path / "list.txt")


def test_webdataset_label_made_bad_after_construction_is_caught_when_read(tmp_path):
    shard = _tar(tmp_path / "t.tar", _samples(4, [0, 1, 2, 3]))
    loader = _loader(shard)
    changed = _tar(tmp_path / "changed.tar", _samples(4, [0, 1, 9, 3])).read_bytes()
    with open(shard, "r+b") as fh:  # same length, same inode: what DALI reads now
        fh.write(changed)
    with pytest.raises(RuntimeError, match="t.tar: s0002.cls: label 9 is out of range for num_classes=5"):
        list(loader)


# ---- 2. a state identifies the stream it was saved over -----------------------------------------------------------

CFG = dm.MixupConfig(13, mixup_alpha=0.8, cutmix_alpha=1.0)
TRAIN = dict(batch_size=2, num_classes=13, image_size=8, num_threads=1, device="cpu", mixup=CFG, seed=3)


def _state_after_one_batch(data, **kw):
    loader = create_dali_loader(data, **dict(TRAIN, **kw))
    next(iter(loader))
    return loader.state_dict()


@pytest.mark.parametrize("change,field", [
    (dict(image_size=12), "image_size"), (dict(train=False), "train"), (dict(backend="dali"), "backend"),
    (dict(mixup=dm.MixupConfig(13, mixup_alpha=0.2)), "mixup"), (dict(hflip=0.0), "augment"),
    (dict(scale=(0.5, 1.0)), "augment"), (dict(seed=4), "seed"), (dict(batch_size=3), "batch_size"),
    (dict(shard_id=0, num_shards=2), "num_shards"), (dict(auto_augment="ra"), "augment"),
    (dict(placement="graph"), "placement"),
])
def test_state_saved_with_other_options_is_refused_naming_the_field(indexed13, change, field):
    state = _state_after_one_batch(indexed13)
    other = create_dali_loader(indexed13, **dict(TRAIN, **change))
    with pytest.raises(ValueError, match=f"saved over another stream: {field} was"):
        other.load_state_dict(state)


def test_state_saved_with_other_targets_is_refused(indexed13):
    state = _state_after_one_batch(indexed13, mixup=None)
    other = create_dali_loader(indexed13, **dict(TRAIN, mixup=None, targets="index"))
    with pytest.raises(ValueError, match="saved over another stream: targets was 'soft', this loader has 'index'"):
        other.load_state_dict(state)


def test_state_saved_over_other_data_is_refused_naming_the_field(indexed13, tmp_path):
    state = _state_after_one_batch(indexed13)
    lines = [f"{indexed13.parent}/{line}" for line in indexed13.read_text().splitlines()]
    more = tmp_path / "more.txt"
    more.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(ValueError, match="samples was 13, this loader has 14"):
        create_dali_loader(more, **TRAIN).load_state_dict(state)
    relabelled = tmp_path / "relabelled.txt"
    relabelled.write_text("\n".join(lines[:-1] + [f"{indexed13.parent}/12.jpg 0"]) + "\n")
    with pytest.raises(ValueError, match="sample_list was '[0-9a-f]{64}', this loader has '[0-9a-f]{64}'"):
        create_dali_loader(relabelled, **TRAIN).load_state_dict(state)


def test_state_of_a_moved_dataset_resumes_through_torch_save_and_json(indexed13, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(indexed13.parent, moved)
    loader = create_dali_loader(indexed13, **TRAIN)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [t.clone() for _, t in it]
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf)
    state["identity"] = json.loads(json.dumps(state["identity"]))
    resumed = create_dali_loader(moved / "list.txt", **TRAIN)
    resumed.load_state_dict(state)
    again = [t for _, t in resumed]
    assert len(again) == len(rest) == len(loader) - 1
    assert all(torch.equal(a, b) for a, b in zip(rest, again))


OLD_STATE = {"epoch": 0, "step": 1, "in_epoch": True, "seed": 3, "shard_id": 0, "num_shards": 1, "batch_size": 2,
             "mixup_enabled": True, "dali": b""}


@pytest.mark.parametrize("state,exc,match", [
    ({}, ValueError, "state_dict is empty"),
    (OLD_STATE, ValueError, "no 'format' key .an older dali-mixup."),
    ({"format": 1, "epoch": 0}, ValueError, "has format 1; this loader reads format 3"),
    ({"format": 2, "epoch": 0}, ValueError, "has format 2; this loader reads format 3"),  # before issue 22's order
    ({"format": 3, "epoch": 0}, ValueError, r"lacks \['dali', 'identity', 'in_epoch', 'mixup_enabled', 'step'\]"),
    ([("epoch", 0)], TypeError, "state_dict must be a dict"),
])
def test_state_that_is_empty_old_or_malformed_is_refused_clearly(indexed13, state, exc, match):
    loader = create_dali_loader(indexed13, **TRAIN)
    with pytest.raises(exc, match=match):
        loader.load_state_dict(state)


def test_state_with_a_broken_dali_checkpoint_or_step_is_refused(indexed13):
    state = _state_after_one_batch(indexed13)
    loader = create_dali_loader(indexed13, **TRAIN)
    with pytest.raises(ValueError, match=r"state_dict\['step'\] must be an integer in \[0, 6\], got 7"):
        loader.load_state_dict(dict(state, step=7))
    with pytest.raises(ValueError, match=r"state_dict\['dali'\] cannot be restored"):
        loader.load_state_dict(dict(state, dali=b"not a checkpoint"))


# ---- 3. tars: truncation and corruption are named -----------------------------------------------------------------

def _member_offsets(path):
    with tarfile.open(path) as tar:
        return [m.offset for m in tar]


def test_tar_truncated_at_a_member_boundary_is_named(tmp_path):
    shard = _tar(tmp_path / "t.tar", _samples(10, [i % 5 for i in range(10)]))
    cut = _member_offsets(shard)[10]  # the header of sample 5: 5 whole samples remain
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"t.tar: truncated: the tar ends without its end-of-archive block "
                                         r"\(after member 's0004.cls'\)"):
        _loader(shard)


def test_tar_cut_in_half_is_named_truncated_not_a_missing_label(tmp_path):
    shard = _tar(tmp_path / "t.tar", _samples(10, [i % 5 for i in range(10)]))
    raw = shard.read_bytes()
    for cut in (len(raw) // 2, _member_offsets(shard)[7] + 600):  # anywhere, and inside a member's data
        shard.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="t.tar: truncated"):
            _loader(shard)


def test_corrupt_tar_header_is_named_with_its_byte(tmp_path):
    shard = _tar(tmp_path / "t.tar", _samples(6, [i % 5 for i in range(6)]))
    offset = _member_offsets(shard)[4]
    raw = bytearray(shard.read_bytes())
    raw[offset + 148] ^= 0x11  # the header checksum
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"t.tar: corrupt tar header at byte {offset} .after member 's0001.cls'."):
        _loader(shard)


def test_compressed_or_non_tar_shard_is_refused(tmp_path):
    import gzip
    raw = _tar(tmp_path / "plain.tar", _samples(2)).read_bytes()
    (tmp_path / "z.tar").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="z.tar: a gzip-compressed tar; DALI reads uncompressed tars only"):
        _loader(tmp_path / "z.tar")
    (tmp_path / "text.tar").write_text("hello" * 200)
    with pytest.raises(ValueError, match="text.tar: not a readable tar file"):
        _loader(tmp_path / "text.tar")
    (tmp_path / "dir.tar").mkdir()
    with pytest.raises(ValueError, match="dir.tar: not a file"):
        _loader([str(tmp_path / "dir.tar")])
    with pytest.raises(FileNotFoundError, match="WebDataset shard not found: .*nope.tar"):
        _loader([str(tmp_path / "plain.tar"), str(tmp_path / "nope.tar")])
    with pytest.raises(FileNotFoundError, match="no WebDataset shards match .*train-.*.tar"):
        _loader(str(tmp_path / "train-*.tar"))


def test_corrupt_image_inside_a_tar_is_named_by_shard_and_key(tmp_path):
    members = _samples(4, [0, 1, 2, 3])
    members[4] = ("s0002.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg" * 4)
    shard = _tar(tmp_path / "t.tar", members)
    with pytest.raises(RuntimeError, match=r"t.tar: corrupt image\(s\) in sample\(s\) s0002"):
        list(_loader(shard))


# ---- 4. uneven shards: no empty batch, no sample leaking into the next epoch ---------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_with_uneven_shards_never_yields_an_empty_batch(indexed13, backend):
    # 13 samples in 3 shards of 4, 4, 5; batch 2: DALI pads the 4-sample shards with an empty third batch
    epochs = [[], []]
    for shard in range(3):
        loader = create_dali_loader(indexed13, batch_size=2, num_classes=13, image_size=8, num_threads=1,
                                    device="cpu", train=False, mixup=CFG, backend=backend, shard_id=shard,
                                    num_shards=3)
        for e in range(2):
            expected = len(loader)
            batches = _labels(loader)
            assert len(batches) == expected and all(batches)
            epochs[e] += [i for b in batches for i in b]
    for ids in epochs:
        assert sorted(ids) == list(range(13))  # every sample once per epoch across the ranks


def test_training_with_uneven_shards_repeats_no_sample_across_epochs(indexed13):
    # the smallest shard (4) divides by the batch size (2): DALI's DROP left the padded batch of the 5-sample
    # shard behind and the next epoch started with it (samples repeated across ranks)
    epochs = [[], [], []]
    for shard in range(3):
        loader = create_dali_loader(indexed13, batch_size=2, num_classes=13, image_size=8, num_threads=1,
                                    device="cpu", train=True, shard_id=shard, num_shards=3)
        assert len(loader) == 2
        for e in range(3):
            epochs[e] += [i for _, t in loader for i in t.argmax(1).tolist()]
    for ids in epochs:
        assert len(ids) == 12 and len(set(ids)) == 12


@pytest.mark.parametrize("shard_id", [0, 2])  # a 4-sample shard (padded by DALI to 3 runs) and the 5-sample one
def test_fused_and_dali_backends_agree_across_epochs_with_uneven_shards(indexed13, shard_id):
    # the dali backend keys its parameters by the pipeline run: right only if runs per epoch are counted right
    kw = dict(batch_size=2, num_classes=13, image_size=8, num_threads=1, device="cpu", mixup=CFG, seed=5,
              shard_id=shard_id, num_shards=3, out_dtype=torch.float32)
    fused = create_dali_loader(indexed13, backend="fused", **kw)
    dali = create_dali_loader(indexed13, backend="dali", **kw)
    for _ in range(3):
        ft, dt = [t for _, t in fused], [t for _, t in dali]
        assert len(ft) == len(dt) == 2
        for f, d in zip(ft, dt):
            torch.testing.assert_close(f, d, rtol=0, atol=1e-6)


def test_batch_larger_than_a_training_shard_or_more_shards_than_samples_is_refused(indexed13):
    with pytest.raises(ValueError, match=r"batch_size=5 is larger than a training shard of 4 samples "
                                         r"\(13 samples / 3 shards\)"):
        create_dali_loader(indexed13, **dict(TRAIN, batch_size=5, shard_id=0, num_shards=3))
    with pytest.raises(ValueError, match="13 sample.s. cannot fill num_shards=14 shards"):
        create_dali_loader(indexed13, **dict(TRAIN, train=False, shard_id=0, num_shards=14))


# ---- 5, 6. ImageFolder: empty and hidden class folders, link loops -------------------------------------------------

def test_empty_class_folder_is_refused_naming_it(tmp_path):
    root = _folder(tmp_path / "data", ("a", "b", "c"))
    shutil.rmtree(root / "b")
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"data/b: class folder with no images"):
        _loader(root)


def test_hidden_folders_and_files_are_skipped_and_counted(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    (root / ".ipynb_checkpoints").mkdir()  # would have become class 0 and shifted every label
    (root / "a" / ".ipynb_checkpoints").mkdir()
    (root / "a" / ".ipynb_checkpoints" / "0-checkpoint.jpg").write_bytes(JPEG)
    (root / "a" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, named like an image
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        loader = _loader(root)
    ds = loader.dataset
    assert ds.classes == ["a", "b"] and len(ds) == 6 and ds.hidden == 3
    assert "3 hidden entr(y/ies) skipped" in caplog.text
    assert sorted(i for b in _labels(loader) for i in b) == [0, 0, 0, 1, 1, 1]


def test_symlink_loop_is_followed_once_and_counted(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    os.symlink(".", root / "a" / "self")  # a loop: torchvision reads a/ 41 times over
    os.symlink("..", root / "b" / "up")  # a link to the root: every class again
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "x.jpg").write_bytes(JPEG)
    os.symlink(tmp_path / "extra", root / "b" / "more")  # a link elsewhere: followed
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        ds = find_dataset(root, 5)
    assert len(ds) == 7 and ds.relinked == 2 and ds.duplicates == 0
    assert str(root / "b" / "more" / "x.jpg") in ds.files
    assert "2 link(s) not followed" in caplog.text and "a/self" in caplog.text


def test_broken_symlinks_are_named(tmp_path):
    root = _folder(tmp_path / "data")
    os.symlink(tmp_path / "gone.jpg", root / "a" / "gone.jpg")
    with pytest.raises(FileNotFoundError, match=r"a/gone.jpg: broken symbolic link"):
        _loader(root)
    os.remove(root / "a" / "gone.jpg")
    os.symlink(tmp_path / "unmounted", root / "c")  # a class folder on a missing mount
    with pytest.raises(FileNotFoundError, match=r"data/c: broken symbolic link in the ImageFolder root"):
        _loader(root)


def test_same_file_named_twice_is_kept_and_counted(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    os.symlink("0.jpg", root / "a" / "zz.jpg")
    os.link(root / "a" / "1.jpg", root / "b" / "hard.jpg")  # the same file in two classes
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        ds = find_dataset(root, 5)
    assert len(ds) == 8 and ds.duplicates == 2
    assert "2 sample(s) name a file already named" in caplog.text
    assert "1 file(s) carry two different labels" in caplog.text and "hard.jpg (label 1)" in caplog.text


def test_duplicate_paths_in_a_file_list_are_kept_and_counted(tmp_path, caplog):
    (tmp_path / "0.jpg").write_bytes(JPEG)
    (tmp_path / "1.jpg").write_bytes(JPEG)
    (tmp_path / "list.txt").write_text("0.jpg 1\n1.jpg 2\n./0.jpg 1\n")
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        loader = _loader(tmp_path / "list.txt")
    assert len(loader.dataset) == 3 and loader.dataset.duplicates == 1
    assert "1 sample(s) name a file already named" in caplog.text
    assert sorted(i for b in _labels(loader) for i in b) == [1, 1, 2]


def test_duplicate_shard_in_a_list_is_kept_and_counted(tmp_path, caplog):
    shard = str(_tar(tmp_path / "t.tar", _samples(3, [0, 1, 2])))
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        ds = find_dataset([shard, shard], 5)
    assert len(ds) == 6 and ds.duplicates == 3 and ds.shard_sizes == [3, 3]
    assert "1 shard(s) listed again" in caplog.text


# ---- 7. unchecked bad labels: which rows are NaN ------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    dm.MixupConfig(5, mixup_alpha=1.0),  # a derangement: the bad sample is one other sample's partner
    dm.MixupConfig(5, mixup_alpha=1.0, pairing="flip"),  # odd B: the middle sample is its own partner
    dm.MixupConfig(5, mixup_alpha=1.0, prob=0.0),  # not mixed: partners still drawn
    dm.MixupConfig(5, cutmix_alpha=1.0, mixup_alpha=0.0, mode="pair"),
])
@pytest.mark.parametrize("bad_index,bad_label", [(2, 99), (0, -1)])
def test_unchecked_bad_label_gives_nan_in_its_row_and_where_it_is_the_partner(cfg, bad_index, bad_label):
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8))
    labels = torch.arange(5)
    labels[bad_index] = bad_label
    params = dm.sample_params(cfg, 5, 4, 4, seed=1)
    _, targets = dm.mix_batch(images, labels, cfg, params, check_labels=False)
    nan_rows = set(np.flatnonzero(torch.isnan(targets).any(1).numpy()))
    expected = {bad_index} | set(np.flatnonzero(params.partner == bad_index))
    assert nan_rows == expected and len(expected) <= 2
    assert torch.isnan(targets[sorted(expected)]).all()  # whole rows
    good = [i for i in range(5) if i not in expected]
    torch.testing.assert_close(targets[good].sum(1), torch.ones(len(good)), rtol=0, atol=1e-6)


# ---- unclear errors: file lists, shards, arguments -----------------------------------------------------------------

def test_file_list_with_byte_order_mark_is_read(tmp_path):
    (tmp_path / "0.jpg").write_bytes(JPEG)
    (tmp_path / "1.jpg").write_bytes(JPEG)
    # a BOM at the start, and one mid-file (two lists concatenated), CRLF line ends
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbf0.jpg 0\r\n\xef\xbb\xbf1.jpg 1\r\n")
    assert find_dataset(tmp_path / "list.txt", 5).labels == [0, 1]


def test_file_list_in_latin1_or_binary_is_named_with_its_line(tmp_path):
    (tmp_path / "0.jpg").write_bytes(JPEG)
    (tmp_path / "list.txt").write_bytes("0.jpg 0\n0.jpg 1\ncaf\u00e9.jpg 1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"list.txt:3: not UTF-8 text \(byte 0xe9\); save the list as UTF-8"):
        _loader(tmp_path / "list.txt")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01" * 100)
    with pytest.raises(ValueError, match="blob.bin: a binary file, not a file list"):
        _loader(tmp_path / "blob.bin")


def test_single_image_file_as_data_is_refused_with_a_hint(tmp_path):
    (tmp_path / "photo.JPG").write_bytes(JPEG)
    with pytest.raises(ValueError, match="photo.JPG: data is a single image; pass its ImageFolder"):
        _loader(tmp_path / "photo.JPG")


@pytest.mark.parametrize("data,exc,match", [
    (3, TypeError, "data must be a folder, a file list, a .tar shard, a glob or a list of shards, got int"),
    (None, TypeError, "got NoneType"),
    ([1, 2], TypeError, "data as a list must hold WebDataset shard paths"),
    ([], ValueError, "data is an empty list of WebDataset shards"),
])
def test_data_of_the_wrong_type_is_refused_by_name(data, exc, match):
    with pytest.raises(exc, match=match):
        _loader(data)


def test_webdataset_sample_without_label_or_image_is_named_grammatically(tmp_path):
    members = _samples(3, [0, 1, 2])
    del members[3]  # s0001.cls
    with pytest.raises(ValueError, match=r"t.tar: sample 's0001' has no .cls label \(members: s0001.jpg\)"):
        _loader(_tar(tmp_path / "t.tar", members))
    members = _samples(3, [0, 1, 2])
    members[2] = ("s0001.JPG", members[2][1])  # DALI matches extensions case-sensitively
    with pytest.raises(ValueError, match=r"sample 's0001' has no image \(members: s0001.JPG, s0001.cls; image "
                                         r"extensions, matched case-sensitively"):
        _loader(_tar(tmp_path / "u.tar", members))


def test_webdataset_members_in_dotted_folders_are_read_with_webdatasets_keys(tmp_path):
    members = [(f"train.v1/{name}", data) for name, data in _samples(3, [2, 0, 1])]
    loader = _loader(_tar(tmp_path / "t.tar", members))
    assert sorted(i for b in _labels(loader) for i in b) == [0, 1, 2]


def test_webdataset_members_of_a_sample_apart_are_refused(tmp_path):
    members = _samples(2, [0, 1])
    members = [members[0], members[2], members[1], members[3]]  # s0.jpg s1.jpg s0.cls s1.cls
    with pytest.raises(ValueError, match=r"the members of sample 's0000' are not consecutive"):
        _loader(_tar(tmp_path / "t.tar", members))


def test_webdataset_junk_members_are_ignored_and_counted(tmp_path):
    members = [("README", b"about these shards"), ("._s0000.jpg", b"AppleDouble")] + _samples(3, [0, 1, 2])
    members.insert(4, ("s0001.json", b"{}"))  # an extra component of a sample: not a sample of its own
    members.append(("__index__", b"x"))
    loader = _loader(_tar(tmp_path / "t.tar", members))
    assert len(loader.dataset) == 3 and loader.dataset.ignored == 3
    assert sorted(i for b in _labels(loader) for i in b) == [0, 1, 2]


def test_empty_image_member_in_a_tar_is_named(tmp_path):
    members = _samples(3, [0, 1, 2])
    members[2] = ("s0001.jpg", b"")
    with pytest.raises(ValueError, match=r"t.tar: sample 's0001': the image 's0001.jpg' is empty"):
        _loader(_tar(tmp_path / "t.tar", members))


def test_numpy_integers_are_accepted_and_seeds_beyond_dali_refused_by_name(indexed13):
    loader = create_dali_loader(indexed13, batch_size=np.int64(2), num_classes=np.int32(13), seed=np.int64(3),
                                image_size=np.int64(8), num_threads=1, device="cpu", shard_id=np.int64(0),
                                num_shards=np.int64(1))
    assert loader.seed == 3 and type(loader.seed) is int and len(next(iter(loader))[0]) == 2
    create_dali_loader(indexed13, **dict(TRAIN, seed=2**63 - 1))  # the largest DALI takes
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 9223372036854775807\], "
                                         r"got 9223372036854775808"):
        create_dali_loader(indexed13, **dict(TRAIN, seed=2**63))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 9223372036854767888\]"):
        create_dali_loader(indexed13, **dict(TRAIN, seed=2**63 - 1, shard_id=0, num_shards=2))
    with pytest.raises(TypeError, match="seed must be an integer, got float"):
        create_dali_loader(indexed13, **dict(TRAIN, seed=3.0))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(scale=0.5), TypeError, r"scale must be a pair of numbers \(low, high\), got 0.5"),
    (dict(ratio="ab"), TypeError, "ratio must be a pair of numbers"),
    (dict(scale=(0.1, 0.5, 1.0)), TypeError, "scale must be a pair of numbers"),
    (dict(ratio=(0.5, float("inf"))), ValueError, "ratio must be an increasing pair"),
    (dict(hflip="0.5"), ValueError, "hflip must be a probability"),
    (dict(train="yes"), TypeError, "train must be True or False"),
    (dict(skip_corrupt=1), TypeError, "skip_corrupt must be True or False"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an integer, got float"),
])
def test_bad_argument_types_are_refused_by_name(indexed13, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        create_dali_loader(indexed13, **dict(TRAIN, **kwargs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs,match", [
    (dict(std=(0.2, 0.0, 0.2)), "std must be > 0"),
    (dict(mean=(123.675, 116.28, 103.53)), "mean must be fractions of 255.*looks like the 0-255 convention"),
    (dict(std=(58.395, 57.12, 57.375)), "std must be fractions of 255.*divide by 255"),
    (dict(mean=(0.5, 0.5)), "mean must be 3 finite numbers"),
    (dict(mean="rgb"), "mean must be 3 finite numbers"),
    (dict(std=(0.2, float("nan"), 0.2)), "std must be 3 finite numbers"),
    (dict(mean=(-0.1, 0.4, 0.4)), r"mean must lie in \[0, 1\]"),
])
def test_mean_std_are_checked_at_construction_for_every_backend(indexed13, backend, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_dali_loader(indexed13, **dict(TRAIN, backend=backend, **kwargs))


def test_mix_batch_refuses_the_0_255_convention_too():
    images = torch.zeros((2, 4, 4, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="0-255 convention"):
        dm.mix_batch(images, torch.tensor([0, 1]), dm.MixupConfig(2), mean=(123.675, 116.28, 103.53))


# ---- past the list: what a shared filesystem throws at a loader ---------------------------------------------------

def test_empty_file_is_refused_at_construction_or_skipped(tmp_path):
    root = _folder(tmp_path / "data")
    (root / "a" / "zero.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"a/zero.jpg: image file empty \(0 bytes; skip_corrupt=True"):
        _loader(root)
    loader = _loader(root, skip_corrupt=True)
    assert len(loader.dataset) == 6 and loader.dataset.skipped == 1


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    locked = str(root / "b" / "1.jpg")
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == locked else access(p, mode, **kw))
    with pytest.raises(PermissionError, match=r"b/1.jpg: image file not readable"):
        _loader(root)


def test_permissions_denied_on_a_file_or_a_folder_are_named(tmp_path):
    root = _folder(tmp_path / "data")
    os.chmod(root / "b" / "1.jpg", 0)
    try:
        (root / "b" / "1.jpg").read_bytes()
        os.chmod(root / "b" / "1.jpg", 0o644)
        pytest.skip("this user reads files without read permission (root)")
    except PermissionError:
        pass
    try:
        with pytest.raises(PermissionError, match=r"b/1.jpg: image file not readable"):
            _loader(root)
    finally:
        os.chmod(root / "b" / "1.jpg", 0o644)
    (root / "b" / "sub").mkdir()
    os.chmod(root / "b" / "sub", 0)
    try:
        with pytest.raises(PermissionError, match=r"b/sub: cannot list the folder"):
            _loader(root)
    finally:
        os.chmod(root / "b" / "sub", 0o755)


@pytest.mark.parametrize("change,match", [(os.remove, "not found"), (lambda p: open(p, "wb").close(), "empty")])
def test_file_removed_or_emptied_after_construction_is_named_so(tmp_path, change, match):
    root = _folder(tmp_path / "data")
    loader = _loader(root)
    change(root / "b" / "2.jpg")
    with pytest.raises(RuntimeError, match=f"b/2.jpg: image file {match}"):
        list(loader)


def test_non_utf8_file_name_is_named(tmp_path):
    root = _folder(tmp_path / "data")
    try:
        with open(os.path.join(os.fsencode(root), b"a", b"caf\xe9.jpg"), "wb") as fh:
            fh.write(JPEG)
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    with pytest.raises(ValueError, match=r"caf\\xe9.jpg'?: image file with a name that is not valid UTF-8"):
        _loader(root)
    shard = os.path.join(os.fsencode(tmp_path), b"s\xe9.tar")
    _tar(shard, _samples(2, [0, 1]))
    with pytest.raises(ValueError, match=r"s\\xe9.tar'?: a shard name that is not valid UTF-8"):
        _loader([os.fsdecode(shard)])


def test_pipe_or_folder_named_like_an_image_is_refused(tmp_path):
    root = _folder(tmp_path / "data")
    os.mkfifo(root / "a" / "pipe.jpg")  # reading it would block DALI forever
    with pytest.raises(ValueError, match=r"a/pipe.jpg: image file not regular"):
        _loader(root)
    (tmp_path / "d.jpg").mkdir()
    (tmp_path / "list.txt").write_text("d.jpg 0\n")
    with pytest.raises(ValueError, match=r"list.txt:1: .*d.jpg: image file not regular"):
        _loader(tmp_path / "list.txt")


def test_files_beside_shards_in_a_folder_are_counted_in_a_warning(tmp_path, caplog):
    _tar(tmp_path / "train-0.tar", _samples(2, [0, 1]))
    (tmp_path / "index.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        ds = find_dataset(tmp_path, 5)
    assert ds.kind == "webdataset" and len(ds) == 2
    assert "ignored 1 file(s) beside the WebDataset shards, e.g. index.json" in caplog.text
