"""``dali_mixup.dali.mix`` inside a DALI pipeline (CPU-only DALI here), and ``create_dali_loader(placement="graph")``
against the epilogue placement: the same batches, bit for bit."""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.dali import _batch_view, mix
from dali_mixup.loader import create_dali_loader

CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
COMMON = dict(batch_size=4, num_classes=3, image_size=32, num_threads=1, device="cpu")


def _epochs(loader, epochs):
    return [(i.clone(), t.clone()) for _ in range(epochs) for i, t in loader]


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    for (ai, at), (bi, bt) in zip(a, b):
        assert ai.dtype == bi.dtype and torch.equal(ai, bi) and torch.equal(at, bt)


@pytest.mark.parametrize("cfg,layout,dtype", [
    (CFG, "NCHW", torch.float16),                                                        # mixup + cutmix, per sample
    (dm.MixupConfig(3, mixup_alpha=1.0, mode="batch", pairing="flip"), "NHWC", torch.float32),       # mixup only
    (dm.MixupConfig(3, mixup_alpha=0.0, cutmix_alpha=1.0, mode="pair"), "NCHW", torch.float32),     # cutmix only
    (CFG, "NHWC", torch.bfloat16),
])
def test_graph_placement_equals_the_epilogue(image_folder, cfg, layout, dtype):
    kw = dict(mixup=cfg, layout=layout, out_dtype=dtype, seed=7, **COMMON)
    epilogue = _epochs(create_dali_loader(image_folder, **kw), 2)
    graph = _epochs(create_dali_loader(image_folder, placement="graph", **kw), 2)
    _assert_same(epilogue, graph)
    assert len(graph) == 2 * (25 // 4)
    _, on = cfg.off_on
    assert any((t.max(1).values < on).any() for _, t in graph)  # the batches were mixed


def test_graph_placement_follows_the_mixing_switch_and_eval(image_folder):
    kw = dict(mixup=CFG, seed=2, mixup_off_epoch=1, **COMMON)
    loaders = [create_dali_loader(image_folder, placement=p, **kw) for p in ("epilogue", "graph")]
    epilogue, graph = (_epochs(loader, 2) for loader in loaders)
    _assert_same(epilogue, graph)
    _, on = CFG.off_on
    assert len(graph) >= 2
    assert all(torch.allclose(t.max(1).values, torch.full((4,), on)) for _, t in graph[len(graph) // 2:])
    # evaluation: no mixing, the partial last batch (25 = 6 * 4 + 1) kept
    ev = [_epochs(create_dali_loader(image_folder, train=False, mixup=CFG, placement=p, **COMMON), 1)
          for p in ("epilogue", "graph")]
    _assert_same(*ev)
    assert [len(i) for i, _ in ev[1]] == [4] * 6 + [1]


def test_a_state_resumes_only_its_placement(image_folder):
    """(Resuming in graph placement: test_loader.py::test_resume_mid_epoch_continues_the_same_stream.)"""
    kw = dict(mixup=CFG, seed=4, placement="graph", **COMMON)
    loader = create_dali_loader(image_folder, **kw)
    next(iter(loader))
    state = loader.state_dict()
    # the two placements are different DALI graphs: a state resumes only its own
    with pytest.raises(ValueError, match="placement was 'graph', this loader has 'epilogue'"):
        create_dali_loader(image_folder, **dict(kw, placement="epilogue")).load_state_dict(state)


def test_placement_is_validated(image_folder):
    with pytest.raises(ValueError, match="placement must be one of"):
        create_dali_loader(image_folder, mixup=CFG, placement="iterator", **COMMON)
    with pytest.raises(ValueError, match="needs backend='fused'"):
        create_dali_loader(image_folder, mixup=CFG, backend="dali", placement="graph", **COMMON)


# ---- mix() in a pipeline of one's own ------------------------------------------------------------------------------

def _user_pipeline(root, cfg, *, size=24, resize=True, dtype=None, **mix_kw):
    """A user's own pipeline: reader, random crop, resize, flip flags, then mix; also returns what mix got."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=11, enable_checkpointing=True)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(root), random_shuffle=True, pad_last_batch=True, seed=3,
                                        name="Reader")
        images = fn.decoders.image_random_crop(jpegs, output_type=types.RGB)
        if resize:
            images = fn.resize(images, resize_x=size, resize_y=size)
        if dtype is not None:
            images = fn.cast(images, dtype=dtype)
        flip = fn.random.coin_flip(dtype=types.BOOL)
        mixed, targets = mix(images, labels, cfg, flip=flip, **mix_kw)
        return mixed, targets, images, labels, flip

    return pipe


def _run(pipe, count):
    out = []
    for _ in range(count):
        out.append([torch.from_numpy(np.array(t.as_tensor())) for t in pipe.run()])
    return out


def test_mix_in_a_users_pipeline_equals_mix_batch_with_the_run_key(image_folder):
    pipe = _user_pipeline(image_folder, CFG, seed=5, rank=2, batches_per_epoch=3, out_dtype="float16",
                          layout="NHWC")()
    for run, (mixed, targets, images, labels, flip) in enumerate(_run(pipe, 7)):
        epoch, step = divmod(run, 3)
        params = dm.sample_params(CFG, 4, 24, 24, seed=5, epoch=epoch, step=step, rank=2)
        want_images, want_targets = dm.mix_batch(images, labels.reshape(-1), CFG, params, out_dtype=torch.float16,
                                                 layout="NHWC", flip=flip.numpy())
        assert mixed.dtype == torch.float16 and torch.equal(mixed, want_images)
        assert torch.equal(targets, want_targets)


def test_mix_resumes_from_a_dali_checkpoint(image_folder):
    make = _user_pipeline(image_folder, CFG, seed=1)
    pipe = make()
    _run(pipe, 3)
    checkpoint = pipe.checkpoint()
    expected = _run(pipe, 4)
    resumed = make(checkpoint=checkpoint)
    for want, got in zip(expected, _run(resumed, 4), strict=True):
        assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))


def test_mix_enabled_false_normalises_and_one_hots(image_folder):
    pipe = _user_pipeline(image_folder, CFG, enabled=lambda epoch: False, layout="NHWC")()
    ((mixed, targets, images, labels, flip),) = _run(pipe, 1)
    plain = dm.MixupConfig(3, mixup_alpha=0.0, label_smoothing=CFG.label_smoothing)
    want, _ = dm.mix_batch(images, labels.reshape(-1), plain, layout="NHWC", flip=flip.numpy())
    assert torch.equal(mixed, want)
    off, on = CFG.off_on
    assert torch.equal(targets, torch.full((4, 3), np.float32(off)).scatter_(1, labels.long(), np.float32(on)))


def test_mix_names_bad_arguments(image_folder):
    from nvidia.dali import fn, pipeline_def, types

    with pytest.raises(RuntimeError, match="inside a pipeline definition"):
        mix(None, None, CFG)
    cases = [(dict(cfg="mixup"), TypeError, "cfg must be a MixupConfig"),
             (dict(layout="CHW"), ValueError, "layout must be one of"),
             (dict(out_dtype=torch.int8), ValueError, "out_dtype"),
             (dict(batches_per_epoch=0), ValueError, "batches_per_epoch"),
             (dict(seed=-1), ValueError, "seed"),
             (dict(enabled=True), TypeError, "enabled"),
             (dict(std=(0.2, 0.2, 0.0)), ValueError, "std"),
             (dict(images=np.zeros(3)), TypeError, "images must be a DALI DataNode")]
    for kwargs, exc, match in cases:
        @pipeline_def(batch_size=2, num_threads=1, device_id=None)
        def pipe():
            jpegs, labels = fn.readers.file(file_root=str(image_folder))
            images = fn.decoders.image(jpegs, output_type=types.RGB)
            args = dict(images=images, labels=labels, cfg=CFG)
            args.update(kwargs)
            return mix(args.pop("images"), args.pop("labels"), args.pop("cfg"), **args)

        with pytest.raises(exc, match=match):
            pipe()


@pytest.mark.parametrize("cfg,kw,match", [
    (dm.MixupConfig(2), {}, r"labels must lie in \[0, num_classes=2\), found 2"),
    (CFG, dict(resize=False), "one size across the batch"),
    (CFG, dict(dtype="float"), "images must be uint8"),
])
def test_mix_names_bad_batches_when_run(image_folder, cfg, kw, match):
    from nvidia.dali import types
    kw = {k: (types.FLOAT if v == "float" else v) for k, v in kw.items()}
    pipe = _user_pipeline(image_folder, cfg, **kw)()
    with pytest.raises(RuntimeError, match=match):
        _run(pipe, 7)  # 25 images: every class appears within 7 batches


def test_batch_view_is_a_view_of_back_to_back_samples_else_a_copy():
    batch = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3)
    view = _batch_view(np, list(batch))
    assert np.shares_memory(view, batch) and np.array_equal(view, batch) and view.flags.c_contiguous
    scattered = [batch[i].copy() for i in range(4)]
    copy = _batch_view(np, scattered)
    assert np.array_equal(copy, batch) and not np.shares_memory(copy, scattered[0])


# ---- GPU tier (skipped without CUDA) -------------------------------------------------------------------------------

GPU = dict(COMMON, device="gpu", num_threads=2)


@pytest.mark.gpu
@pytest.mark.parametrize("layout,dtype", [("NCHW", torch.float16), ("NHWC", torch.float32), ("NCHW", torch.bfloat16)])
def test_gpu_graph_placement_equals_the_epilogue(image_folder, layout, dtype):
    kw = dict(mixup=CFG, layout=layout, out_dtype=dtype, seed=7, **GPU)
    epilogue = _epochs(create_dali_loader(image_folder, **kw), 2)
    graph = _epochs(create_dali_loader(image_folder, placement="graph", **kw), 2)
    assert graph[0][0].is_cuda and graph[0][1].is_cuda
    _assert_same(epilogue, graph)


@pytest.mark.gpu
def test_gpu_mix_reads_dalis_batches_in_place_and_equals_mix_batch(image_folder, monkeypatch):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    import dali_mixup.dali as step
    views = []

    def spy(xp, samples):
        batch = step_batch_view(xp, samples)
        views.append(xp is np or batch.data.ptr == samples[0].data.ptr)
        return batch

    step_batch_view = step._batch_view
    monkeypatch.setattr(step, "_batch_view", spy)

    @pipeline_def(batch_size=4, num_threads=2, device_id=0, seed=11, enable_checkpointing=True)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=str(image_folder), random_shuffle=True, seed=3, name="Reader")
        images = fn.resize(fn.decoders.image_random_crop(jpegs, device="mixed", output_type=types.RGB),
                           resize_x=24, resize_y=24)
        flip = fn.random.coin_flip(dtype=types.BOOL)
        mixed, targets = mix(images, labels, CFG, flip=flip, seed=5, out_dtype=torch.float16)
        return mixed, targets, images, labels.gpu(), flip.gpu()

    names = ["mixed", "targets", "images", "labels", "flip"]
    loader = DALIGenericIterator(pipe(), names, reader_name="Reader")
    for step_index, batch in zip(range(3), loader):
        b = batch[0]
        params = dm.sample_params(CFG, 4, 24, 24, seed=5, step=step_index)
        want_images, want_targets = dm.mix_batch(b["images"], b["labels"].reshape(-1), CFG, params,
                                                 out_dtype=torch.float16, flip=b["flip"].cpu().numpy())
        assert b["mixed"].is_cuda and torch.equal(b["mixed"], want_images)
        assert torch.equal(b["targets"], want_targets)
    assert views and all(views)  # no stacking copy: DALI's GPU batches were read where they lie
