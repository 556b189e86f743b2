"""The options timm's train.py and torchvision's references/classification/train.py hand their data loaders, at
those scripts' defaults (small sizes), and what timm's script holds when it builds its loaders. Written from the
scripts' documented options, for the builder and recipe tests."""

import argparse


def timm_args(**changes):
    """The options of timm's train.py that its loaders read, at train.py's defaults (small sizes)."""
    args = dict(num_classes=3, batch_size=4, validation_batch_size=None, workers=1, seed=42, device="cpu",
                model_dtype=None, no_aug=False, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3], hflip=0.5, vflip=0.0,
                train_crop_mode=None, color_jitter=0.4, color_jitter_prob=None, grayscale_prob=None,
                gaussian_blur_prob=None, aa=None, aug_repeats=0, aug_splits=0, jsd_loss=False, reprob=0.0,
                remode="pixel", recount=1, resplit=False, train_interpolation="random", naflex_loader=False,
                train_img_sizes=None, train_batch_sizes=None, train_size_probs=None, train_size_schedule="constant",
                train_size_schedule_spread=0.65, train_size_random_mix=0.1, epochs=300, epoch_repeats=0.0, train_batches_per_epoch=None, mixup=0.0, cutmix=0.0,
                cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch", mixup_off_epoch=0,
                smoothing=0.1, input_size=None, img_size=32, crop_pct=None, interpolation="", mean=None, std=None,
                prefetcher=True, channels_last=False, amp=False)
    args.update(changes)
    return argparse.Namespace(**args)


def timm_setup(root, **changes):
    """What timm's train.py has when it builds its loaders: args, data_config, mixup_args, the datasets."""
    import timm
    from timm.data import create_dataset, resolve_data_config
    args = timm_args(**changes)
    model = timm.create_model("resnet18", num_classes=args.num_classes)
    data_config = resolve_data_config(vars(args), model=model)
    mixup_args = {}
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        mixup_args = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                          prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                          label_smoothing=args.smoothing, num_classes=args.num_classes)
    train = create_dataset("", root=str(root), split="train", is_training=True)
    val = create_dataset("", root=str(root), split="validation")  # timm finds val/
    return args, data_config, mixup_args, train, val, model


def torchvision_args(**changes):
    """The options of torchvision's references/classification/train.py that its loaders read, at its defaults
    (small sizes)."""
    args = dict(batch_size=4, workers=1, device="cpu", interpolation="bilinear", train_crop_size=32,
                val_crop_size=32, val_resize_size=36, auto_augment=None, ra_magnitude=9, augmix_severity=3,
                random_erase=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0, ra_sampler=False,
                ra_reps=3, weights=None, distributed=False, amp=False, start_epoch=0, epochs=2)
    args.update(changes)
    return argparse.Namespace(**args)
