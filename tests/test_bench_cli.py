"""`mar3d bench` runs a real benchmark script and collects what it measured."""
from __future__ import annotations

import json

from conftest import run_mar3d


def test_bench_runs_the_generation_benchmark_and_writes_its_ratios(tmp_path):
    out = tmp_path / "bench.json"
    result = run_mar3d("bench", "--only", "generate", "--quick", "--out", out)
    assert "MAR sampler overhead" in result.stdout and "ran 1 benchmarks, 0 failed" in result.stdout
    measured = json.loads(out.read_text())["generate"]["result"]
    assert 0 <= measured["sampler_overhead_fraction"] < 1
    assert abs(sum(measured["fractions"].values()) - 1) < 1e-6  # the stages add up to the total
    assert measured["status"] in ("ok", "empty", "full")


def test_bench_rejects_unknown_benchmarks(tmp_path):
    bad = run_mar3d("bench", "--only", "nonsense", "--out", tmp_path / "b.json", check=2)
    assert "invalid choice" in bad.stderr
