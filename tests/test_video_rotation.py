"""Videos with a display-matrix rotation (phones held sideways) decode as displayed, in both backends and in
precompute; real H.264 encodes rotated 90/180/270 degrees, compared with the same picture stored upright."""

from __future__ import annotations

import io
import json

import av  # noqa: F401 - import PyAV's FFmpeg before decord's (see rgpt4d_core/video/backends.py)
import numpy as np
import pytest

from rgpt4d_core.shards.precompute import (
    REQ_FRAMES,
    REQ_RECORDS,
    REQ_VIDEO,
    SamplingConfig,
    clip_of,
    decode_requests,
    video_records,
)
from rgpt4d_core.video.decode import DecodeConfig, decode_clip, quarter_turns
from rgpt4d_core.video.encode import encode_video

T, H, W = 12, 48, 80  # the picture as displayed: landscape, so a quarter turn changes the shape
ROTATIONS = (90, 180, 270)
TOLERANCE = 4.0  # mean abs difference (grey levels) between two H.264 encodes of the same picture


def displayed_frames() -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: four differently coloured quadrants (no symmetry) and a square moving right."""
    out = np.zeros((T, H, W, 3), np.uint8)
    out[:, : H // 2, : W // 2] = (220, 30, 30)
    out[:, : H // 2, W // 2 :] = (30, 200, 30)
    out[:, H // 2 :, : W // 2] = (30, 30, 220)
    out[:, H // 2 :, W // 2 :] = (200, 200, 40)
    for t in range(T):
        out[t, 4:12, 4 + 4 * t : 12 + 4 * t] = 255
    return out


def stored_as(rotation_deg: int) -> bytes:
    """The mp4 a camera writes when it keeps its sensor's pixels and records ``rotation_deg`` for the player."""
    stored = np.ascontiguousarray(np.rot90(displayed_frames(), k=-(rotation_deg // 90), axes=(1, 2)))
    buf = io.BytesIO()
    encode_video(stored, 8.0, buf, rotation_deg=rotation_deg)
    return buf.getvalue()


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def upright_mp4() -> bytes:
    """The same picture stored upright: decoded with the same settings, the reference a rotated file must match."""
    buf = io.BytesIO()
    encode_video(displayed_frames(), 8.0, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def upright(upright_mp4: bytes) -> np.ndarray:
    return decode_clip(upright_mp4, DecodeConfig(num_frames=4, backends=("pyav",))).frames


def test_quarter_turns_normalises_pyav_angles() -> None:
    assert [quarter_turns(a) for a in (0, 90, -90, 180, -180, 270, 360, 89.6)] == [0, 1, 3, 2, 2, 3, 0, 1]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_rotated_video_decodes_as_displayed(upright: np.ndarray, rotation: int, backend: str) -> None:
    data = stored_as(rotation)
    clip = decode_clip(data, DecodeConfig(num_frames=4, backends=(backend,)))
    assert clip.frames.shape == (4, H, W, 3)
    assert _diff(clip.frames, upright) < TOLERANCE
    if rotation != 180:
        return
    # Same shape as the upright video, so also check the stored (upside-down) pixels are *not* what came out.
    assert _diff(clip.frames, upright[:, ::-1, ::-1]) > 10 * TOLERANCE


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_resize_is_the_displayed_size(upright_mp4: bytes, rotation: int, backend: str) -> None:
    """``resize=(h, w)`` means the displayed height and width, whatever the stored orientation."""
    size = (24, 64)  # not the source aspect either: the scaling itself must happen on the right axes
    cfg = DecodeConfig(num_frames=4, backends=(backend,), resize=size)
    clip = decode_clip(stored_as(rotation), cfg)
    assert clip.frames.shape == (4, *size, 3)
    assert _diff(clip.frames, decode_clip(upright_mp4, cfg).frames) < TOLERANCE


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_precompute_stores_frames_as_displayed(tmp_path, upright: np.ndarray, rotation: int) -> None:
    """The precompute decode step (what the expert and the stored frames see) turns the video too."""
    path = tmp_path / f"rot{rotation}.mp4"
    path.write_bytes(stored_as(rotation))
    records = video_records([str(path)], "train")
    (req,) = decode_requests([{REQ_VIDEO: str(path), REQ_RECORDS: json.dumps(records)}], SamplingConfig(num_frames=4))
    assert req.get(REQ_FRAMES) is not None, req
    clip = clip_of(req)
    assert clip is not None
    assert _diff(clip.frames, upright) < TOLERANCE
