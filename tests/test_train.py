"""The trainer on CPU. Runs of the command line (subprocesses, as a user runs it): a smoke run, resume, a
finished run, the output-folder guard, no validation data, two-process DDP. Steps alone (in process): build,
one epoch, evaluate, checkpoint, resume; atomic checkpoints; the progress bar (tqdm); the summary."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dali_mixup.apps import cli, train
from dali_mixup.apps.args import count_classes, find_splits
from dali_mixup.sample_data import make_sample_data

ROOT = Path(__file__).resolve().parents[1]
# test_resnet: timm's 0.4M-parameter ResNet, so a checkpoint is 3 MB and an epoch a fraction of a second
ARGS = ["--model", "test_resnet", "--img-size", "48", "--batch-size", "8", "-j", "1", "--device", "cpu",
        "--lr-base", "0.4", "--warmup-epochs", "0.5", "--mixup", "0.2", "--cutmix", "0", "--no-progress"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def _train(*extra, launcher=None, ok=True):
    cmd = (launcher or [sys.executable, "-m", "dali_mixup"]) + ["train"] + ARGS + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _no_nan(text):
    def refuse(name):
        raise AssertionError(f"summary.json holds {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("train-data"), train_per_class=6, val_per_class=2,
                            num_classes=4, seed=1)


@pytest.fixture(scope="module")
def run3(data, tmp_path_factory):
    """A finished 3-epoch run (keeping 2 numbered checkpoints) and its stdout."""
    out = tmp_path_factory.mktemp("run3") / "run"
    proc = _train("--data-dir", str(data), "--epochs", "3", "--output", str(out), "--checkpoint-hist", "2")
    return out, proc.stdout


def test_smoke_run_writes_what_it_promises(run3):
    out, stdout = run3
    summary = _no_nan((out / "summary.json").read_text())
    losses = [row["train_loss"] for row in summary["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert summary["complete"] and summary["epochs_done"] == 3 and summary["wall_time_s"] > 0
    top1s = [row["val_top1"] for row in summary["history"]]
    assert summary["final"]["top1"] == top1s[-1] and 0 <= summary["final"]["top5"] <= 100
    assert summary["best"]["top1"] == max(top1s) and summary["best"]["epoch"] == top1s.index(max(top1s))
    assert not {"first_losses", "param_checksums"} & set(summary)  # test data lives in the tests
    # the last 2 numbered checkpoints, plus last and best; the best one is the best epoch's
    assert sorted(p.name for p in out.glob("checkpoint-*.pt")) == [
        "checkpoint-001.pt", "checkpoint-002.pt", "checkpoint-best.pt", "checkpoint-last.pt"]
    best = torch.load(out / "checkpoint-best.pt", weights_only=False)
    assert best["epoch"] == summary["best"]["epoch"]
    last = torch.load(out / "checkpoint-last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "loader", "history", "best"} <= set(last)
    assert last["epoch"] == 2 and last["history"] == summary["history"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,val_top1,val_top5,lr,img_per_s,seconds" and len(rows) == 4
    assert f"final (epoch 2): top-1 {top1s[-1]:.2f}" in stdout and "wall time" in stdout
    assert f"outputs in {out}" in stdout and "checkpoint-best.pt" in stdout


def test_resume_continues_the_same_run(data, run3, tmp_path):
    full, _ = run3
    resumed = tmp_path / "resumed"
    _train("--data-dir", str(data), "--epochs", "3", "--output", str(resumed),
           "--resume", str(full / "checkpoint-001.pt"))
    a = torch.load(full / "checkpoint-last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoint-last.pt", weights_only=False)
    for name, tensor in a["model"].items():  # same batches, same steps: the same weights, bit for bit
        assert torch.equal(tensor, b["model"][name]), name
    history = _no_nan((resumed / "summary.json").read_text())["history"]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in a["history"]]  # epochs 0-1 kept


def test_resume_of_a_finished_run_says_so_and_keeps_it(data, run3):
    out, _ = run3
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    proc = _train("--data-dir", str(data), "--epochs", "3", "--output", str(out), "--resume")
    assert "is complete" in proc.stdout and "nothing rewritten" in proc.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_existing_run_is_refused_without_resume_or_overwrite(data, run3):
    out, _ = run3
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = _train("--data-dir", str(data), "--epochs", "3", "--output", str(out), ok=False)
    assert proc.returncode == 1 and "already holds a run" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_overwrite_without_validation_warns_and_writes_no_nan(data, tmp_path):
    out = tmp_path / "old-run"
    out.mkdir()
    for name in ("metrics.csv", "summary.json", "checkpoint-007.pt", "notes.txt"):
        (out / name).write_text("from an earlier run")
    proc = _train("--data-dir", str(data / "train"), "--epochs", "1", "--train-batches-per-epoch", "1",
                  "--warmup-epochs", "5", "--output", str(out), "--overwrite")
    assert not (out / "checkpoint-007.pt").exists() and (out / "notes.txt").exists()  # only run files go
    assert proc.stderr.count("no validation folder") == 1
    assert "--warmup-epochs 5 is longer than the run (--epochs 1)" in proc.stderr
    summary = _no_nan((out / "summary.json").read_text())
    assert summary["final"]["top1"] is None and summary["best"] is None and len(summary["history"]) == 1
    assert not (out / "checkpoint-best.pt").exists() and (out / "checkpoint-last.pt").exists()
    assert "no validation" in proc.stdout


def test_resume_with_other_classes_is_refused(data, run3, tmp_path):
    full, _ = run3
    proc = _train("--data-dir", str(data), "--num-classes", "7", "--epochs", "4", "--output", str(tmp_path / "o"),
                  "--resume", str(full / "checkpoint-last.pt"), ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--num-classes 7 (the run has its default)" in proc.stderr  # the run counted its 4 class folders


def test_missing_data_is_named(tmp_path):
    proc = _train("--data-dir", "/nonexistent/data", "--output", str(tmp_path / "o"), ok=False)
    assert proc.returncode == 1 and "--data-dir /nonexistent/data: no such folder" in proc.stderr


def test_two_process_ddp_keeps_ranks_identical(data, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(ROOT / "tests" / "ddp_worker.py")]
    proc = subprocess.run(launcher + ARGS + ["--data-dir", str(data), "--epochs", "1", "--train-batches-per-epoch", "3",
                                             "--output", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _no_nan((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 16
    digests = json.loads((out / "ranks.json").read_text())
    assert len(digests) == 2 and len(set(digests)) == 1, digests


# -- the steps alone, in process ---------------------------------------------------------------------------------
def _args(data, out, *extra):
    return cli.parse_args(["train", "--data-dir", str(data), "--output", str(out), "--img-size", "32", "-b", "4",
                           "--model", "test_resnet", "-j", "1", "--device", "cpu", "--epochs", "2",
                           "--train-batches-per-epoch", "2", *extra])


def test_steps_alone_build_epoch_evaluate_checkpoint_resume(data, tmp_path):
    args = _args(data, tmp_path)
    ctx = train.setup("cpu")
    train_dir, val_dir = find_splits(args.data, None)
    t = train.build(args, ctx, train_dir, val_dir, count_classes(train_dir))
    assert t.steps_per_epoch == 2 and t.lr == pytest.approx(0.1 * 4 / 256) and t.start_epoch == 0
    stats = train.train_one_epoch(t, 0)
    assert math.isfinite(stats["train_loss"]) and stats["img_per_s"] > 0
    top1, top5 = train.evaluate(t)
    assert 0 <= top1 <= top5 <= 100
    assert train.record(t, 0, stats, top1, top5) and t.best == {"epoch": 0, "top1": top1, "top5": top5}
    state = train.checkpoint_state(t, 0, args, wall_time_s=1.5)
    path = train.save_checkpoint(state, tmp_path, epoch=0, keep=1, is_best=True)
    again = train.build(args, ctx, train_dir, val_dir, 4)
    train.restore(again, train.load_checkpoint(path))
    assert again.start_epoch == 1 and again.history == t.history and again.wall_time_s == 1.5
    for name, tensor in t.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert again.train_loader.state_dict()["step"] == t.train_loader.state_dict()["step"]


def test_evaluate_takes_index_or_one_hot_targets():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    batches = [(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]))]
    ctx = train.Context(0, 1, torch.device("cpu"))
    t = train.Trainer(Fixed(), None, None, None, None, None, batches, ctx, "off", False, 1, 3, 2, 0.1)
    assert train.evaluate(t) == (50.0, 100.0)
    t.val_loader = [(x, torch.nn.functional.one_hot(y, 3).float()) for x, y in batches]
    assert train.evaluate(t) == (50.0, 100.0)


def test_checkpoints_are_atomic_and_keep_the_last_n_and_the_best(tmp_path, monkeypatch):
    top1 = [10.0, 50.0, 30.0, 40.0, 20.0]
    best = None
    for epoch, score in enumerate(top1):
        is_best = best is None or score > top1[best]
        best = epoch if is_best else best
        train.save_checkpoint({"epoch": epoch}, tmp_path, epoch=epoch, keep=2, is_best=is_best)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-003.pt", "checkpoint-004.pt", "checkpoint-best.pt", "checkpoint-last.pt"]
    assert torch.load(tmp_path / "checkpoint-best.pt")["epoch"] == 1
    assert torch.load(tmp_path / "checkpoint-last.pt")["epoch"] == 4

    def killed(obj, fh):  # a save that dies half-way through writing
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint({"epoch": 5}, tmp_path, epoch=5, keep=2, is_best=True)
    monkeypatch.undo()
    assert torch.load(tmp_path / "checkpoint-last.pt")["epoch"] == 4  # the old one, whole
    assert torch.load(tmp_path / "checkpoint-best.pt")["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "checkpoint-005.pt"]


def test_the_progress_bar_shows_steps_eta_loss_and_rate_and_only_when_asked(data, tmp_path, capsys):
    import io
    import re
    args = _args(data, tmp_path)
    ctx = train.setup("cpu")
    train_dir, _ = find_splits(args.data, None)
    t = train.build(args, ctx, train_dir, None, count_classes(train_dir))
    stream = io.StringIO()
    train.train_one_epoch(t, 0, progress=stream)
    last = stream.getvalue().rstrip("\n").split("\r")[-1]  # tqdm redraws its line in place
    assert last.startswith("epoch 0: 100%") and "2/2 [" in last, last
    assert re.search(r"\d\d:\d\d<00:00", last), last  # elapsed < remaining
    assert re.search(r"loss \d+\.\d{4}, \d+ img/s\]$", last), last
    train.train_one_epoch(t, 1)  # no bar asked (--no-progress, or a rank other than 0): nothing per step
    assert capsys.readouterr().err == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    bar = train.progress_bar(100, "epoch 0", file=Terminal())
    assert bar.mininterval <= 1.0 and bar.miniters == 1  # redrawn at least once a second, the time checked per step
    bar.close()


def test_summary_never_holds_nan(tmp_path):
    ctx = train.Context(0, 1, torch.device("cpu"))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    t = train.Trainer(None, None, opt, None, None, None, None, ctx, "off", False, 1, 3, 2, 0.1)
    assert not train.record(t, 0, {"train_loss": float("nan"), "img_per_s": 5.0, "seconds": 1.0}, None, None)
    data = train.summary(t.history, t.best, epochs=1, wall_time_s=2.0, out=tmp_path, extra={})
    train.write_summary(tmp_path, data)
    saved = _no_nan((tmp_path / "summary.json").read_text())
    assert saved["history"][0]["train_loss"] is None and saved["final"]["top1"] is None and saved["best"] is None
    assert saved["wall_time_s"] == 2.0 and saved["complete"]


def test_train_batches_per_epoch_trains_every_epoch_from_its_start(data, tmp_path):
    """--train-batches-per-epoch 3 over 6 batches an epoch: every epoch takes its own first 3 batches (main
    continued the cut epoch instead, so the third epoch trained 0 steps and recorded "train loss 0.0000")."""
    args = _args(data, tmp_path, "--train-batches-per-epoch", "3", "--epochs", "3")
    ctx = train.setup("cpu")
    train_dir, val_dir = find_splits(args.data, None)
    t = train.build(args, ctx, train_dir, None, count_classes(train_dir))
    assert len(t.train_loader) == 6 and t.steps_per_epoch == 3
    for epoch in range(3):
        stats = train.train_one_epoch(t, epoch)
        assert stats["steps"] == 3 and math.isfinite(stats["train_loss"]) and t.train_loader.epoch == epoch
        train.record(t, epoch, stats, None, None)
    empty = {"train_loss": float("nan"), "img_per_s": 0.0, "seconds": 0.1, "steps": 0}
    train.record(t, 3, empty, None, None)
    assert t.history[-1]["train_loss"] is None  # no steps: nothing recorded as a loss


def test_bce_recipe_with_compact_targets_trains(data, tmp_path):
    """timm's ResNet-strikes-back loss flags (--bce-loss, --bce-target-thresh, --bce-sum, --bce-pos-weight) with the
    loader's compact targets: the run trains, its loss finite."""
    out = tmp_path / "bce"
    _train("--data-dir", str(data), "--epochs", "1", "--output", str(out), "--bce-loss", "--bce-target-thresh", "0.2",
           "--bce-sum", "--bce-pos-weight", "2", "--targets", "compact", "--train-batches-per-epoch", "2")
    summary = _no_nan((out / "summary.json").read_text())
    assert math.isfinite(summary["final"]["train_loss"]) and summary["final"]["train_loss"] > 0
    saved = json.loads((out / "args.json").read_text())
    assert (saved["bce_loss"], saved["bce_target_thresh"], saved["bce_sum"], saved["bce_pos_weight"],
            saved["targets"]) == (True, 0.2, True, 2.0, "compact")  # a resume reuses the same loss


def test_make_loss_is_timms(monkeypatch):
    """The trainer's loss of the flags equals timm's loss of the same flags on the same targets."""
    from types import SimpleNamespace

    from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

    import dali_mixup as dm
    from dali_mixup.apps.train.build import make_loss
    cfg = dm.MixupConfig(50, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
    params = dm.sample_params(cfg, 16, 32, 32, seed=2)
    labels, logits = torch.randint(0, 50, (16,)), torch.randn(16, 50)
    dense = dm.mix_targets(labels, cfg, params)
    compact = dm.CompactTargets(*dm.mix_targets(labels, cfg, params, dense=False), 50, 0.1)
    plain = SimpleNamespace(bce_loss=False, bce_target_thresh=None, bce_sum=False, bce_pos_weight=None)
    bce = SimpleNamespace(bce_loss=True, bce_target_thresh=0.2, bce_sum=True, bce_pos_weight=2.0)
    for args, timm_loss in ((plain, SoftTargetCrossEntropy()),
                            (bce, BinaryCrossEntropy(target_threshold=0.2, sum_classes=True, pos_weight=2.0))):
        want = timm_loss(logits, dense)
        for targets in (dense, compact):
            torch.testing.assert_close(make_loss(args)(logits, targets), want, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="--bce-target-thresh, --bce-sum: only with --bce-loss"):
        make_loss(SimpleNamespace(bce_loss=False, bce_target_thresh=0.3, bce_sum=True, bce_pos_weight=None))


def test_progressive_resizing_flags():
    """FFCV's four numbers from the command line become the training loader's schedule; --img-size stays the
    validation size; all four or none."""
    from dali_mixup import ResolutionSchedule
    from dali_mixup.apps.train.build import train_size
    args = cli.parse_args(["train", "--min-res", "160", "--max-res", "192", "--end-ramp", "76", "--start-ramp",
                           "65", "--img-size", "256"])
    assert train_size(args) == ResolutionSchedule(160, 192, 76, 65) and args.image_size == 256
    assert train_size(cli.parse_args(["train", "--img-size", "64"])) == 64
    with pytest.raises(ValueError, match="--end-ramp, --start-ramp missing"):
        train_size(cli.parse_args(["train", "--min-res", "160", "--max-res", "192"]))


def test_per_batch_size_flags_and_a_run(data, tmp_path):
    """timm's --train-img-sizes and its options become the training loader's PerBatchSizes (--img-size stays the
    validation size); not with FFCV's per-epoch flags; --train-batch-sizes refused by name; a run trains."""
    from dali_mixup import PerBatchSizes
    from dali_mixup.apps.train.build import train_size
    args = cli.parse_args(["train", "--train-img-sizes", "160", "192", "224", "--train-size-probs", "1", "0", "2",
                           "--train-size-schedule", "progressive", "--epochs", "30", "--train-size-schedule-spread",
                           "0.5", "--train-size-random-mix", "0.2", "--img-size", "256"])
    assert train_size(args) == PerBatchSizes((160, 192, 224), probs=(1.0, 0.0, 2.0), schedule="progressive",
                                             epochs=30, spread=0.5, random_mix=0.2) and args.image_size == 256
    with pytest.raises(ValueError, match=r"--train-img-sizes 160 192 with --train-size-probs.*probs must be 2"):
        train_size(cli.parse_args(["train", "--train-img-sizes", "160", "192", "--train-size-probs", "1"]))
    with pytest.raises(ValueError, match="alternatives: give one"):
        train_size(cli.parse_args(["train", "--train-img-sizes", "160", "192", "--min-res", "160"]))
    refused = _train("--data-dir", str(data), "--train-img-sizes", "32", "48", "--train-batch-sizes", "8", "4",
                     ok=False)
    assert refused.returncode == 2 and "timm's --train-batch-sizes is not supported" in refused.stderr
    out = tmp_path / "run"
    _train("--data-dir", str(data), "--epochs", "2", "--output", str(out), "--train-img-sizes", "32", "48",
           "--train-size-schedule", "progressive")
    summary = _no_nan((out / "summary.json").read_text())
    assert summary["complete"] and summary["epochs_done"] == 2 and len(summary["history"]) == 2
    assert all(math.isfinite(row["train_loss"]) for row in summary["history"])
