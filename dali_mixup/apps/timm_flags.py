"""timm's train.py flags on ``dali-mixup train``'s command line: those that mean the same here are accepted (cli
defines them, under timm's names, beside ours); the rest are refused by name, with what the trainer does
instead, rather than as unknown with a misleading suggestion.

``TIMM_TRAIN_FLAGS``: every option string of timm's train.py (huggingface/pytorch-image-models, commit aa4b585,
2026-08-08). ``refusal(flag)`` says why one is not supported, or None for a flag that is not timm's.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["TIMM_TRAIN_FLAGS", "refusal"]

TIMM_TRAIN_FLAGS = frozenset("""
-c --config --data-dir --dataset --train-split --val-split --train-num-samples --val-num-samples --dataset-download
--class-map --input-img-mode --input-key --target-key --dataset-trust-remote-code --model --pretrained
--pretrained-path --initial-checkpoint --resume --no-resume-opt --num-classes --gp --img-size --in-chans
--input-size --crop-pct --mean --std --interpolation -b --batch-size -vb --validation-batch-size --channels-last
--fuser --grad-accum-steps --grad-checkpointing --fast-norm --model-kwargs --head-init-scale --head-init-bias
--torchcompile-mode --torchscript --torchcompile --device --amp --amp-dtype --model-dtype --no-ddp-bb
--synchronize-step --device-modules --opt --opt-eps --opt-betas --momentum --weight-decay --clip-grad --clip-mode
--layer-decay --layer-decay-min-scale --layer-decay-no-opt-scale --opt-kwargs --sched --sched-on-updates --lr
--lr-base --lr-base-size --lr-base-scale --lr-noise --lr-noise-pct --lr-noise-std --lr-cycle-mul --lr-cycle-decay
--lr-cycle-limit --lr-k-decay --warmup-lr --min-lr --epochs --epoch-repeats --start-epoch --decay-milestones
--decay-epochs --warmup-epochs --warmup-prefix --cooldown-epochs --patience-epochs --decay-rate --dr --no-aug
--train-crop-mode --scale --ratio --hflip --vflip --color-jitter --color-jitter-prob --grayscale-prob
--gaussian-blur-prob --aa --aug-repeats --aug-splits --jsd-loss --bce-loss --bce-sum --bce-target-thresh
--bce-pos-weight --reprob --remode --recount --resplit --mixup --cutmix --cutmix-minmax --mixup-prob
--mixup-switch-prob --mixup-mode --mixup-off-epoch --smoothing --train-interpolation --drop --drop-connect
--drop-path --drop-block --bn-momentum --bn-eps --sync-bn --dist-bn --split-bn --model-ema --model-ema-force-cpu
--model-ema-decay --model-ema-warmup --seed --worker-seeding --log-interval --val-interval --recovery-interval
--checkpoint-hist -j --workers --save-images --pin-mem --no-prefetcher --output --experiment --eval-metric --tta
--use-multi-epochs-loader --log-wandb --wandb-project --wandb-tags --wandb-resume-id --train-img-sizes
--train-batch-sizes --train-size-probs --train-size-schedule --train-size-schedule-spread --train-size-random-mix
--train-batches-per-epoch --train-steps-per-epoch --variable-batch-loss-scale --naflex-loader
--naflex-train-seq-lens --naflex-max-seq-len --naflex-patch-sizes --naflex-patch-size-probs --naflex-loss-scale
--naflex-patchify-channels-first --kd-model-name --kd-distill-type --kd-loss-type --distill-loss-weight
--task-loss-weight --kd-temperature --kd-student-feature-dim --kd-teacher-feature-dim --kd-token-distill-type
""".split())

_OPT = "the trainer uses SGD with Nesterov momentum (--momentum, --weight-decay; norms and biases undecayed)"
_SCHED = "the schedule is a linear warm-up then cosine decay to 0 (--lr or --lr-base, --warmup-epochs)"
_LOADER = "the DALI loader has no DataLoader to tune (its CPU threads: -j/--workers)"
_DATA = "the data is an ImageFolder, a file list or WebDataset shards (--data, with train/ and val/, or --val-data)"
_WEIGHTS = "models start from random weights"

_REASONS = {
    **dict.fromkeys(["--opt", "--opt-eps", "--opt-betas", "--opt-kwargs", "--layer-decay", "--layer-decay-min-scale",
                     "--layer-decay-no-opt-scale"], _OPT),
    **dict.fromkeys(["--sched", "--sched-on-updates", "--lr-noise", "--lr-noise-pct", "--lr-noise-std",
                     "--lr-cycle-mul", "--lr-cycle-decay", "--lr-cycle-limit", "--lr-k-decay", "--warmup-lr",
                     "--min-lr", "--decay-milestones", "--decay-epochs", "--warmup-prefix", "--cooldown-epochs",
                     "--patience-epochs", "--decay-rate", "--dr", "--lr-base-size", "--lr-base-scale"], _SCHED),
    **dict.fromkeys(["--model-ema", "--model-ema-force-cpu", "--model-ema-decay", "--model-ema-warmup"],
                    "the trainer keeps no EMA of the weights"),
    **dict.fromkeys(["--pretrained", "--pretrained-path", "--initial-checkpoint"], _WEIGHTS),
    **dict.fromkeys(["--no-prefetcher", "--pin-mem", "--use-multi-epochs-loader", "--worker-seeding"], _LOADER),
    **dict.fromkeys(["--dataset", "--train-split", "--val-split", "--dataset-download", "--class-map",
                     "--input-img-mode", "--input-key", "--target-key", "--dataset-trust-remote-code",
                     "--train-num-samples", "--val-num-samples"], _DATA),
    "--amp-dtype": "give the dtype to --amp instead: --amp bf16 or --amp fp16",
    "--input-size": "crops are square RGB: --img-size N",
    "--in-chans": "images are decoded as RGB (3 channels)",
    "--start-epoch": "--resume continues at the epoch the checkpoint ends",
    "--no-resume-opt": "--resume restores the optimiser, schedule, loader and history with the weights",
    "--experiment": "--output names the run's folder",
    "-c": "give the flags on the command line (a resumed run reuses its own, saved in OUTPUT/args.json)",
    "--config": "give the flags on the command line (a resumed run reuses its own, saved in OUTPUT/args.json)",
    "--mean": "the loader normalises with ImageNet's mean and std (create_dali_loader(mean=, std=) in Python)",
    "--std": "the loader normalises with ImageNet's mean and std (create_dali_loader(mean=, std=) in Python)",
    "-vb": "validation uses --batch-size",
    "--validation-batch-size": "validation uses --batch-size",
    "--grad-accum-steps": "one optimiser step per batch",
    "--jsd-loss": "the loss is soft-target cross-entropy",
    "--train-batch-sizes": "every batch has --batch-size images (DALI's readers fill each run with the pipeline's "
                           "batch size); --train-img-sizes alone is supported",
    "--variable-batch-loss-scale": "every batch has --batch-size images, so timm's scale would be 1",
}


def refusal(flag: str) -> Optional[str]:
    """in: an option string the trainer does not know -> out: the message refusing it when it is one of timm's
    train.py, else None."""
    if flag not in TIMM_TRAIN_FLAGS:
        return None
    why = _REASONS.get(flag, "dali-mixup train does not have it (see 'dali-mixup train --help')")
    return f"timm's {flag} is not supported: {why}"
