"""Run a decode with a wall-clock deadline on a long-lived worker thread (one per calling thread).

The caller waits with a deadline (``timeout_s``). On expiry the caller gets ``VideoDecodeError("timeout")`` at once;
a thread cannot be killed from Python, so that worker is abandoned (it finishes, or not, on its own, its result is
dropped and it then exits) and the next call gets a fresh worker. This was chosen over a subprocess per call (tens
of ms of spawn + a copy of every clip, too slow for a Ray Data map over thousands of videos) and over
``signal.alarm`` (main thread only, cannot interrupt native code). Memory stays bounded because the probe limits
what one decode may allocate; a thread that *never* returns (a genuine decoder hang) keeps its buffers, so
:func:`abandoned_decodes` counts them: a long-running worker (a Ray actor) should restart itself when that count
grows.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from rgpt4d_core.types import Clip
from rgpt4d_core.video.limits import VideoDecodeError

_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_decodes() -> int:
    """How many decode threads have been abandoned after a timeout in this process (see module doc)."""
    return _abandoned


class _Worker:
    """One long-lived daemon thread that runs decode jobs for one calling thread.

    Reusing the thread (instead of one thread per call) keeps its stack and malloc arena warm. The thread is a
    daemon so a hung decode never blocks interpreter exit. It holds only its queue, not this object, so when the
    calling thread ends (its ``threading.local`` is cleared) ``__del__`` tells the loop to exit.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=_worker_loop, args=(self._jobs,), name="rgpt4d-decode", daemon=True).start()

    def submit(self, fn: Any, timeout_s: float) -> tuple[bool, dict[str, Any]]:
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, box, done))
        return done.wait(timeout_s), box

    def __del__(self) -> None:
        self._jobs.put(None)  # exits after the current job (a hung job: when, if ever, it returns)


def _worker_loop(jobs: queue.SimpleQueue[Any]) -> None:
    while (job := jobs.get()) is not None:
        fn, box, done = job
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()
        del job, fn, box, done  # drop the clip now, not when the next job arrives


_workers = threading.local()


def run_with_deadline(fn: Any, timeout_s: float, uri: str) -> Clip:
    """Run ``fn`` on this thread's worker; on timeout abandon that worker (a fresh one serves the next call)."""
    global _abandoned
    worker: _Worker | None = getattr(_workers, "worker", None)
    if worker is None:
        worker = _workers.worker = _Worker()
    finished, box = worker.submit(fn, timeout_s)
    if not finished:
        _workers.worker = None
        with _abandoned_lock:
            _abandoned += 1
        raise VideoDecodeError("timeout", uri, f"decode did not finish within timeout_s={timeout_s}")
    if "error" in box:
        raise box["error"]
    clip: Clip = box["value"]
    return clip
