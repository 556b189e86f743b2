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
