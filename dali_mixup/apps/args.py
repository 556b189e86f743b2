"""The flags every ``dali-mixup`` subcommand shares, defined once: their value types, defaults and groups (data,
mixing, augmentation), one spelling each (timm's where timm has one; an older spelling still works, hidden from
the help, with a ``FlagDeprecationWarning`` naming the new one), and the helpers that turn them into what the
commands use (the data folders, the class count, the MixupConfig, the loader's keywords).

Loader flags reach ``create_dali_loader`` only when the user sets them, so the loader's own defaults apply
otherwise.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

# One set of defaults for every subcommand that has the flag.
BATCH_SIZE, IMAGE_SIZE, THREADS, SEED = 64, 224, 4, 0
MIXUP, CUTMIX, SMOOTHING, MIXUP_MODE = 0.8, 1.0, 0.1, "batch"

# Training-augmentation flag -> create_dali_loader keyword. Passed only when given (None: the loader's default).
AUGMENT_FLAGS = {"--scale": "scale", "--ratio": "ratio", "--hflip": "hflip", "--aa": "auto_augment",
                 "--reprob": "re_prob", "--remode": "re_mode", "--recount": "re_count",
                 "--train-interpolation": "interpolation", "--color-jitter": "color_jitter"}
# Evaluation flag -> keyword of the validation loader.
EVAL_FLAGS = {"--crop-pct": "crop_pct"}


# -- value types: a bad value is an argparse error naming the flag, printed with the subcommand's usage ---------
def _number(text, kind, low=None, high=None, high_open=False, what=""):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what or kind.__name__}, got {text!r}") from None
    if (low is not None and value < low) or (high is not None and (value >= high if high_open else value > high)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text):
    return _number(text, int, low=1, what="an integer >= 1")


def non_negative_int(text):
    return _number(text, int, low=0, what="an integer >= 0")


def non_negative_float(text):
    return _number(text, float, low=0.0, what="a number >= 0")


def positive_float(text):
    value = _number(text, float, low=0.0, what="a number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def probability(text):
    return _number(text, float, low=0.0, high=1.0, what="a probability in [0, 1]")


def smoothing(text):
    return _number(text, float, low=0.0, high=1.0, high_open=True, what="a number in [0, 1)")


def _device(text):
    return "gpu" if text == "cuda" else text  # timm's --device cuda


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        default = action.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {default})" if text else f"(default: {default})"


# -- one spelling per flag ---------------------------------------------------------------------------------------
class FlagDeprecationWarning(FutureWarning):
    """A flag typed in a spelling that is going away; the message names the spelling to use."""


class DeprecatedAlias(argparse.Action):
    """An older spelling of a flag: stores the value as the flag does, after a ``FlagDeprecationWarning``."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated and will be removed; use {self.new}", FlagDeprecationWarning,
                      stacklevel=2)
        setattr(namespace, self.dest, values)


def add_flag(group, *spellings: str, deprecated: Sequence[str] = (), **kwargs) -> argparse.Action:
    """Add a flag under its spellings (a short one and timm's long one); each ``deprecated`` spelling still works,
    hidden from the help (which names them), warning that it is deprecated and naming the long spelling."""
    if deprecated:
        kwargs["help"] = f"{kwargs.get('help', '')} [deprecated spelling: {', '.join(deprecated)}]".lstrip()
    action = group.add_argument(*spellings, **kwargs)
    if deprecated:
        new = next(s for s in spellings if s.startswith("--"))
        group.add_argument(*deprecated, dest=action.dest, action=DeprecatedAlias, new=new, type=action.type,
                           nargs=action.nargs, choices=action.choices, metavar=action.metavar,
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action


# -- flag groups -------------------------------------------------------------------------------------------------
def image_limits() -> Tuple[int, float]:
    """(pixels, aspect) limits of the scan's header check (dali_mixup.image_headers), 0 for none."""
    from .. import image_headers
    return image_headers.MAX_IMAGE_PIXELS or 0, image_headers.MAX_ASPECT_RATIO or 0


def set_image_limits(args) -> None:
    """--max-image-pixels / --max-aspect-ratio -> dali_mixup.image_headers' settings for this process."""
    from .. import image_headers
    image_headers.set_limits(getattr(args, "max_image_pixels", None), getattr(args, "max_aspect_ratio", None))


def add_common(p, seed_help="seed of the shuffling, augmentation and mixing streams"):
    p.add_argument("--seed", type=non_negative_int, default=SEED, help=seed_help)
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")


def add_data(p, *, num_classes=True, timm_workers=True):
    """The data flags. ``timm_workers``: the DALI threads are timm's ``-j/--workers`` (train, demo); bench keeps
    ``-j/--workers`` for its DataLoader's workers and names the DALI threads ``--threads``."""
    g = p.add_argument_group("data")
    add_flag(g, "--data-dir", dest="data", metavar="DIR", deprecated=["--data"],
             help="ImageFolder, or a folder holding train/ (and val/) ImageFolders (default: the built-in sample "
                  "dataset, generated on first use)")
    if num_classes:
        g.add_argument("--num-classes", type=positive_int, metavar="N",
                       help="number of classes (default: the number of class folders)")
    g.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"], type=_device,
                   help="where DALI decodes and the batch lands; auto: the GPU when torch sees one (timm's 'cuda' "
                        "is gpu)")
    g.add_argument("-b", "--batch-size", type=positive_int, default=BATCH_SIZE, metavar="N",
                   help="images per batch (per process under torchrun)")
    add_flag(g, "--img-size", dest="image_size", type=positive_int, default=IMAGE_SIZE, metavar="N",
             deprecated=["--image-size"], help="side of the square crops")
    threads = dict(dest="threads", type=positive_int, default=THREADS, metavar="N", help="DALI CPU threads per process")
    if timm_workers:
        add_flag(g, "-j", "--workers", deprecated=["--threads"], **threads)
    else:
        g.add_argument("--threads", **threads)
    g.add_argument("--skip-corrupt", action="store_true",
                   help="check every image first and leave corrupt ones out, and images DALI cannot decode or "
                        "that are too large (default: off, such an image stops the run with its name)")
    g.add_argument("--max-image-pixels", type=non_negative_int, default=image_limits()[0], metavar="N",
                   help="images declaring more pixels are refused by name (skipped with --skip-corrupt) before "
                        "decoding; 0: no limit (default: Pillow's Image.MAX_IMAGE_PIXELS, %(default)s)")
    g.add_argument("--max-aspect-ratio", type=non_negative_float, default=image_limits()[1], metavar="R",
                   help="images whose longer side is more than R times the shorter are refused likewise; 0: no "
                        "limit (default: %(default)s)")


def add_mixing(p, *, off_epoch=False):
    g = p.add_argument_group("mixing (timm's names)")
    add_flag(g, "--mixup", dest="mixup_alpha", type=non_negative_float, default=MIXUP, metavar="ALPHA",
             deprecated=["--mixup-alpha"], help="Mixup alpha, Beta(alpha, alpha); 0 turns Mixup off")
    add_flag(g, "--cutmix", dest="cutmix_alpha", type=non_negative_float, default=CUTMIX, metavar="ALPHA",
             deprecated=["--cutmix-alpha"], help="CutMix alpha; 0 turns CutMix off")
    g.add_argument("--cutmix-minmax", type=probability, nargs=2, metavar=("MIN", "MAX"),
                   help="CutMix box side as fractions of the image side, drawn uniformly; turns CutMix on and "
                        "overrides --cutmix (default: none, the box from --cutmix's Beta)")
    g.add_argument("--mixup-prob", dest="prob", type=probability, default=1.0, metavar="P",
                   help="probability that a batch/pair/sample is mixed at all")
    g.add_argument("--mixup-switch-prob", dest="switch_prob", type=probability, default=0.5, metavar="P",
                   help="probability of CutMix rather than Mixup when both are on")
    add_flag(g, "--mixup-mode", dest="mode", default=MIXUP_MODE, choices=["batch", "pair", "elem"], metavar="MODE",
             deprecated=["--mix-mode", "--mode"],
             help="batch, pair or elem: one lambda per batch, per pair of samples or per sample")
    add_flag(g, "--smoothing", dest="label_smoothing", type=smoothing, default=SMOOTHING, metavar="EPS",
             deprecated=["--label-smoothing"], help="label smoothing of the soft targets")
    g.add_argument("--pairing", default="permutation", choices=["permutation", "flip"],
                   help="partner of each sample: a random derangement, or timm's i <-> B-1-i")
    if off_epoch:
        g.add_argument("--mixup-off-epoch", type=non_negative_int, default=0, metavar="N",
                       help="no mixing from epoch N on; 0: mix in every epoch (timm's meaning)")


def add_augmentation(p, *, evaluation=False):
    g = p.add_argument_group("augmentation (timm's names; unset: the loader's defaults)")
    g.add_argument("--scale", dest="scale", type=probability, nargs=2, metavar=("MIN", "MAX"),
                   help="random-resized-crop area range (default: 0.08 1.0)")
    g.add_argument("--ratio", dest="ratio", type=positive_float, nargs=2, metavar=("MIN", "MAX"),
                   help="random-resized-crop aspect-ratio range (default: 0.75 1.33, i.e. 3/4 4/3)")
    g.add_argument("--hflip", dest="hflip", type=probability, metavar="P",
                   help="probability of a horizontal flip (default: 0.5)")
    g.add_argument("--aa", dest="auto_augment", metavar="POLICY",
                   help="AutoAugment/RandAugment policy in timm's or torchvision's spelling, e.g. rand-m9-mstd0.5 "
                        "(default: none)")
    g.add_argument("--reprob", dest="re_prob", type=probability, metavar="P",
                   help="random-erasing probability (default: 0, off)")
    g.add_argument("--train-interpolation", dest="interpolation",
                   choices=["bilinear", "bicubic", "nearest", "random"],
                   help="resize interpolation of the training crops (default: bilinear)")
    g.add_argument("--color-jitter", dest="color_jitter", type=non_negative_float, metavar="F",
                   help="colour-jitter strength (default: none)")
    g.add_argument("--remode", dest="re_mode", choices=["const", "rand", "pixel"],
                   help="random-erasing fill: const (zeros), rand (one colour per box) or pixel (noise) "
                        "(default: const)")
    g.add_argument("--recount", dest="re_count", type=positive_int, metavar="N",
                   help="random-erasing boxes per image (default: 1)")
    if evaluation:
        g.add_argument("--crop-pct", dest="crop_pct", type=probability, metavar="F",
                       help="validation centre crop: resize the shorter side to image-size / F, then crop "
                            "(default: 0.875)")


# -- from flags to what the commands use -------------------------------------------------------------------------
def loader_options(args, flags: Dict[str, str]) -> dict:
    """in: parsed flags, a {flag: keyword} table (``AUGMENT_FLAGS``, ``EVAL_FLAGS``) -> out: {keyword: value}
    of the flags the user set (ranges as tuples)."""
    options = {kw: getattr(args, kw) for kw in flags.values() if getattr(args, kw, None) is not None}
    for kw in ("scale", "ratio"):
        if kw in options:
            options[kw] = tuple(options[kw])
    return options


def find_splits(data: Optional[str], val_data: Optional[str]) -> Tuple[Path, Optional[Path]]:
    """in: --data-dir (None: the built-in sample dataset), --val-data -> out: (training folder, validation folder
    or None). DIR may be an ImageFolder itself or hold train/ (and val/)."""
    from ..sample_data import ensure_sample_data
    root = Path(data) if data is not None else ensure_sample_data()
    if not root.exists():
        raise FileNotFoundError(f"--data-dir {root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"--data-dir {root}: not a folder (an ImageFolder, or a folder holding train/ and val/)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    if val_data is not None:
        val_dir = Path(val_data)
        if not val_dir.is_dir():
            raise FileNotFoundError(f"--val-data {val_dir}: no such folder")
        return train_dir, val_dir
    return train_dir, (root / "val" if (root / "val").is_dir() else None)


def count_classes(folder: Path) -> int:
    """in: an ImageFolder -> out: its number of classes, by the loader's rule (``datasets.find_classes``: hidden
    folders are not classes); an error naming the folder when it has none."""
    from ..datasets import find_classes
    try:
        return len(find_classes(folder))
    except ValueError:
        raise ValueError(f"--data-dir {folder}: no class folders to count; give --num-classes") from None


def mixup_config(args, num_classes: int):
    """in: the mixing flags -> out: their ``MixupConfig``, or None when they ask for neither mixing nor
    smoothing."""
    from ..config import MixupConfig
    if not (args.mixup_alpha > 0 or args.cutmix_alpha > 0 or args.cutmix_minmax or args.label_smoothing > 0):
        return None
    return MixupConfig(num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                       cutmix_minmax=tuple(args.cutmix_minmax) if args.cutmix_minmax else None, prob=args.prob,
                       switch_prob=args.switch_prob, mode=args.mode, label_smoothing=args.label_smoothing,
                       pairing=args.pairing)
