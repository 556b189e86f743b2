"""The snippets of docs/dali-pipeline.md ("Use it in your own DALI pipeline") run as written (CPU-only DALI here,
the GPU with CUDA), on the sample dataset they ask for (``$DALI_MIXUP_DATA``)."""

import re
from pathlib import Path

import pytest
import torch

from dali_mixup.sample_data import make_sample_data

DOC = Path(__file__).resolve().parents[1] / "docs" / "dali-pipeline.md"


def _snippets():
    blocks = re.findall(r"```python\n(# dali pipeline: (\w+)\n.*?)```", DOC.read_text(), flags=re.S)
    return {name: code for code, name in blocks}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    """A small copy of the sample dataset (8 classes, 4 images each: 4 batches of the snippets' 8)."""
    return make_sample_data(tmp_path_factory.mktemp("readme") / "data", train_per_class=4, val_per_class=0)


@pytest.fixture
def scope_data(sample_dir, monkeypatch):
    monkeypatch.setenv("DALI_MIXUP_DATA", str(sample_dir))  # where the snippets' ensure_sample_data() looks
    return {}


def _run(name, scope_data):
    scope = dict(scope_data)
    exec(compile(_snippets()[name], f"docs/dali-pipeline.md snippet {name}", "exec"), scope)
    return scope


def test_readme_has_both_snippets():
    assert set(_snippets()) == {"classification", "generic"}


def test_classification_iterator_snippet_trains(scope_data):
    scope = _run("classification", scope_data)
    batch, classes, size = scope["BATCH"], scope["NUM_CLASSES"], scope["IMAGE_SIZE"]
    assert scope["i"] == scope["STEPS"] - 1
    assert torch.isfinite(scope["loss"]) and scope["loss"].requires_grad
    targets = scope["targets"]
    assert targets.shape == (batch, classes)
    assert torch.allclose(targets.sum(1), torch.ones(batch, device=targets.device))
    assert scope["images"].shape == (batch, 3, size, size) and scope["images"].dtype == torch.float32


def test_generic_iterator_snippet_resumes_where_it_stopped(scope_data):
    scope = _run("generic", scope_data)
    resumed = next(scope["loader"])[0]
    fresh = scope["make_loader"]()
    for _ in range(scope["STEPS"]):
        next(fresh)
    uninterrupted = next(fresh)[0]
    assert resumed["images"].shape[1:] == (scope["IMAGE_SIZE"], scope["IMAGE_SIZE"], 3)
    for key in ("images", "targets"):
        assert torch.equal(resumed[key], uninterrupted[key])
