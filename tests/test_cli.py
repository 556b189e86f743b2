"""The command line as a user meets it: run as ``python -m dali_mixup ...`` in a subprocess (help, flag names,
errors, the demo), plus in-process checks of the parser and of which flags reach the loader."""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup.apps import cli, demo
from dali_mixup.apps.args import DeprecatedAlias, FlagDeprecationWarning
from dali_mixup.datasets import Dataset
from dali_mixup.sample_data import make_sample_data

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "-j", "1", "--img-size", "32"]


def _run(*argv, code=None):
    """``python -m dali_mixup ARGV`` (or ``python -c CODE``) as a user runs it -> the finished process."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "dali_mixup", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sample_data(tmp_path_factory.mktemp("cli-data"), train_per_class=4, val_per_class=1,
                            num_classes=3, seed=2)


# -- help and flag names -----------------------------------------------------------------------------------------
def test_top_level_help_lists_the_commands_without_markup():
    proc = _run("--help")
    assert proc.returncode == 0
    for command in ("make-sample-data", "demo", "bench", "train"):
        assert command in proc.stdout
    assert "``" not in proc.stdout and "--mixup" in proc.stdout


def test_every_flag_shows_its_default():
    subparsers = cli.build_parser().subcommands
    for name, parser in subparsers.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and not isinstance(action, (argparse._HelpAction, DeprecatedAlias)):
                assert "default" in formatter._get_help_string(action), (name, action.option_strings)
    proc = _run("train", "--help")
    text = " ".join(proc.stdout.split())
    for shown in ("--mixup ALPHA Mixup alpha", "(default: 0.8)", "(default: 64)", "(default: 0.1)",
                  "--mixup-mode MODE batch, pair or elem", "--checkpoint-hist N numbered",
                  "-j N, --workers N DALI CPU threads"):
        assert shown in text, shown
    mode = next(a for a in subparsers["train"]._actions if a.dest == "mode" and not isinstance(a, DeprecatedAlias))
    assert mode.help.endswith("[deprecated spelling: --mix-mode, --mode]")  # the help names the older spellings
    assert "--mixup-alpha ALPHA" not in text and "--threads N" not in text  # one spelling each in the help


# every older spelling -> timm's (or, with no timm spelling, the one kept)
RENAMED = {"--data": "--data-dir", "--image-size": "--img-size", "--threads": "--workers", "--mixup-alpha": "--mixup",
           "--cutmix-alpha": "--cutmix", "--label-smoothing": "--smoothing", "--mix-mode": "--mixup-mode",
           "--mode": "--mixup-mode", "--max-steps": "--train-batches-per-epoch",
           "--train-steps-per-epoch": "--train-batches-per-epoch", "--keep-checkpoints": "--checkpoint-hist"}


def test_older_spellings_still_work_and_warn_naming_timms():
    timm = cli.parse_args(["train", "--mixup", "0.3", "--cutmix", "0.5", "--smoothing", "0.05", "--mixup-mode",
                           "elem", "--mixup-prob", "0.7", "--mixup-switch-prob", "0.2", "--cutmix-minmax", "0.2",
                           "0.8", "--mixup-off-epoch", "4", "--img-size", "160", "--data-dir", "D",
                           "--checkpoint-hist", "5", "-b", "16", "--workers", "3", "--train-batches-per-epoch", "7"])
    values = {"--data": "D", "--image-size": "160", "--threads": "3", "--mixup-alpha": "0.3", "--cutmix-alpha": "0.5",
              "--label-smoothing": "0.05", "--mix-mode": "elem", "--mode": "elem", "--max-steps": "7",
              "--train-steps-per-epoch": "7", "--keep-checkpoints": "5"}
    for old, new in RENAMED.items():
        argv = ["train", "--mixup", "0.3", "--cutmix", "0.5", "--smoothing", "0.05", "--mixup-mode", "elem",
                "--mixup-prob", "0.7", "--mixup-switch-prob", "0.2", "--cutmix-minmax", "0.2", "0.8",
                "--mixup-off-epoch", "4", "--img-size", "160", "--data-dir", "D", "--checkpoint-hist", "5",
                "-b", "16", "--workers", "3", "--train-batches-per-epoch", "7", old, values[old]]
        with pytest.warns(FlagDeprecationWarning) as caught:
            args = cli.parse_args(argv)
        assert [str(w.message) for w in caught] == [f"{old} is deprecated and will be removed; use {new}"]
        given = args.__dict__.pop("given")
        assert vars(args) == {k: v for k, v in vars(timm).items() if k != "given"}, old
        assert old in given.values()  # a resumed run's messages name the flag as typed
    assert (timm.mixup_alpha, timm.cutmix_alpha, timm.label_smoothing, timm.mode) == (0.3, 0.5, 0.05, "elem")
    with pytest.warns(FlagDeprecationWarning, match="use --mixup-mode"):
        assert cli.parse_args(["demo", "--mode", "pair"]).mode == "pair"


def test_the_command_line_shows_a_deprecated_spelling_as_one_warning_line():
    proc = _run("train", "--mixup-alpha", "0.3", "--mixup-alph", "1")
    assert proc.returncode == 2
    assert "dali-mixup: warning: --mixup-alpha is deprecated and will be removed; use --mixup\n" in proc.stderr
    assert "(did you mean --mixup?)" in proc.stderr  # close to an older spelling: the flag's own
    assert "FutureWarning" not in proc.stderr and "warnings.warn" not in proc.stderr


def test_demo_bench_and_train_share_names_and_defaults():
    subparsers = cli.build_parser().subcommands
    flags = {name: {a.dest: (tuple(a.option_strings), a.default) for a in p._actions
                    if a.option_strings and not isinstance(a, DeprecatedAlias)}
             for name, p in subparsers.items() if name != "make-sample-data"}
    shared = set(flags["demo"]) & set(flags["train"])
    assert {"mixup_alpha", "cutmix_alpha", "mode", "label_smoothing", "threads", "batch_size", "skip_corrupt",
            "auto_augment", "re_prob"} <= shared
    for dest in shared - {"mode"}:  # demo's mode: elem, so that its picture shows mixing (docs/cli.md)
        assert flags["demo"][dest] == flags["train"][dest], dest
    assert flags["demo"]["mode"] == (flags["train"]["mode"][0], "elem")
    for dest in set(flags["bench"]) & shared - {"threads"}:  # bench's -j/--workers: its DataLoader's, as timm's
        assert flags["bench"][dest] == flags["train"][dest], dest
    assert {"data", "device", "batch_size", "image_size", "threads", "seed", "skip_corrupt"} <= set(flags["bench"])


def test_no_prefix_matching_and_a_mistyped_flag_shows_the_commands_usage():
    proc = _run("train", "--epoch", "3")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: dali-mixup train")
    assert "unrecognized arguments: --epoch 3" in proc.stderr and "did you mean --epochs?" in proc.stderr
    proc = _run("demo", "--batch-size", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: dali-mixup demo")
    assert "expected an integer >= 1, got '0'" in proc.stderr


def test_an_unknown_model_is_neither_torchvision_nor_timm(tmp_path):
    proc = _run("train", "--model", "resnet19", "--output", str(tmp_path / "o"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--model resnet19: neither a torchvision nor a timm model (did you mean resnet18" in proc.stderr


# -- errors ------------------------------------------------------------------------------------------------------
def test_demo_names_a_missing_data_folder():
    proc = _run("demo", "--data-dir", "/nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "dali-mixup demo: error: --data-dir /nope: no such folder"


def test_without_dali_the_loader_and_demo_name_the_extra(data):
    block = "import sys; sys.modules['nvidia.dali'] = None; "
    proc = _run(code=block + "from dali_mixup.apps.cli import main; sys.exit(main(['demo', '--data', %r]))"
                % str(data))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "needs NVIDIA DALI: pip install 'dali-mixup[cuda13]'" in proc.stderr
    proc = _run(code=block + "import dali_mixup as dm; dm.create_dali_loader(%r, batch_size=2, num_classes=3)"
                % str(data / "train"))
    assert "ImportError: the DALI loader needs NVIDIA DALI: pip install 'dali-mixup[cuda13]'" in proc.stderr
    assert "ModuleNotFoundError: No module named 'nvidia.dali'" not in proc.stderr.splitlines()[-1]


@pytest.fixture(scope="module")
def corrupt_data(tmp_path_factory):
    root = make_sample_data(tmp_path_factory.mktemp("corrupt"), train_per_class=3, val_per_class=0,
                            num_classes=2, seed=3) / "train"
    victim = sorted(root.rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:600])  # truncated
    return root, victim


def test_a_corrupt_image_ends_in_one_paragraph(corrupt_data):
    root, victim = corrupt_data
    proc = _run("demo", "--data-dir", str(root), "-b", "6", "--save", "", *SMALL)
    assert proc.returncode == 1
    # DALI's JPEG decoder (nvImageCodec) also logs its own one-line "[ERROR] ..." to stderr; it cannot be
    # turned off (DALI_NVIMGCODEC_LOG_LEVEL is clamped to 1 = errors), so only our lines are counted here
    lines = [line for line in proc.stderr.strip().splitlines() if "[ERROR]" not in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("dali-mixup demo: error: DALI pipeline failed reading") and victim.name in lines[0]
    assert "corrupt" in lines[0]
    assert "--skip-corrupt" in lines[0] and "(--debug shows the traceback)" in lines[0]


def test_debug_shows_the_traceback_and_skip_corrupt_skips(corrupt_data):
    root, _ = corrupt_data
    proc = _run("demo", "--data-dir", str(root), "-b", "6", "--save", "", "--debug", *SMALL)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    proc = _run("demo", "--data-dir", str(root), "-b", "2", "--save", "", "--skip-corrupt", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 corrupt image(s)" in proc.stderr


# -- the demo ----------------------------------------------------------------------------------------------------
_LINE = re.compile(r"sample +(\d+): (mixup|cutmix|none) +(\w+) ([\d.]+)"
                   r"(?: \+ (\w+) ([\d.]+) +\(partner: sample (\d+)\))?")


def test_demo_prints_each_samples_class_and_its_partners(data, tmp_path):
    picture = tmp_path / "batch.png"
    proc = _run("demo", "--data-dir", str(data), "-b", "6", "--mixup", "0.4", "--cutmix", "1.0", "--mixup-mode",
                "elem", "--smoothing", "0.1", "--save", str(picture), *SMALL)
    assert proc.returncode == 0, proc.stderr
    rows = {int(m.group(1)): m.groups() for m in map(_LINE.search, proc.stdout.splitlines()) if m}
    assert sorted(rows) == list(range(6)), proc.stdout
    classes = {"circle", "square", "triangle"}
    for i, (_, kind, own, w_own, partner, w_partner, j) in rows.items():
        assert own in classes
        if partner is None:
            assert kind == "none" and w_own == "1.00"
            continue
        assert abs(float(w_own) + float(w_partner) - 1) <= 0.011  # the sample's own weight first, not sorted
        assert partner == rows[int(j)][2]  # the partner's class is the partner sample's own class
    from PIL import Image
    assert Image.open(picture).size == (6 * 32, 32)


def test_sample_classes_reads_own_and_partner_back_from_the_targets():
    cfg = dm.MixupConfig(7, mixup_alpha=0.5, cutmix_alpha=1.0, mode="elem", prob=0.8, label_smoothing=0.1)
    labels = torch.tensor(np.random.default_rng(0).integers(0, 7, 64))
    params = dm.sample_params(cfg, 64, 32, 32, seed=4)
    targets = dm.mix_targets(labels, cfg, params).numpy()
    off, on = cfg.off_on
    for i in range(64):
        lam = float(params.lam[i])
        own, partner = demo.sample_classes(targets[i], lam, off, on)
        if lam > 1e-3:
            assert own == labels[i]
        if lam < 1 - 1e-3:
            assert partner == labels[params.partner[i]]


def test_the_picture_labels_every_tile(tmp_path):
    pixels = np.full((5, 40, 48, 3), 128, np.uint8)
    demo.save_picture(pixels, [["circle 0.70", "+ star 0.30"]] * 5, tmp_path / "p.png", cols=3)
    from PIL import Image
    grid = np.asarray(Image.open(tmp_path / "p.png"))
    assert grid.shape == (80, 144, 3)
    for i in range(5):
        tile = grid[(i // 3) * 40:(i // 3 + 1) * 40, (i % 3) * 48:(i % 3 + 1) * 48]
        assert (tile[:26] == 0).any() and (tile[:26] > 200).any()  # caption: light text on a dark strip
        assert (tile[26:] == 128).all()  # the image below it untouched


# -- flags -> loader keywords ------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


class _Recorder(list):
    """Stands in for create_dali_loader: records each call's keywords; stops the command at the validation
    loader, or at the first loader with ``stop_first``."""

    stop_first = False

    def __call__(self, data, **kwargs):
        self.append(kwargs)
        if self.stop_first or kwargs.get("train") is False:
            raise _Stop
        # ``dataset.classes``: train numbers the validation folders by the training classes (issue 22)
        return type("FakeLoader", (), {"__len__": lambda self: 3, "dataset": Dataset("files", str(data),
                                                                                      classes=["a", "b"])})()


@pytest.fixture
def captured(monkeypatch):
    from dali_mixup import loader
    recorder = _Recorder()
    monkeypatch.setattr(loader, "create_dali_loader", recorder)
    return recorder


def _folders(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
    return str(tmp_path / "d")


def test_augmentation_flags_reach_the_loader_only_when_set(captured, tmp_path):
    base = ["train", "--data-dir", _folders(tmp_path), "--output", str(tmp_path / "o"), "--model", "resnet18",
            "--device", "cpu", "--debug"]
    with pytest.raises(_Stop):
        cli.main(base + ["--aa", "rand-m9-mstd0.5", "--reprob", "0.25", "--train-interpolation", "bicubic",
                         "--color-jitter", "0.3", "--scale", "0.2", "1", "--ratio", "0.5", "2", "--hflip", "0.3",
                         "--crop-pct", "0.9", "--skip-corrupt"])
    train_kw, val_kw = captured
    assert {k: train_kw[k] for k in ("auto_augment", "re_prob", "interpolation", "color_jitter", "scale", "ratio",
                                     "hflip", "skip_corrupt")} == {
        "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.25, "interpolation": "bicubic", "color_jitter": 0.3,
        "scale": (0.2, 1.0), "ratio": (0.5, 2.0), "hflip": 0.3, "skip_corrupt": True}
    assert val_kw["crop_pct"] == 0.9 and val_kw["skip_corrupt"] and "auto_augment" not in val_kw
    assert "crop_pct" not in train_kw
    captured.clear()
    with pytest.raises(_Stop):
        cli.main(base)
    unset = {"auto_augment", "re_prob", "interpolation", "color_jitter", "scale", "ratio", "hflip", "crop_pct"}
    assert not unset & (set(captured[0]) | set(captured[1]))
    assert captured[0]["mixup"] == dm.MixupConfig(2, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)


def test_demo_passes_the_same_flags(captured, tmp_path):
    captured.stop_first = True
    with pytest.raises(_Stop):
        cli.main(["demo", "--data-dir", _folders(tmp_path), "--aa", "rand-m9", "--reprob", "0.5", "--skip-corrupt",
                  "--device", "cpu", "--debug"])
    (kw,) = captured
    assert kw["auto_augment"] == "rand-m9" and kw["re_prob"] == 0.5 and kw["skip_corrupt"]
    assert kw["mixup"].mode == "elem" and kw["num_threads"] == 4 and kw["batch_size"] == 64  # demo: elem


def test_bench_passes_skip_corrupt(captured, tmp_path):
    captured.stop_first = True
    with pytest.raises(_Stop):
        cli.main(["bench", "--data-dir", _folders(tmp_path) + "/train", "--configs", "fused", "--skip-corrupt",
                  "--device", "cpu", "--debug"])
    assert captured[0]["skip_corrupt"] is True and captured[0]["num_threads"] == 4
