"""The loader's epoch arithmetic (``dali_mixup.epochs``) and its spec (``dali_mixup.spec``), without DALI."""

import dataclasses

import pytest

import dali_mixup as dm
from dali_mixup import epochs
from dali_mixup.spec import LoaderSpec

ARGS = dict(batch_size=4, num_classes=3, train=True, image_size=32, mixup=None, backend="fused", device="cpu",
            num_threads=2, seed=0, shard_id=None, num_shards=None, out_dtype=dm.config.DTYPES["float32"],
            layout="NCHW", mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, device_id=None, skip_corrupt=False,
            scale=(0.08, 1.0), ratio=(0.75, 4 / 3), hflip=0.5, targets=None, interpolation="bilinear",
            color_jitter=None, auto_augment=None, re_prob=0.0, re_mode="const", re_count=1, crop_pct=0.875,
            val_resize_size=None, placement="epilogue", zero_copy=False, exif_orientation=False,
            mixup_off_epoch=None)


def _spec(**changes):
    return LoaderSpec.from_args(**{**ARGS, **changes})


@pytest.mark.parametrize("n, shards", [(25, 1), (25, 3), (26, 4), (7, 7), (100, 6)])
def test_shards_cover_the_data_once_per_epoch(n, shards):
    for epoch in range(3):
        sizes = [epochs.shard_size(_spec(shard_id=r, num_shards=shards), n, epoch) for r in range(shards)]
        read = sorted(epochs.reader_shard(_spec(shard_id=r, num_shards=shards), epoch) for r in range(shards))
        assert sum(sizes) == n and read == list(range(shards))  # disjoint shards, every sample once
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n, shards, batch", [(25, 1, 4), (25, 3, 4), (26, 4, 3), (100, 6, 8)])
def test_batches_per_epoch(n, shards, batch):
    for r in range(shards):
        train = _spec(shard_id=r, num_shards=shards, batch_size=batch)
        evaluation = _spec(shard_id=r, num_shards=shards, batch_size=batch, train=False)
        # training: the full batches of the smallest shard, the same on every rank
        assert epochs.batches(train, n, 0) == (n // shards) // batch
        # evaluation: every sample of its shard, the last batch partial
        assert (epochs.batches(evaluation, n, 0) - 1) * batch < epochs.shard_size(evaluation, n, 0) \
            <= epochs.batches(evaluation, n, 0) * batch
        # DALI runs as many batches as the largest shard needs, on every rank
        assert epochs.runs_per_epoch(train, n) * batch >= max(
            epochs.shard_size(_spec(shard_id=k, num_shards=shards), n, 0) for k in range(shards))


def test_epoch_seed_is_a_function_of_seed_and_epoch():
    a, b = _spec(seed=1), _spec(seed=2)
    assert epochs.epoch_seed(a, 3) == epochs.epoch_seed(_spec(seed=1), 3) != epochs.epoch_seed(a, 4)
    assert epochs.epoch_seed(a, 3) != epochs.epoch_seed(b, 3)
    assert epochs.epoch_seed(_spec(train=False, seed=5), 9) == 5  # evaluation: nothing random


def test_check_fits_names_the_problem():
    with pytest.raises(ValueError, match="cannot fill num_shards=4"):
        epochs.check_fits(_spec(shard_id=0, num_shards=4), 3, "data/")
    with pytest.raises(ValueError, match="batch_size=8 is larger than a training shard of 7"):
        epochs.check_fits(_spec(batch_size=8), 7, "data/")


@pytest.mark.parametrize("name, value, match", [
    ("batch_size", 0, "batch_size"), ("backend", "ops", "backend"), ("layout", "CHW", "layout"),
    ("placement", "inside", "placement"), ("hflip", 1.5, "hflip"), ("scale", (0.5, 2.0), "scale"),
    ("mixup_off_epoch", -1, "mixup_off_epoch"), ("zero_copy", 1, "zero_copy"), ("targets", "hard", "targets"),
])
def test_spec_errors_name_the_argument(name, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _spec(**{name: value})


def test_identity_is_the_fields_marked_so():
    spec = _spec(mixup=dm.MixupConfig(3, cutmix_alpha=1.0))
    marked = {f.name for f in dataclasses.fields(LoaderSpec) if f.metadata.get("identity")}
    assert set(spec.identity()) == marked
    assert {"num_threads", "out_dtype", "layout", "mean", "std", "zero_copy"}.isdisjoint(marked)
    assert spec.identity()["mixup"]["cutmix_alpha"] == 1.0 and spec.identity()["augment"]["scale"] == [0.08, 1.0]
    assert _spec(seed=1).identity() != _spec(seed=2).identity()
    assert _spec(num_threads=1).identity() == _spec(num_threads=3).identity()
