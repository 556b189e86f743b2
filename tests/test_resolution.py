"""Progressive resolution (``dali_mixup.resolution``): FFCV's schedule, and the loader's epochs at their sizes
across an epoch boundary and a resume."""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader

COMMON = dict(batch_size=4, num_classes=3, num_threads=1, device="cpu")


def _ffcv(epoch, min_res, max_res, end_ramp, start_ramp):
    """FFCV's ImageNet example's get_resolution, as published (np.interp, rounded to a multiple of 32)."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


@pytest.mark.parametrize("numbers", [(160, 192, 76, 65), (160, 256, 30, 10), (128, 224, 5, 0), (192, 192, 3, 3)])
def test_schedule_is_ffcvs(numbers):
    schedule = dm.ResolutionSchedule(*numbers)
    assert [schedule(e) for e in range(100)] == [_ffcv(e, *numbers) for e in range(100)]


@pytest.mark.parametrize("numbers, match", [((192, 160, 5, 1), "min_res"), ((160, 192, 1, 5), "start_ramp"),
                                            ((0, 192, 5, 1), "min_res"), ((160, 192, -1, 0), "end_ramp"),
                                            ((160.0, 192, 5, 1), "min_res")])
def test_schedule_refuses_bad_numbers(numbers, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dm.ResolutionSchedule(*numbers)


def test_epochs_at_their_sizes_across_the_boundary_and_a_resume(image_folder, resume):
    """Each epoch crops to its own size, the batches per epoch do not change, and a loader resumed mid-epoch 2
    continues at epoch 2's size with the same batches."""
    schedule = dm.ResolutionSchedule(16, 48, end_ramp=2, start_ramp=0, step=16)  # 16, 32, 48
    cfg = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem")
    kw = dict(image_size=schedule, mixup=cfg, seed=3, **COMMON)
    loader = create_dali_loader(image_folder, **kw)
    sizes, counts = [], []
    for epoch in range(3):
        batches = [images for images, _ in loader]
        counts.append(len(batches))
        sizes.append({tuple(images.shape[2:]) for images in batches})
    assert sizes == [{(16, 16)}, {(32, 32)}, {(48, 48)}] and counts == [len(loader)] * 3

    def at_epoch_2():
        made = create_dali_loader(image_folder, **kw)
        made.set_epoch(2)
        return made

    _, rest, resumed, again = resume(at_epoch_2)
    assert resumed.size_at() == 48 and rest[0][0].shape[2:] == (48, 48)
    for (ri, rt), (ai, at) in zip(rest, again, strict=True):
        assert torch.equal(ri, ai) and torch.equal(rt, at)
    state = at_epoch_2().state_dict()
    other = create_dali_loader(image_folder, **dict(kw, image_size=dm.ResolutionSchedule(16, 48, 3, 0, step=16)))
    with pytest.raises(ValueError, match="image_size was"):
        other.load_state_dict(state)


def test_a_callable_schedule_and_its_checks(image_folder):
    loader = create_dali_loader(image_folder, image_size=lambda epoch: 24 if epoch == 0 else 40, **COMMON)
    assert next(iter(loader))[0].shape[2:] == (24, 24) and loader.size_at(1) == 40
    with pytest.raises(ValueError, match="for epoch 0: expected an int >= 1"):
        create_dali_loader(image_folder, image_size=lambda epoch: 0, **COMMON)
    with pytest.raises(ValueError, match="evaluation has one size"):
        create_dali_loader(image_folder, image_size=dm.ResolutionSchedule(16, 32, 2, 0), train=False, **COMMON)
    with pytest.raises(TypeError, match="image_size must be an int"):
        create_dali_loader(image_folder, image_size="224", **COMMON)


# -- a size per batch: timm's scheduled resolution ----------------------------------------------------------------

PER_BATCH = [
    dict(sizes=(160, 192, 224)),
    dict(sizes=(128, 160, 192, 224), probs=(0.1, 0.0, 0.5, 0.4)),
    dict(sizes=(160, 192, 224), schedule="progressive", epochs=10),
    dict(sizes=(160, 192, 224, 256), schedule="progressive", epochs=7, spread=0.0, random_mix=0.0,
         probs=(1.0, 0.0, 0.0, 2.0)),
    dict(sizes=(160, 192), schedule="progressive", epochs=1, spread=2.0, random_mix=0.5),
]


@pytest.mark.parametrize("case", PER_BATCH)
def test_per_batch_sizes_are_timms_choices(case):
    """The same size index for every batch of every epoch as timm's ScheduledBatchSampler (one batch size, the
    same seed and batches per epoch), and the same weights."""
    from torch.utils.data import SequentialSampler
    from timm.data.scheduled_sampler import ScheduledBatchSampler
    ours = dm.PerBatchSizes(**case)
    for seed in (0, 42):
        for batch, n in ((8, 800), (4, 37)):
            timm = ScheduledBatchSampler(
                SequentialSampler(range(n)), [batch] * len(case["sizes"]), choice_weights=case.get("probs"),
                seed=seed, choice_schedule=case.get("schedule", "constant"), schedule_epochs=case.get("epochs"),
                schedule_spread=case.get("spread", 0.65), schedule_random_mix=case.get("random_mix", 0.1))
            for epoch in (0, 1, 5, 12):
                timm.set_epoch(epoch)
                assert ours.choices(epoch, n // batch, seed).tolist() == [b[0][1] for b in timm]
                assert torch.equal(ours.weights(epoch), timm.choice_weights_for_epoch(epoch))


@pytest.mark.parametrize("kw, match", [
    (dict(sizes=()), "PerBatchSizes.sizes must be a non-empty"), (dict(sizes=(160, 0)), r"sizes\[1\]"),
    (dict(sizes=(160, 192), probs=(1.0,)), "probs must be 2 weights"),
    (dict(sizes=(160, 192), probs=(1.0, -1.0)), "probs must be >= 0"),
    (dict(sizes=(160, 192), probs=(0.0, 0.0)), "positive sum"),
    (dict(sizes=(160, 192), schedule="cosine"), "schedule must be one of"),
    (dict(sizes=(160,), schedule="progressive", epochs=3), "at least two sizes"),
    (dict(sizes=(160, 192), schedule="progressive"), "epochs: a progressive schedule needs"),
    (dict(sizes=(160, 192), schedule="progressive", epochs=3, spread=-1.0), "spread must be >= 0"),
    (dict(sizes=(160, 192), schedule="progressive", epochs=3, random_mix=1.5), r"random_mix must lie in \[0, 1\]"),
])
def test_per_batch_sizes_refuse_bad_values_by_name(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dm.PerBatchSizes(**kw)


PER_BATCH_KW = dict(image_size=dm.PerBatchSizes((16, 24, 32), schedule="progressive", epochs=3), seed=3,
                    mixup=dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem"), **COMMON)


def _sides(batches):
    return [tuple(images.shape[-2:]) if images.shape[1] == 3 else tuple(images.shape[1:3]) for images in batches]


@pytest.mark.parametrize("kw", [dict(), dict(placement="graph"), dict(backend="dali"), dict(mixup=None),
                                dict(color_jitter=0.4, interpolation="random"),  # reads no size: no branches
                                dict(layout="NHWC", auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5,
                                     interpolation="random", color_jitter=0.3)])
def test_each_batch_at_its_size_across_epochs(image_folder, kw):
    """Every batch is cropped to the size ``sizes_at`` lists for it (timm's choice), for every backend and
    placement, with the augmentations; the batches per epoch do not change."""
    loader = create_dali_loader(image_folder, **{**PER_BATCH_KW, **kw})
    seen = []
    for epoch in range(3):
        batches = [images for images, _ in loader]
        assert _sides(batches) == [(s, s) for s in loader.sizes_at(epoch)] and len(batches) == len(loader)
        seen += loader.sizes_at(epoch)
    assert set(seen) == {16, 24, 32}
    with pytest.raises(ValueError, match="chooses a size per batch"):
        loader.size_at(0)


def test_per_batch_sizes_placements_agree_and_resume_as_bits(image_folder, resume):
    """The graph placement gives the epilogue's bits, DALI's own operators the same images; a loader resumed mid-epoch (and into the next epoch)
    continues with the same sizes and the same bits; another schedule is another stream."""
    def two_epochs(**kw):
        loader = create_dali_loader(image_folder, **PER_BATCH_KW, **kw)
        return [b for _ in range(2) for b in loader]

    epilogue, graph, dali = two_epochs(), two_epochs(placement="graph"), two_epochs(backend="dali")
    assert len(set(_sides(i for i, _ in epilogue))) > 1
    for (ei, et), (gi, gt), (di, dt) in zip(epilogue, graph, dali, strict=True):
        assert torch.equal(ei, gi) and torch.equal(et, gt)
        # DALI's own operators, with the parameters drawn for the batch's size (a box for another size differs)
        torch.testing.assert_close(di, ei, rtol=0, atol=2e-4)
        torch.testing.assert_close(dt, et, rtol=0, atol=1e-6)

    def at_epoch_1():
        made = create_dali_loader(image_folder, **PER_BATCH_KW)
        made.set_epoch(1)
        return made

    loader, rest, resumed, again = resume(at_epoch_1, skip=2)
    for (ri, rt), (ai, at) in zip(rest, again, strict=True):
        assert torch.equal(ri, ai) and torch.equal(rt, at)
    assert _sides([r[0] for r in rest]) == [(s, s) for s in loader.sizes_at(1)[2:]]
    following = [(i.clone(), t.clone()) for i, t in loader], [(i.clone(), t.clone()) for i, t in resumed]
    for (ai, at), (bi, bt) in zip(*following, strict=True):
        assert torch.equal(ai, bi) and torch.equal(at, bt)
    other = create_dali_loader(image_folder, **dict(PER_BATCH_KW, image_size=dm.PerBatchSizes((16, 24, 32))))
    with pytest.raises(ValueError, match="image_size was"):
        other.load_state_dict(at_epoch_1().state_dict())


def test_per_batch_sizes_are_the_same_on_every_rank_and_the_record_describes_the_images(image_folder):
    """Ranks crop each step to the same size (timm's schedule is the run's, not the rank's); the mixing record of
    each batch describes its images at their size (the un-mixed loader's crops, mixed as the record says)."""
    kw = dict(PER_BATCH_KW, image_size=dm.PerBatchSizes((16, 24, 32)), seed=2, num_shards=2, shard_id=1)
    ranks = [[i for i, *_ in create_dali_loader(image_folder, **dict(kw, shard_id=r))] for r in range(2)]
    assert _sides(ranks[0]) == _sides(ranks[1]) and len(set(_sides(ranks[0]))) > 1
    plain = [i for i, _ in create_dali_loader(image_folder, **dict(kw, mixup=None))]
    mixed = list(create_dali_loader(image_folder, record=True, **kw))
    assert len(plain) == len(mixed) > 0
    for x, (images, _, record) in zip(plain, mixed, strict=True):
        for i in range(len(x)):
            p, lam = int(record.partner[i]), float(record.lam[i])
            want = lam * x[i] + (1 - lam) * x[p]
            if record.cutmix[i]:
                y0, y1, x0, x1 = (int(v) for v in record.box[i])
                assert y1 <= x.shape[-2] and x1 <= x.shape[-1]
                want = x[i].clone()
                want[:, y0:y1, x0:x1] = x[p][:, y0:y1, x0:x1]
            torch.testing.assert_close(images[i], want, rtol=0, atol=2e-5)
    loader = create_dali_loader(image_folder, **kw)  # what timm's train.py reads in this mode:
    assert loader.batch_sampler.batch_sizes == (4, 4, 4) and loader.batch_sampler.average_batch_size == 4.0


def test_a_per_batch_size_loader_is_for_training(image_folder):
    with pytest.raises(ValueError, match="evaluation has one size"):
        create_dali_loader(image_folder, image_size=dm.PerBatchSizes((16, 24)), train=False, **COMMON)
    one = create_dali_loader(image_folder, image_size=dm.PerBatchSizes((24,)), seed=1, **COMMON)
    plain = create_dali_loader(image_folder, image_size=24, seed=1, **COMMON)
    for (a, _), (b, _) in zip(one, plain, strict=True):  # one size: the plain graph, the same batches
        assert torch.equal(a, b)
