"""`mar3d prepare` as a user runs it: bad inputs among good ones, kill and resume, shards, --help."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import classic, ycb
from mar3d.data import layout

FAST = ["--surface-samples", "20000", "--occupancy-samples", "40000", "--views", "4", "--resolution", "128"]


def mar3d(*args, check=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "mar3d", *map(str, args)], capture_output=True, text=True)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def digest_tree(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mtime_ns) of every file below ``folder``."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_inputs_fail_with_reasons_while_good_ones_succeed(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.glb").write_bytes(ycb("013_apple").read_bytes()[:3000])
    (bad / "text.obj").write_text("not a mesh at all\n")
    (bad / "empty.stl").write_bytes(b"")
    (bad / "nan.obj").write_text("v 0 0 0\nv nan 1 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n")
    out = tmp_path / "out"
    result = mar3d("prepare", ycb("013_apple"), bad, classic("cow"), "--out", out, *FAST, check=1)
    assert result.stdout.strip().splitlines()[-1].startswith("prepared 2 ok, 4 failed")
    assert "Traceback" not in result.stderr
    records = layout.read_manifest(out)
    assert {i: r["status"] for i, r in records.items()} == {
        "013_apple": "ok", "cow": "ok", "truncated": "failed", "text": "failed", "empty": "failed", "nan": "failed"}
    assert "cannot read" in records["truncated"]["reason"]
    assert "no triangle faces" in records["text"]["reason"]
    assert "empty" in records["empty"]["reason"]
    assert "NaN" in records["nan"]["reason"]
    for name in ("truncated", "text", "empty", "nan"):  # each failure is named on stderr
        assert name in result.stderr
    assert layout.prepared_ids(out) == ["013_apple", "cow"]
    assert not list(out.rglob("*.tmp-*"))
    assert len((out / layout.MANIFEST).read_text().splitlines()) == 6


def test_an_item_finished_but_not_recorded_is_recorded_on_the_rerun(tmp_path):
    """A kill can land after an item's meta.json is written and before the parent appends its manifest line: the
    re-run skips the finished item and records it, so the manifest lists every prepared item."""
    out = tmp_path / "out"
    mar3d("prepare", classic("cow"), "--out", out, *FAST, check=0)
    timing = layout.read_manifest(out)["cow"]["timing"]
    (out / layout.MANIFEST).write_text("")  # as if killed before the record was written
    result = mar3d("prepare", classic("cow"), "--out", out, *FAST, check=0)
    assert "0 ok, 0 failed, 1 already done" in result.stdout
    record = layout.read_manifest(out)["cow"]
    assert record["status"] == "ok" and record["timing"] == timing == layout.read_meta(out, "cow")["seconds"]


def test_killed_run_resumes_without_touching_finished_work(tmp_path):
    names = ["013_apple", "011_banana", "003_cracker_box", "012_strawberry", "014_lemon"]
    inputs = [str(ycb(n)) for n in names]
    out = tmp_path / "out"
    slow = ["--surface-samples", "100000", "--occupancy-samples", "200000", "--views", "16", "--resolution", "256"]
    process = subprocess.Popen([sys.executable, "-m", "mar3d", "prepare", *inputs, "--out", str(out), *slow, "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(out.glob(f"*/{layout.META}"))) < 2 and process.poll() is None:  # bounded: the run ends
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = layout.prepared_ids(out)
    assert 2 <= len(finished) < len(names), "the kill must land mid-run"
    before = {i: digest_tree(out / i) for i in finished}

    result = mar3d("prepare", *inputs, "--out", out, *slow, check=0)
    assert f"{len(names) - len(finished)} ok, 0 failed, {len(finished)} already done" in result.stdout
    assert {i: digest_tree(out / i) for i in finished} == before  # not rewritten, not even touched
    assert layout.prepared_ids(out) == sorted(names)
    assert not list(out.rglob("*.tmp-*"))
    records = layout.read_manifest(out)
    assert all(records[n]["status"] == "ok" for n in names)
    lines = (out / layout.MANIFEST).read_text().splitlines()
    assert len(lines) == len(names)  # compacted: one line per input

    # The item that was cut off was redone from scratch and matches an uninterrupted run exactly.
    fresh = tmp_path / "fresh"
    mar3d("prepare", *inputs, "--out", fresh, *slow, "-q", check=0)
    for name in names:
        assert (out / name / layout.SAMPLES).read_bytes() == (fresh / name / layout.SAMPLES).read_bytes()
        assert (out / name / "views" / "005.png").read_bytes() == (fresh / name / "views" / "005.png").read_bytes()


def test_shards_split_the_inputs_and_share_one_manifest(tmp_path):
    inputs = [ycb("013_apple"), ycb("014_lemon"), classic("cow"), classic("spot")]
    out = tmp_path / "out"
    mar3d("prepare", *inputs, "--out", out, *FAST, "--shard", "0/2", "-q", check=0)
    first = layout.prepared_ids(out)
    assert len(first) == 2
    mar3d("prepare", *inputs, "--out", out, *FAST, "--shard", "1/2", "--workers", "2", "-q", check=0)
    assert layout.prepared_ids(out) == ["013_apple", "014_lemon", "cow", "spot"]
    assert len((out / layout.MANIFEST).read_text().splitlines()) == 4


def test_folders_and_globs_are_expanded_and_duplicate_stems_kept_apart(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "cow.glb").write_bytes(classic("cow").read_bytes())
    (tmp_path / "a" / "readme.txt").write_text("not a mesh, and not picked up from a folder")
    out = tmp_path / "out"
    mar3d("prepare", tmp_path / "a", str(tmp_path / "b" / "*.glb"), "--out", out, *FAST, "-q", check=0)
    ids = layout.prepared_ids(out)
    assert len(ids) == 2 and all(i.startswith("cow-") for i in ids)
    assert json.loads((out / ids[0] / layout.META).read_text())["source"].endswith("cow.glb")


def test_settings_changes_redo_items_and_same_settings_skip(tmp_path):
    out = tmp_path / "out"
    mar3d("prepare", classic("cow"), "--out", out, *FAST, "-q", check=0)
    assert "1 already done" in mar3d("prepare", classic("cow"), "--out", out, *FAST, "-q", check=0).stdout
    changed = [a if a != "4" else "8" for a in FAST]
    assert "1 ok" in mar3d("prepare", classic("cow"), "--out", out, *changed, "-q", check=0).stdout
    assert len(layout.read_views(out, "cow")) == 8


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "0 <= K < N"),
    (["--shard", "x"], "K/N"),
    (["--views", "-1"], "views"),
    (["--workers", "0"], "--workers"),
])
def test_bad_options_give_one_line_errors(tmp_path, args, message):
    result = mar3d("prepare", classic("cow"), "--out", tmp_path, *args, check=2)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_help_lists_commands_and_explains_options():
    assert "prepare" in mar3d("--help", check=0).stdout
    text = mar3d("prepare", "--help", check=0).stdout
    for option in ("--workers", "--shard", "--views", "--resolution", "--surface-samples",
                   "--occupancy-samples", "--seed"):
        assert option in text
