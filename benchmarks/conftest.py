"""Benchmark helpers: after the run, print (and optionally write) each group's medians as ratios against the
group's baseline, all measured in the same run.

Run: python -m pytest benchmarks --benchmark-enable [--ratios-md FILE]
"""

import platform
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--ratios-md", default=None, help="write the per-group ratio table (Markdown) to this file")


BASELINE_PREFIX = "baseline"


def _machine():
    import numpy
    import torch
    try:
        import os
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        import os
        cpus = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{platform.processor() or platform.machine()}, {cpus} CPUs, GPU {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {numpy.__version__}")


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        if bench.stats is None or not getattr(bench.stats, "rounds", 0):
            continue
        groups.setdefault(bench.group, []).append(bench)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on: {_machine()}", ""]
    for group, benches in sorted(groups.items()):
        base = next((b for b in benches if b.name.split("[")[0].split("test_")[-1].startswith(BASELINE_PREFIX)), None)
        lines += [f"### {group}", "", "| configuration | median (ms) | IQR (ms) | rounds | time / baseline |",
                  "|---|---:|---:|---:|---:|"]
        for b in sorted(benches, key=lambda b: b.stats.median):
            ratio = f"{b.stats.median / base.stats.median:.3f}" if base else "n/a"
            lines.append(f"| {b.name} | {b.stats.median * 1e3:.3f} | {b.stats.iqr * 1e3:.3f} | {b.stats.rounds} | {ratio} |")
        lines.append("")
    text = "\n".join(lines)
    terminalreporter.write_sep("=", "ratios (median time / baseline median, same run)")
    terminalreporter.write_line(text)
    path = config.getoption("--ratios-md")
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")


@pytest.fixture(scope="session")
def gpu_available():
    import torch
    return torch.cuda.is_available()
