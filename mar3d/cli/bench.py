"""`mar3d bench`: run the project's speed benchmarks and collect the ratios they measure into one JSON."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mar3d.cli.common import HelpFormatter
from mar3d.cli.errors import CLIError

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"  # the source checkout (pip install -e)

# name -> (script, quick arguments, the ratios to print: (label, JSON path))
BENCHMARKS = {
    "prepare": ("bench_prepare.py", ["--limit", "4", "--baseline-limit", "2"],
                []),  # prints its "targets" list
    "extraction": ("bench_extraction.py", ["--resolution", "128"],
                   [("hierarchical vs dense, worst object: fewer queries (x)", "worst.query_ratio"),
                    ("hierarchical vs dense, worst object: faster decoding (x)", "worst.decode_time_ratio")]),
    "decoder": ("bench_vae_decoder.py", ["--queries", "65536", "--chunk", "32768"],
                [("decoder bf16 / fp32 throughput (x)", "bf16_over_fp32_throughput"),
                 ("decoder FLOP/s / matmul FLOP/s (bf16)", "bf16_fraction_of_matmul")]),
    "training": ("bench_training.py", ["--configs", "tiny", "--steps", "20"], []),
    "demo": ("bench_demo.py", ["--images", "2", "--presets", "fast"],
             [("demo model, fast preset: seconds per image", "variants.fast.mean_seconds"),
              ("demo model, high / fast time (x)", "ratios_over_fast.high")]),
    "generate": ("bench_generate.py", ["--lr-steps", "8", "--hr-steps", "8", "--diffusion-steps", "20",
                                       "--resolution", "96"],
                 [("MAR sampler overhead (fraction of sampling time)", "sampler_overhead_fraction")]),
}


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="run the speed benchmarks and print the ratios they measure",
        description=(
            "Run the benchmarks in benchmarks/ (each measures its ratios within one run, so they hold on a "
            "noisy shared machine), print the headline ratios and write every result to OUT (JSON). "
            "--quick runs each on a reduced size (minutes instead of about half an hour). The tables in "
            "docs/benchmarks.md come from these scripts."),
        formatter_class=HelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run these benchmarks only")
    p.add_argument("--quick", action="store_true", help="reduced sizes")
    p.add_argument("--out", default="benchmarks/results/bench.json", help="the combined JSON")


def _lookup(result: dict, path: str):
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def run(args) -> int:
    from mar3d.utils import atomic

    if not BENCHMARKS_DIR.is_dir():
        raise CLIError(f"{BENCHMARKS_DIR}: the benchmarks live in the source checkout; install mar3d with "
                       "`pip install -e .` from it")
    out = Path(args.out)
    combined, failed = {}, []
    for name in args.only or list(BENCHMARKS):
        script, quick, ratios = BENCHMARKS[name]
        result_file = out.parent / f"{name}.json"
        command = [sys.executable, str(BENCHMARKS_DIR / script), "--out", str(result_file), *(quick if args.quick else [])]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        finished = subprocess.run(command)
        if finished.returncode != 0 or not result_file.exists():
            print(f"failed: benchmark {name} (exit status {finished.returncode})")
            failed.append(name)
            continue
        result = json.loads(result_file.read_text())
        combined[name] = {"seconds": round(time.perf_counter() - start, 1), "result": result}
        for target in result.get("targets", []) if isinstance(result.get("targets"), list) else []:
            verdict = "PASS" if target.get("pass") else "FAIL"
            print(f"   {target['target']}: {target['measured']:.3g} (goal {target['goal']}: {verdict})")
        for label, path in ratios:
            value = _lookup(result, path)
            if value is not None:
                print(f"   {label}: {value:.3g}")
    atomic.write_json(out, combined)
    print(f"ran {len(combined)} benchmarks, {len(failed)} failed -> {out}")
    return 1 if failed else 0
