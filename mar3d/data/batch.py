"""Run ``prepare_item`` over many inputs: discovery, stable ids, sharding, resume, workers, manifest.

A bad input never stops the run: it is recorded as failed with its reason and the run goes on.
"""
from __future__ import annotations

import collections
import fcntl
import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from mar3d.data import layout
from mar3d.data.mesh_io import MeshError, is_mesh_file
from mar3d.data.prepare import PrepareSettings, is_finished, prepare_item
from mar3d.utils.pool import WORKER_DIED, run_jobs


def discover_inputs(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursively, mesh suffixes only) and globs into sorted unique files.

    Returns the files and the inputs that matched nothing (to be reported, not silently dropped).
    """
    found: set[Path] = set()
    unmatched = []
    for item in inputs:
        paths = [Path(p) for p in glob.glob(item, recursive=True)] if glob.has_magic(item) else [Path(item)]
        matched = False
        for p in paths:
            if p.is_dir():
                files = [f for f in p.rglob("*") if f.is_file() and is_mesh_file(f)]
                found.update(f.resolve() for f in files)
                matched = matched or bool(files)
            elif p.exists() or p.is_symlink():
                found.add(p.resolve())
                matched = True
        if not matched:
            unmatched.append(item)
    return sorted(found), unmatched


def assign_ids(files: list[Path]) -> list[str]:
    """The file stem, made unique with a short path hash where two inputs share a stem."""
    stems = [f.stem for f in files]
    counts = collections.Counter(stems)
    return [s if counts[s] == 1 else f"{s}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}"
            for s, f in zip(stems, files)]


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (K is 0-based, like SLURM_ARRAY_TASK_ID)."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like K/N (e.g. 0/8), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"--shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def append_manifest(out_dir: Path, record: dict) -> None:
    """Append one line under an exclusive lock, so concurrent shards never interleave lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / layout.MANIFEST, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compact_manifest(out_dir: Path) -> None:
    """Keep one line per input (its newest), rewritten atomically under the same lock."""
    path = out_dir / layout.MANIFEST
    if not path.exists():
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            records = layout.read_manifest(out_dir)
            tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ok_record(meta: dict) -> dict:
    """The manifest fields of a finished item, from its meta."""
    return {"status": "ok", "reason": "", "peak_rss_mb": meta["peak_rss_mb"], "timing": meta["seconds"]}


def _run_one(source: str, item_id: str, out_dir: str, settings: PrepareSettings) -> dict:
    """Worker entry: never raises, returns the manifest record."""
    start = time.perf_counter()
    record = {"id": item_id, "source": source}
    try:
        record.update(ok_record(prepare_item(source, item_id, out_dir, settings)))
    except MeshError as e:
        record.update(status="failed", reason=str(e))
    except MemoryError:
        record.update(status="failed", reason="ran out of memory")
    except Exception as e:  # keep the batch going past anything a hostile file triggers
        record.update(status="failed", reason=f"{type(e).__name__}: {str(e).strip()[:300]}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


@dataclass
class BatchResult:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    records: list[dict] = field(default_factory=list)


def run_batch(
    inputs: Iterable[str],
    out_dir: str | Path,
    settings: PrepareSettings,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    on_progress: Callable[[BatchResult, int], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> BatchResult:
    """Prepare every input mesh into ``out_dir``; finished items are skipped, bad ones recorded.

    ``on_progress(result, total)`` is called after each item; ``on_record`` with each new record.
    """
    settings.validate()
    out_dir = Path(out_dir)
    files, unmatched = discover_inputs(inputs)
    ids = assign_ids(files)
    k, n = shard
    jobs = [(str(f), i) for idx, (f, i) in enumerate(zip(files, ids)) if idx % n == k]
    result = BatchResult()

    def finish(record: dict) -> None:
        append_manifest(out_dir, record)
        result.records.append(record)
        if record["status"] == "ok":
            result.ok += 1
        else:
            result.failed += 1
        if on_record:
            on_record(record)

    for pattern in unmatched:
        finish({"id": Path(pattern).stem or pattern, "source": pattern, "status": "failed",
                "reason": "no such file, or no mesh files in that folder / glob", "seconds": 0.0})

    todo = []
    recorded = layout.read_manifest(out_dir)
    for source, item_id in jobs:
        if is_finished(out_dir, item_id, settings):
            result.skipped += 1
            if recorded.get(item_id, {}).get("status") != "ok":  # killed after finishing it, before recording it
                append_manifest(out_dir, {"id": item_id, "source": source, "seconds": 0.0,
                                          **ok_record(layout.read_meta(out_dir, item_id))})
        else:
            todo.append((source, item_id))
    total = len(todo)
    if on_progress:
        on_progress(result, total)

    def crashed(job: tuple) -> dict:
        source, item_id = job[:2]
        return {"id": item_id, "source": source, "status": "failed", "seconds": 0.0, "reason": WORKER_DIED}

    for record in run_jobs(_run_one, [(s, i, str(out_dir), settings) for s, i in todo], workers, crashed):
        finish(record)
        if on_progress:
            on_progress(result, total)
    compact_manifest(out_dir)
    return result
