"""The README's "Use it in your own DALI pipeline" snippets run as written (CPU-only DALI here, the GPU with CUDA)."""

import re
from pathlib import Path

import pytest
import torch

from dali_mixup.sample_data import make_sample_data

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets():
    blocks = re.findall(r"```python\n(# dali pipeline: (\w+)\n.*?)```", README.read_text(), flags=re.S)
    return {name: code for code, name in blocks}


@pytest.fixture(scope="module")
def scope_data(tmp_path_factory):
    root = make_sample_data(tmp_path_factory.mktemp("readme") / "data", train_per_class=4, val_per_class=0,
                            num_classes=3)
    return {"DATA": str(root / "train"), "NUM_CLASSES": 3, "BATCH": 4, "IMAGE_SIZE": 32, "STEPS": 2}


def _run(name, scope_data):
    scope = dict(scope_data)
    exec(compile(_snippets()[name], f"README snippet {name}", "exec"), scope)
    return scope


def test_readme_has_both_snippets():
    assert set(_snippets()) == {"classification", "generic"}


def test_classification_iterator_snippet_trains(scope_data):
    scope = _run("classification", scope_data)
    assert scope["i"] == scope_data["STEPS"] - 1
    assert torch.isfinite(scope["loss"]) and scope["loss"].requires_grad
    targets = scope["targets"]
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(1), torch.ones(4, device=targets.device))
    assert scope["images"].shape == (4, 3, 32, 32) and scope["images"].dtype == torch.float32


def test_generic_iterator_snippet_resumes_where_it_stopped(scope_data):
    scope = _run("generic", scope_data)
    resumed = next(scope["loader"])[0]
    fresh = scope["make_loader"]()
    for _ in range(scope_data["STEPS"]):
        next(fresh)
    uninterrupted = next(fresh)[0]
    assert resumed["images"].shape[1:] == (32, 32, 3)
    for key in ("images", "targets"):
        assert torch.equal(resumed[key], uninterrupted[key])
