"""The one worker loop of `mar3d prepare` and `mar3d evaluate` (mar3d.utils.pool)."""
from __future__ import annotations

import os

from mar3d.utils.pool import run_jobs


def _tenfold_or_die(x: int) -> int:
    if x == 2:
        os._exit(3)  # a native crash or an OOM kill: no exception, the process is gone
    return 10 * x


def test_in_process_results_come_in_job_order():
    assert list(run_jobs(_tenfold_or_die, [(1,), (3,), (4,)], 1, crashed=lambda job: None)) == [10, 30, 40]


def test_a_dead_worker_gives_its_jobs_the_crashed_record_and_the_run_ends():
    results = list(run_jobs(_tenfold_or_die, [(1,), (2,), (3,)], 2, crashed=lambda job: ("died", job[0])))
    assert len(results) == 3 and ("died", 2) in results
    assert all(r in (10, 30) or r[0] == "died" for r in results)
