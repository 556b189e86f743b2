"""The command line, ``dali-mixup`` (also ``python -m dali_mixup``): the subcommands, parsing and error reporting.

The work of each subcommand lives in its own module (``sample_data``, ``apps.demo``, ``apps.bench``,
``apps.train``). The flags several subcommands share are defined once, in ``apps.args`` (one spelling each: timm's;
older spellings still work with a warning); the flags of one subcommand alone are defined here.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import warnings
from typing import Dict, List, Optional

from .args import (AUGMENT_FLAGS, EVAL_FLAGS, DeprecatedAlias, FlagDeprecationWarning, HelpFormatter, add_augmentation,
                   add_common, add_data, add_flag, add_mixing, loader_options, non_negative_float, non_negative_int,
                   positive_float, positive_int, probability, set_image_limits)

PROG = "dali-mixup"
DESCRIPTION = "Mixup and CutMix fused into an NVIDIA DALI data pipeline for PyTorch."
EPILOG = ("Flags take timm's names (--data-dir, --img-size, --mixup, --cutmix, --smoothing, --aa, --reprob, ...); "
          "older spellings still work, with a warning naming the new one. 'dali-mixup COMMAND --help' lists a "
          "command's flags and their defaults.")
# API wording -> the flag that does the same, for error messages shown on the command line.
_FLAG_WORDING = {"skip_corrupt=True": "--skip-corrupt"}


def _add_train(p):
    p.add_argument("data_dir", nargs="?", metavar="DIR",
                   help="the data folder, as timm's positional DATA (the same as --data-dir DIR)")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--val-data", metavar="DIR", help="validation ImageFolder (default: DATA/val when it exists)")
    g.add_argument("--model", default="resnet50", help="a torchvision model name, or a timm one when timm is "
                                                       "installed")
    g.add_argument("--epochs", type=positive_int, default=90, metavar="N", help="epochs to train")
    g.add_argument("--lr", type=positive_float, metavar="LR",
                   help="learning rate (default: --lr-base scaled to the global batch)")
    g.add_argument("--lr-base", type=positive_float, default=0.1, metavar="LR",
                   help="learning rate for a global batch of 256, scaled linearly when --lr is not given")
    g.add_argument("--momentum", type=probability, default=0.9, metavar="M", help="SGD (Nesterov) momentum")
    g.add_argument("--weight-decay", type=non_negative_float, default=5e-5, metavar="WD",
                   help="weight decay, not applied to norms and biases")
    g.add_argument("--warmup-epochs", type=non_negative_float, default=5.0, metavar="N",
                   help="linear warm-up before the cosine decay (may be fractional)")
    g.add_argument("--amp", nargs="?", const="auto", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto (also a bare --amp): bf16 on GPUs that have it, off on the CPU")
    g.add_argument("--channels-last", action="store_true",
                   help="channels-last model; the loader writes NHWC, no copy")
    g.add_argument("--backend", default="fused", choices=["fused", "dali", "none"],
                   help="mixing by the fused kernel, by DALI's own operators, or no mixing")
    g.add_argument("--min-res", type=positive_int, metavar="N",
                   help="progressive resizing (FFCV's): training crops of N up to --start-ramp, ramping to --max-res "
                        "at --end-ramp, multiples of 32 between; --img-size is then the validation size (FFCV's "
                        "val_res); give all four")
    g.add_argument("--max-res", type=positive_int, metavar="N", help="progressive resizing: the final crop size")
    g.add_argument("--end-ramp", type=non_negative_int, metavar="EPOCH", help="progressive resizing: --max-res from here")
    g.add_argument("--start-ramp", type=non_negative_int, metavar="EPOCH",
                   help="progressive resizing: --min-res up to here")
    g.add_argument("--train-img-sizes", type=positive_int, nargs="+", metavar="N",
                   help="a training crop size per batch, chosen from these as timm's scheduled sampler chooses "
                        "(timm's flag; --img-size is then the validation size); not with --min-res")
    g.add_argument("--train-size-probs", type=non_negative_float, nargs="+", metavar="W",
                   help="with --train-img-sizes: the sizes' weights (default: uniform)")
    g.add_argument("--train-size-schedule", default="constant", choices=["constant", "progressive"],
                   help="with --train-img-sizes: the same weights every epoch, or a window moving from the first "
                        "size to the last over --epochs (timm's)")
    g.add_argument("--train-size-schedule-spread", type=non_negative_float, default=0.65, metavar="S",
                   help="progressive: the window's standard deviation, in size-index units (timm's)")
    g.add_argument("--train-size-random-mix", type=probability, default=0.1, metavar="P",
                   help="progressive: the fraction of uniform draws over the sizes in use (timm's)")
    g.add_argument("--targets", default="soft", choices=["soft", "compact"],
                   help="targets as dense (B, C) rows, or compact: per sample the two labels and λ, no (B, C) rows "
                        "(for many classes; the loss reads either)")
    g.add_argument("--bce-loss", action="store_true",
                   help="binary cross-entropy on the mixed targets instead of soft-target cross-entropy (timm's)")
    g.add_argument("--bce-target-thresh", type=probability, metavar="T",
                   help="with --bce-loss: targets above T become 1, the others 0 (timm's; default: kept soft)")
    g.add_argument("--bce-sum", action="store_true",
                   help="with --bce-loss: sum the loss over classes, then average over the batch (timm's)")
    g.add_argument("--bce-pos-weight", type=positive_float, metavar="W",
                   help="with --bce-loss: weight of the positive term (timm's; default: 1)")
    add_flag(g, "--train-batches-per-epoch", dest="max_steps", type=positive_int, metavar="N",
             deprecated=["--max-steps", "--train-steps-per-epoch"],
             help="stop each epoch after N batches (optimiser steps), for smoke runs (default: whole epochs)")
    g = p.add_argument_group("output and resuming")
    g.add_argument("--output", default="runs/train", metavar="DIR",
                   help="checkpoints, metrics.csv, summary.json, args.json; an existing run there is never "
                        "overwritten without --resume or --overwrite; one trainer at a time (train.lock)")
    g.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                   help="continue from CKPT (model, optimiser, schedule, loader, history, mid-epoch after Ctrl-C "
                        "or SIGTERM) with the run's own flags (a flag given with another value is an error, except "
                        "--epochs, --output, --data-dir, --val-data, --workers, --checkpoint-hist, --no-progress); a "
                        "bare --resume continues OUTPUT/checkpoint-last.pt (default: a new run)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --output")
    add_flag(g, "--checkpoint-hist", dest="keep_checkpoints", type=non_negative_int, default=3, metavar="N",
             deprecated=["--keep-checkpoints"],
             help="numbered checkpoints kept besides checkpoint-last.pt and checkpoint-best.pt (best validation "
                  "top-1)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_bench_only(p):
    # Flags of the benchmark alone (bench.py reads them); shared flags come from args.add_data / add_common.
    g = p.add_argument_group("benchmark (steady state: one loader alive at a time, warm-up excluded)")
    g.add_argument("-j", "--workers", type=non_negative_int, default=2, metavar="N",
                   help="DataLoader workers of the torch+timm configuration")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="output dtype of every configuration (like for like)")
    g.add_argument("--sample", default="photos", choices=["photos", "shapes"],
                   help="built-in data when --data-dir is not given: photo-like JPEGs of ImageNet's sizes (needs "
                        "scikit-image, the bench extra) or the generated shapes")
    g.add_argument("--repeats", type=positive_int, default=3, metavar="N",
                   help="repetitions, the configurations' order alternating")
    g.add_argument("--warmup", type=non_negative_int, default=4, metavar="N",
                   help="batches discarded after each loader is built")
    g.add_argument("--batches", type=positive_int, default=40, metavar="N",
                   help="timed batches per configuration per repetition")
    g.add_argument("--img-sizes", nargs="+", type=positive_int, default=[], metavar="N",
                   help="also time fused and dali-nomix at each of these crop sizes (e.g. 160 192 224, progressive "
                        "resizing's range), alternating, and report img/s per size (default: --img-size only)")
    g.add_argument("--configs", nargs="+", metavar="NAME",
                   default=["fused", "fused-graph", "dali-nomix", "dali-ops", "dali+timm", "torch+timm"],
                   help="configurations to measure")
    g.add_argument("--json", metavar="FILE",
                   help="write the results to FILE, and FILE.md and FILE.png beside it (default: "
                        "bench-results/bench-DEVICE-DTYPE-YYYYmmdd-HHMMSS.json in the current folder)")
    g.add_argument("--conditions", default="", metavar="TEXT",
                   help="free text recorded with the results, e.g. what else ran on the machine (default: none)")


# -- subcommands -------------------------------------------------------------------------------------------------
def _cmd_make_sample_data(args) -> int:
    import shutil
    from pathlib import Path
    from ..sample_data import make_sample_data
    created = not Path(args.dir).exists()
    try:
        root = make_sample_data(args.dir, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                                seed=args.seed)
    except BaseException:
        if created:  # a failed (or interrupted) run leaves no folder it made
            shutil.rmtree(args.dir, ignore_errors=True)
        raise
    count = sum(1 for _ in root.rglob("*.jpg"))
    print(f"wrote {count} JPEGs to {root} (train/ and val/, one folder per class)")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run
    return run(args)


def _cmd_bench(args) -> int:
    from . import bench
    unknown = set(args.configs) - set(bench.CONFIGS)
    if unknown:
        raise ValueError(f"--configs: unknown {sorted(unknown)}; choose from {', '.join(bench.CONFIGS)}")
    return bench.main(args)


def _cmd_train(args) -> int:
    from .train import run
    run(args)
    return 0


def _subparser(sub, name, help_text, description=None):
    return sub.add_parser(name, help=help_text, description=description or help_text, allow_abbrev=False,
                          formatter_class=HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """in: nothing -> out: the parser of every subcommand (no prefix matching: ``--epoch`` is not ``--epochs``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _subparser(sub, "make-sample-data", "write the built-in sample dataset (generated JPEGs, ImageFolder)")
    p.add_argument("dir", help="output folder (train/ and val/ are created inside)")
    p.add_argument("--train-per-class", type=positive_int, default=48, metavar="N", help="training images per class")
    p.add_argument("--val-per-class", type=non_negative_int, default=12, metavar="N",
                   help="validation images per class")
    add_common(p, seed_help="seed of the generated images")
    p.set_defaults(func=_cmd_make_sample_data)

    p = _subparser(sub, "demo", "one mixed batch from the DALI loader: each sample's class and its partner's, "
                                "with their weights, and a picture")
    add_data(p)
    add_mixing(p)
    add_augmentation(p)
    p.add_argument("--save", default="mixed-batch.png", metavar="FILE",
                   help="PNG of the mixed batch, each tile labelled ('' to skip); its folder is created when the "
                        "batch is ready")
    add_common(p)
    # one lambda per sample: the picture shows Mixup and CutMix over the whole range of lambda; in batch mode
    # it shows a single draw (seed 0: one CutMix box of 3 % on every tile), which looks like no mixing at all
    p.set_defaults(mode="elem")
    p.set_defaults(func=_cmd_demo)

    p = _subparser(sub, "bench", "loader throughput: ours (kernels after the iterator or in the DALI graph) vs "
                                 "plain DALI, DALI's own ops, DALI + timm, DataLoader + timm")
    add_data(p, num_classes=False, timm_workers=False)  # bench's -j/--workers: the DataLoader's, timm's meaning
    _add_bench_only(p)
    add_common(p)
    p.set_defaults(func=_cmd_bench)

    p = _subparser(sub, "train", "train a model on the loader (torchrun --nproc_per_node N -m dali_mixup train "
                                 "... for several GPUs)")
    add_data(p)
    add_mixing(p, off_epoch=True)
    add_augmentation(p, evaluation=True)
    _add_train(p)
    add_common(p, seed_help="seed of the model's initialisation and of the shuffling, augmentation and mixing "
                             "streams")
    p.set_defaults(func=_cmd_train)
    parser.subcommands = dict(sub.choices)  # name -> subparser, for errors printed with the subcommand's usage
    return parser


def _did_you_mean(parser: argparse.ArgumentParser, unknown: List[str]) -> str:
    """Close spellings only: the name without its dashes against each flag's, difflib ratio >= 0.75 ("--epoch":
    --epochs; "--opt": nothing, though "--crop-pct" shares three letters with it). Close to a deprecated spelling:
    the flag's own ("--mixup-alph": --mixup)."""
    flags = {s.lstrip("-"): a.new if isinstance(a, DeprecatedAlias) else s
             for a in parser._actions for s in a.option_strings if s.startswith("--")}
    hints = [flags[m] for u in unknown if u.startswith("--")
             for m in difflib.get_close_matches(u.split("=")[0].lstrip("-"), list(flags), 1, cutoff=0.75)]
    hints = list(dict.fromkeys(hints))
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _unknown_flags(subparser: argparse.ArgumentParser, command: str, unknown: List[str]) -> str:
    """The error for words the subcommand does not take: timm's train.py flags refused by name with what the
    trainer does instead, anything else as unrecognised with close spellings."""
    from .timm_flags import refusal
    refused = [refusal(w.split("=")[0]) for w in unknown if w.startswith("-")] if command == "train" else []
    refused = [r for r in refused if r]
    if refused:
        return "; ".join(dict.fromkeys(refused))
    return f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(subparser, unknown)}"


def given_flags(subparser: argparse.ArgumentParser, words: List[str]) -> Dict[str, str]:
    """in: a subcommand's parser, the words after the subcommand -> out: {dest: flag as typed} of every flag the
    words set (a resumed run takes the others from the run)."""
    actions = subparser._option_string_actions
    given = {}
    for word in words:
        if word == "--":
            break
        name = word.split("=")[0]
        action = actions.get(name) or (actions.get(word[:2]) if word[:1] == "-" and word[1:2] != "-" else None)
        if action is not None and action.dest is not argparse.SUPPRESS:
            given[action.dest] = name if name in actions else word[:2]
    return given


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """in: command-line words (default: sys.argv[1:]) -> out: the parsed flags. An unknown flag prints the
    subcommand's usage (not the top-level one) and exits 2."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(words)
    if args.command is None:  # a bare dali-mixup (as git): what it can do, on stderr, exit 2
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{_did_you_mean(parser, unknown)}")
        parser.print_help(sys.stderr)
        sys.exit(2)
    subparser = parser.subcommands[args.command]
    dir_word = getattr(args, "data_dir", None)
    if dir_word is not None and unknown:  # "--epoch 3": the 3 is the unknown flag's value, not timm's DIR
        at = words.index(dir_word)
        if at > 0 and words[at - 1] in unknown and words[at - 1].startswith("-") and "=" not in words[at - 1]:
            unknown.insert(unknown.index(words[at - 1]) + 1, dir_word)
            args.data_dir = None
    if unknown:
        subparser.error(_unknown_flags(subparser, args.command, unknown))
    args.given = given_flags(subparser, words[words.index(args.command) + 1:])
    if getattr(args, "data_dir", None) is not None:  # timm's positional DATA
        if args.data is not None and args.data != args.data_dir:
            subparser.error(f"the data folder is given twice: DIR {args.data_dir} and --data-dir {args.data}")
        args.data = args.data_dir
        args.given["data"] = "DIR"
    if args.command in ("demo", "train"):
        args.train_loader_options = loader_options(args, AUGMENT_FLAGS)
        args.eval_loader_options = loader_options(args, EVAL_FLAGS if args.command == "train" else {})
    return args


def one_paragraph(exc: BaseException) -> str:
    """in: an exception -> out: its message as one paragraph (the first paragraph, lines joined), in the
    command line's words."""
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split("\n\n")[0].split())
    for words, flag in _FLAG_WORDING.items():
        text = text.replace(words, flag)
    if not isinstance(exc, (ValueError, OSError, ImportError, RuntimeError)):
        text = f"{type(exc).__name__}: {text}"
    return text


class _Formatter(logging.Formatter):
    def format(self, record):
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _log_to_stderr() -> None:
    logger = logging.getLogger("dali_mixup")
    if not any(getattr(h, "_dali_mixup_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._dali_mixup_cli = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Optional[List[str]] = None) -> int:
    """in: command-line words -> out: exit status. Errors end in one paragraph on stderr (``--debug``: the
    traceback); a deprecated flag's spelling, one warning line naming the new one."""
    with warnings.catch_warnings():  # a deprecated spelling: one line, at once (before any usage error)
        warnings.simplefilter("always", FlagDeprecationWarning, append=True)
        show = warnings.showwarning

        def show_flag_warnings_briefly(message, category, *rest, **kwargs):
            if issubclass(category, FlagDeprecationWarning):
                print(f"{PROG}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, *rest, **kwargs)
        warnings.showwarning = show_flag_warnings_briefly
        args = parse_args(argv)
    _log_to_stderr()
    set_image_limits(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(exc, "exit_status", None) is not None:  # train stopped by a signal, its checkpoint saved
            print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
            return exc.exit_status
        if args.debug:
            raise
        # errors about the input name the flag or file; for anything else the traceback may help
        hint = "" if isinstance(exc, (ValueError, OSError, ImportError)) else " (--debug shows the traceback)"
        print(f"{PROG} {args.command}: error: {one_paragraph(exc)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
