"""Runs the CUDA kernels under numba's CUDA simulator (tests/cudasim) in a child process and requires it to pass.

The simulator must be selected before numba.cuda is first imported, so it cannot share this process with the
PTX tests, which need the real compiler.
"""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_cuda_kernels_under_simulator_match_oracle():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "cudasim")],
                          env=env, capture_output=True, text=True, timeout=1200, cwd=TESTS.parent)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert " passed" in report and "skipped" not in report and "no tests ran" not in report, report
