"""The command line as timm users type it (issue 23, items 10 and 11): timm's flags that mean the same here are
accepted, the others refused by name with what the trainer does instead; suggestions only for close spellings; a
bare ``dali-mixup`` lists its commands; the demo's default picture shows mixing; a failed run leaves no folder."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dali_mixup import sample_data
from dali_mixup.apps import cli, demo, train
from dali_mixup.sample_data import make_sample_data

ROOT = Path(__file__).resolve().parents[1]


def _refused(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


def test_timm_flags_that_mean_the_same_are_accepted():
    args = cli.parse_args(["train", "/data/imagenet", "-j", "6", "--train-batches-per-epoch", "5", "--device", "cuda",
                           "--remode", "pixel", "--recount", "2", "--checkpoint-hist", "4", "--img-size", "160"])
    assert args.data == "/data/imagenet" and args.threads == 6 and args.max_steps == 5 and args.device == "gpu"
    assert args.train_loader_options["re_mode"] == "pixel" and args.train_loader_options["re_count"] == 2
    assert (args.keep_checkpoints, args.image_size) == (4, 160)
    assert cli.parse_args(["train", "--workers", "3"]).threads == 3
    assert cli.parse_args(["demo", "-j", "2"]).threads == 2
    assert cli.parse_args(["bench", "-j", "5"]).workers == 5  # bench's DataLoader workers: timm's own meaning


@pytest.mark.parametrize("argv,said", [
    (["--opt", "adamw"], "timm's --opt is not supported: the trainer uses SGD with Nesterov momentum"),
    (["--model-ema"], "timm's --model-ema is not supported: the trainer keeps no EMA of the weights"),
    (["--sched", "step"], "timm's --sched is not supported: the schedule is a linear warm-up then cosine"),
    (["--pretrained"], "timm's --pretrained is not supported: models start from random weights"),
    (["--drop-path", "0.1"], "timm's --drop-path is not supported: dali-mixup train does not have it"),
])
def test_timm_flags_the_trainer_lacks_are_refused_by_name(capsys, argv, said):
    err = _refused(capsys, "train", "/data", *argv)
    assert said in err and "did you mean" not in err and "unrecognized" not in err


def test_both_refusals_are_given_at_once(capsys):
    err = _refused(capsys, "train", "--opt", "adamw", "--model-ema", "--epochs", "3")
    assert "timm's --opt is not supported" in err and "timm's --model-ema is not supported" in err


@pytest.mark.parametrize("argv,hint", [
    (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3 (did you mean --epochs?)"),
    (["train", "--lr-bse", "0.2"], "(did you mean --lr-base?)"),
    (["demo", "--mixup-alph", "0.2"], "(did you mean --mixup?)"),  # close to the older --mixup-alpha
])
def test_a_close_misspelling_gets_its_flag(capsys, argv, hint):
    assert hint in _refused(capsys, *argv)


@pytest.mark.parametrize("argv", [["demo", "--ema"], ["train", "--warm", "1"], ["train", "--bench"],
                                  ["demo", "--lr-sched", "step"], ["bench", "--step", "1"]])
def test_a_word_close_to_no_flag_gets_no_suggestion(capsys, argv):
    err = _refused(capsys, *argv)
    assert "unrecognized arguments" in err and "did you mean" not in err


def test_an_unknown_model_lists_each_near_name_once():
    with pytest.raises(ValueError) as info:
        train.check_model_name("resnet19")
    message = str(info.value)
    near = message.split("did you mean ")[1].rstrip("?)").split(", ")
    assert "resnet18" in near and len(near) == len(set(near)), message


def test_a_bare_dali_mixup_lists_its_commands():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-m", "dali_mixup"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: dali-mixup")
    for command in ("make-sample-data", "demo", "bench", "train"):
        assert command in proc.stderr, command
    assert "required" not in proc.stderr


# -- the demo --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("demo-data"), train_per_class=8, val_per_class=0,
                            num_classes=3, seed=5)


def _demo(data, save, *extra):
    return cli.main(["demo", "--data-dir", str(data / "train"), "-b", "16", "--img-size", "32", "--device", "cpu",
                     "-j", "1", "--save", str(save), *extra])


def test_the_demos_default_picture_shows_mixing_in_a_folder_made_for_it(data, tmp_path, capsys):
    picture = tmp_path / "new" / "folder" / "batch.png"
    assert _demo(data, picture) == 0
    assert picture.is_file()
    weights = [float(w) for w in re.findall(r"sample +\d+: +\w+ +\S+ ([\d.]+)", capsys.readouterr().out)]
    assert len(weights) == 16
    visibly_mixed = [w for w in weights if 0.2 <= w <= 0.8]  # at least a fifth of the tile from the partner
    assert len(visibly_mixed) >= 4, weights


def test_a_failed_demo_leaves_no_folder(data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(demo, "save_picture", broken)
    assert _demo(data, tmp_path / "new" / "folder" / "batch.png") == 1
    assert not (tmp_path / "new").exists()
    assert _demo(Path("/nonexistent"), tmp_path / "other" / "batch.png") == 1
    assert not (tmp_path / "other").exists()


def test_a_failed_make_sample_data_leaves_no_folder(tmp_path, monkeypatch):
    made = {"n": 0}
    make_image = sample_data._make_image

    def failing(*args):
        made["n"] += 1
        if made["n"] > 3:
            raise OSError("disk full")
        return make_image(*args)
    monkeypatch.setattr(sample_data, "_make_image", failing)
    assert cli.main(["make-sample-data", str(tmp_path / "sample")]) == 1
    assert not (tmp_path / "sample").exists()
