"""`dali-mixup bench` and its photo-like sample data: structure, settings and where results go, never timings."""

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dali_mixup.apps import bench
from dali_mixup.apps.cli import main
from dali_mixup.sample_data import PHOTOS, make_photo_data


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_data(tmp_path_factory.mktemp("photos"), per_class=3, seed=1)


def test_photo_data_is_an_imagefolder_of_imagenet_sized_jpegs(photos):
    files = sorted((photos / "train").glob("*/*.jpg"))
    assert sorted(p.name for p in (photos / "train").iterdir()) == sorted(PHOTOS)
    assert len(files) == 3 * len(PHOTOS)
    for path in files:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 400 <= max(img.size) <= 500 and max(img.size) / min(img.size) <= 1.51
            pixels = np.asarray(img, np.float32)
        assert pixels.std() > 10  # a photograph, not a flat fill


def test_photo_data_is_deterministic_per_seed(photos, tmp_path):
    again = make_photo_data(tmp_path / "again", per_class=3, seed=1)
    for path in (photos / "train").glob("*/*.jpg"):
        assert path.read_bytes() == (again / path.relative_to(photos)).read_bytes()


def test_photo_data_refuses_a_bad_count(tmp_path):
    with pytest.raises(ValueError, match="per_class"):
        make_photo_data(tmp_path, per_class=0)


@pytest.fixture(scope="module")
def bench_run(photos, tmp_path_factory):
    """One small bench run without --json, in a fresh current folder -> (that folder, what it printed)."""
    cwd = tmp_path_factory.mktemp("bench-cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        out = io.StringIO()  # a module fixture: no capsys
        with contextlib.redirect_stdout(out):
            code = main(["bench", "--data-dir", str(photos), "--device", "cpu", "--batch-size", "4", "--threads", "1",
                         "--img-size", "32", "--repeats", "2", "--warmup", "1", "--batches", "2", "--workers", "0",
                         "--dtype", "float16", "--configs", "fused", "fused-graph", "dali-nomix", "torch+timm",
                         "--img-sizes", "16", "24", "--conditions", "test"])
    assert code == 0
    return cwd, out.getvalue()


def test_bench_writes_its_results_by_default_and_says_where(bench_run):
    cwd, printed = bench_run
    (json_file,) = (cwd / "bench-results").glob("*.json")
    assert re.fullmatch(r"bench-cpu-float16-\d{8}-\d{6}\.json", json_file.name), json_file.name
    assert sorted(p.name for p in (cwd / "bench-results").iterdir()) == sorted(
        json_file.with_suffix(s).name for s in (".json", ".md", ".png"))
    wrote = printed.strip().splitlines()[-1]
    assert wrote == "wrote " + ", ".join(str(Path("bench-results") / json_file.with_suffix(s).name)
                                         for s in (".json", ".md", ".png"))


def test_bench_reports_every_configuration_with_its_time_split(bench_run):
    cwd, _ = bench_run
    (out,) = (cwd / "bench-results").glob("*.json")
    report = json.loads(out.read_text())
    assert report["dtype"] == "float16" and report["repetitions"] == 2 and report["conditions"] == "test"
    assert list(report["results"]) == ["fused", "fused-graph", "dali-nomix", "torch+timm"]
    assert report["not_run"] == ["dali-ops", "dali+timm"]
    for name, r in report["results"].items():
        assert len(r["per_repetition"]) == 2 and r["img_per_s_min"] <= r["img_per_s_median"] <= r["img_per_s_max"]
        for key in ("wait", "epilogue", "rest", "cpu"):
            assert r[f"{key}_ms_per_batch"] >= 0
        assert r["ours_over_this_paired_min"] <= r["ours_over_this_paired_max"]
    assert report["results"]["fused"]["ours_over_this"] == 1.0
    assert set(report["goals"]) == {"dali-nomix", "torch+timm"}
    assert all(g["goal"] == bench.GOALS["cpu"][name] for name, g in report["goals"].items())
    assert out.with_suffix(".md").read_text().startswith("Measured")
    assert out.with_suffix(".png").stat().st_size > 0


def test_json_chooses_where_the_results_go(bench_run, tmp_path, monkeypatch, capsys):
    cwd, _ = bench_run
    (done,) = (cwd / "bench-results").glob("*.json")
    report = json.loads(done.read_text())
    monkeypatch.setattr(bench, "run", lambda args: report)  # the same report, not measured again
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "mine" / "results.json"
    assert main(["bench", "--configs", "fused", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == report
    assert out.with_suffix(".md").read_text().startswith("Measured") and out.with_suffix(".png").stat().st_size > 0
    assert not (tmp_path / "bench-results").exists()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"wrote {out}, {out.with_suffix('.md')}, " \
                                                                 f"{out.with_suffix('.png')}"


def test_bench_times_the_producer_of_every_epoch(photos):
    # each epoch is a new DALI pipeline: its iterator, and the wait for it, must count as the producer's time
    args = argparse.Namespace(batch_size=4, image_size=32, threads=1, seed=0, dtype="float32")
    session = bench._dali_session(photos / "train", "none", args, "cpu", len(PHOTOS))
    per_epoch = 3 * len(PHOTOS) // 4
    for _ in range(2 * per_epoch + 1):  # into the third epoch's pipeline
        before = session.clock.wait
        session.step()
        assert session.clock.wait > before  # every batch came through a timed producer
    session.close()


def test_bench_refuses_an_unknown_configuration(capsys):
    assert main(["bench", "--data-dir", "/nonexistent", "--configs", "fused", "nope"]) == 1
    assert "unknown ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--warmup", "-1"], ["--batches", "0"], ["--dtype", "int8"]])
def test_bench_refuses_bad_numbers_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit):
        main(["bench"] + argv)
    assert argv[0] in capsys.readouterr().err


def test_bench_names_a_missing_data_folder(tmp_path, capsys):
    assert main(["bench", "--data-dir", str(tmp_path / "missing"), "--configs", "fused"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_bench_reports_img_per_s_by_crop_size(bench_run):
    """--img-sizes: fused and dali-nomix timed at each size and with a size per batch among them, in the same run,
    in the report and its table."""
    cwd, printed = bench_run
    (json_file,) = (cwd / "bench-results").glob("*.json")
    by_size = json.loads(json_file.read_text())["by_size"]
    assert sorted(by_size) == ["16", "24", "per-batch"]
    for size in by_size.values():
        assert size["fused"]["img_per_s_median"] > 0 and size["dali-nomix"]["repetitions"] == 2
    assert "| 16² |" in printed and "| 24² |" in printed and "| a size per batch (16 / 24) |" in printed
    assert "A size per batch, fused: " in printed and "the fixed sizes' rates give for the sizes" in printed
    assert by_size["per-batch"]["fused"]["img_per_s_expected"] > 0
