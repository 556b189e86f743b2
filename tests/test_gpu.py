"""GPU tier: the CUDA kernels through mix_batch on a real GPU vs the oracle, bit for bit (skipped without CUDA).

The GPU is bit-identical to the NumPy oracle and the CPU twin for every dtype: its multiplies and adds are
explicitly rounded (no FMA contraction) and float16/bfloat16 come from the hardware round-to-nearest-even
conversion, which is the oracle's rounding.
"""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup import reference as ref

pytestmark = pytest.mark.gpu

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _bits(t) -> torch.Tensor:
    """A tensor's bits (int16/int32/int64 by width): "bit-identical" compared as bits, so a NaN equals only the same
    NaN and -0.0 differs from 0.0."""
    t = torch.as_tensor(t).detach().cpu().contiguous()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_bits(got: torch.Tensor, want) -> None:
    want = torch.as_tensor(want).to(got.dtype)  # the oracle's values are exactly representable in got's dtype
    assert got.shape == want.shape and torch.equal(_bits(got), _bits(want))


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cuda_kernel_matches_oracle(dtype, layout, mode, make_batch):
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, label_smoothing=0.1)
    for n, h, w in [(1, 1, 1), (5, 7, 9), (16, 224, 224), (3, 129, 257), (4, 33, 68)]:  # vec4 and generic
        images = make_batch(n, h, w, seed=n)
        labels = np.random.default_rng(n).integers(0, 10, n)
        flip = np.random.default_rng(h).random(n) < 0.5
        params = dm.sample_params(cfg, n, h, w, seed=1)
        out, targets = dm.mix_batch(torch.from_numpy(images).cuda(), torch.from_numpy(labels).cuda(), cfg, params,
                                    out_dtype=DTYPES[dtype], layout=layout, flip=flip)
        assert out.is_cuda and targets.is_cuda and out.dtype == DTYPES[dtype]
        want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, flip=flip,
                              out_dtype=dtype, layout=layout)
        _assert_bits(out, want)
        _assert_bits(targets, ref.soft_targets(labels, params, cfg))


def test_cuda_runs_on_the_current_stream_without_sync(make_batch, monkeypatch):
    """Both kernels are launched on torch's current stream (by handle, not inferred from a syncing .cpu())."""
    from numba import cuda
    images = torch.from_numpy(make_batch(8, 64, 64)).cuda()
    labels = torch.arange(8, device="cuda") % 10
    cfg = dm.MixupConfig(10, cutmix_alpha=1.0, mode="elem")
    handles, external = [], cuda.external_stream
    monkeypatch.setattr(cuda, "external_stream", lambda handle: handles.append(handle) or external(handle))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # images and labels were made on the default stream
    with torch.cuda.stream(stream):
        out, targets = dm.mix_batch(images, labels, cfg, check_labels=False, out_dtype=torch.float16)
    assert handles == [stream.cuda_stream, stream.cuda_stream]
    stream.synchronize()
    ref_out, ref_t = dm.mix_batch(images.cpu(), labels.cpu(), cfg, out_dtype=torch.float16)
    assert torch.equal(_bits(out), _bits(ref_out)) and torch.equal(_bits(targets), _bits(ref_t))  # the CPU twin


def test_mix_targets_cuda_is_the_current_device():
    """``device="cuda"`` is torch's current device (not GPU 0): the result lives there."""
    cfg = dm.MixupConfig(10)
    params = dm.sample_params(cfg, 4, 8, 8, seed=1)
    last = torch.cuda.device_count() - 1
    with torch.cuda.device(last):
        targets = dm.mix_targets(torch.tensor([0, 1, 2, 3]), cfg, params, device="cuda")
    assert targets.device == torch.device("cuda", last)
    _assert_bits(targets, ref.soft_targets(np.arange(4), params, cfg))


def test_cuda_bad_labels_raise_or_give_nan_rows():
    images = torch.zeros((4, 8, 8, 3), dtype=torch.uint8, device="cuda")
    labels = torch.tensor([0, 1, 2, 11], device="cuda")
    cfg = dm.MixupConfig(10)
    with pytest.raises(ValueError, match="num_classes"):
        dm.mix_batch(images, labels, cfg)
    _, targets = dm.mix_batch(images, labels, cfg, check_labels=False)
    assert torch.isnan(targets[3]).all()


@pytest.mark.parametrize("n,h,w", [(70000, 1, 4), (2, 70000, 4), (1, 70001, 3)])
def test_cuda_grid_beyond_65535_samples_or_rows(n, h, w):
    """Batch or height above the old grid's 65,535 limit (one 1-D grid now)."""
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    images = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    params = dm.sample_params(cfg, n, h, w, seed=2)
    out, _ = dm.mix_batch(torch.from_numpy(images).cuda(), torch.zeros(n, dtype=torch.int64), cfg, params,
                          out_dtype=torch.bfloat16, check_labels=False)
    want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, out_dtype="bfloat16")
    _assert_bits(out, want)


def test_cuda_misaligned_input_takes_the_generic_kernel(make_batch):
    """A uint8 view starting one byte into its storage cannot be read as words: the generic kernel runs."""
    images = make_batch(3, 8, 16)
    storage = torch.zeros(images.size + 1, dtype=torch.uint8, device="cuda")
    view = storage[1:].view(images.shape)
    view.copy_(torch.from_numpy(images))
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, mode="elem")
    params = dm.sample_params(cfg, 3, 8, 16, seed=3)
    out, _ = dm.mix_batch(view, torch.zeros(3, dtype=torch.int64, device="cuda"), cfg, params)
    want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD)
    _assert_bits(out, want)
