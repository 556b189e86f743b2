"""The DALI loader on CPU-only DALI (device_id=None), with JPEGs made by the tests."""

import os
import socket
import tarfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader
from conftest import flat

CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
COMMON = dict(batch_size=4, num_classes=3, image_size=32, num_threads=1, device="cpu")


@pytest.mark.parametrize("backend", ["fused", "dali", "none"])
@pytest.mark.parametrize("layout,dtype", [("NCHW", torch.float16), ("NHWC", torch.float32), ("NCHW", torch.bfloat16)])
def test_shapes_dtypes_layout_device_and_target_rows(image_folder, backend, layout, dtype):
    loader = create_dali_loader(image_folder, mixup=CFG, backend=backend, layout=layout, out_dtype=dtype, **COMMON)
    assert len(loader) == 25 // 4
    count = 0
    for images, targets in loader:
        shape = (4, 3, 32, 32) if layout == "NCHW" else (4, 32, 32, 3)
        assert images.shape == shape and images.dtype == dtype and images.device.type == "cpu"
        assert targets.shape == (4, 3) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(4), rtol=0, atol=1e-5)
        assert torch.isfinite(images.float()).all()
        count += 1
    assert count == len(loader)


@pytest.mark.parametrize("targets", [None, "soft"])
def test_eval_keeps_the_partial_batch_and_every_sample_once(indexed_list, targets):
    loader = create_dali_loader(indexed_list, batch_size=5, num_classes=23, image_size=24, num_threads=1,
                                device="cpu", train=False, targets=targets)
    assert len(loader) == 5
    for _ in range(2):  # two epochs, the same samples, in file order
        ids, sizes = [], []
        for images, target in loader:
            sizes.append(len(images))
            if targets is None:  # evaluation's default: int64 class indices
                assert target.dtype == torch.int64 and target.shape == (len(images),)
                ids += target.tolist()
            else:
                ids += target.argmax(1).tolist()
                assert torch.equal(target, torch.nn.functional.one_hot(target.argmax(1), 23).float())
        assert sizes == [5, 5, 5, 5, 3] and ids == list(range(23))


def test_train_shuffles_each_epoch_and_sees_every_sample_once(indexed_list):
    loader = create_dali_loader(indexed_list, batch_size=23, num_classes=23, image_size=16, num_threads=1,
                                device="cpu", train=True)
    orders = []
    for _ in range(3):
        ids = [i for _, t in loader for i in t.argmax(1).tolist()]
        assert sorted(ids) == list(range(23))
        orders.append(ids)
    assert orders[0] != orders[1] != orders[2]


def test_fused_and_dali_backends_agree(image_folder, take):
    kw = dict(mixup=CFG, out_dtype=torch.float32, seed=3, **COMMON)
    fused = take(create_dali_loader(image_folder, backend="fused", **kw), 3)
    dali = take(create_dali_loader(image_folder, backend="dali", **kw), 3)
    for (fi, ft), (di, dt) in zip(fused, dali):
        torch.testing.assert_close(ft, dt, rtol=0, atol=1e-6)
        torch.testing.assert_close(fi, di, rtol=0, atol=2e-4)


def test_mixing_off_equals_the_no_mix_pipeline(image_folder, take):
    kw = dict(seed=5, out_dtype=torch.float32, **COMMON)
    plain = take(create_dali_loader(image_folder, mixup=None, **kw), 2)
    loader = create_dali_loader(image_folder, mixup=CFG, **kw)
    loader.mixup_enabled = False
    off = take(loader, 2)
    for (pi, pt), (oi, ot) in zip(plain, off):
        # plain DALI (crop_mirror_normalize) and the fused kernel with mixing off: the same crops and flips,
        # normalised by two implementations
        torch.testing.assert_close(pi, oi, rtol=0, atol=1e-5)
        off, on = CFG.off_on  # mixing off keeps the configured smoothing: smoothed one-hot rows
        assert torch.equal(pt, torch.nn.functional.one_hot(pt.argmax(1), 3).float())
        torch.testing.assert_close(ot, off + (on - off) * pt, rtol=0, atol=1e-6)


def test_mixup_off_epoch_switches_mixing_by_epoch(image_folder):
    loader = create_dali_loader(image_folder, mixup=CFG, seed=2, mixup_off_epoch=1, **COMMON)
    first = [t for _, t in loader]
    second = [t for _, t in loader]
    assert len(first) == len(second) == len(loader) > 0
    assert any((t.max(1).values < 0.9).any() for t in first)  # mixed rows
    _, on = CFG.off_on
    assert all(torch.allclose(t.max(1).values, torch.full((4,), on)) for t in second)


def test_same_seed_same_batches_other_seed_other_batches(image_folder, take):
    a = take(create_dali_loader(image_folder, mixup=CFG, seed=11, **COMMON), 2)
    b = take(create_dali_loader(image_folder, mixup=CFG, seed=11, **COMMON), 2)
    c = take(create_dali_loader(image_folder, mixup=CFG, seed=12, **COMMON), 2)
    for (ai, at), (bi, bt) in zip(a, b):
        assert torch.equal(ai, bi) and torch.equal(at, bt)
    assert not torch.equal(a[0][0], c[0][0])


@pytest.mark.parametrize("backend, placement", [("fused", "epilogue"), ("dali", "epilogue"), ("fused", "graph")])
def test_resume_mid_epoch_continues_the_same_stream(image_folder, backend, placement, take, resume):
    kw = dict(mixup=CFG, seed=4, backend=backend, placement=placement, **COMMON)
    loader, rest, resumed, again = resume(lambda: create_dali_loader(image_folder, **kw), skip=2)
    for (ri, rt), (ai, at) in zip(rest + take(loader, 2), again + take(resumed, 2), strict=True):  # and epoch 1
        assert torch.equal(ri.view(torch.int32), ai.view(torch.int32)) and torch.equal(rt, at)  # as bits


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ev = create_dali_loader(data, batch_size=4, num_classes=23, image_size=16, num_threads=1, device="cpu",
                                train=False)
        ids = [i for _, t in ev for i in t.tolist()]
        tr = create_dali_loader(data, batch_size=4, num_classes=23, image_size=16, num_threads=1, device="cpu",
                                mixup=dm.MixupConfig(23), train=True)
        first = next(iter(tr))[1]
        np.save(os.path.join(result_dir, f"rank{rank}.npy"), np.array(ids))
        np.save(os.path.join(result_dir, f"train{rank}.npy"), first.numpy())
        assert (ev.shard_id, ev.num_shards) == (rank, world)
    finally:
        dist.destroy_process_group()


def test_two_ranks_get_disjoint_shards_covering_the_dataset(indexed_list, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(indexed_list), str(tmp_path)), nprocs=2, join=True)
    ids = [np.load(tmp_path / f"rank{r}.npy").tolist() for r in range(2)]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(23))
    assert not np.array_equal(np.load(tmp_path / "train0.npy"), np.load(tmp_path / "train1.npy"))


def test_explicit_shards(indexed_list):
    seen = []
    for shard in range(3):
        loader = create_dali_loader(indexed_list, batch_size=4, num_classes=23, image_size=16, num_threads=1,
                                    device="cpu", train=False, shard_id=shard, num_shards=3)
        seen.append([i for _, t in loader for i in t.tolist()])
    assert sorted(sum(seen, [])) == list(range(23))


def test_grayscale_cmyk_png_and_tiny_images_come_out_rgb(image_folder):
    loader = create_dali_loader(image_folder, batch_size=25, num_classes=3, image_size=32, num_threads=1,
                                device="cpu", train=False, layout="NHWC", out_dtype=torch.float32,
                                mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    assert loader.dataset.ignored == 1 and len(loader.dataset) == 25
    images, _ = next(iter(loader))
    gray = loader.dataset.files.index(str(image_folder / "apple" / "gray.jpg"))
    assert images.shape == (25, 32, 32, 3)
    px = images[gray]
    assert torch.equal(px[..., 0], px[..., 1]) and torch.equal(px[..., 1], px[..., 2])


def test_webdataset_shards(indexed_list, tmp_path):
    root = indexed_list.parent
    for shard in range(2):
        with tarfile.open(tmp_path / f"train-{shard}.tar", "w") as tar:
            for i in range(shard * 12, min(23, shard * 12 + 12)):
                tar.add(root / f"img{i:02d}.jpg", arcname=f"s{i:04d}.jpg")
                cls = tmp_path / f"s{i:04d}.cls"
                cls.write_text(str(i))
                tar.add(cls, arcname=f"s{i:04d}.cls")
    for data in (str(tmp_path / "train-*.tar"), [str(tmp_path / "train-0.tar"), str(tmp_path / "train-1.tar")]):
        loader = create_dali_loader(data, batch_size=5, num_classes=23, image_size=16, num_threads=1, device="cpu",
                                    train=False)
        assert sorted(i for _, t in loader for i in t.tolist()) == list(range(23))
    with pytest.raises(ValueError, match="out of range"):
        create_dali_loader(str(tmp_path / "train-*.tar"), batch_size=5, num_classes=20, device="cpu")


# ---- bad input ---------------------------------------------------------------------------------------------------

def test_missing_empty_and_imageless_sources_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_dali_loader(tmp_path / "nowhere", **COMMON)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        create_dali_loader(tmp_path / "empty", **COMMON)
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="noimg.*no images"):
        create_dali_loader(tmp_path / "noimg", **COMMON)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="flat.*no class sub-folders"):
        create_dali_loader(tmp_path / "flat", **COMMON)


def test_file_list_errors_name_file_and_line(indexed_list, tmp_path):
    with pytest.raises(ValueError, match=r"list.txt:4: label 3 is out of range for num_classes=3"):
        create_dali_loader(indexed_list, **COMMON)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{indexed_list.parent}/img00.jpg zero\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: label must be an integer"):
        create_dali_loader(bad, **COMMON)
    bad.write_text("missing.jpg 1\n")
    with pytest.raises(FileNotFoundError, match="bad.txt:1: .*missing.jpg: image file not found"):
        create_dali_loader(bad, **COMMON)


def test_too_many_class_folders_for_num_classes(image_folder):
    with pytest.raises(ValueError, match="3 class folders but num_classes=2"):
        create_dali_loader(image_folder, **dict(COMMON, num_classes=2))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(image_size=0), ValueError, "image_size"),
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(backend="torch"), ValueError, "backend"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(device="gpu"), ValueError, "gpu"),
    (dict(layout="CHW"), ValueError, "layout"),
    (dict(out_dtype=torch.int8), ValueError, "out_dtype"),
    (dict(mixup=dm.MixupConfig(5)), ValueError, "mixup.num_classes"),
    (dict(shard_id=2, num_shards=2), ValueError, "shard_id"),
    (dict(shard_id=0), ValueError, "together"),
    (dict(scale=(0.5, 0.1)), ValueError, "scale"),
    (dict(scale=(0.5, 1.5)), ValueError, "scale"),
    (dict(ratio=(0.0, 1.0)), ValueError, "ratio"),
    (dict(hflip=1.5), ValueError, "hflip"),
])
def test_bad_arguments(image_folder, kwargs, exc, match):
    if kwargs.get("device") == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = dict(COMMON)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        create_dali_loader(image_folder, **args)


def test_corrupt_jpeg_is_named_or_skipped(image_folder, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    good = (root / "apple" / "0.jpg").read_bytes()
    (root / "apple" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "banana" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"garbage.jpg \(an unrecognised header.*\): image file not in a format DALI"):
        create_dali_loader(root, **COMMON)  # no image header at all: refused at the scan
    (root / "banana" / "garbage.jpg").rename(root / "banana" / ".garbage.jpg")
    loader = create_dali_loader(root, **COMMON)  # a valid header, the data cut: found when decoded
    with pytest.raises(RuntimeError, match="truncated.jpg: image file corrupt"):
        for _ in loader:
            pass
    (root / "banana" / ".garbage.jpg").rename(root / "banana" / "garbage.jpg")
    skipping = create_dali_loader(root, skip_corrupt=True, **COMMON)
    assert skipping.dataset.skipped == 2 and len(skipping.dataset) == 25
    assert sum(len(i) for i, _ in skipping) == 24


def test_mixup_schedule_still_works_with_a_deprecation_warning(image_folder):
    loader = create_dali_loader(image_folder, mixup=CFG, seed=2, **COMMON)
    with pytest.warns(DeprecationWarning, match="mixup_off_epoch"):
        loader.mixup_schedule = lambda epoch: epoch < 1
    assert loader._switch(0) and not loader._switch(1)


def test_compact_targets_describe_the_soft_ones(image_folder):
    """targets="compact": the same images as "soft", and targets whose dense rows are the soft targets; the loss
    on them equals timm's on the soft ones."""
    from timm.loss import SoftTargetCrossEntropy
    cfg = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
    soft = create_dali_loader(image_folder, mixup=cfg, seed=3, **COMMON)
    compact = create_dali_loader(image_folder, mixup=cfg, seed=3, targets="compact", **COMMON)
    pairs = list(zip(soft, compact, strict=True))
    assert len(pairs) == len(soft) > 0
    for (si, st), (ci, ct) in pairs:
        assert isinstance(ct, dm.CompactTargets) and ct.a.dtype == ct.b.dtype == torch.int64
        assert torch.equal(si, ci)
        torch.testing.assert_close(ct.dense(), st, rtol=0, atol=1e-6)
        logits = torch.randn(st.shape)
        torch.testing.assert_close(dm.mixup_cross_entropy(logits, ct), SoftTargetCrossEntropy()(logits, st),
                                   rtol=1e-5, atol=0)


def test_mixing_record_describes_the_images(image_folder):
    """record=True: (images, targets, record); with the same seed, the un-mixed loader's crops mixed as the record
    says are the mixed loader's images (Mixup: λ x_i + (1 - λ) x_partner; CutMix: the partner's box pasted)."""
    cfg = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
    plain = [i for i, _ in create_dali_loader(image_folder, mixup=None, seed=3, **COMMON)]
    mixed = list(create_dali_loader(image_folder, mixup=cfg, seed=3, record=True, **COMMON))
    assert len(mixed) == len(plain) > 0
    kinds = set()
    for x, (images, _, record) in zip(plain, mixed, strict=True):
        assert isinstance(record, dm.MixRecord) and record.partner.dtype == torch.int64
        for i in range(len(x)):
            p, lam = int(record.partner[i]), float(record.lam[i])
            if record.cutmix[i]:
                y0, y1, x0, x1 = (int(v) for v in record.box[i])
                want = x[i].clone()
                want[:, y0:y1, x0:x1] = x[p][:, y0:y1, x0:x1]
                kinds.add("cutmix")
            else:
                want = lam * x[i] + (1 - lam) * x[p]
                kinds.add("mixup")
            torch.testing.assert_close(images[i], want, rtol=0, atol=2e-5)
    assert kinds == {"cutmix", "mixup"}


def test_record_resumes_with_the_stream(image_folder, resume):
    kw = dict(mixup=CFG, seed=4, record=True, **COMMON)
    _, rest, _, again = resume(lambda: create_dali_loader(image_folder, **kw))
    assert all(torch.equal(u, v) for a, b in zip(rest, again) for u, v in zip(flat(a), flat(b), strict=True))


@pytest.mark.parametrize("kw", [dict(backend="dali"), dict(placement="graph")])
@pytest.mark.parametrize("ask", [dict(targets="compact"), dict(record=True)])
def test_compact_and_record_need_the_fused_epilogue(image_folder, kw, ask):
    with pytest.raises(ValueError, match="needs the fused epilogue"):
        create_dali_loader(image_folder, mixup=CFG, **kw, **ask, **COMMON)


def test_compact_and_record_without_mixing(image_folder):
    loader = create_dali_loader(image_folder, mixup=None, backend="none", targets="compact", record=True, **COMMON)
    images, targets, record = next(iter(loader))
    assert torch.equal(targets.a, targets.b) and bool((targets.lam == 1).all()) and bool((record.lam == 1).all())
