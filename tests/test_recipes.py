"""The README's recipes (timm and torchvision training loops on the loader) run for a few steps on CPU."""

import re
from pathlib import Path

import pytest
import torch

from dali_mixup.sample_data import make_sample_data

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipes():
    blocks = re.findall(r"```python\n(# recipe: (\w+)\n.*?)```", README.read_text(), flags=re.S)
    return {name: code for code, name in blocks}


def test_readme_has_both_recipes():
    assert set(_recipes()) == {"timm", "torchvision"}


@pytest.mark.parametrize("name", ["timm", "torchvision"])
def test_recipe_trains_a_few_steps(name, tmp_path):
    data = make_sample_data(tmp_path / "data", train_per_class=4, val_per_class=0, num_classes=3) / "train"
    scope = {"DATA": str(data), "NUM_CLASSES": 3, "BATCH": 4, "IMAGE_SIZE": 32, "STEPS": 3}
    exec(compile(_recipes()[name], f"README recipe {name}", "exec"), scope)
    loss = scope["loss"]
    assert torch.isfinite(loss) and loss.requires_grad
    last = scope.get("batch_idx", scope.get("i"))
    assert last == 2  # three steps ran
