"""dali-mixup: Mixup and CutMix fused into a GPU data pipeline (NVIDIA DALI) for PyTorch.

Public API (see the README): ``MixupConfig``, ``sample_params`` -> ``MixParams``, ``mix_batch``,
``mix_targets``, ``create_dali_loader``, the losses that read mixed targets (``mixup_cross_entropy``,
``mixup_binary_cross_entropy``, dense or ``CompactTargets``) (and ``from_timm_args`` / ``from_torchvision_args``, which build it from those
scripts' arguments). Importing this package needs neither a GPU nor CUDA, DALI or CuPy; GPU modules are imported
when first used.
"""

from .compat import from_timm_args, from_torchvision_args
from .config import IMAGENET_MEAN, IMAGENET_STD, MODES, PAIRINGS, MixupConfig
from .loader import DaliMixupLoader, create_dali_loader
from .losses import (CompactTargets, MixupBinaryCrossEntropy, MixupCrossEntropy, mixup_binary_cross_entropy,
                     mixup_cross_entropy)
from .mixing import MixRecord, mix_batch, mix_record, mix_targets
from .params import MixParams, sample_params
from .resolution import PerBatchSizes, ResolutionSchedule

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODES",
    "PAIRINGS",
    "PerBatchSizes",
    "ResolutionSchedule",
    "CompactTargets",
    "DaliMixupLoader",
    "MixParams",
    "MixRecord",
    "MixupBinaryCrossEntropy",
    "MixupConfig",
    "MixupCrossEntropy",
    "create_dali_loader",
    "from_timm_args",
    "from_torchvision_args",
    "mix_batch",
    "mix_record",
    "mix_targets",
    "mixup_binary_cross_entropy",
    "mixup_cross_entropy",
    "sample_params",
]

__version__ = "0.1.0"
