"""``python pipelines/serve.py`` stops on Ctrl-C (SIGINT) and on SIGTERM: Serve and its private Ray go, no orphans.

Each case starts the real CLI with a private Ray in a new process session, waits for its "serving" line, sends the
signal, and checks the exit and that no process of that session is left. Before the signal it asks each printed
endpoint for ``/v1/models`` (a script-run copy of the module once served an app without its API routes); the
SIGTERM case runs with ``server.direct_ingress=true`` (it needs a Ray started by the CLI), so the replica's own
port is asked too. Waits are bounded, never asserted on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def _session_members(sid: int) -> list[str]:
    """``pid command`` of every live process whose session id is ``sid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                out.append(f"{entry.name} {command[:120]}")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _endpoints(lines: list[str]) -> list[str]:
    """The base URLs the CLI printed: the proxy's, then each replica's own (``server.direct_ingress``)."""
    proxy = [line.split(" at ", 1)[1].split()[0] for line in lines if "rgpt4d VQA serving" in line]
    replicas = [line.split(": ", 1)[1].strip().removesuffix("/v1/vqa") for line in lines
                if "replica's own endpoint" in line]  # fmt: skip
    return proxy + replicas


@pytest.mark.parametrize("sig, direct", [(signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["SIGINT", "SIGTERM-direct-ingress"])  # fmt: skip
def test_serve_cli_stops_cleanly_on_signal(sig: signal.Signals, direct: bool, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private Ray, not the session cluster
    cmd = [sys.executable, "pipelines/serve.py", "--config", "conf/serve/tiny.yaml", f"server.port={free_port()}",
           f"engine.checkpoint={tmp_path / 'ckpt'}", "server.num_cpus=0.5", f"server.direct_ingress={direct}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            if "rgpt4d VQA serving" in lines[-1] and not direct or "replica's own endpoint" in lines[-1]:
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert serving.wait(timeout=240), "".join(lines)[-4000:]
        urls = _endpoints(lines)  # the API answers through the proxy and (direct ingress) on the replica's port
        assert len(urls) == 1 + direct, "".join(lines)[-4000:]
        for url in urls:
            models = httpx.get(f"{url}/v1/models", timeout=30)
            assert models.status_code == 200 and models.json()["data"], (url, models.text)
        proc.send_signal(sig)
        rc = proc.wait(timeout=90)
        reader.join(timeout=10)
        assert rc == 0, "".join(lines)[-4000:]
        assert any("shutting down" in line for line in lines)
        left: list[str] = []
        for _ in range(40):  # processes of the session that are still exiting get a bounded moment
            left = _session_members(proc.pid)
            if not left:
                break
            time.sleep(0.5)
        assert not left, f"left behind after {sig.name}: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for line in _session_members(proc.pid):
            os.kill(int(line.split()[0]), signal.SIGKILL)
