"""The recipes' augmentations in the DALI graph (CPU-only DALI here; the GPU test runs the same graph on a GPU):
options and names, each augmentation's shapes, ranges and determinism per seed, where random erasing runs,
evaluation without augmentation, and the defaults checked against timm's and torchvision's own."""

import inspect
import math

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup import augment, auto_augment
from dali_mixup.loader import create_dali_loader

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255), layout="NHWC")  # outputs in pixel units
COMMON = dict(batch_size=8, num_classes=4, num_threads=1, device="cpu", out_dtype=torch.float32)


def _write(path, array, fmt="PNG"):
    from PIL import Image
    Image.fromarray(array, "RGB").save(path, fmt)


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """ImageFolder of 4 classes x 4 PNGs of 64x64 (and a few 80x60): smooth colour gradients with noise, every
    value in [30, 230] (so a fill of 0 or a x1.4 brightness is never confused with the image)."""
    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(7)
    for c in range(4):
        (root / f"c{c}").mkdir()
        for i in range(4):
            h, w = (64, 64) if i < 3 else (60, 80)
            yy, xx = np.mgrid[0:h, 0:w]
            base = rng.uniform(60, 200, 3)
            img = base + 25 * np.sin(xx[..., None] / rng.uniform(4, 9) + yy[..., None] / rng.uniform(4, 9) +
                                     rng.uniform(0, 6, 3)) + rng.normal(0, 6, (h, w, 3))
            _write(root / f"c{c}" / f"{i}.png", np.clip(img, 30, 230).astype(np.uint8))
    return root


def _first(loader, n=1):
    """The first ``n`` batches, cloned; exactly ``n`` (so comparisons over them are never vacuous)."""
    out = []
    for images, targets in loader:
        out.append((images.clone(), targets.clone()))
        if len(out) == n:
            break
    assert len(out) == n, f"the loader gave {len(out)} batch(es), {n} asked for"
    return out


# -- options ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(interpolation="lanczos"), "interpolation"),
    (dict(interpolation="random", train=False), "interpolation='random'"),
    (dict(color_jitter=-0.1), "color_jitter"),
    (dict(color_jitter=(0.4, 0.4)), "color_jitter"),
    (dict(color_jitter=(0.4, 0.4, 0.4, 0.6)), "hue"),
    (dict(auto_augment="augmix-m5"), "AugMix"),
    (dict(auto_augment="rand-m9-tweights"), "'tweights'"),
    (dict(auto_augment="rand-m9-q3"), "'q3'"),
    (dict(auto_augment="rand-n0"), "n >= 1"),
    (dict(auto_augment="original-mstd0.5"), "magnitude noise"),
    (dict(auto_augment="3a"), "not supported"),
    (dict(auto_augment="autoaugment"), "not supported"),
    (dict(re_prob=1.5), "re_prob"),
    (dict(re_mode="noise"), "re_mode"),
    (dict(re_count=0), "re_count"),
    (dict(crop_pct=0.0), "crop_pct"),
    (dict(crop_pct=1.2), "crop_pct"),
    (dict(val_resize_size=16), "val_resize_size"),
    (dict(targets="onehot"), "targets"),
])
def test_bad_augmentation_options_are_named(textured, kwargs, match):
    args = dict(COMMON, image_size=32, train=True)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        create_dali_loader(textured, **args)


def test_timm_rand_augment_strings_parse_as_timm_parses_them():
    from timm.data.auto_augment import rand_augment_transform
    for name in ["rand-m9-mstd0.5-inc1", "rand-m7-mstd0.5", "rand-m9-n3-mstd1", "rand-m15-mmax20-inc1", "rand",
                 "rand-m9-p0.3-n1", "rand-m10-mstd101"]:
        timm_ra = rand_augment_transform(name, dict(translate_const=100, img_mean=(124, 116, 104)))
        spec = auto_augment.parse_auto_augment(name)
        op = timm_ra.ops[0]
        assert spec.ops == tuple(o.name for o in timm_ra.ops)
        assert (spec.num_ops, spec.magnitude, spec.prob) == (timm_ra.num_layers, op.magnitude, op.prob)
        assert spec.magnitude_std == op.magnitude_std
        assert spec.magnitude_max == (op.magnitude_max or 10)


def _scalar(name, param):
    """A DALI parameter of our timm table -> one comparable number (mask, kernel centre, shift or factor)."""
    if name.startswith("Posterize"):
        return int(np.asarray(param))
    if name.startswith("Sharpness"):
        return round(float(np.asarray(param)[1, 1]), 6)
    return round(float(np.sum(param)), 6)


def test_timm_level_to_parameter_matches_timm():
    """Our level -> DALI parameter table against timm's LEVEL_TO_ARG (which draws the sign itself)."""
    import random

    from timm.data.auto_augment import LEVEL_TO_ARG
    table = auto_augment._timm_ops(size=100)
    hparams = dict(translate_pct=0.45)
    for name, (_, to_param, signed) in table.items():
        if to_param is None:
            continue
        for level in np.linspace(0, 10, 41):
            random.seed(0)
            theirs = {LEVEL_TO_ARG[name](level, hparams)[0] for _ in range(16)}  # both signs when signed
            ours = {_scalar(name, to_param(level))} | ({_scalar(name, to_param(-level))} if signed else set())
            if name.startswith("Posterize"):
                theirs = {(0xFF << (8 - min(8, b))) & 0xFF for b in theirs}
            elif name.startswith("Sharpness"):  # kernel = -m blur + (1 + m) identity, m = factor - 1
                theirs = {round(float(-(f - 1) * 5 / 13 + f), 6) for f in theirs}
            else:
                scale = 100 if name.startswith("Translate") else 1
                theirs = {round(float(t) * scale, 6) for t in theirs}
            assert ours == theirs, (name, level, ours, theirs)


def test_torchvision_policies_and_magnitudes_are_torchvision_s():
    import torchvision.transforms as T
    policy, bins = auto_augment._torchvision(auto_augment.parse_auto_augment("imagenet"), 224)
    theirs = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET).policies
    assert bins == 10 and len(policy.sub_policies) == len(theirs) == 25
    for ours, sub in zip(policy.sub_policies, theirs):
        assert [(aug.name.split("__")[-1], p, b) for aug, p, b in ours] == [(n, p, b) for n, p, b in sub if p > 0]
    spaces = {"ra": T.RandAugment()._augmentation_space(31, (224, 224)),
              "ta_wide": T.TrivialAugmentWide()._augmentation_space(31)}
    for name, space in spaces.items():
        augs, bins = auto_augment._torchvision(auto_augment.parse_auto_augment(name), 224)
        assert bins == 31 and [a.name for a in augs] == list(space)
        for aug in augs:
            if aug.mag_range is not None:
                np.testing.assert_allclose(aug.mag_range, space[aug.name][0].numpy(), rtol=1e-6)
                assert aug.randomly_negate == space[aug.name][1]


# -- each augmentation in the graph ----------------------------------------------------------------------------

AUGMENTATIONS = [
    dict(interpolation="bicubic"), dict(interpolation="random"), dict(interpolation="nearest"),
    dict(color_jitter=0.4), dict(color_jitter=(0.3, 0.3, 0.3, 0.1)),
    dict(auto_augment="rand-m9-mstd0.5-inc1"), dict(auto_augment="original"),
    dict(auto_augment="ra"), dict(auto_augment="ta_wide"), dict(auto_augment="imagenet"),
    dict(re_prob=1.0), dict(re_prob=1.0, re_mode="rand", re_count=2), dict(re_prob=1.0, re_mode="pixel"),
]


@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_each_augmentation_shapes_range_and_determinism(textured, aug):
    kw = dict(COMMON, image_size=32, hflip=0.0, **RAW)
    plain = _first(create_dali_loader(textured, seed=3, **kw), 2)
    a = _first(create_dali_loader(textured, seed=3, **kw, **aug), 2)
    b = _first(create_dali_loader(textured, seed=3, **kw, **aug), 2)
    c = _first(create_dali_loader(textured, seed=4, **kw, **aug), 2)
    for (ai, at), (bi, bt), (pi, pt) in zip(a, b, plain):
        assert ai.shape == (8, 32, 32, 3) and ai.dtype == torch.float32
        assert ai.min() >= 0 and ai.max() <= 255 and torch.equal(ai, ai.round())  # still uint8 pixels
        assert torch.equal(ai, bi) and torch.equal(at, bt)  # same seed, same batches
        assert torch.equal(at, pt)  # the augmentation draws do not disturb the file order
    assert not all(torch.equal(ai, ci) for (ai, _), (ci, _) in zip(a, c))  # another seed, other batches
    changed = sum(int(not torch.equal(ai[k], pi[k])) for (ai, _), (pi, _) in zip(a, plain) for k in range(8))
    assert changed >= 4  # the augmentation acts on the same crops (the plain graph's, same seed)


def test_interpolation_is_the_named_filter(textured):
    """Whole-image crops (scale 1, ratio 1 on 64x64 PNGs) resized to 32: each mode's output is closest to PIL's
    resize with that filter, and "random" picks bilinear or bicubic per sample, both within a batch."""
    from PIL import Image
    kw = dict(COMMON, batch_size=12, image_size=32, hflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1, **RAW)
    files = create_dali_loader(textured, **kw).dataset.files
    square = [f for f in files if Image.open(f).size == (64, 64)]
    pil = {mode: {f: np.asarray(Image.open(f).resize((32, 32), getattr(Image.Resampling, mode.upper())),
                                np.float32) for f in square} for mode in ("bilinear", "bicubic", "nearest")}

    def closest(interpolation):
        loader = create_dali_loader(textured, interpolation=interpolation, **kw)
        picks = []
        for images, labels in loader:
            for img in images.numpy():
                errors = {mode: min(np.abs(img - ref).mean() for ref in refs.values())
                          for mode, refs in pil.items()}
                if min(errors.values()) < 3.0:  # a square source (the 80x60 ones are cropped)
                    picks.append(min(errors, key=errors.get))
        return picks

    for mode in ("bilinear", "bicubic", "nearest"):
        picks = closest(mode)
        assert len(picks) >= 8 and set(picks) == {mode}, (mode, picks)
    assert set(closest("random")) == {"bilinear", "bicubic"}


@pytest.mark.parametrize("crop_pct,val_resize_size", [(0.875, None), (0.95, None), (1.0, None), (0.875, 40)])
def test_eval_resize_and_centre_crop_match_timm_and_torchvision(textured, crop_pct, val_resize_size):
    from PIL import Image
    from timm.data.transforms_factory import transforms_imagenet_eval
    from torchvision import transforms as T
    loader = create_dali_loader(textured, image_size=32, train=False, crop_pct=crop_pct,
                                val_resize_size=val_resize_size, **dict(COMMON, batch_size=16), **RAW)
    if val_resize_size is None:  # timm's eval transform, uint8 (its prefetcher output)
        ref = transforms_imagenet_eval(img_size=32, crop_pct=crop_pct, interpolation="bilinear", use_prefetcher=True)
    else:  # torchvision's: Resize(val_resize_size) + CenterCrop(val_crop_size)
        ref = T.Compose([T.Resize(val_resize_size, antialias=True), T.CenterCrop(32), T.PILToTensor()])
    images, labels = next(iter(loader))
    for img, path in zip(images.numpy(), loader.dataset.files):
        expected = ref(Image.open(path).convert("RGB")).permute(1, 2, 0).numpy().astype(np.float32)
        assert np.abs(img - expected).mean() < 2.0  # resampling kernels differ by a grey level or so


def test_color_jitter_factors_stay_in_their_ranges(textured):
    kw = dict(COMMON, image_size=32, hflip=0.0, seed=5, **RAW)
    plain = _first(create_dali_loader(textured, **kw), 2)
    for jitter, stat, low, high in [((0.4, 0, 0), lambda x: x.mean(), 0.6, 1.4),
                                    ((0, 0.4, 0), lambda x: (x - x.mean()).std(), 0.6, 1.4),
                                    ((0, 0, 0.5), lambda x: (x - x.mean(-1, keepdim=True)).std(), 0.5, 1.5)]:
        jittered = _first(create_dali_loader(textured, color_jitter=jitter, **kw), 2)
        ratios = [float(stat(j[k]) / stat(p[k])) for (j, _), (p, _) in zip(jittered, plain) for k in range(8)]
        assert all(low - 0.03 <= r <= high + 0.03 for r in ratios), (jitter, ratios)
        assert len({round(r, 3) for r in ratios}) > 8  # a factor per sample


def _boxes(image, fill):
    """(H, W, 3) pixels -> the bounding box of the pixels equal to ``fill`` and whether they fill it exactly."""
    mask = np.all(image == np.asarray(fill, np.float32), axis=-1)
    if not mask.any():
        return None, True
    ys, xs = np.nonzero(mask)
    box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
    return box, bool(mask[box[0]:box[1], box[2]:box[3]].all() and mask.sum() == (box[1] - box[0]) * (box[3] - box[2]))


def test_random_erasing_const_boxes_follow_timm_s_distribution(textured):
    """mean 0 makes the constant fill 0, which the images never contain: each erased region is one rectangle
    of area 2%..33% of the crop and aspect 0.3..3.3, at a uniform place; with p = 0.5 about half are erased."""
    kw = dict(COMMON, image_size=64, hflip=0.0, **RAW)
    areas, aspects, erased, total = [], [], 0, 0
    for seed in range(3):
        for images, _ in create_dali_loader(textured, re_prob=0.5, seed=seed, **kw):
            for img in images.numpy():
                box, exact = _boxes(img, 0.0)
                total += 1
                assert exact
                if box is not None:
                    erased += 1
                    h, w = box[1] - box[0], box[3] - box[2]
                    areas.append(h * w / 64 ** 2)
                    aspects.append(h / w)
    assert total == 3 * 16 and 8 <= erased <= 40
    assert 0.015 <= min(areas) and max(areas) <= 0.36
    assert 0.25 <= min(aspects) and max(aspects) <= 4.0


def test_random_erasing_rand_and_pixel_fills(textured):
    """"rand": one colour per box, drawn per box; "pixel": per-pixel noise that normalises to about N(0, 1),
    clipped to the pixel range (see random_erasing's docstring)."""
    mean, std = np.array(dm.IMAGENET_MEAN) * 255, np.array(dm.IMAGENET_STD) * 255
    kw = dict(COMMON, image_size=64, hflip=0.0, seed=2, layout="NHWC")  # ImageNet normalisation
    plain = _first(create_dali_loader(textured, **kw), 2)
    colours = set()
    for (images, _), (p, _) in zip(_first(create_dali_loader(textured, re_prob=1.0, re_mode="rand", **kw), 2), plain):
        for img, ref in zip(images.numpy(), p.numpy()):
            changed = np.any(img != ref, axis=-1)
            pixels = np.unique(img[changed].round(4), axis=0)
            assert changed.sum() > 0 and len(pixels) == 1  # one colour over the box
            colours.add(tuple(pixels[0]))
    assert len(colours) == 16
    noise = []
    for (images, _), (p, _) in zip(_first(create_dali_loader(textured, re_prob=1.0, re_mode="pixel", **kw), 2), plain):
        for img, ref in zip(images.numpy(), p.numpy()):
            changed = np.any(img != ref, axis=-1)
            noise.append(img[changed])
    noise = np.concatenate(noise)
    assert len(noise) > 1000
    pixels = noise * std + mean
    assert np.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert abs(noise.mean()) < 0.1 and 0.8 < noise.std() < 1.0  # N(0, 1), a little narrowed by the clipping


def test_random_erasing_runs_on_the_unmixed_crop_before_the_fused_kernel(textured):
    """The same seed with mixing off gives the erased, flipped, un-mixed crops D; with Mixup on, the output is
    lambda D + (1 - lambda) D[partner]: the partner's erased box shows through, so erasing ran before mixing."""
    cfg = dm.MixupConfig(4, mixup_alpha=1.0, mode="elem")
    kw = dict(COMMON, image_size=32, seed=9, re_prob=1.0, mixup=cfg, **RAW)
    off = create_dali_loader(textured, **kw)
    off.mixup_enabled = False
    (unmixed, _), = _first(off)
    (mixed, _), = _first(create_dali_loader(textured, **kw))
    p = dm.sample_params(cfg, 8, 32, 32, seed=9, epoch=0, step=0, rank=0)
    lam = torch.from_numpy(p.lam).view(8, 1, 1, 1)
    expected = lam * unmixed + (1 - lam) * unmixed[torch.from_numpy(p.partner)]
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-3)


def test_evaluation_takes_none_of_the_augmentations(textured):
    kw = dict(COMMON, image_size=32, train=False, **RAW)
    plain = [b for b in create_dali_loader(textured, **kw)]
    augmented = [b for b in create_dali_loader(textured, color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
                                               re_prob=1.0, re_mode="pixel", scale=(0.5, 1.0), hflip=1.0, **kw)]
    assert len(plain) == len(augmented) == 2
    for (pi, pt), (ai, at) in zip(plain, augmented):
        assert torch.equal(pi, ai) and torch.equal(pt, at)


def test_defaults_are_timm_s_and_torchvision_s():
    """The numbers the recipes rest on, read from timm and torchvision themselves."""
    import timm.data
    import torchvision
    from timm.data.random_erasing import RandomErasing as TimmErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    ours = inspect.signature(create_dali_loader).parameters
    default = {name: p.default for name, p in ours.items()}
    tv_rrc = inspect.signature(T.RandomResizedCrop).parameters
    timm_rrc = inspect.signature(RandomResizedCropAndInterpolation).parameters
    assert default["scale"] == tv_rrc["scale"].default == timm_rrc["scale"].default == (0.08, 1.0)
    assert default["ratio"] == tv_rrc["ratio"].default == timm_rrc["ratio"].default
    assert default["interpolation"] == timm_rrc["interpolation"].default == tv_rrc["interpolation"].default.value
    assert default["hflip"] == inspect.signature(T.RandomHorizontalFlip).parameters["p"].default
    preset = torchvision.models.get_weight("ResNet50_Weights.IMAGENET1K_V1").transforms()  # torchvision's eval
    assert default["crop_pct"] == timm.data.DEFAULT_CROP_PCT == preset.crop_size[0] / preset.resize_size[0]
    assert augment.eval_resize_size(224, default["crop_pct"], None) == preset.resize_size[0]
    assert default["interpolation"] == preset.interpolation.value
    assert tuple(default["mean"]) == timm.data.IMAGENET_DEFAULT_MEAN == tuple(preset.mean)
    assert tuple(default["std"]) == timm.data.IMAGENET_DEFAULT_STD == tuple(preset.std)
    assert default["out_dtype"] == torch.float32 and default["re_mode"] == "const" and default["re_count"] == 1
    timm_re = inspect.signature(TimmErasing).parameters
    tv_re = inspect.signature(T.RandomErasing).parameters
    assert augment._RE_AREA == (timm_re["min_area"].default, timm_re["max_area"].default)
    assert augment._RE_AREA == pytest.approx(tv_re["scale"].default, abs=0.004)  # torchvision: (0.02, 0.33)
    assert augment._RE_LOG_ASPECT == pytest.approx((math.log(timm_re["min_aspect"].default),
                                                    -math.log(timm_re["min_aspect"].default)))
    assert np.exp(augment._RE_LOG_ASPECT) == pytest.approx(tv_re["ratio"].default, rel=0.011)  # (0.3, 3.3)
    assert T.RandAugment().num_ops == 2 and T.RandAugment().magnitude == 9  # what "ra" is


@pytest.mark.gpu
@pytest.mark.parametrize("aug", AUGMENTATIONS, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_each_augmentation_on_the_gpu(textured, aug):
    """The same graph with GPU decoding: per-sample parameters on the CPU, the operators on the GPU."""
    kw = dict(COMMON, device="gpu", image_size=32, hflip=0.0, seed=3, **RAW)
    a = _first(create_dali_loader(textured, **kw, **aug), 2)
    b = _first(create_dali_loader(textured, **kw, **aug), 2)
    for (ai, at), (bi, bt) in zip(a, b):
        assert ai.is_cuda and ai.shape == (8, 32, 32, 3)
        assert ai.min() >= 0 and ai.max() <= 255 and torch.equal(ai, ai.round())
        assert torch.equal(ai, bi) and torch.equal(at, bt)


def test_fused_and_dali_backends_agree_with_augmentations(textured):
    """The augmentations sit before both mixing backends (DALI's own operators included), on the same crops."""
    cfg = dm.MixupConfig(4, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem")
    kw = dict(COMMON, image_size=32, seed=6, mixup=cfg, auto_augment="ra", color_jitter=0.3, re_prob=0.5)
    fused = _first(create_dali_loader(textured, backend="fused", **kw), 2)
    dali = _first(create_dali_loader(textured, backend="dali", **kw), 2)
    for (fi, ft), (di, dt) in zip(fused, dali):
        torch.testing.assert_close(ft, dt, rtol=0, atol=1e-6)
        torch.testing.assert_close(fi, di, rtol=0, atol=2e-4)
