"""Run by tests/test_train.py under torchrun (not collected by pytest): trains through ``dali_mixup.apps.train.run``
inside a process group this script owns, then gathers a digest of every rank's weights; rank 0 writes them to
OUTPUT/ranks.json. The digests are test data, so they live here, not in the trainer's summary."""

import hashlib
import json
import sys
from pathlib import Path

import torch.distributed as dist

from dali_mixup.apps import cli, train


def digest(model) -> str:
    """in: a model -> out: a digest of its trainable parameters (BatchNorm running statistics stay per rank)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv) -> None:
    dist.init_process_group("gloo")
    args = cli.parse_args(["train", *argv])
    trainer = train.run(args)
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest(trainer.model))
    if dist.get_rank() == 0:
        (Path(args.output) / "ranks.json").write_text(json.dumps(digests))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
