"""The trainer with untrusted files and shared folders, and a run that survives its user (issue 23): crafted
checkpoints run no code, planted links are never written through, one trainer per output folder, stale
temporaries of dead writers cleaned, an unwritable folder found at the start, a partial checkpoint named, Ctrl-C /
SIGTERM resumable mid-epoch, a resumed run reusing its own flags. In process where it can be (fast), as a user
runs it (subprocess) where a second process is the point."""

import importlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dali_mixup.apps import cli, train
train_build = importlib.import_module("dali_mixup.apps.train.build")  # the module (the package exports build())
from dali_mixup.apps.train import fit as train_fit
from dali_mixup.sample_data import make_sample_data

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--img-size", "32", "-b", "4", "--model", "test_resnet", "-j", "1", "--device", "cpu",
         "--no-progress", "--warmup-epochs", "0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("safety-data"), train_per_class=5, val_per_class=1,
                            num_classes=3, seed=4)


def _train(data, out, *extra):
    return cli.main(["train", "--data-dir", str(data), "--output", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished 2-epoch run (uninterrupted), the reference for the resumed ones."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert _train(data, out, "--epochs", "2") == 0
    return out


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# -- 1. a checkpoint is data, never code -------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what an attacker's pickle does when it is loaded
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_crafted_checkpoint_runs_no_code_and_is_refused_by_name(data, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    out.mkdir()
    crafted = {"epoch": 0, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "loader": [],
               "num_classes": 3, "model_name": "test_resnet", "args": {}, "history": [_Payload(marker)]}
    torch.save(crafted, out / "checkpoint-last.pt")
    with pytest.raises(ValueError, match=r"checkpoint-last.pt: refused: .*could run code") as info:
        train.load_checkpoint(out / "checkpoint-last.pt")
    assert "system" in str(info.value)  # what was refused, in torch's words
    assert _train(data, out, "--epochs", "2", "--resume") == 1  # the trainer, as the attacker hoped it would run
    assert "checkpoint-last.pt: refused" in capsys.readouterr().err
    assert not marker.exists()


def test_what_the_trainer_saves_loads_with_weights_only(finished):
    for path in sorted(finished.glob("checkpoint-*.pt")):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert set(train.CHECKPOINT_KEYS) <= set(ckpt) and ckpt["args"]["model"] == "test_resnet"


def test_a_foreign_or_partial_checkpoint_names_what_it_lacks(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"epoch": 1, "model": {}}, out / "checkpoint-last.pt")
    assert _train(data, out, "--epochs", "3", "--resume") == 1
    err = capsys.readouterr().err
    assert "checkpoint-last.pt: not a complete dali-mixup train checkpoint: it lacks 'optimizer', 'scheduler', " \
           "'scaler', 'loader', 'num_classes', 'model_name', 'history', 'best', 'wall_time_s', 'partial', 'args' " \
           "(it has 'epoch', 'model')" in err
    assert "KeyError" not in err


# -- 3. temporary files cannot be redirected ---------------------------------------------------------------------
def test_planted_links_at_the_temporary_names_are_never_written_through(tmp_path):
    out, victim = tmp_path / "shared-output", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    pid = os.getpid()
    names = ["checkpoint-000.pt", "checkpoint-last.pt", "checkpoint-best.pt", "metrics.csv", "summary.json"]
    for name in names:  # every name the old code would have used, for this very process
        (out / f".{name}.tmp{pid}").symlink_to(victim)
    train.save_checkpoint({"epoch": 0}, out, epoch=0, keep=3, is_best=True)
    train.write_metrics(out, [dict(epoch=0, train_loss=1.0, val_top1=None, val_top5=None, lr=0.1, img_per_s=1.0,
                                   seconds=1.0)])
    train.write_summary(out, {"ok": True})
    assert victim.read_text() == "precious"
    assert torch.load(out / "checkpoint-last.pt", weights_only=True)["epoch"] == 0
    assert (out / "metrics.csv").read_text().startswith("epoch,") and json.loads((out / "summary.json").read_text())
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "metrics.csv").stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would have made it


# -- 4. one trainer per output folder ----------------------------------------------------------------------------
def _env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def test_a_second_trainer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(data, tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "dali_mixup", "train", "--data-dir", str(data), "--output",
                              str(out), *SMALL, "--epochs", "1000"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT)
    try:
        for line in first.stdout:  # the first trainer has started its epochs
            if line.startswith("training"):
                break
        assert _train(data, out, "--epochs", "1", "--overwrite") == 1  # even told to replace the run
        err = capsys.readouterr().err
        assert f"--output {out}: another trainer is running there (pid {first.pid} on host " \
               f"{socket.gethostname()}, started " in err
    finally:
        first.kill()  # SIGKILL: no handler runs, its lock file keeps its pid
        first.wait()
    assert json.loads((out / "train.lock").read_text())["pid"] == first.pid
    # the dead one's lock is taken over
    assert _train(data, out, "--epochs", "1", "--train-batches-per-epoch", "1", "--overwrite") == 0
    assert (out / "train.lock").read_text() == ""  # released at the end


# -- 7. stale temporaries, unwritable output ---------------------------------------------------------------------
def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_files_of_dead_writers_are_removed_and_no_others(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead, host = _dead_pid(), socket.gethostname().replace(".", "_").replace("-", "_")
    stale = [f".metrics.csv.tmp-{host}-{dead}-abcd1234", f".checkpoint-004.pt.tmp-{host}-{dead}-0f0f0f0f"]
    kept = [f".checkpoint-004.pt.tmp{dead}",  # not a name dali-mixup writes: never its to remove
            f".metrics.csv.tmp-{host}-{os.getpid()}-abcd1234",
            f".summary.json.tmp-otherhost-{dead}-abcd1234", ".notes.tmp", "notes.tmp123"]
    for name in stale + kept:
        (out / name).write_bytes(b"half a checkpoint")
    lock = train.prepare_output(out, resume=True, overwrite=False, is_main=True)
    if lock is not None:
        lock.release()
    left = {p.name for p in out.iterdir()}
    assert not left & set(stale) and set(kept) <= left


def test_an_unwritable_output_is_refused_before_training(data, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:  # root writes through any mode: /proc/self is a folder nothing can be created in
        out = Path("/proc/self")
    else:
        out = tmp_path / "read-only"
        out.mkdir()
        out.chmod(0o555)
    monkeypatch.setattr(train_fit, "train_one_epoch", lambda *a, **k: pytest.fail("trained before checking --output"))
    assert _train(data, out, "--epochs", "1", "--overwrite") == 1
    assert f"--output {out}: cannot write there" in capsys.readouterr().err


# -- 8, 9. Ctrl-C and SIGTERM, resuming with the run's own flags -------------------------------------------------
def _signal_at_step(monkeypatch, step, signum):
    calls = {"n": 0}
    loss = train_build.mixup_cross_entropy

    def counting(logits, targets):
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signum)  # the user's Ctrl-C (or the scheduler's SIGTERM) during this step
        return loss(logits, targets)
    monkeypatch.setattr(train_build, "mixup_cross_entropy", counting)
    return calls


@pytest.mark.parametrize("signum,step", [(signal.SIGINT, 2), (signal.SIGTERM, 5)])
def test_a_signal_saves_a_mid_epoch_checkpoint_that_resumes_the_same_run(data, finished, tmp_path, monkeypatch,
                                                                         capsys, signum, step):
    out = tmp_path / "run"
    calls = _signal_at_step(monkeypatch, step, signum)
    assert _train(data, out, "--epochs", "2") == 128 + signum
    err = capsys.readouterr().err
    steps = len(list((data / "train").rglob("*.jpg"))) // 4
    epoch, at = divmod(step, steps)
    command = f"dali-mixup train --output {out} --resume"
    assert f"interrupted at epoch {epoch}, step {at} of {steps}" in err and command in err
    ckpt = torch.load(out / "checkpoint-last.pt", weights_only=True)
    assert ckpt["epoch"] == epoch - 1 and ckpt["partial"]["steps"] == at  # epoch 0: -1, nothing whole yet
    monkeypatch.undo()
    calls["n"] = 0
    assert cli.main(shlex.split(command)[1:]) == 0  # the printed command, as typed: no other flag needed
    for name, tensor in _weights(finished / "checkpoint-last.pt").items():  # the same run, bit for bit
        assert torch.equal(tensor, _weights(out / "checkpoint-last.pt")[name]), name
    a = json.loads((finished / "summary.json").read_text())["history"]
    b = json.loads((out / "summary.json").read_text())["history"]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_resume_reuses_the_runs_flags_and_lists_every_differing_one(data, finished, tmp_path, capsys):
    saved = json.loads((finished / "args.json").read_text())
    assert saved["image_size"] == 32 and saved["model"] == "test_resnet"
    code = cli.main(["train", "--output", str(finished), "--resume", "--img-size", "64", "-b", "8",
                     "--model", "test_resnet", "--mixup", "0.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "3 flag(s) differ from the run's own" in err
    for shown in ("--img-size 64 (the run has 32)", "-b 8 (the run has 4)", "--mixup 0.5 (the run has 0.8)"):
        assert shown in err, shown
    assert "--model" not in err.split("differ")[1].split("A resumed")[0]  # given with the run's value: fine
    assert cli.main(["train", "--output", str(finished), "--resume", "--train-batches-per-epoch", "1"]) == 1
    assert "--train-batches-per-epoch 1 (the run has its default)" in capsys.readouterr().err
    longer = tmp_path / "longer"
    shutil.copytree(finished, longer)
    # --epochs may change: the same run, trained longer, with nothing else typed
    assert cli.main(["train", "--output", str(longer), "--resume", "--epochs", "3"]) == 0
    summary = json.loads((longer / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and summary["history"][:2] == json.loads(
        (finished / "summary.json").read_text())["history"]
