#!/usr/bin/env python
"""Training throughput of each stage's tiny and small config: steps/s, samples/s, data-wait fraction.

Each run is the real `mar3d train` command (the config's precision, batch and workers; bf16 in the bundled
configs) for a few steps on the four watertight YCB scans of the shared test data (prepared here unless
--data is given), with validation off and one checkpoint at the end. The numbers are the ones the run
prints when it ends (``mar3d.training.callbacks.Throughput``): the first step, which pays for start-up,
is left out. The MAR stages train on latents cached (`mar3d cache-latents`) with the VAE that the VAE run
of the same size produced, as docs/training.md recommends.

The machine's load average is recorded before and after: on a shared machine the numbers are a lower
bound.

    python benchmarks/bench_training.py [--data DIR] [--configs tiny small] [--steps 40 8]
                                        [--stages vae mar-lr mar-hr] [--workers N] [--out JSON]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import TEST_SETTINGS, WATERTIGHT_YCB, ycb  # noqa: E402  (the shared test data and settings)

from mar3d.config import CONFIG_DIR  # noqa: E402

LINE = re.compile(r"throughput: ([\d.]+) steps/s, ([\d.]+) samples/s, waiting for data ([\d.]+)% of step time")


def mar3d(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "mar3d", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"mar3d {' '.join(map(str, args))} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def short_config(stage_dir: str, name: str, steps: int, workers: int | None, out: Path) -> Path:
    """The bundled config ``name`` for ``steps`` steps, no validation, one checkpoint (at the end)."""
    config = yaml.safe_load((CONFIG_DIR / stage_dir / f"{name}.yaml").read_text())
    config["train"].update(max_steps=steps, val_every=steps + 1, checkpoint_every=steps + 1, log_every=1)
    if workers is not None:
        config["train"]["num_workers"] = workers
    out.write_text(yaml.safe_dump(config))
    return out


def train(stage: str, config: Path, data: Path, run: Path, *extra) -> dict:
    output = mar3d("train", stage, "--config", config, "--data", data, "--out", run, "--no-progress",
                   "--only", *WATERTIGHT_YCB, *extra)
    match = LINE.search(output)
    if match is None:
        raise RuntimeError(f"no throughput line in the output of {stage}:\n{output[-2000:]}")
    steps_per_s, samples_per_s, wait = map(float, match.groups())
    return {"steps_per_s": steps_per_s, "samples_per_s": samples_per_s, "data_wait_fraction": wait / 100}


def prepare(out: Path) -> Path:
    from mar3d.data.batch import run_batch
    from mar3d.data.prepare import PrepareSettings

    result = run_batch([str(ycb(n)) for n in WATERTIGHT_YCB], out, PrepareSettings(**TEST_SETTINGS))
    if result.failed:
        raise RuntimeError(f"preparing the scans failed: {result.records}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="prepared directory holding the four YCB scans")
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", nargs="+", type=int, default=[40, 8], help="steps per config, in order")
    parser.add_argument("--stages", nargs="+", default=["vae", "mar-lr", "mar-hr"])
    parser.add_argument("--workers", type=int, help="override train.num_workers")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training.json")
    args = parser.parse_args()
    if len(args.steps) != len(args.configs):
        parser.error("give one --steps value per --configs name")

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_training-") as tmp:
        tmp = Path(tmp)
        data = args.data or prepare(tmp / "prepared")
        for name, steps in zip(args.configs, args.steps):
            vae_run = tmp / f"vae-{name}"
            vae_config = short_config("vae", name, steps, args.workers, tmp / f"vae-{name}.yaml")
            row = train("vae", vae_config, data, vae_run)  # the MAR stages need its VAE too
            if "vae" in args.stages:
                rows.append({"stage": "vae", "config": name, "steps": steps, **row})
                print(rows[-1], flush=True)
            mar_stages = [s for s in args.stages if s != "vae"]
            if mar_stages:
                cache = tmp / f"latents-{name}"
                mar3d("cache-latents", data, "--vae", vae_run, "--out", cache, "--only", *WATERTIGHT_YCB,
                      "--no-progress")
                mar_config = short_config("mar", name, steps, args.workers, tmp / f"mar-{name}.yaml")
            for stage in mar_stages:
                row = train(stage, mar_config, data, tmp / f"{stage}-{name}", "--vae", vae_run, "--latents", cache)
                rows.append({"stage": stage, "config": name, "steps": steps, **row})
                print(rows[-1], flush=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
              "workers_override": args.workers, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| stage | config | steps/s | samples/s | data wait |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['config']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | "
              f"{r['data_wait_fraction']:.1%} |")
    print(f"\nload average (1 min) before / after: {result['load_average_before_after']}; -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
