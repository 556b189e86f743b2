"""Packaging: importing needs no GPU stack, and the wheel ships the kernels inside the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_pulls_in_no_gpu_module_and_not_the_oracle():
    code = ("import sys, dali_mixup, dali_mixup.dali, dali_mixup.pipeline; "
            "bad = [m for m in ('numba.cuda', 'cupy', 'nvidia.dali', 'dali_mixup.reference') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_wheel_contains_the_kernels(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dali_mixup-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("pixel_math", "cpu", "cuda", "print_guard", "__init__"):
        assert f"dali_mixup/kernels/{module}.py" in names
    assert "dali_mixup/mixing.py" in names


def test_no_tracked_symlink():
    """kernels/ ships through a package-dir mapping: a link breaks on Windows and with core.symlinks=false."""
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    links = [line.split("\t", 1)[1] for line in listing.stdout.splitlines() if line.startswith("120000")]
    assert links == []


def test_kernels_import_from_the_installed_mapping(tmp_path):
    """From any folder, dali_mixup.kernels is the repository's kernels/ (no `kernels` top-level name taken)."""
    code = ("import dali_mixup.kernels as k, importlib.util as u; "
            "print(k.__file__); print(u.find_spec('kernels') is None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert Path(out[0]).read_bytes() == (ROOT / "kernels" / "__init__.py").read_bytes() and out[1] == "True"


def test_wheel_ships_the_applications_and_the_console_script(tmp_path):
    """dali_mixup/apps (the command line, trainer, benchmark, demo) is in the wheel; ``dali-mixup`` runs its cli."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dali_mixup-*.whl")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    for module in ("apps/__init__", "apps/cli", "apps/args", "apps/bench", "apps/demo", "apps/timm_flags",
                   "apps/train/__init__", "apps/train/fit", "apps/train/epoch", "__main__"):
        assert f"dali_mixup/{module}.py" in names, module
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "dali-mixup = dali_mixup.apps.cli:main" in archive.read(entry_points).decode()
