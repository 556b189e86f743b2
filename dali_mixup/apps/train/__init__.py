"""``dali-mixup train``: an ImageNet-style trainer fed by the DALI loader, one process per GPU (torchrun/DDP).

Single process:   dali-mixup train --data-dir DIR --model resnet50 --epochs 90
One node, 8 GPUs: torchrun --nproc_per_node 8 -m dali_mixup train --data-dir DIR ...
Several nodes:    torchrun --nnodes N --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
                           --rdzv_endpoint HOST:PORT -m dali_mixup train --data-dir DIR ...

DIR holds ``train/`` and ``val/`` ImageFolders (or give --val-data). DDP uses NCCL on GPUs and gloo on the CPU;
each rank reads its own DALI shard; metrics are reduced across ranks; only rank 0 writes checkpoints and logs.

The steps, each usable alone, one module per job: ``processes.setup`` (processes and device) ->
``output.prepare_output`` (never overwrite a run by accident) -> ``build.build`` (loaders, model, optimiser,
schedule) -> ``checkpoint.restore`` (resume from ``checkpoint.load_checkpoint``) -> per epoch
``epoch.train_one_epoch``, ``evaluate.evaluate``, ``records.record`` and ``checkpoint.save_checkpoint`` (atomic;
the last N and the best top-1 kept) -> ``records.summary``; ``signals``: Ctrl-C/SIGTERM stop with a checkpoint.
``fit.run`` strings them together for the command line; this package exports the steps by name.
"""

from .build import Trainer, build, build_model, check_model_name
from .checkpoint import (CHECKPOINT_KEYS, check_resumable, checkpoint_state, load_checkpoint, plain_args, restore,
                         save_checkpoint)
from .epoch import progress_bar, train_one_epoch
from .evaluate import evaluate
from .fit import run
from .output import BEST, LAST, prepare_output, run_files
from .processes import Context, setup, teardown
from .records import METRICS, record, report, summary, write_metrics, write_summary
from .signals import Interrupted, StopRequest

__all__ = ["BEST", "CHECKPOINT_KEYS", "Context", "Interrupted", "LAST", "METRICS", "StopRequest", "Trainer", "build",
           "build_model", "check_model_name", "check_resumable", "checkpoint_state", "evaluate", "load_checkpoint",
           "plain_args", "prepare_output", "progress_bar", "record", "report", "restore", "run", "run_files",
           "save_checkpoint", "setup", "summary", "teardown", "train_one_epoch",
           "write_metrics", "write_summary"]
