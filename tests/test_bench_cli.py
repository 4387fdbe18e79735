"""`mar3d bench` runs a real benchmark script and collects what it measured."""
from __future__ import annotations

import json

import pytest

from conftest import run_mar3d


def test_bench_runs_the_generation_benchmark_and_writes_its_ratios(tmp_path):
    out = tmp_path / "bench.json"
    result = run_mar3d("bench", "--only", "generate", "--quick", "--out", out)
    assert "MAR sampler overhead" in result.stdout and "ran 1 benchmarks, 0 failed" in result.stdout
    measured = json.loads(out.read_text())["generate"]["result"]
    assert 0 <= measured["sampler_overhead_fraction"] < 1
    assert abs(sum(measured["fractions"].values()) - 1) < 1e-6  # the stages add up to the total
    assert measured["status"] in ("ok", "empty", "full")


@pytest.mark.trained  # generates with the bundled demo model
def test_bench_times_the_demo_model_with_the_settings_generate_uses(tmp_path):
    out = tmp_path / "bench.json"
    result = run_mar3d("bench", "--only", "demo", "--quick", "--out", out)
    assert "demo model, fast preset: seconds per image" in result.stdout and "ran 1 benchmarks, 0 failed" in result.stdout
    measured = json.loads(out.read_text())["demo"]["result"]
    assert measured["dtype"] == "auto" and {"cpu", "cpus", "native_bf16", "torch_threads"} <= set(measured["machine"])
    fast = measured["variants"]["fast"]
    assert fast["settings"] == {} and fast["mean_seconds"] > 0 and len(fast["images"]) == 2
    assert all(row["status"] == "ok" and 0 < row["faces"] <= 50_000 for row in fast["images"])  # the default budget
    [target] = measured["targets"]
    assert target["pass"] == (fast["mean_seconds"] <= 15)


def test_bench_rejects_unknown_benchmarks(tmp_path):
    bad = run_mar3d("bench", "--only", "nonsense", "--out", tmp_path / "b.json", check=2)
    assert "invalid choice" in bad.stderr
