"""Serving benchmark, one run, side by side: batching on vs ``max_batch_size=1``, and Serve's overhead.

    python bench/serve.py [--batch 16] [--requests 24 64 96 128] [--concurrency 1 8 16 32]

Starts a local Ray + Serve on 127.0.0.1 (free port) with an UNTRAINED seeded ``tiny`` student, sends the same
real mp4 (base64 JSON, 16 decoded frames, Set-of-Marks, R4D prompt) at each concurrency level with batching on
(``max_batch_size=--batch``) and off (``max_batch_size=1``, switched in place via ``user_config``), and prints
throughput and p50/p99 latency per level, the throughput ratio per level (target >= 3x at concurrency 16), and
Serve's overhead = client p50 at concurrency 1 (batching off) minus a direct in-process ``VQAEngine.answer`` p50
(target <= 10 ms). Numbers depend on the machine's load: compare the columns of one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from rgpt4d_core.types import Region  # noqa: E402
from rgpt4d_core.video.encode import encode_video  # noqa: E402

OPTIONS = ["left", "right", "towards the camera", "not moving"]


def clip_bytes(frames: int = 48, size: tuple[int, int] = (96, 128), fps: float = 12.0) -> bytes:
    """A small real H.264 mp4 (uint8 RGB noise with a moving square)."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 60, size=(frames, *size, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 30:60, 5 + t : 35 + t] = (230, 40, 40)
    buf = io.BytesIO()
    encode_video(video, fps, buf)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def load(url: str, body: dict[str, Any], n: int, concurrency: int) -> dict[str, Any]:
    """``n`` requests, at most ``concurrency`` in flight; latency in ms, throughput in requests/s."""
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    queue = list(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                r = await client.post(f"{url}/v1/vqa", json=body)
                latencies.append((time.perf_counter() - t0) * 1e3)
                if r.status_code != 200:
                    errors += 1
                else:
                    sizes.append(r.json()["batch_size"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"rps": n / wall, "p50": pct(latencies, 50), "p99": pct(latencies, 99), "errors": errors,
            "mean_batch": statistics.fmean(sizes) if sizes else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size when batching is on")
    parser.add_argument("--wait", type=float, default=0.02, help="batch_wait_timeout_s when batching is on")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--requests", type=int, nargs="+", default=[24, 64, 96, 128], help="per level")
    parser.add_argument("--direct", type=int, default=30, help="direct engine calls for the overhead baseline")
    args = parser.parse_args()
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests needs one count per --concurrency level")

    from ray import serve

    from pipelines._ray import init_ray
    from pipelines.serve import load_job, make_app, start
    from rgpt4d_core.serve.engine import EngineConfig, VQAEngine, VQARequest
    from tests.conftest import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    video = clip_bytes()
    port = free_port()
    job = load_job(overrides=[
        f"engine.checkpoint={tmp / 'ckpt'}", "bootstrap_preset=tiny", "engine.max_new_tokens=4",
        "engine.torch_threads=1", "engine.decode_threads=2", f"server.port={port}", "server.num_cpus=1",
        "server.max_ongoing_requests=64", f"server.max_batch_size={args.batch}",
        f"server.batch_wait_timeout_s={args.wait}", "server.app_name=bench",
    ])
    init_ray(num_cpus=2, object_store_memory=512 * 1024**2)
    url, _ = start(job)
    question = "Where does <obj_1> move?"
    body: dict[str, Any] = {"video": {"data_b64": base64.b64encode(video).decode()}, "question": question,
            "options": OPTIONS, "regions": [{"obj_id": 1, "box": [0.05, 0.3, 0.4, 0.65]}]}
    settings = {"on": {"max_batch_size": args.batch, "batch_wait_timeout_s": args.wait},
                "off": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for mode, user_config in settings.items():
            serve.run(make_app(job, user_config), name=job.server.app_name, route_prefix="/")
            asyncio.run(load(url, body, 8, 4))  # warm-up
            for conc, n in zip(args.concurrency, args.requests, strict=True):
                results[(mode, conc)] = asyncio.run(load(url, body, n, conc))
                r = results[(mode, conc)]
                print(f"  batching {mode:3s} c={conc:2d}: {r['rps']:6.1f} req/s  p50 {r['p50']:7.1f} ms  "
                      f"p99 {r['p99']:7.1f} ms  mean batch {r['mean_batch']:4.1f}  errors {r['errors']}",
                      flush=True)
            if mode == "off":  # client latency at c=1 with batching off vs the in-process engine
                serve_p50 = results[("off", args.concurrency[0])]["p50"]
    finally:
        serve.shutdown()
    engine = VQAEngine(EngineConfig(checkpoint=str(tmp / "ckpt"), max_new_tokens=4, torch_threads=1))
    request = VQARequest(video=video, question=question, options=tuple(OPTIONS),
                         regions=(Region(1, (0.05, 0.3, 0.4, 0.65)),))
    engine.answer([request])
    direct = []
    for _ in range(args.direct):
        t0 = time.perf_counter()
        engine.answer([request])
        direct.append((time.perf_counter() - t0) * 1e3)
    direct_p50 = pct(direct, 50)

    print("\n| concurrency | batching on: req/s | p50 ms | p99 ms | batching off: req/s | p50 ms | p99 ms | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for conc in args.concurrency:
        on, off = results[("on", conc)], results[("off", conc)]
        print(f"| {conc} | {on['rps']:.1f} | {on['p50']:.0f} | {on['p99']:.0f} | {off['rps']:.1f} | "
              f"{off['p50']:.0f} | {off['p99']:.0f} | {on['rps'] / off['rps']:.2f}x |")
    if 16 in args.concurrency:
        ratio = results[("on", 16)]["rps"] / results[("off", 16)]["rps"]
        print(f"\nthroughput ratio at concurrency 16 (max_batch_size={args.batch} vs 1): {ratio:.2f}x (target >= 3x)")
    print(f"Serve overhead at concurrency 1: client p50 {serve_p50:.1f} ms - direct engine p50 {direct_p50:.1f} ms "
          f"= {serve_p50 - direct_p50:.1f} ms (target <= 10 ms)")
    errors = sum(r["errors"] for r in results.values())
    print(f"errors: {errors}")


if __name__ == "__main__":
    main()
