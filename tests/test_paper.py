"""The paper experiment (benchmarks/paper/mixup_vs_erm.py) runs end to end in a tiny setting."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper" / "mixup_vs_erm.py"


def _module():
    spec = importlib.util.spec_from_file_location("mixup_vs_erm", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_label_corruption_is_seeded_and_of_the_asked_size():
    mod = _module()
    entries = [(f"f{i}.png", i % 10) for i in range(1000)]
    a = mod.corrupt(entries, 0.4, 10)
    assert a == mod.corrupt(entries, 0.4, 10)
    changed = sum(x[1] != y[1] for x, y in zip(entries, a))
    # 400 labels are redrawn uniformly; about a tenth of them land on the true label again
    assert 300 < changed <= 400
    assert [p for p, _ in a] == [p for p, _ in entries]
    assert mod.corrupt(entries, 0.0, 10) == entries


def test_tiny_run_in_two_parts_writes_history_table_and_plot(tmp_path):
    mod = _module()
    common = ["--seeds", "1", "--epochs-digits", "3", "--eval-every", "2", "--max-steps", "50",
              "--work", str(tmp_path / "work")]
    parts = [tmp_path / f"part{n}" for n in (0, 8)]
    for noise, part in zip(("0.0", "0.8"), parts):
        mod.main(["--noise", noise, "--out", str(part)] + common)
    out = tmp_path / "paper"
    report = mod.main(["--combine", *(str(p.with_suffix(".json")) for p in parts), "--out", str(out)])
    assert report["datasets"] == ["digits"] and report["noise"] == [0.0, 0.8] and report["parts"] == 2
    assert len(report["results"]) == 2 * len(mod.METHODS)
    for r in report["results"]:
        assert 0 <= r["test_final"] <= 100 and 0 <= r["train_on_given_labels"] <= 100
        # 22 steps per epoch: epochs 1 and 2 whole, the third cut short at step 50; given-label accuracy at
        # epoch 2 (every 2) and at the last epoch
        assert [h["epoch"] for h in r["history"]] == [1, 2, 3]
        assert [h["train_on_given_labels"] is not None for h in r["history"]] == [False, True, True]
        assert r["test_final"] == r["history"][-1]["test"] and r["test_best"] == max(h["test"] for h in r["history"])
    curves = mod.curves(report)
    assert set(curves) == {("digits", n, m) for n in (0.0, 0.8) for m in mod.METHODS}
    test, given = curves[("digits", 0.8, "ERM")]
    assert [e for e, _ in test] == [1, 2, 3] and [e for e, _ in given] == [2, 3]
    assert json.loads(out.with_suffix(".json").read_text())["seeds"] == 1
    table = out.with_suffix(".md").read_text()
    assert "| digits | 80% | mixup α=8 |" in table and "| digits | 0% | ERM |" in table
    assert out.with_suffix(".png").stat().st_size > 1000
    files = sorted((tmp_path / "work" / "digits").glob("*.png"))
    assert len(files) == 1797
    from PIL import Image
    assert np.asarray(Image.open(files[0])).shape == (32, 32)


def test_combine_refuses_parts_of_other_settings(tmp_path):
    mod = _module()
    a = {"epochs": {"digits": 60}, "seeds": 3, "eval_every": 5, "threads": 1, "results": [], "seconds": 1.0,
         "noise": [0.0], "datasets": ["digits"]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(dict(a, seeds=5)))
    with pytest.raises(ValueError, match="b.json: seeds=5"):
        mod.combine([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
