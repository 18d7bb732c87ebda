"""Video decoding on real files written by PyAV: sampling, timestamps, resize, backends, bad inputs, S3, memory.

Every clip's frame ``i`` carries ``i`` as a 6-bit barcode of black/white blocks in its top half (plus a moving
square below), so a test can read from the decoded pixels *which* source frame it got, not only how many.
"""

from __future__ import annotations

import io
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av  # noqa: F401 - import PyAV's FFmpeg before decord's (see rgpt4d_core/video/backends.py)
import cv2
import numpy as np
import pytest

from rgpt4d_core import storage
from rgpt4d_core.video.decode import REASONS, DecodeConfig, VideoDecodeError, abandoned_decodes, decode_clip
from rgpt4d_core.video.encode import encode_video
from rgpt4d_core.video.sampling import NotEnoughFramesError, uniform_indices

N_FRAMES, H, W = 40, 64, 96


BITS = 6


def _frames(n: int = N_FRAMES, h: int = H, w: int = W) -> np.ndarray:
    out = np.full((n, h, w, 3), 128, np.uint8)
    for i in range(n):
        for b in range(BITS):
            out[i, : h // 2, b * w // BITS : (b + 1) * w // BITS] = 255 if (i >> b) & 1 else 0
        y, x = h // 2 + (2 * i) % (h // 2 - 8), (3 * i) % (w - 8)
        out[i, y : y + 8, x : x + 8] = (250, 40, 40)
    return out


def _read_indices(frames: np.ndarray) -> np.ndarray:
    """The source frame index written into each decoded frame (any size: positions are relative)."""
    _, h, w, _ = frames.shape
    centres = [int((b + 0.5) * w / BITS) for b in range(BITS)]
    bits = frames[:, h // 4, centres].mean(axis=-1) > 128
    return (bits * (1 << np.arange(BITS))).sum(axis=1)


def _encoded(codec: str = "libx264", fps: float = 10.0, container: str = "mp4", n: int = N_FRAMES) -> bytes:
    buf = io.BytesIO()
    encode_video(_frames(n), fps, buf, codec=codec, container=container)
    return buf.getvalue()


CLIPS = {  # name -> (codec, container, encoder fps)
    "h264_mp4": ("libx264", "mp4", 10.0),
    "mpeg4_mp4": ("mpeg4", "mp4", 25.0),
    "h264_mkv_ntsc": ("libx264", "matroska", 30000 / 1001),
}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for name, (codec, container, fps) in CLIPS.items():
        path = root / f"{name}.{'mkv' if container == 'matroska' else 'mp4'}"
        path.write_bytes(_encoded(codec, fps, container))
        out[name] = path
    return out


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", list(CLIPS))
def test_decodes_the_uniformly_sampled_frames_with_stream_timestamps(
    clip_files: dict[str, Path], name: str, backend: str
) -> None:
    fps = CLIPS[name][2]
    clip = decode_clip(str(clip_files[name]), DecodeConfig(num_frames=16, backends=(backend,)))
    expected_idx = uniform_indices(N_FRAMES, 16)
    assert clip.frames.shape == (16, H, W, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_array_equal(clip.frame_indices, expected_idx)
    assert clip.frame_indices[0] == 0 and clip.frame_indices[-1] == N_FRAMES - 1
    assert clip.num_source_frames == N_FRAMES
    assert clip.fps == pytest.approx(fps, rel=1e-3)
    np.testing.assert_allclose(clip.timestamps_s, expected_idx / fps, atol=2e-3)
    assert np.all(np.diff(clip.timestamps_s) > 0)
    np.testing.assert_array_equal(_read_indices(clip.frames), expected_idx)
    assert clip.uri == str(clip_files[name])


@pytest.mark.parametrize("size", [(32, 48), (48, 80), (128, 192)])
def test_backends_agree_and_resize_applies(clip_files: dict[str, Path], size: tuple[int, int]) -> None:
    path = str(clip_files["h264_mp4"])
    a = decode_clip(path, DecodeConfig(num_frames=8, resize=size, backends=("decord",)))
    b = decode_clip(path, DecodeConfig(num_frames=8, resize=size, backends=("pyav",)))
    assert a.frames.shape == b.frames.shape == (8, *size, 3)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 8.0  # interpolation differences only
    np.testing.assert_array_equal(_read_indices(a.frames), a.frame_indices)
    np.testing.assert_array_equal(_read_indices(b.frames), a.frame_indices)
    np.testing.assert_allclose(a.timestamps_s, b.timestamps_s, atol=2e-3)


def test_decode_from_bytes_matches_decode_from_path(clip_files: dict[str, Path]) -> None:
    path = clip_files["mpeg4_mp4"]
    from_path = decode_clip(str(path))
    from_bytes = decode_clip(path.read_bytes())
    assert from_bytes.uri == "<bytes>"
    np.testing.assert_array_equal(from_bytes.frames, from_path.frames)
    np.testing.assert_array_equal(from_bytes.timestamps_s, from_path.timestamps_s)


def test_decode_from_s3_uri(clip_files: dict[str, Path], s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "videos", "clip.mp4")
    storage.write_bytes(uri, clip_files["h264_mp4"].read_bytes())
    clip = decode_clip(uri, DecodeConfig(num_frames=4))
    local = decode_clip(str(clip_files["h264_mp4"]), DecodeConfig(num_frames=4))
    assert clip.uri == uri
    np.testing.assert_array_equal(clip.frames, local.frames)
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(storage.join(s3_bucket, "videos", "nope.mp4"))
    assert info.value.reason == "missing" and info.value.uri.endswith("nope.mp4")


def test_too_few_frames_unless_repeats_allowed(clip_files: dict[str, Path]) -> None:
    path = str(clip_files["h264_mp4"])
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(path, DecodeConfig(num_frames=N_FRAMES + 1))
    assert info.value.reason == "too_few_frames"
    clip = decode_clip(path, DecodeConfig(num_frames=64, allow_repeats=True))
    assert clip.frames.shape[0] == 64 and len(np.unique(clip.frame_indices)) == N_FRAMES
    np.testing.assert_array_equal(_read_indices(clip.frames), clip.frame_indices)


def test_uniform_indices_matches_vila_rounding() -> None:
    np.testing.assert_array_equal(uniform_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(uniform_indices(5, 5), np.arange(5))
    np.testing.assert_array_equal(uniform_indices(3, 5, allow_repeats=True), [0, 0, 1, 2, 2])
    with pytest.raises(NotEnoughFramesError, match="3 frames, fewer than the 5"):
        uniform_indices(3, 5)


# ------------------------------------------------------------------------------------------------ bad inputs


def _audio_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _png() -> bytes:
    ok, data = cv2.imencode(".png", _frames(1)[0])
    assert ok
    return data.tobytes()


def _overwrite_middle(data: bytes) -> bytes:
    """The first 300 bytes kept, everything after replaced by noise (headers gone)."""
    rng = np.random.default_rng(0)
    return data[:300] + rng.integers(0, 256, len(data) - 300, dtype=np.uint8).tobytes()


H264 = _encoded()
MKV = _encoded(container="matroska")
# name -> (make the source from a tmp dir, config, expected reason)
BROKEN: dict[str, tuple[Callable[[Path], str | bytes], DecodeConfig, str]] = {
    "missing_file": (lambda d: str(d / "does-not-exist.mp4"), DecodeConfig(), "missing"),
    "directory": (lambda d: str(d), DecodeConfig(), "missing"),
    "zero_bytes_file": (lambda d: _write(d, b""), DecodeConfig(), "empty"),
    "zero_bytes": (lambda d: b"", DecodeConfig(), "empty"),
    "truncated_mp4": (lambda d: _write(d, H264[: len(H264) // 2]), DecodeConfig(), "truncated"),
    "truncated_mkv_stream": (lambda d: MKV[: len(MKV) // 2], DecodeConfig(), "truncated"),
    "headers_then_noise": (lambda d: _overwrite_middle(H264), DecodeConfig(), "truncated"),
    "random_garbage": (lambda d: np.random.default_rng(1).bytes(20_000), DecodeConfig(), "corrupt"),
    "text_file": (lambda d: _write(d, b"this is not a video\n" * 50), DecodeConfig(), "corrupt"),
    "audio_only": (lambda d: _audio_only_mp4(), DecodeConfig(), "no_video_stream"),
    "still_image": (lambda d: _png(), DecodeConfig(), "too_few_frames"),
    "codec_not_allowed": (lambda d: _encoded("mpeg4"), DecodeConfig(allowed_codecs=("h264",)), "unsupported_codec"),
    "file_too_large": (lambda d: _write(d, H264), DecodeConfig(max_file_bytes=len(H264) - 1), "too_large"),
    "bytes_too_large": (lambda d: H264, DecodeConfig(max_file_bytes=1000), "too_large"),
    "frame_too_large": (lambda d: H264, DecodeConfig(max_pixels_per_frame=H * W - 1), "too_large"),
    "too_long_duration": (lambda d: H264, DecodeConfig(max_duration_s=3.0), "too_long"),
    "too_many_frames": (lambda d: H264, DecodeConfig(max_source_frames=N_FRAMES - 1), "too_long"),
    "fewer_frames_than_asked": (lambda d: H264, DecodeConfig(num_frames=N_FRAMES + 5), "too_few_frames"),
    "unsupported_scheme": (lambda d: "http://127.0.0.1:9/x.mp4", DecodeConfig(), "bad_source"),
}


def _write(directory: Path, data: bytes) -> str:
    path = directory / "input.bin"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_inputs_raise_one_error_type_with_reason_and_uri(name: str, tmp_path: Path) -> None:
    make, cfg, reason = BROKEN[name]
    source = make(tmp_path)
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(source, cfg)
    err = info.value
    assert err.reason == reason, f"{name}: got [{err.reason}] {err.detail}"
    assert err.uri == (source if isinstance(source, str) else "<bytes>")
    assert err.reason in REASONS and err.uri in str(err)


def test_timeout_returns_promptly_and_counts_the_abandoned_thread(clip_files: dict[str, Path]) -> None:
    before = abandoned_decodes()
    with pytest.raises(VideoDecodeError) as info:
        decode_clip(str(clip_files["h264_mp4"]), DecodeConfig(timeout_s=1e-6))
    assert info.value.reason == "timeout"
    assert abandoned_decodes() == before + 1
    clip = decode_clip(str(clip_files["h264_mp4"]), DecodeConfig(num_frames=4))  # a fresh worker serves it
    np.testing.assert_array_equal(_read_indices(clip.frames), clip.frame_indices)


def test_concurrent_callers_get_correct_clips_and_threads_do_not_accumulate(clip_files: dict[str, Path]) -> None:
    paths = [str(p) for p in clip_files.values()]
    expected = {p: decode_clip(p, DecodeConfig(num_frames=5)).frames for p in paths}

    def work(i: int) -> bool:
        p = paths[i % len(paths)]
        return bool(np.array_equal(decode_clip(p, DecodeConfig(num_frames=5)).frames, expected[p]))

    threads_before = threading.active_count()
    for _ in range(3):  # each pool's threads end, and their decode workers with them
        with ThreadPoolExecutor(max_workers=3) as pool:
            assert all(pool.map(work, range(12)))
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # wait for finished workers to exit (not a timing assertion)
    assert threading.active_count() <= threads_before + 1


def test_error_survives_pickling_for_ray_workers() -> None:
    err = VideoDecodeError("truncated", "s3://b/k.mp4", "stream ended")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.uri, back.detail, str(back)) == (err.reason, err.uri, err.detail, str(err))


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_hundreds_of_decodes_do_not_grow_memory(tmp_path: Path) -> None:
    good = tmp_path / "small.mp4"
    encode_video(_frames(24, 64, 64), 12.0, good)
    good_bytes = good.read_bytes()
    bad = good_bytes[: len(good_bytes) // 2]
    cfg_decord = DecodeConfig(num_frames=8)
    cfg_pyav = DecodeConfig(num_frames=8, backends=("pyav",))

    def one_round(i: int) -> None:
        decode_clip(str(good) if i % 2 else good_bytes, cfg_pyav if i % 3 == 0 else cfg_decord)
        if i % 5 == 0:
            with pytest.raises(VideoDecodeError):
                decode_clip(bad)

    for i in range(40):  # warm up allocator pools, codec tables, thread stacks
        one_round(i)
    start = _rss_bytes()
    for i in range(300):
        one_round(i)
    grown = _rss_bytes() - start
    print(f"RSS growth over 300 decodes: {grown / 1024**2:.2f} MiB")
    assert grown < 24 * 1024**2, f"RSS grew by {grown / 1024**2:.1f} MiB over 300 decodes"
