"""GPU tier: the CUDA kernels through mix_batch on a real GPU vs the oracle and timm (skipped without CUDA)."""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup import reference as ref

pytestmark = pytest.mark.gpu

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cuda_kernel_matches_oracle(dtype, layout, mode, make_batch):
    cfg = dm.MixupConfig(10, mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, label_smoothing=0.1)
    for n, h, w in [(1, 1, 1), (5, 7, 9), (16, 224, 224), (3, 129, 257)]:
        images = make_batch(n, h, w, seed=n)
        labels = np.random.default_rng(n).integers(0, 10, n)
        flip = np.random.default_rng(h).random(n) < 0.5
        params = dm.sample_params(cfg, n, h, w, seed=1)
        out, targets = dm.mix_batch(torch.from_numpy(images).cuda(), torch.from_numpy(labels).cuda(), cfg, params,
                                    out_dtype=DTYPES[dtype], layout=layout, flip=flip)
        assert out.is_cuda and targets.is_cuda and out.dtype == DTYPES[dtype]
        want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, flip=flip,
                              out_dtype=dtype, layout=layout)
        got = out.float().cpu().numpy()
        # the GPU may contract a*b+c into one FMA: allow one float32 ulp before the cast, so one unit of the
        # output type at most
        tol = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 2e-2}[dtype]
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        assert np.mean(got == want) > 0.99
        np.testing.assert_allclose(targets.cpu().numpy(), ref.soft_targets(labels, params, cfg), rtol=0, atol=1e-6)


def test_cuda_runs_on_the_current_stream_without_sync(make_batch):
    images = torch.from_numpy(make_batch(8, 64, 64)).cuda()
    labels = torch.arange(8, device="cuda") % 10
    cfg = dm.MixupConfig(10, cutmix_alpha=1.0, mode="elem")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out, targets = dm.mix_batch(images, labels, cfg, check_labels=False, out_dtype=torch.float16)
    stream.synchronize()
    ref_out, ref_t = dm.mix_batch(images.cpu(), labels.cpu(), cfg, out_dtype=torch.float16)
    torch.testing.assert_close(out.cpu().float(), ref_out.float(), rtol=0, atol=4e-3)
    torch.testing.assert_close(targets.cpu(), ref_t, rtol=0, atol=1e-6)


def test_cuda_bad_labels_raise_or_give_nan_rows():
    images = torch.zeros((4, 8, 8, 3), dtype=torch.uint8, device="cuda")
    labels = torch.tensor([0, 1, 2, 11], device="cuda")
    cfg = dm.MixupConfig(10)
    with pytest.raises(ValueError, match="num_classes"):
        dm.mix_batch(images, labels, cfg)
    _, targets = dm.mix_batch(images, labels, cfg, check_labels=False)
    assert torch.isnan(targets[3]).all()
