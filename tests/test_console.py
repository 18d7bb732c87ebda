"""``pipelines._console.engine_output_to``: every route an engine writes by ends in the log file, the user's output
(bars, errors) still reaches the terminal, and everything is put back on exit."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import pytest

from pipelines import _console


def test_engine_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    engine_logger = logging.getLogger("rgpt4d_test_engine")
    console = logging.StreamHandler(sys.stderr)  # set up before, as Ray's loggers are at import time
    engine_logger.addHandler(console)
    engine_logger.propagate = False
    try:
        with _console.engine_output_to(tmp_path / "logs") as log_file:
            assert log_file == tmp_path / "logs" / "engine.log" and _console.quiet()
            os.write(2, b"fd2: a C++ log line\n")
            print("sys.stderr: a library's note", file=sys.stderr)
            engine_logger.warning("handler: an engine warning")
            logging.getLogger("rgpt4d_test_other").info("root: an INFO record")
            warnings.warn("warnings: a library warning", UserWarning, stacklevel=1)
            _console.terminal().write("bar: 50%|\n")
            print("stdout: a stage line")
        assert not _console.quiet() and sys.stderr is not None
        print("after: stderr", file=sys.stderr)
    finally:
        engine_logger.removeHandler(console)
    out, err = capfd.readouterr()
    log = log_file.read_text()
    for line in ("fd2: a C++ log line", "sys.stderr: a library's note", "handler: an engine warning",
                 "root: an INFO record", "warnings: a library warning"):  # fmt: skip
        assert line in log and line not in err + out, line
    assert "bar: 50%|" in err and "after: stderr" in err and "bar" not in log
    assert out == "stdout: a stage line\n"


def test_an_error_is_shown_on_the_terminal_with_the_log_path(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="stage failed"), _console.engine_output_to(tmp_path):
        raise ValueError("stage failed")
    err = capfd.readouterr().err
    assert "ValueError: stage failed" in err and str(tmp_path / "engine.log") in err


def test_disabled_changes_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with _console.engine_output_to(tmp_path, enabled=False) as log_file:
        assert log_file is None and not _console.quiet()
        print("shown", file=sys.stderr)
    assert "shown" in capfd.readouterr().err and not (tmp_path / "engine.log").exists()


def test_training_jobs_keep_engine_logs_beside_local_results(tmp_path: Path) -> None:
    assert _console.local_log_root(str(tmp_path / "runs")) == tmp_path / "runs"
    assert _console.local_log_root("s3://bucket/runs") == Path("."), "a log file is not appended to on S3"
