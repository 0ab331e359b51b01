"""Benchmarks: `pytest --benchmark` measures; a plain `pytest` runs each case once as a smoke
test (pytest-benchmark disabled).

Every benchmark puts its batch size in `benchmark.extra_info["batch"]`; the summary below
turns medians into samples/s and prints speed-ups against the case marked as baseline
(`extra_info["baseline"] = True`) with the same `extra_info["group"]`.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="measure throughput (samples/s) with pytest-benchmark; without it "
                          "each benchmark runs once as a smoke test")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    measuring = config.getoption("--benchmark")
    config.option.benchmark_disable = not measuring
    if measuring:
        torch.set_num_threads(os.cpu_count() or 1)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if not config.getoption("--benchmark") or session is None or not session.benchmarks:
        return
    rows, baselines = [], {}
    for bench in session.benchmarks:
        info = bench.extra_info
        median = bench.stats.median
        rows.append((info.get("group", bench.group or ""), bench.name, info.get("batch", 1),
                     median))
        if info.get("baseline"):
            baselines[info.get("group", bench.group or "")] = median
    write = terminalreporter.write_line
    write("")
    write(f"throughput ({torch.get_num_threads()} torch threads; median per call):")
    write(f"{'group':<40} {'case':<60} {'ms':>9} {'samples/s':>11} {'vs base':>8}")
    for group, name, batch, median in sorted(rows):
        base = baselines.get(group)
        ratio = f"{base / median:.2f}x" if base else ""
        write(f"{group:<40} {name:<60} {median * 1e3:9.3f} {batch / median:11.0f} {ratio:>8}")
