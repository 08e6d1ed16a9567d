"""The benchmarks' timing method (`bench/bench_core.py`): what it samples and reports."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

import bench_core  # noqa: E402


def test_measure_runs_every_closure_each_round_and_reports_failures():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        sum(range(20_000))

    def broken():
        raise ValueError("no model")

    samples = bench_core.measure({"fast": fast, "slow": slow, "broken": broken}, 0, 0.001)
    assert samples["broken"] == "ValueError: no model"
    assert len(samples["fast"]) == len(samples["slow"]) == bench_core.MIN_ROUNDS
    assert calls["fast"] > calls["slow"] > bench_core.MIN_ROUNDS  # batches fill 1 ms each
    assert min(samples["slow"]) > max(samples["fast"])  # seconds per call, not per batch
    assert not gc.get_freeze_count()  # what it froze is handed back to the collector


def test_a_batch_pays_for_freeing_the_reference_cycles_it_left():
    freed = []

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

        def __del__(self) -> None:
            freed.append(self.__class__)

    gc.collect()
    bench_core.time_batch(Node, 5)  # far fewer objects than the collector's threshold
    assert len(freed) == 5


def test_added_time_pairs_rounds_and_ratio_reads_the_cells():
    trace, plain = [3.0, 5.0, 9.0], [1.0, 2.0, 3.0]
    assert bench_core.added_us(trace, plain) == f"{3.0 * 1e6:.1f}"  # median of 2, 3, 6
    assert bench_core.added_us("unavailable", plain) == "unavailable"
    assert bench_core.ratio("10.0", "40.0") == "0.25"
    assert bench_core.ratio("unavailable", "40.0") == "-"


@pytest.mark.parametrize(
    ("script", "case"), [("bench_core.py", "patch"), ("bench_features.py", "source_op")]
)
def test_a_quick_run_prints_a_figure_for_nnsight_lab(script, case):
    path = os.path.join(os.path.dirname(bench_core.__file__), script)
    run = subprocess.run(
        [sys.executable, path, "--quick", "--only", case],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = next(line for line in run.stdout.splitlines() if line.startswith(case))
    lab_added = row.split()[2]  # a figure; where the trace failed, its error instead
    assert math.isfinite(float(lab_added)), row


def test_a_quick_remote_run_prints_its_figures():
    path = os.path.join(os.path.dirname(bench_core.__file__), "bench_remote.py")
    run = subprocess.run(
        [sys.executable, path, "--quick"], capture_output=True, text=True, timeout=400
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {line.split()[0]: line for line in run.stdout.splitlines() if line.strip()}
    added = rows["added_ms"].split("added ")[1].split()[0]
    assert math.isfinite(float(added)), rows["added_ms"]
    assert "8 clients" in rows["rps_8"]


@pytest.mark.ray
def test_a_quick_ray_run_prints_its_figures():
    path = os.path.join(os.path.dirname(bench_core.__file__), "bench_ray.py")
    run = subprocess.run(
        [sys.executable, path, "--quick"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {line.split()[0]: line for line in run.stdout.splitlines() if line.strip()}
    added = rows["added_ms"].split("added ")[1].split()[0]
    assert math.isfinite(float(added)), rows["added_ms"]
    assert "1 replica" in rows["rps_8"] and "2 replicas" in rows["rps_8"]
