"""When a forming batch stops waiting (``pipelines/_serve_batch.py``): the rule itself, and on a real Serve app over
HTTP on 127.0.0.1 with a batch wait far longer than the client's timeout, so that a request held for batch-mates
fails the test by timing out (no timing assert)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipelines._serve_batch import BatchGate, Ticket, batch_size
from tests.serve_testkit import tiny_job, write_media
from tests.test_serve_engine import OPTIONS

QUESTION = "Where does <obj_1> move?"
REGIONS = [{"obj_id": 1, "box": [0.05, 0.3, 0.4, 0.6]}]
LONG_WAIT_S = 600.0  # batch_wait_timeout_s: a request that waits it out fails on CLIENT_TIMEOUT_S first
CLIENT_TIMEOUT_S = 60.0


def test_batch_goes_at_once_only_when_the_replica_is_otherwise_idle() -> None:
    gate = BatchGate(max_batch_size=8)
    tickets = [Ticket(object(), gate) for _ in range(3)]
    assert batch_size(tickets[:1]) == 8  # idle: reported full, so the batch goes now
    gate.preparing = 1  # a batch-mate is being decoded: keep waiting (true size)
    assert batch_size(tickets) == 3
    gate.preparing, gate.running = 0, 1  # a batch is generating: requests arriving meanwhile may join
    assert batch_size(tickets) == 3
    gate.running = 0
    assert batch_size(tickets) == 8
    assert batch_size([Ticket(object(), gate) for _ in range(9)]) == 9  # over the limit: Serve defers the 9th


@pytest.fixture(scope="module")
def url(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    from ray import serve

    from pipelines.serve import start

    base = tmp_path_factory.mktemp("serve_batching")
    media, video = write_media(base)
    job = tiny_job(base, media, "server.app_name=rgpt4d-batching")
    served, _ = start(job, {"max_batch_size": 8, "batch_wait_timeout_s": LONG_WAIT_S})
    try:
        yield served, video
    finally:
        serve.shutdown()


def _fields() -> dict[str, Any]:
    return {"question": QUESTION, "options": list(OPTIONS), "regions": REGIONS}


def test_lone_requests_do_not_wait_for_batch_mates(url: tuple[str, bytes]) -> None:
    served, video = url
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
        assert client.get(f"{served}/healthz").json()["batch_wait_timeout_s"] == LONG_WAIT_S
        calls = {
            "json base64": {"json": {**_fields(), "video": {"data_b64": base64.b64encode(video).decode()}}},
            "multipart": {"data": {"request": json.dumps(_fields())}, "files": {"video": ("a.mp4", video)}},
            "media-root path": {"json": {**_fields(), "video": {"path": "clips/a.mp4"}}},
        }
        for name, kwargs in calls.items():
            r = client.post(f"{served}/v1/vqa", **kwargs)
            assert r.status_code == 200, (name, r.text)
            assert r.json()["batch_size"] == 1, name
        # a request that fails while being prepared also goes through the batch without waiting
        corrupt = base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 4000).decode()
        r = client.post(f"{served}/v1/vqa", json={**_fields(), "video": {"data_b64": corrupt}})
        assert r.status_code == 422 and r.json()["error"]["code"].startswith("video_"), r.text
