"""Packaging: importing needs no GPU stack, and the wheel ships the kernels inside the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_pulls_in_no_gpu_module():
    code = ("import sys, dali_mixup; bad = [m for m in ('numba.cuda', 'cupy', 'nvidia.dali') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_wheel_contains_the_kernels(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dali_mixup-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("pixel_math", "cpu", "cuda", "__init__"):
        assert f"dali_mixup/kernels/{module}.py" in names
    assert "dali_mixup/mixing.py" in names
