"""Progress bars on the user's terminal for the long stages, driven from the driver.

Work that runs in Ray workers (training steps, shard writes) is counted by polling where it already leaves a
trace (the MLflow run's step metric, the rows in written shard files) from a daemon thread; a stage that iterates
on the driver updates its bar directly (:func:`bar`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pipelines._console import terminal


def bar(total: int | None, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar on :func:`pipelines._console.terminal` (updated by the caller)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=terminal(), disable=not enabled, dynamic_ncols=True,
                mininterval=1.0)  # fmt: skip


@contextmanager
def polled(total: int, desc: str, unit: str, poll: Callable[[], int | None], interval_s: float = 2.0,
           enabled: bool = True) -> Iterator[None]:  # fmt: skip
    """Show a bar of ``total`` ``unit`` while inside, set every ``interval_s`` seconds to ``poll()`` (the amount
    done so far, ``None`` = unknown yet). A failing poll leaves the bar where it is; the work is never affected."""
    if not enabled or total <= 0:
        yield
        return
    stop = threading.Event()
    progress = bar(total, desc, unit)

    def update() -> None:
        try:
            done = poll()
        except Exception:  # noqa: BLE001 - a progress read must never break the job it watches
            return
        if done is not None and done > progress.n:
            progress.update(min(done, total) - progress.n)

    def loop() -> None:
        while not stop.wait(interval_s):
            update()

    thread = threading.Thread(target=loop, name=f"progress-{desc}", daemon=True)
    thread.start()
    try:
        yield
        update()
    finally:
        stop.set()
        thread.join(timeout=interval_s + 5)
        progress.close()


def mlflow_step_reader(tracking_uri: str, run_id: str, key: str) -> Callable[[], int | None]:
    """A poll for :func:`polled`: the latest step at which the MLflow run ``run_id`` logged metric ``key``.

    The client is made at the first poll, so a disabled bar costs nothing."""
    clients: list[Any] = []

    def last_step() -> int | None:
        if not clients:
            from mlflow.tracking import MlflowClient

            clients.append(MlflowClient(tracking_uri=tracking_uri))
        history = clients[0].get_metric_history(run_id, key)
        return max((m.step for m in history), default=None)

    return last_step
