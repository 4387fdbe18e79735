"""One worker loop for batch jobs that must go on past any one input: in this process, or a spawn pool.

``mar3d prepare`` and ``mar3d evaluate`` run a function that never raises over many inputs. With more than
one worker the calls go to a ``spawn`` process pool (each worker gets its own clean GL context: forking a
process that holds one is unsafe). A worker that dies (a native crash, or killed by the OS for memory)
breaks the pool; every job not finished by then gets the caller's ``crashed(job)`` record instead of an
exception, so the run still reports every input.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

R = TypeVar("R")

WORKER_DIED = "a worker process died (native crash, or killed by the OS for memory); re-run to retry"


def run_jobs(work: Callable[..., R], jobs: Iterable[tuple], workers: int,
             crashed: Callable[[tuple], R]) -> Iterator[R]:
    """``work(*job)`` for each job, yielded as each finishes (in order with one worker, else as completed)."""
    jobs = list(jobs)
    if workers <= 1:
        for job in jobs:
            yield work(*job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(work, *job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                yield crashed(futures[future])
