"""The recipes of docs/recipes.md run: the lines each diff adds to timm's train.py and torchvision's
references/classification/train.py, executed inside loops shaped like those scripts' own (their epoch and
sampler calls, AMP and channels_last flags, evaluation with ``accuracy``), on the sample data for a few steps;
and the example of docs/loader.md. The scripts themselves are not copied here: the loops restate what they do."""

import os
import re
import socket
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dali_mixup.sample_data import make_sample_data
from script_args import timm_setup, torchvision_args

DOCS = Path(__file__).resolve().parents[1] / "docs"
STEPS = 3  # a whole epoch: 12 training images, batches of 4 (the scripts' loops run whole epochs)


def _added_lines(name):
    """The ``+`` lines of docs/recipes.md's ``<!-- recipe: name -->`` diff, as statements to run in order."""
    found = re.search(rf"<!-- recipe: {name} -->\n```diff\n(.*?)```", (DOCS / "recipes.md").read_text(), flags=re.S)
    assert found, f"docs/recipes.md has no {name} recipe"
    lines = [line[1:].strip() for line in found.group(1).splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    assert lines and all(lines), lines
    return "\n".join(lines)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("recipes"), train_per_class=4, val_per_class=2, num_classes=3)


def _autocast(enabled):
    """The scripts' AMP context; on a CPU it is bfloat16 autocast."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else nullcontext()


# -- timm ----------------------------------------------------------------------------------------------------------

def _timm_set_loader_epoch(loader, epoch):
    """timm train.py's _set_loader_epoch: the dataset's, else the batch sampler's, else the sampler's set_epoch."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def _timm_scope(data, **changes):
    """What timm's train.py holds when the patch's lines run (its mixup_fn included)."""
    from timm.data import Mixup
    args, data_config, mixup_args, dataset_train, dataset_eval, model = timm_setup(data, **changes)
    mixup_fn = Mixup(**mixup_args) if mixup_args and not args.prefetcher else None
    return dict(args=args, data_config=data_config, mixup_args=mixup_args, dataset_train=dataset_train,
                dataset_eval=dataset_eval, mixup_fn=mixup_fn, model=model)


def _timm_train_loss(args, mixup_args):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_args:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(args.smoothing) if args.smoothing else nn.CrossEntropyLoss()


def _timm_epochs(scope, epochs):
    """timm's train_one_epoch and validate, epoch after epoch -> (losses, top1s, eval samples)."""
    from timm.utils import accuracy
    args, model, loader, mixup_fn = scope["args"], scope["model"], scope["loader_train"], scope["mixup_fn"]
    model = model.to(memory_format=torch.channels_last) if args.channels_last else model
    loss_fn = _timm_train_loss(args, scope["mixup_args"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, top1s, seen = [], [], []
    for epoch in range(epochs):
        _timm_set_loader_epoch(loader, epoch)
        if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            if args.prefetcher and loader.mixup_enabled:
                loader.mixup_enabled = False
            elif mixup_fn is not None:
                mixup_fn.mixup_enabled = False
        model.train()
        for batch_idx, (input, target) in enumerate(loader):
            if not args.prefetcher:
                input, target = input.to(device="cpu", dtype=torch.float32), target.to("cpu")
                if mixup_fn is not None:
                    input, target = mixup_fn(input, target)
            if args.channels_last:
                input = input.contiguous(memory_format=torch.channels_last)
            with _autocast(args.amp):
                loss = loss_fn(model(input), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        count, correct = 0, 0.0
        with torch.inference_mode():
            for input, target in scope["loader_eval"]:
                if args.channels_last:
                    input = input.contiguous(memory_format=torch.channels_last)
                with _autocast(args.amp):
                    output = model(input)
                    loss = nn.CrossEntropyLoss()(output, target)
                acc1, acc5 = accuracy(output, target, topk=(1, 3))
                assert torch.isfinite(loss) and 0 <= acc1 <= acc5 <= 100
                count += len(target)
                correct += acc1.item() * len(target) / 100
        top1s.append(100 * correct / count)
        seen.append(count)
    return losses, top1s, seen


@pytest.mark.parametrize("changes", [
    dict(mixup=0.8, cutmix=1.0, aa="rand-m7-mstd0.5-inc1", reprob=0.25, amp=True, channels_last=True),
    dict(mixup=0.8, cutmix=1.0, prefetcher=False, mixup_off_epoch=1),  # --no-prefetcher
    dict(smoothing=0.1, train_interpolation="bicubic"),  # no mixing: class indices, LabelSmoothingCrossEntropy
], ids=["mixup-aa-reprob-amp-channels_last", "no-prefetcher", "smoothing-only"])
def test_timm_recipe_in_timm_shaped_loops(data, changes):
    scope = _timm_scope(data, **changes)
    exec(compile(_added_lines("timm"), "docs/recipes.md recipe timm", "exec"), scope)
    assert scope["mixup_fn"] is None  # the patch's line: the loader mixes
    losses, top1s, seen = _timm_epochs(scope, epochs=2)
    assert len(losses) == 2 * STEPS and all(map(torch.isfinite, torch.tensor(losses)))
    assert seen == [len(scope["loader_eval"].dataset)] * 2 == [6, 6]


def test_timm_no_prefetcher_path_needs_the_patch_s_mixup_line(data):
    """Without ``mixup_fn = None`` timm's --no-prefetcher loop would mix the loader's mixed batch a second time
    (older timm: a shape error; timm 1.0.31: silently re-mixed targets)."""
    scope = _timm_scope(data, mixup=0.8, prefetcher=False)
    exec(compile(_added_lines("timm").replace("mixup_fn = None", "pass"), "recipe", "exec"), scope)
    images, targets = next(iter(scope["loader_train"]))
    try:
        again = scope["mixup_fn"](images.clone(), targets.clone())[1]
    except RuntimeError:
        return
    assert not torch.equal(again, targets)


# -- torchvision -----------------------------------------------------------------------------------------------------

def _tv_accuracy(output, target, topk=(1,)):
    """torchvision references' utils.accuracy: soft (B, C) targets count by their argmax."""
    with torch.inference_mode():
        if target.ndim == 2:
            target = target.max(dim=1)[1]
        pred = output.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target[None])
        return [correct[:k].flatten().sum(dtype=torch.float32) * (100.0 / target.size(0)) for k in topk]


def _torchvision_run(data, args):
    """torchvision's main() from load_data on, with its train_one_epoch and evaluate ->
    (losses, samples evaluated per epoch (all ranks), len(dataset_test))."""
    import torchvision
    scope = dict(args=args, train_dir=str(data / "train"), val_dir=str(data / "val"))
    exec(compile(_added_lines("torchvision"), "docs/recipes.md recipe torchvision", "exec"), scope)
    data_loader, data_loader_test = scope["data_loader"], scope["data_loader_test"]
    train_sampler, num_classes = scope["train_sampler"], len(scope["dataset"].classes)
    model = torchvision.models.resnet18(num_classes=num_classes)
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, seen = [], []
    for epoch in range(args.start_epoch, args.epochs):
        if args.distributed:
            train_sampler.set_epoch(epoch)
        model.train()
        for i, (image, target) in enumerate(data_loader):
            image, target = image.to(args.device), target.to(args.device)
            with _autocast(args.amp):
                output = model(image)
                loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            acc1, acc5 = _tv_accuracy(output, target, topk=(1, 3))
            losses.append(loss.item())
        model.eval()
        processed = 0
        with torch.inference_mode():
            for image, target in data_loader_test:
                output = model(image.to(args.device, non_blocking=True))
                loss = criterion(output, target.to(args.device, non_blocking=True))
                acc1, acc5 = _tv_accuracy(output, target, topk=(1, 3))
                assert torch.isfinite(loss) and 0 <= acc1 <= acc5 <= 100
                processed += image.shape[0]
        if args.distributed:
            total = torch.tensor(processed)
            dist.all_reduce(total)
            processed = int(total)
        seen.append(processed)
    return losses, seen, len(data_loader_test.dataset)


def test_torchvision_recipe_in_torchvision_shaped_loops(data):
    args = torchvision_args(auto_augment="ta_wide", random_erase=0.1, mixup_alpha=0.2, cutmix_alpha=1.0,
                         label_smoothing=0.1, amp=True)
    losses, seen, total = _torchvision_run(data, args)
    assert len(losses) == 2 * STEPS and all(map(torch.isfinite, torch.tensor(losses)))
    assert seen == [total, total] == [6, 6]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchvision_rank(rank, world, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        args = torchvision_args(distributed=True, auto_augment="ra", mixup_alpha=0.2, cutmix_alpha=1.0)
        losses, seen, total = _torchvision_run(Path(data), args)
        torch.save(dict(losses=losses, seen=seen, total=total), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_torchvision_recipe_under_two_processes(data, tmp_path):
    """As under torchrun: each rank its shard, set_epoch each epoch, and evaluation covering every sample once
    across the ranks (torchvision's len(data_loader.dataset) check)."""
    mp.spawn(_torchvision_rank, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(result["losses"]) == 2 and result["seen"] == [result["total"]] * 2 == [6, 6]  # 6 per rank


# -- the loader example ------------------------------------------------------------------------------------------

def test_readme_loader_example_runs(data, monkeypatch):
    """The example of docs/loader.md as written, on the sample data it asks for (``$DALI_MIXUP_DATA``)."""
    code = re.search(r"```python\n(.*?)```", (DOCS / "loader.md").read_text(), flags=re.S).group(1)
    monkeypatch.setenv("DALI_MIXUP_DATA", str(data))
    scope = {}
    exec(compile(code, "docs/loader.md example", "exec"), scope)
    assert torch.isfinite(scope["loss"]) and scope["labels"].dtype == torch.int64
    assert scope["images"].dtype == torch.float32 and "loader" in scope["state"]
