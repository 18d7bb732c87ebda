"""Shared by the Serve tests: a media root holding real mp4 files and a tiny ServeJob (an untrained seeded ``tiny``
student bootstrapped on first start) on a free 127.0.0.1 port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.test_serve_engine import make_mp4


def write_media(base: Path, video: bytes | None = None) -> tuple[Path, bytes]:
    """``<base>/media/clips/a.mp4`` (``video``, default :func:`make_mp4`); returns ``(media root, video bytes)``."""
    media = base / "media"
    (media / "clips").mkdir(parents=True, exist_ok=True)
    data = make_mp4() if video is None else video
    (media / "clips" / "a.mp4").write_bytes(data)
    return media, data


def tiny_job(base: Path, media: Path, *overrides: str) -> Any:
    """A :class:`pipelines.serve.ServeJob` for tests: checkpoint under ``base``, media root ``media``, a free port,
    half a CPU, 4 new tokens, one torch thread; ``overrides`` (``key=value``) come last and win."""
    from pipelines.serve import load_job

    return load_job(overrides=[
        f"engine.checkpoint={base / 'ckpt'}", "bootstrap_preset=tiny", "engine.max_new_tokens=4",
        "engine.torch_threads=1", "engine.decode_threads=2", f"security.media_root={media}",
        f"server.port={free_port()}", "server.num_cpus=0.5", *overrides,
    ])  # fmt: skip
