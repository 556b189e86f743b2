"""The trainer on CPU: a smoke run, resume, and two-process DDP (gloo) through torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dali_mixup.sample_data import make_sample_data

ARGS = ["--model", "resnet18", "--image-size", "48", "--batch-size", "8", "--threads", "1", "--device", "cpu",
        "--lr", "0.4", "--warmup-epochs", "0.5", "--mixup-alpha", "0.2", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("train-data"), train_per_class=6, val_per_class=2,
                            num_classes=4, seed=1)


def _train(*extra, env=None, launcher=None):
    cmd = (launcher or [sys.executable, "-m"]) + ["dali_mixup", "train"] + ARGS + list(extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_smoke_run_loss_falls_and_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    _train("--data", str(data), "--epochs", "3", "--output", str(out))
    summary = json.loads((out / "summary.json").read_text())
    losses = [row["train_loss"] for row in summary["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    for epoch in range(3):
        assert (out / f"checkpoint-{epoch:03d}.pt").exists()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,val_top1,val_top5") and len(rows) == 4
    ckpt = torch.load(out / "checkpoint-last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "scaler", "loader", "epoch"} <= set(ckpt)
    assert 0.0 <= summary["history"][-1]["val_top1"] <= 100.0


def test_resume_reproduces_the_next_epoch(data, tmp_path):
    full = tmp_path / "full"
    _train("--data", str(data), "--epochs", "2", "--output", str(full))
    resumed = tmp_path / "resumed"
    _train("--data", str(data), "--epochs", "2", "--output", str(resumed),
           "--resume", str(full / "checkpoint-000.pt"))
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((resumed / "summary.json").read_text())
    epoch1 = [row for row in a["first_losses"] if row[0] == 1]
    assert epoch1 and b["first_losses"] == epoch1  # same first batches (image sums) and the same losses
    assert a["param_checksums"] == b["param_checksums"]


def test_resume_with_other_classes_is_refused(data, tmp_path):
    out = tmp_path / "run"
    _train("--data", str(data), "--epochs", "1", "--max-steps", "1", "--output", str(out))
    proc = subprocess.run([sys.executable, "-m", "dali_mixup", "train"] + ARGS +
                          ["--data", str(data), "--num-classes", "7", "--epochs", "2", "--output", str(out),
                           "--resume", str(out / "checkpoint-000.pt")], capture_output=True, text=True)
    assert proc.returncode != 0 and "num_classes=4" in proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["--data", "/nonexistent/data"], "/nonexistent/data"),
    (["--model", "no_such_net"], "no_such_net"),
])
def test_bad_arguments(data, tmp_path, argv, message):
    args = ["--data", str(data), "--epochs", "1", "--output", str(tmp_path / "o")] + argv
    proc = subprocess.run([sys.executable, "-m", "dali_mixup", "train"] + ARGS + args, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and message in proc.stderr


def test_two_process_ddp_keeps_ranks_identical(data, tmp_path):
    out = tmp_path / "ddp"
    _train("--data", str(data), "--epochs", "1", "--max-steps", "3", "--output", str(out),
           launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 16
    assert len(set(summary["param_checksums"])) == 1, summary["param_checksums"]
