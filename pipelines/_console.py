"""What a user sees on the terminal versus what goes to log files: the stages, progress bars and results go to the
terminal; the engines' own output (Ray, Ray Data/Train/Serve, MLflow, transformers, warnings, C++ log lines of
Ray's core worker) goes to ``engine.log``.

:func:`engine_output_to` moves file descriptor 2 (stderr, which every library writes to, Python or not) onto the
log file and keeps a duplicate of the real stderr as :func:`terminal`, where our progress bars and error summary
go. Workers' output is not forwarded to the driver in that mode (``init_ray(log_to_driver=False)``): it stays in
Ray's session logs, whose folder :func:`ray_logs_dir` names. The messages the GCS pushes to the driver (raylet
warnings, notes on retried tasks), which Ray prints to stdout whatever ``log_to_driver`` says, go to the log file.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

_terminal: TextIO | None = None
ENGINE_LOG = "engine.log"


def terminal() -> TextIO:
    """The user's terminal for progress bars and messages: the real stderr, also while engine output is redirected."""
    return _terminal or sys.stderr


def quiet() -> bool:
    """Whether engine output is being sent to a log file (see :func:`engine_output_to`)."""
    return _terminal is not None


def progress_wanted() -> bool:
    """Whether to draw progress bars: when engine output is redirected (the demo) or stderr is a terminal."""
    return quiet() or terminal().isatty()


@contextmanager
def engine_output_to(log_dir: str | Path, enabled: bool = True) -> Iterator[Path | None]:
    """Send everything written to stderr, the ``logging`` tree and warnings to ``<log_dir>/engine.log`` while
    inside; yields that path (``None`` with ``enabled=False``, which changes nothing: ``--engine-logs``).

    Three routes are covered: file descriptor 2 (C++ log lines of Ray's core worker, anything not Python),
    ``sys.stderr`` (warnings, thread tracebacks, Ray's driver messages) and every ``logging`` stream handler that
    exists (Ray's, Ray Data's, MLflow's, set up at import time with the stderr of that moment). An exception
    leaving the block is printed to the terminal as well, with the log file's path.
    """
    global _terminal
    if not enabled:
        yield None
        return
    path = Path(log_dir) / ENGINE_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    original_stderr = sys.stderr
    original_stderr.flush()
    saved_fd = os.dup(2)
    log_stream = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    os.dup2(log_stream.fileno(), 2)
    _terminal = _terminal_stream(original_stderr, saved_fd)
    sys.stderr = log_stream
    repointed = _repoint_stream_handlers(log_stream)
    root = logging.getLogger()
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level, logging.INFO) if old_level else logging.INFO)
    logging.captureWarnings(True)
    restore_ray_messages = _ray_driver_messages_to_stderr()
    try:
        yield path
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            text = "".join(traceback.format_exception(exc))
            _terminal.write(f"{text}\n(the engines' own output is in {path})\n")
        raise
    finally:
        restore_ray_messages()
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h, stream in repointed:
            h.setStream(stream)
        sys.stderr = original_stderr
        log_stream.flush()
        os.dup2(saved_fd, 2)
        if _terminal is not original_stderr:
            _terminal.close()  # closes saved_fd
        else:
            os.close(saved_fd)
        log_stream.close()
        _terminal = None


def add_engine_logs_flag(parser: argparse.ArgumentParser, where: str = "<out>/logs/engine.log") -> None:
    """``--engine-logs`` of a command that sends engine output to ``where`` (demo, ablation, the training jobs):
    engine output on the terminal instead."""
    parser.add_argument("--engine-logs", action="store_true",
                        help=f"show Ray's, MLflow's and the libraries' own output here instead of {where}")  # fmt: skip


#: where a training job (pretrain_expert, distill) run on its own writes the engines' output: :func:`training_job_output`
TRAINING_JOB_LOG = "<run.storage_path>/logs/engine.log"


def local_log_root(storage_path: str) -> Path:
    """Where a job whose results go to ``storage_path`` keeps ``logs/engine.log``: that folder when it is local,
    the current directory when it is remote (``s3://...``): a log file is written as it grows."""
    return Path(".") if "://" in storage_path else Path(storage_path)


@contextmanager
def training_job_output(storage_path: str, show_engine_logs: bool) -> Iterator[Path | None]:
    """A training job's terminal when it runs on its own: :func:`chained_command_output` into
    :data:`TRAINING_JOB_LOG` (its folder from :func:`local_log_root`) unless ``--engine-logs``."""
    with chained_command_output(local_log_root(storage_path), show_engine_logs) as log_file:
        yield log_file


@contextmanager
def chained_command_output(out: str | Path, show_engine_logs: bool) -> Iterator[Path | None]:
    """A chained command's terminal: :func:`engine_output_to` ``<out>/logs`` unless ``--engine-logs``
    (``show_engine_logs``), saying once where the engine output goes; yields the log file (``None`` when shown)."""
    with engine_output_to(Path(out) / "logs", enabled=not show_engine_logs) as log_file:
        if log_file is not None:
            print(f"Ray's and the libraries' own output goes to {log_file} (--engine-logs shows it here)", flush=True)
        yield log_file


def _terminal_stream(original_stderr: TextIO, saved_fd: int) -> TextIO:
    """Where the user's output goes while fd 2 is the log: the saved fd 2 when ``sys.stderr`` wrote to it (a real
    run), else ``sys.stderr`` itself (an in-process capture such as pytest's, which is not fd 2)."""
    if not (_has_fd(original_stderr) and original_stderr.fileno() == 2):
        return original_stderr
    return io.TextIOWrapper(os.fdopen(saved_fd, "wb", buffering=0), write_through=True)


def _repoint_stream_handlers(stream: TextIO) -> list[tuple[logging.StreamHandler, Any]]:
    """Point every existing console handler (a ``StreamHandler`` that is not a ``FileHandler`` and writes to a file
    descriptor; in-memory ones such as pytest's log capture are left alone) at ``stream``; returns ``(handler,
    previous stream)`` pairs to undo it."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]  # fmt: skip
    changed: list[tuple[logging.StreamHandler, Any]] = []
    seen: set[int] = set()
    for lg in loggers:
        for h in lg.handlers:
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
                continue
            if id(h) not in seen and _has_fd(h.stream):
                seen.add(id(h))
                previous = h.setStream(stream)
                changed.append((h, previous if previous is not None else stream))
    return changed


def _has_fd(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _ray_driver_messages_to_stderr() -> Callable[[], None]:
    """Make Ray print the GCS's messages for this driver to stderr (here: the log file) instead of stdout; returns
    the undo. Ray 2.60 has no option for it: its listener thread calls ``ray._private.worker.print_to_stdstream``
    with ``is_err=False``, looked up on the module at each call, so that one function is wrapped."""
    from ray._private import worker

    original = worker.print_to_stdstream

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    worker.print_to_stdstream = to_stderr
    return lambda: setattr(worker, "print_to_stdstream", original)


def ray_logs_dir() -> str | None:
    """The folder of the running local Ray's session logs (workers, raylet, GCS), if Ray is initialized here."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        node = ray._private.worker._global_node
        return str(Path(node.get_session_dir_path()) / "logs") if node is not None else None
    except Exception:  # noqa: BLE001 - a path for a message only
        return None


def start_ray(target: Any, **kwargs: Any) -> None:
    """Start or attach to the Ray of ``target`` (a ``pipelines._ray.RayTarget``; ``kwargs`` go to ``ray.init``):
    while engine output goes to a file (:func:`quiet`), workers' output stays in Ray's logs and Ray Data's own
    progress bars are off (ours are drawn on the terminal instead)."""
    target.init(log_to_driver=not quiet(), **kwargs)
    if quiet():
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
