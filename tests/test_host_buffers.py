"""The recycled host output buffers of mix_batch: reused only when nothing refers to them any more."""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.host_buffers import HostBufferPool


def test_a_buffer_is_reused_only_when_every_view_of_it_is_gone():
    pool = HostBufferPool(capacity=4)
    first = pool.empty((2, 3), torch.float32)
    address = first.data_ptr()
    held = [first[0], first.view(torch.int32), first.numpy()]  # views and arrays derived from the tensor
    del first
    while held:
        assert pool.empty((2, 3), torch.float32).data_ptr() != address  # still reachable through a view
        held.pop()
    assert pool.empty((2, 3), torch.float32).data_ptr() == address  # the last view gone: reused


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tensors_have_the_asked_shape_dtype_and_layout(dtype):
    out = HostBufferPool().empty((3, 5, 7), dtype)
    assert out.shape == (3, 5, 7) and out.dtype == dtype and out.is_contiguous() and out.device.type == "cpu"


def test_the_pool_keeps_at_most_capacity_buffers_and_never_hands_out_a_held_one():
    pool = HostBufferPool(capacity=2)
    kept = [pool.empty((4,), torch.float32) for _ in range(5)]  # the caller keeps every batch
    assert len({t.data_ptr() for t in kept}) == 5 and len(pool._buffers) == 2
    for k, t in enumerate(kept):
        t.fill_(k)
    assert [t[0].item() for t in kept] == [0, 1, 2, 3, 4]


def test_bad_capacity_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        HostBufferPool(capacity=0)


def test_mix_batch_outputs_that_the_caller_keeps_stay_intact():
    cfg = dm.MixupConfig(4, mixup_alpha=1.0)
    images = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    first, _ = dm.mix_batch(images, labels, cfg, step=0)
    copy = first.clone()
    second, _ = dm.mix_batch(images.flip(0).contiguous(), labels, cfg, step=1)
    assert second.data_ptr() != first.data_ptr()
    np.testing.assert_array_equal(first.numpy(), copy.numpy())
