"""The web page at ``/ui/`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium) against the real Serve app on 127.0.0.1; plus the page's helper routes and ``include_media`` over HTTP.

The browser test uploads a generated mp4, draws a box with mouse events, inserts ``<obj_1>``, asks, and checks the
answer, the timings, the 16 thumbnails and the SoM image; then an over-limit file (refused by the page from the
server's config) and a corrupt video (refused by the API, shown next to the video field). Screenshots of the answer
and of the error go to the test's tmp dir, and to ``docs/img/`` when ``RGPT4D_UPDATE_SCREENSHOTS=1`` (a test never
rewrites tracked files on its own). The browser may reach 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rgpt4d_core.regions import PALETTE
from tests.serve_testkit import tiny_job, write_media
from tests.test_serve_engine import OPTIONS

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
MAX_UPLOAD = 300_000
EXAMPLE = {"id": "ex-1", "video": "videos/a.mp4", "question": "Which way does <obj_1> move?",
           "options": ["left", "right", "up", "down"], "answer": "right", "task": "T",
           "regions": [{"obj_id": 1, "box": [0.05, 0.3, 0.45, 0.6], "label": "square"}]}  # fmt: skip


@dataclass
class UIServer:
    url: str
    media: Path
    video: bytes
    client: httpx.Client


@pytest.fixture(scope="module")
def ui_server(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    from ray import serve

    from pipelines.serve import start

    base = tmp_path_factory.mktemp("serve_ui")
    media, video = write_media(base)
    bench = media / "bench"  # a one-question benchmark in the synthetic world's layout, for the examples
    (bench / "questions").mkdir(parents=True)
    (bench / "videos").mkdir()
    (bench / "videos" / "a.mp4").write_bytes(video)
    (bench / "questions" / "test.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    job = tiny_job(base, media, f"security.max_upload_bytes={MAX_UPLOAD}", f"ui.examples={bench}",
                   "server.app_name=rgpt4d-ui-test")  # fmt: skip
    url, _ = start(job)
    try:
        with httpx.Client(timeout=60) as client:
            yield UIServer(url, media, video, client)
    finally:
        serve.shutdown()


# ------------------------------------------------------------------------------------------------ HTTP only


def test_vqa_include_media_returns_the_frames_and_the_som_image(ui_server: UIServer) -> None:
    body = {"video": {"path": "clips/a.mp4"}, "question": "Where does <obj_1> move?", "options": list(OPTIONS),
            "regions": [{"obj_id": 1, "box": [0.05, 0.3, 0.4, 0.6]}]}  # fmt: skip
    plain = ui_server.client.post(f"{ui_server.url}/v1/vqa", json=body)
    assert plain.status_code == 200, plain.text
    assert plain.json()["media"] is None  # existing clients get what they got before (plus a null field)
    rich = ui_server.client.post(f"{ui_server.url}/v1/vqa", json={**body, "include_media": True})
    assert rich.status_code == 200, rich.text
    media = rich.json()["media"]
    assert len(media["frames"]) == 16 and (media["width"], media["height"]) == (80, 64)
    stamps = [f["timestamp_s"] for f in media["frames"]]
    assert stamps == sorted(stamps) and stamps[0] == 0.0 and stamps[-1] > 2.5  # 24 frames at 8 fps
    assert all(f["image"].startswith("data:image/jpeg;base64,") for f in media["frames"])
    assert media["som_image"].startswith("data:image/jpeg;base64,")
    assert rich.json()["raw_output"] == plain.json()["raw_output"]


def test_page_routes_config_examples_and_frame_preview(ui_server: UIServer) -> None:
    c, url = ui_server.client, ui_server.url
    root = c.get(f"{url}/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"].endswith("/ui/")
    page = c.get(f"{url}/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for asset in ("", "ui.js", "regions.js", "ui.css"):  # nothing from the internet: no absolute URLs at all
        assert not re.search(r"(https?:)?//[a-z]", c.get(f"{url}/ui/{asset}").text.replace("// ", "")), asset
    cfg = c.get(f"{url}/ui/config").json()
    assert cfg["palette"] == [list(p) for p in PALETTE] and cfg["max_upload_bytes"] == MAX_UPLOAD
    examples = c.get(f"{url}/ui/examples").json()["examples"]
    assert [(e["id"], e["video"]) for e in examples] == [("ex-1", "bench/videos/a.mp4")]
    frame = c.post(f"{url}/ui/frame", json={"path": "clips/a.mp4"})
    assert frame.status_code == 200 and (frame.json()["width"], frame.json()["height"]) == (80, 64)
    upload = c.post(f"{url}/ui/frame", files={"video": ("a.mp4", ui_server.video)})
    assert upload.json()["image"] == frame.json()["image"]
    for response, status, field in [
        (c.post(f"{url}/ui/frame", json={"path": "../ckpt/config.json"}), 403, "video.path"),
        (c.post(f"{url}/ui/frame", files={"video": ("x.mp4", b"garbage" * 100)}), 422, "video"),
        (c.post(f"{url}/ui/frame", files={"video": ("x.mp4", b"0" * (MAX_UPLOAD + 1))}), 413, "video"),
    ]:
        assert response.status_code == status and response.json()["error"]["field"] == field, response.text
    assert c.get(f"{url}/openapi.json").json()["paths"].keys().isdisjoint({"/ui/", "/ui/frame"})


# ------------------------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"needs Debian's chromium + chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): `make install` adds them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--window-size=1280,1600",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    errors = driver.execute_script(
        "return [...document.querySelectorAll('.error')].filter(e => !e.hidden).map(e => e.id + ': ' + e.textContent)")
    raise AssertionError(f"timed out waiting for {what}; errors shown on the page: {errors}")


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page (window resized to its content, twice: resizing reflows it) into ``path`` (and ``docs/img/``
    when ``RGPT4D_UPDATE_SCREENSHOTS=1``)."""
    for _ in range(2):
        driver.execute_script("window.scrollTo(0, 0)")
        bottom = driver.execute_script("return document.querySelector('main').getBoundingClientRect().bottom"
                                       " + window.outerHeight - window.innerHeight")  # fmt: skip
        driver.set_window_size(1280, min(int(bottom) + 24, 4000))
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"screenshot {path} is suspiciously small"
    if os.environ.get("RGPT4D_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / path.name)


@pytest.mark.timeout(180)
def test_page_answers_a_drawn_region_and_shows_errors(ui_server: UIServer, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    el = lambda css: d.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    text = lambda css: el(css).text  # noqa: E731
    shown = lambda css: el(css).is_displayed()  # noqa: E731
    d.get(f"{ui_server.url}/")  # redirects to /ui/
    _wait(d, "the page's settings", lambda: text("#model-line").startswith("Model "))

    # one-click example from the benchmark: its video, box, question and options fill the form
    _wait(d, "the examples", lambda: shown("#examples-box"))
    el("#examples button").click()
    _wait(d, "the example's frame 1", lambda: text("#frame-info").startswith("Frame 1 of bench/videos/a.mp4"))
    assert el("#question").get_attribute("value") == EXAMPLE["question"]
    assert len(d.find_elements(By.CSS_SELECTOR, "#regions li")) == 1
    assert [i.get_attribute("value") for i in d.find_elements(By.CSS_SELECTOR, "#options input")] == EXAMPLE["options"]

    # upload a generated mp4; frame 1 appears
    video = tmp_path / "clip.mp4"
    video.write_bytes(ui_server.video)
    el("#video-file").send_keys(str(video))
    _wait(d, "frame 1", lambda: text("#frame-info").startswith("Frame 1 of clip.mp4: 80×64 px"))
    assert not d.find_elements(By.CSS_SELECTOR, "#regions li")  # the example's box belonged to another frame

    # draw a box with the mouse (offsets from the canvas centre), then insert its token into the question
    canvas = el("#frame-canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(d).move_to_element_with_offset(canvas, -int(w * 0.4), -int(h * 0.2)).click_and_hold() \
        .move_by_offset(int(w * 0.35), int(h * 0.3)).move_by_offset(2, 2).release().perform()
    _wait(d, "the box in the list", lambda: d.find_elements(By.CSS_SELECTOR, "#regions li"))
    swatch = el("#regions li .swatch")
    assert swatch.text == "1" and swatch.value_of_css_property("background-color") in (
        "rgba({}, {}, {}, 1)".format(*PALETTE[0]), "rgb({}, {}, {})".format(*PALETTE[0]))
    question = el("#question")
    question.clear()
    question.send_keys("Where does ")
    el("#insert-obj-1").click()
    question.send_keys(" move?")
    assert question.get_attribute("value") == "Where does <obj_1> move?"
    for i, option in enumerate(OPTIONS):
        field = el(f"#option-{i}")
        field.clear()
        field.send_keys(option)
    el("#submit").click()
    _wait(d, "the answer", lambda: shown("#result"))
    assert text("#answer-letter") and text("#answer")
    if text("#answer-letter") != "?":
        assert text("#answer") in OPTIONS
    assert text("#raw-output")
    for part in ("#t-decode", "#t-generate", "#t-total"):
        assert float(text(part)) > 0, part
    assert float(text("#t-total")) >= float(text("#t-generate"))
    _wait(d, "16 loaded thumbnails", lambda: d.execute_script(
        "const i = [...document.querySelectorAll('#frames img')]; return i.length === 16 && i.every(x => x.naturalWidth > 0)"))
    captions = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#frames figcaption")]
    assert captions[0] == "#1 · 0.00 s" and len(captions) == 16
    assert d.execute_script("return document.getElementById('som-image').naturalWidth") == 80
    _screenshot(d, tmp_path / "ui_answer.png")

    # a file over the server's upload limit is refused by the page, saying the limit
    big = tmp_path / "big.mp4"
    big.write_bytes(np.random.default_rng(0).bytes(MAX_UPLOAD + 50_000))
    el("#video-file").send_keys(str(big))
    _wait(d, "the size message", lambda: "accepts videos up to 0.3 MB" in text("#video-error"))

    # a corrupt video: the preview and then the API (on submit) refuse it, next to the video field
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(ui_server.video[:2000] + np.random.default_rng(1).bytes(20_000))
    el("#video-file").send_keys(str(corrupt))
    _wait(d, "the preview's error", lambda: "could not be decoded" in text("#video-error"))
    question.clear()
    question.send_keys("What moves in the video?")
    el("#submit").click()
    _wait(d, "the API's error", lambda: "HTTP 422" in text("#status"))
    message = text("#video-error")
    assert "could not be decoded" in message and "HTTP 422" in message and "video_" in message, message
    assert not shown("#result") and not shown("#page-error") and not shown("#form-error")
    _screenshot(d, tmp_path / "ui_error.png")

    # everything the page loaded came from this server; no script error on the page
    loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(ui_server.url) for u in loaded), loaded
    script_errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert not script_errors, script_errors
