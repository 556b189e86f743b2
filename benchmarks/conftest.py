"""Benchmark helpers: configurations timed in alternating rounds, and the same-run ratio table.

Method (as ``dali-mixup bench``): every test of a group times all of the group's configurations in the same
rounds: warm-up rounds discarded, then each round runs every configuration once, in an order that rotates
from round to round, so slow drift in a shared machine's load hits them all alike. Reported per configuration:
median and IQR of its times, and the median (and range) of its time ÷ the baseline's time in the same round.

Run: python -m pytest benchmarks --benchmark-enable [--ratios-md FILE]
"""

import os
import platform
import statistics
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--ratios-md", default=None, help="write the per-group ratio table (Markdown) to this file")
    parser.addoption("--conditions", default="", help="free text written with the table (e.g. machine load)")


class Rounds:
    """Times ``configs`` ({name: callable}) in alternating rounds; ``baseline`` names the reference."""

    def __init__(self, group, configs, baseline, sync=lambda: None):
        if baseline not in configs:
            raise ValueError(f"baseline {baseline!r} is not one of {sorted(configs)}")
        self.group, self.configs, self.baseline, self.sync = group, dict(configs), baseline, sync
        self.times = {name: [] for name in self.configs}
        self._round = 0

    def __call__(self):
        """One round: every configuration once, the order rotated by the round number."""
        names = list(self.configs)
        shift = self._round % len(names)
        for name in names[shift:] + names[:shift]:
            self.sync()
            t = time.perf_counter()
            self.configs[name]()
            self.sync()
            self.times[name].append(time.perf_counter() - t)
        self._round += 1

    def run(self, benchmark, rounds, warmup):
        """Warm-up rounds (discarded), then ``rounds`` timed rounds through pytest-benchmark (which times whole
        rounds); the per-configuration times go to ``benchmark.extra_info``."""
        for _ in range(warmup):
            self()
        self.times = {name: [] for name in self.configs}
        benchmark.group = self.group
        benchmark.pedantic(self, rounds=rounds, iterations=1)
        benchmark.extra_info.update(configs=self.times, baseline=self.baseline)


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _table(group, times, baseline):
    base = times[baseline]
    lines = [f"### {group}", "", "| configuration | median (ms) | IQR (ms) | rounds | time ÷ baseline, same round "
             "(median, min – max) |", "|---|---:|---:|---:|---:|"]
    for name in sorted(times, key=lambda n: statistics.median(times[n])):
        t = times[name]
        lo, hi = _quartiles(t)
        ratios = [a / b for a, b in zip(t, base)]
        label = f"{name} (baseline)" if name == baseline else name
        lines.append(f"| {label} | {statistics.median(t) * 1e3:.2f} | {(hi - lo) * 1e3:.2f} | {len(t)} | "
                     f"{statistics.median(ratios):.3f} ({min(ratios):.3f} – {max(ratios):.3f}) |")
    return lines + [""]


def _machine():
    import numpy
    import torch
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.processor() or platform.machine()}, {cpus} CPUs, GPU {gpu}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}{load}")


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    conditions = config.getoption("--conditions")
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on: {_machine()}" + (f"; {conditions}" if conditions else ""),
             ""]
    for bench in sorted(session.benchmarks, key=lambda b: b.group or ""):
        info = bench.extra_info
        if "configs" in info and all(info["configs"].values()):
            lines += _table(bench.group, info["configs"], info["baseline"])
    text = "\n".join(lines)
    terminalreporter.write_sep("=", "ratios (time ÷ baseline time in the same round)")
    terminalreporter.write_line(text)
    path = config.getoption("--ratios-md")
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")


@pytest.fixture(scope="session")
def gpu_available():
    import torch
    return torch.cuda.is_available()


@pytest.fixture
def alternating():
    """The ``Rounds`` class: ``alternating(group, configs, baseline).run(benchmark, rounds, warmup)``."""
    return Rounds
