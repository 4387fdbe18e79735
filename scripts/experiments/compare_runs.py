"""Paired comparison of score_seeds.sh outputs over the same seeds (docs/results.md's paired tables).

usage (repo root): .venv/bin/python scripts/experiments/compare_runs.py BASE VARIANT [VARIANT ...]
Prints each run's mean ± std over seeds (CD, F@0.1, F@0.05, F@0.02, NC), each VARIANT − BASE paired per seed
(mean ± standard error, and F@0.1 per seed) over the seeds both have, and F@0.1 per object (mean over seeds).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = ("cd", "f_score@0.1", "f_score@0.05", "f_score@0.02", "nc")


def seeds_of(run: Path) -> dict[str, dict]:
    """seed name -> the metrics.json of that seed, for every finished seed of a run."""
    return {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(run.glob("seed*/metrics/metrics.json"))}


def summary(doc: dict) -> np.ndarray:
    return np.array([doc["summary"]["mean"][m] for m in METRICS])


def per_object(doc: dict) -> dict[str, float]:
    return {o["id"]: o["metrics"]["f_score@0.1"] for o in doc["objects"] if o["status"] == "ok"}


def main(runs: list[Path]) -> None:
    docs = [seeds_of(r) for r in runs]
    print("run".ljust(40), *(m.rjust(15) for m in METRICS))
    for run, seeds in zip(runs, docs):
        values = np.array([summary(d) for d in seeds.values()])
        print(f"{str(run)[:34]} ({len(seeds)})".ljust(40),
              *(f"{m:.3f} ± {s:.3f}".rjust(15) for m, s in zip(values.mean(0), values.std(0))))
    base = docs[0]
    for run, seeds in zip(runs[1:], docs[1:]):
        shared = sorted(set(base) & set(seeds))
        diff = np.array([summary(seeds[s]) - summary(base[s]) for s in shared])
        error = diff.std(0, ddof=1) / np.sqrt(len(shared)) if len(shared) > 1 else np.zeros(len(METRICS))
        print(f"{str(run)[:28]} − base ({len(shared)})".ljust(40),
              *(f"{m:+.3f} ± {e:.3f}".rjust(15) for m, e in zip(diff.mean(0), error)),
              " F@0.1 per seed:", " / ".join(f"{d:+.3f}" for d in diff[:, 1]))
    objects = sorted(per_object(next(iter(base.values()))))
    print("\nF@0.1 per object (mean over seeds):", *(str(r)[-14:].rjust(14) for r in runs))
    for item in objects:
        print(item[:32].ljust(34), *(f"{np.mean([per_object(d).get(item, np.nan) for d in s.values()]):.2f}".rjust(14)
                                     for s in docs))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main([Path(a) for a in sys.argv[1:]])
