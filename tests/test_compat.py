"""The DataLoader surface training scripts touch (sampler.set_epoch, batch_sampler, drop_last, dataset), class-index
targets, and the builders from timm's and torchvision's script arguments."""


import pytest
import torch

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader
from dali_mixup.sample_data import make_sample_data
from script_args import timm_setup, torchvision_args

CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
COMMON = dict(batch_size=4, num_classes=3, image_size=32, num_threads=1, device="cpu")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The built-in sample dataset, small: train/ (3 classes x 5) and val/ (3 x 2)."""
    return make_sample_data(tmp_path_factory.mktemp("sample"), train_per_class=5, val_per_class=2, num_classes=3)


def _epoch(loader, count=None):
    out = []
    for images, targets in loader:
        out.append((images.clone(), targets.clone()))
        if count is not None and len(out) == count:
            break
    return out


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(s, t) for (x, s), (y, t) in zip(a, b))


# -- the DataLoader surface ------------------------------------------------------------------------------------

def test_dataloader_surface(sample):
    train = create_dali_loader(sample / "train", mixup=CFG, **COMMON)
    assert train.batch_size == train.batch_sampler.batch_size == 4
    assert train.drop_last and train.batch_sampler.drop_last
    assert train.batch_sampler.sampler is train.sampler and len(train.batch_sampler) == len(train) == 15 // 4
    assert len(train.dataset) == 15 and len(train.sampler) == 15 and len(train.dataset.classes) == 3
    assert not hasattr(train.batch_sampler, "set_epoch")  # timm's _set_loader_epoch then calls sampler.set_epoch
    train.sampler.set_epoch(3)
    assert train.epoch == train.sampler.epoch == 3
    val = create_dali_loader(sample / "val", train=False, **COMMON)
    assert not val.drop_last and len(val) == 2 and sum(len(t) for _, t in val) == len(val.dataset) == 6


def test_set_epoch_reproduces_the_epoch_of_an_uninterrupted_run(sample):
    kw = dict(mixup=CFG, seed=3, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5, **COMMON)
    run = create_dali_loader(sample / "train", **kw)
    epochs = [_epoch(run) for _ in range(3)]  # epochs 0, 1, 2 without set_epoch
    assert not _equal(epochs[1], epochs[2])
    resumed = create_dali_loader(sample / "train", **kw)  # a script resumed at epoch 2 calls set_epoch(2)
    resumed.sampler.set_epoch(2)
    assert _equal(_epoch(resumed), epochs[2])
    assert resumed.epoch == run.epoch == 3 and _equal(_epoch(resumed), _epoch(run))  # both go on with epoch 3


def test_set_epoch_abandons_another_epoch_and_keeps_a_restored_position(sample):
    kw = dict(mixup=CFG, seed=5, **COMMON)
    reference = create_dali_loader(sample / "train", **kw)
    reference.set_epoch(1)
    epoch1 = _epoch(reference)
    loader = create_dali_loader(sample / "train", **kw)
    _epoch(loader, 1)  # one batch of epoch 0, then the script moves on
    loader.set_epoch(1)
    it = iter(loader)
    first = next(it)
    state = loader.state_dict()  # mid-epoch 1
    rest = [(i.clone(), t.clone()) for i, t in it]
    assert _equal([first] + rest, epoch1)
    restored = create_dali_loader(sample / "train", **kw)
    restored.load_state_dict(state)
    restored.sampler.set_epoch(1)  # what a resumed script calls: the same epoch keeps its place
    assert _equal(_epoch(restored), rest)
    with pytest.raises(ValueError, match="epoch"):
        restored.set_epoch(-1)


def test_next_epoch_pipeline_is_made_during_the_last_batches_and_used_only_for_that_epoch(sample):
    loader = create_dali_loader(sample / "train", mixup=CFG, seed=4, **COMMON)
    assert loader._next is None
    batches = _epoch(loader)  # near the end, the next epoch's pipeline is made while the caller trains
    epoch, thread, box = loader._next
    assert epoch == 1 == loader.epoch and len(batches) == len(loader)
    thread.join()
    made = box["built"].pipe
    iter(loader)
    assert loader._pipe is made and loader._next is None  # taken, not built again
    _epoch(loader)
    epoch, thread, box = loader._next
    assert epoch == 2
    thread.join()
    loader.set_epoch(5)  # another epoch: the prepared one is dropped, epoch 5 is built
    iter(loader)
    assert loader._pipe is not box["built"].pipe and loader._pipes.built_for == 5 and loader._next is None


# -- targets and dtype ----------------------------------------------------------------------------------------

def test_index_targets(sample):
    soft = _epoch(create_dali_loader(sample / "train", seed=2, **COMMON))
    index = _epoch(create_dali_loader(sample / "train", seed=2, targets="index", **COMMON))
    for (si, st), (ii, it) in zip(soft, index):
        assert it.dtype == torch.int64 and it.shape == (4,) and torch.equal(it, st.argmax(1))
        assert torch.equal(si, ii) and si.dtype == torch.float32  # float32 by default, as a DataLoader's
    images, targets = next(iter(create_dali_loader(sample / "val", train=False, **COMMON)))
    assert targets.dtype == torch.int64
    images, targets = next(iter(create_dali_loader(sample / "val", train=False, targets="soft", **COMMON)))
    assert targets.shape == (4, 3) and targets.dtype == torch.float32
    with pytest.raises(ValueError, match="targets='index' with mixup"):
        create_dali_loader(sample / "train", mixup=CFG, targets="index", **COMMON)
    create_dali_loader(sample / "val", mixup=CFG, train=False, **COMMON)  # eval never mixes: index is fine


# -- timm's train.py --------------------------------------------------------------------------------------------

def test_from_timm_args_reads_timm_s_options(sample):
    args, data_config, mixup_args, train, val, _ = timm_setup(sample, mixup=0.8, cutmix=1.0, reprob=0.25,
                                                              mixup_off_epoch=5, validation_batch_size=6)
    loader = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)
    assert loader.dataset.source == str(sample / "train") and loader.targets == "soft"
    assert loader.mixup == dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    assert loader.augment == dict(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, interpolation="random",
                                  color_jitter=(0.4, 0.4, 0.4, 0.0), auto_augment=None, re_prob=0.25,
                                  re_mode="pixel", re_count=1, crop_pct=0.875, val_resize_size=None,
                                  exif_orientation=False)
    assert (loader.image_size, loader.seed, loader.out_dtype) == (32, 42, torch.float32)
    assert loader.mixup_off_epoch == 5 and loader._switch(4) and not loader._switch(5)  # --mixup-off-epoch
    images, targets = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and targets.shape == (4, 3)
    ev = dm.from_timm_args(args, data_config, train=False, data=val)
    assert ev.batch_size == 6 and ev.targets == "index" and not ev.train
    assert ev.augment["crop_pct"] == data_config["crop_pct"]
    assert ev.augment["interpolation"] == data_config["interpolation"]
    assert ev.mean == tuple(data_config["mean"]) and sum(len(t) for _, t in ev) == 6


def test_from_timm_args_without_mixing_with_autoaugment_and_model_dtype(sample):
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, aa="rand-m9-mstd0.5-inc1",
                                                            model_dtype="bfloat16", train_interpolation="bicubic")
    loader = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)
    assert loader.mixup is None and loader.targets == "index"  # for LabelSmoothingCrossEntropy
    assert loader.augment["color_jitter"] is None  # timm turns colour jitter off under --aa
    assert loader.augment["auto_augment"] == "rand-m9-mstd0.5-inc1" and loader.augment["interpolation"] == "bicubic"
    images, targets = next(iter(loader))
    assert images.dtype == torch.bfloat16 and targets.dtype == torch.int64


@pytest.mark.parametrize("option,value", [("vflip", 0.5), ("aug_splits", 2), ("no_aug", True),
                                          ("train_crop_mode", "rkrc"), ("grayscale_prob", 0.2),
                                          ("naflex_loader", True), ("color_jitter_prob", 0.8),
                                          ("train_batches_per_epoch", 10)])
def test_from_timm_args_refuses_what_it_cannot_do_by_name(sample, option, value):
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, **{option: value})
    with pytest.raises(ValueError, match=f"timm option {option}="):
        dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)


def test_from_timm_args_needs_a_folder(sample):
    args, data_config, mixup_args, _, _, _ = timm_setup(sample)
    with pytest.raises(ValueError, match="does not read an image folder"):
        dm.from_timm_args(args, data_config, train=True, data=object())


# -- torchvision's references/classification/train.py -------------------------------------------------------------

def test_from_torchvision_args_reads_torchvision_s_options(sample):
    args = torchvision_args(auto_augment="ta_wide", random_erase=0.1, mixup_alpha=0.2, cutmix_alpha=1.0)
    loader = dm.from_torchvision_args(args, train=True, data=sample / "train")
    assert loader.num_classes == 3 and loader.targets == "soft"  # the class folders
    assert loader.mixup == dm.MixupConfig(3, mixup_alpha=0.2, cutmix_alpha=1.0)  # smoothing stays in the loss
    assert loader.augment["auto_augment"] == "ta_wide" and loader.augment["re_prob"] == 0.1
    assert loader.augment["re_mode"] == "const" and loader.augment["interpolation"] == "bilinear"
    assert loader.augment["color_jitter"] is None and loader.image_size == 32
    ev = dm.from_torchvision_args(args, train=False, data=sample / "val")
    assert ev.targets == "index" and ev.augment["val_resize_size"] == 36 and ev.image_size == 32
    plain = dm.from_torchvision_args(torchvision_args(), train=True, data=sample / "train")
    assert plain.mixup is None and plain.targets == "index"


def test_from_torchvision_args_eval_follows_weights_transforms(sample):
    import torchvision
    preset = torchvision.models.get_weight("ResNet18_Weights.IMAGENET1K_V1").transforms()
    ev = dm.from_torchvision_args(torchvision_args(weights="ResNet18_Weights.IMAGENET1K_V1"), train=False,
                                  data=sample / "val")
    assert (ev.image_size, ev.augment["val_resize_size"]) == (preset.crop_size[0], preset.resize_size[0])
    assert ev.augment["interpolation"] == preset.interpolation.value and ev.mean == tuple(preset.mean)


@pytest.mark.parametrize("changes,match", [(dict(ra_sampler=True), "ra_sampler"),
                                           (dict(auto_augment="ra", ra_magnitude=7), "ra_magnitude"),
                                           (dict(auto_augment="augmix"), "AugMix")])
def test_from_torchvision_args_refuses_what_it_cannot_do_by_name(sample, changes, match):
    with pytest.raises(ValueError, match=match):
        dm.from_torchvision_args(torchvision_args(**changes), train=True, data=sample / "train")


def test_from_timm_args_serves_timms_bce_recipe_dense_or_compact(sample):
    """timm's --bce-loss recipes (ResNet strikes back) take the loader's soft targets as timm's Mixup gives them;
    asked for compact targets (targets="compact"), dm.mixup_binary_cross_entropy gives timm's value."""
    from timm.loss import BinaryCrossEntropy
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, mixup=0.8, cutmix=1.0, bce_loss=True,
                                                            bce_target_thresh=0.2, bce_sum=False, bce_pos_weight=None)
    soft = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)
    compact = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train, targets="compact")
    timm_bce = BinaryCrossEntropy(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum)
    (si, st), (ci, ct) = next(iter(soft)), next(iter(compact))
    assert torch.equal(si, ci) and isinstance(ct, dm.CompactTargets)
    logits = torch.randn(st.shape)
    want = timm_bce(logits, st)
    for targets in (st, ct):
        torch.testing.assert_close(dm.mixup_binary_cross_entropy(logits, targets, target_threshold=0.2), want,
                                   rtol=1e-5, atol=0)


@pytest.mark.parametrize("changes", [dict(train_size_schedule="progressive", epochs=3),
                                     dict(train_size_probs=[0.3, 0.7], train_batch_sizes=[2, 2])])
def test_from_timm_args_crops_each_batch_to_the_size_timms_loader_gives_it(sample, changes):
    """--train-img-sizes and its options: each batch is cropped to the size timm's own loader (create_loader with
    input_size_choices, as train.py builds it) gives the batch in the same place of the same epoch."""
    from timm.data import create_loader
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, mixup=0.8, train_img_sizes=[16, 24],
                                                            batch_size=2, **changes)
    loader = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)
    theirs = create_loader(train, input_size=data_config["input_size"], batch_size=args.batch_size,
                           is_training=True, input_size_choices=args.train_img_sizes,
                           batch_size_choices=args.train_batch_sizes, batch_choice_weights=args.train_size_probs,
                           batch_choice_seed=args.seed, batch_choice_schedule=args.train_size_schedule,
                           batch_schedule_epochs=args.epochs if args.train_size_schedule == "progressive" else None,
                           batch_schedule_spread=args.train_size_schedule_spread,
                           batch_schedule_random_mix=args.train_size_random_mix, num_workers=0,
                           use_prefetcher=False)  # on the CPU
    seen = set()
    for epoch in range(3):
        theirs.batch_sampler.set_epoch(epoch)  # train.py's _set_loader_epoch
        loader.sampler.set_epoch(epoch)
        want = [tuple(images.shape[2:]) for images, _ in theirs]
        got = [tuple(images.shape[2:]) for images, _ in loader]
        assert got == want and len(got) == len(loader) == len(theirs)
        seen |= set(got)
    assert seen == {(16, 16), (24, 24)}
    assert loader.batch_sampler.average_batch_size == theirs.batch_sampler.average_batch_size == 2.0


def test_from_timm_args_refuses_batch_sizes_per_image_size_and_names_bad_size_options(sample):
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, train_img_sizes=[16, 24],
                                                            train_batch_sizes=[4, 2])
    with pytest.raises(ValueError, match=r"timm option train_batch_sizes=\[4, 2\] is not supported"):
        dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, train_img_sizes=[16, 24],
                                                            train_size_probs=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"timm options train_img_sizes=\[16, 24\], train_size_\*: .*positive sum"):
        dm.from_timm_args(args, data_config, mixup_args, train=True, data=train)


def test_from_timm_args_takes_a_progressive_schedule(sample):
    """FFCV's per-epoch schedule comes through the overrides."""
    args, data_config, mixup_args, train, _, _ = timm_setup(sample, mixup=0.8)
    schedule = dm.ResolutionSchedule(16, 32, end_ramp=1, start_ramp=0, step=16)
    loader = dm.from_timm_args(args, data_config, mixup_args, train=True, data=train, image_size=schedule)
    assert next(iter(loader))[0].shape[2:] == (16, 16) and loader.size_at(1) == 32
