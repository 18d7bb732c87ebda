"""Serving benchmark, one run, side by side: batching on vs ``max_batch_size=1``, and Serve's overhead per transport.

    python bench/serve.py [--batch 16] [--concurrency 1 8 16 32] [--requests 24 64 96 128] [--rounds 30]
    python bench/serve.py --classic-serve   # the same with Serve's default threads (server.lean_request_path=false)
    python bench/serve.py --no-direct-ingress   # only through the proxy (server.direct_ingress=false)

Starts a local Ray + Serve on 127.0.0.1 (free port) with an UNTRAINED seeded ``tiny`` student and sends the same
real mp4 (base64 JSON; 16 decoded frames, Set-of-Marks, R4D prompt, greedy generation, shared extractor) at each
concurrency level with batching on (``max_batch_size=--batch``) and off (``max_batch_size=1``), alternating
``--alternations`` times (the replica's ``user_config`` changed in place) so that both see the same machine
load. Prints throughput and p50/p99 latency per level, the throughput ratio at concurrency 16 (on vs off), the
batching gain at concurrency 16 vs 1 (batching on), and the model-only batching gain of the engine (one batched
run vs single runs, same inputs).

Serve's overhead is measured first, at concurrency 1 with batching ON (the deployed setting), for each entry point
(through Serve's HTTP proxy, and straight to the replica's own port with ``server.direct_ingress``, on by default
here; the batching tables use the replica's port then) and each way of sending the video (JSON base64, multipart
upload, path under the media root), interleaved: per request, client
latency minus the engine's own decode + generate time for that request (the replica's ``Server-Timing`` header),
split into outside the handler (proxy, Ray hops, HTTP) and inside it (body parse, thread hops, batch queue); and
each HTTP call paired with a direct in-process ``VQAEngine.answer`` on the same source. Every figure carries the
1-minute load average when it was taken: compare the columns of one run, not across runs.

Smoke run (checks that it runs; its figures mean nothing)::

    python bench/serve.py --batch 4 --concurrency 1 16 --requests 2 16 --rounds 2 --alternations 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from pipelines._serve_http import server_timing  # noqa: E402
from rgpt4d_core.types import Region  # noqa: E402
from rgpt4d_core.video.encode import encode_video  # noqa: E402

OPTIONS = ["left", "right", "towards the camera", "not moving"]


def clip_bytes(frames: int = 16, size: tuple[int, int] = (64, 64), fps: float = 8.0) -> bytes:
    """A small real H.264 mp4 (uint8 RGB noise with a moving square)."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 60, size=(frames, *size, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 20:40, 2 + t : 22 + t] = (230, 40, 40)
    buf = io.BytesIO()
    encode_video(video, fps, buf)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def loadavg() -> str:
    """``"load 1.23"``: the 1-minute load average now (processes running or waiting for a CPU)."""
    return f"load {os.getloadavg()[0]:.2f}"


async def load(url: str, body: dict[str, Any], n: int, concurrency: int) -> dict[str, Any]:
    """``n`` requests, at most ``concurrency`` in flight: latencies (ms), batch sizes, errors, wall time (s)."""
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
    return {"latencies": latencies, "sizes": sizes, "errors": errors, "wall": wall}


def summary(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput (requests/s over the chunks' summed wall time), p50/p99 latency (ms), errors, mean batch size."""
    latencies = [x for c in chunks for x in c["latencies"]]
    sizes = [x for c in chunks for x in c["sizes"]]
    return {"rps": len(latencies) / sum(c["wall"] for c in chunks), "p50": pct(latencies, 50),
            "p99": pct(latencies, 99), "errors": sum(c["errors"] for c in chunks),
            "mean_batch": statistics.fmean(sizes) if sizes else 0.0}


def transports(body: dict[str, Any], video: bytes, path: str) -> dict[str, dict[str, Any]]:
    """``httpx.post`` keyword arguments of the same question, the video sent three ways."""
    fields = {k: v for k, v in body.items() if k != "video"}
    return {
        "json base64": {"json": {**fields, "video": {"data_b64": base64.b64encode(video).decode()}}},
        "multipart": {"data": {"request": json.dumps(fields)}, "files": {"video": ("clip.mp4", video)}},
        "media-root path": {"json": {**fields, "video": {"path": path}}},
    }


def overhead(calls: dict[str, tuple[str, dict[str, Any]]], engine: Any, direct: dict[str, Any],
             rounds: int) -> dict[str, dict[str, float]]:
    """Per ``name: (base url, httpx.post keyword arguments)``, interleaved (same machine load): an HTTP call at
    concurrency 1, then a direct ``engine.answer`` on the same source (``direct[name]``, a VQARequest).

    Per call, from the response's ``Server-Timing`` (``pipelines/_serve_http.py``): ``serve`` = client latency minus
    the engine's own time for that request (decode + generate, as the replica measured them): everything Serve and
    the HTTP layer add; ``outside`` = client minus the replica's handler time (proxy, Ray hops, HTTP, routing,
    serialisation); ``inside`` = handler minus engine (body read and parse, thread hops, batch queue), split into
    ``read`` (body read and parsed), ``prep_hop`` (prepare minus decode: the hop to its thread, Set-of-Marks and
    prompt) and ``batch_hop`` (batch minus generate: queue and the hop into ``engine.run``). ``paired`` =
    client minus the direct engine call made right after it. p50 and p90 in ms; the load average at each call."""
    keys = ("client", "direct", "serve", "outside", "inside", "read", "prep_hop", "batch_hop", "paired", "load")
    samples: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in calls}
    with httpx.Client(timeout=300) as client:
        for _ in range(rounds):
            for name, (url, kwargs) in calls.items():
                t0 = time.perf_counter()
                r = client.post(f"{url}/v1/vqa", **kwargs)
                latency = (time.perf_counter() - t0) * 1e3
                r.raise_for_status()
                t0 = time.perf_counter()
                engine.answer([direct[name]])
                direct_ms = (time.perf_counter() - t0) * 1e3
                stages = server_timing(r.headers["server-timing"])
                engine_ms = stages["decode"] + stages["generate"]
                s = samples[name]
                for key, value in (("client", latency), ("direct", direct_ms), ("serve", latency - engine_ms),
                                   ("outside", latency - stages["handler"]),
                                   ("inside", stages["handler"] - engine_ms), ("read", stages["read"]),
                                   ("prep_hop", stages["prepare"] - stages["decode"]),
                                   ("batch_hop", stages["batch"] - stages["generate"]), ("paired", latency - direct_ms),
                                   ("load", os.getloadavg()[0])):
                    s[key].append(value)
        sizes = {n: len(client.build_request("POST", f"{u}/v1/vqa", **kw).read()) for n, (u, kw) in calls.items()}
    out = {}
    for name, s in samples.items():
        out[name] = {f"{k}_p{q}": pct(v, q) for k, v in s.items() for q in (50, 90)}
        out[name]["bytes"] = float(sizes[name])
    return out


def engine_ceiling(engine: Any, request: Any, batch: int) -> float:
    """Model-only batching gain: time of ``batch`` single-request runs / one run of ``batch`` (same inputs)."""
    prepared = [engine.prepare(request) for _ in range(batch)]
    engine.run(prepared)
    t0 = time.perf_counter()
    for p in prepared:
        engine.run([p])
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.run(prepared)
    return alone / (time.perf_counter() - t0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size when batching is on")
    parser.add_argument("--wait", type=float, default=0.02, help="batch_wait_timeout_s when batching is on")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--requests", type=int, nargs="+", default=[24, 64, 96, 128], help="per level")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds for the overhead")
    parser.add_argument("--alternations", type=int, default=4, help="on/off alternations per concurrency level")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--no-direct-ingress", dest="direct_ingress", action="store_false",
                        help="server.direct_ingress=false: only the proxy (the overhead table then has no replica rows)")
    parser.add_argument("--classic-serve", action="store_true",
                        help="server.lean_request_path=false: Serve's default threads (compare in a second run)")
    args = parser.parse_args()
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests needs one count per --concurrency level")
    return args


def main() -> None:
    args = parse_args()
    from ray import serve

    from pipelines._ray import init_ray
    from pipelines._serve_job import serve_process_env
    from pipelines.serve import load_job, replica_urls, start
    from rgpt4d_core.serve.engine import EngineConfig, VQAEngine, VQARequest
    from tests.conftest import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    video = clip_bytes()
    (tmp / "media").mkdir()
    (tmp / "media" / "clip.mp4").write_bytes(video)
    tokens = args.max_new_tokens
    job = load_job(overrides=[
        f"engine.checkpoint={tmp / 'ckpt'}", "bootstrap_preset=tiny", f"engine.max_new_tokens={tokens}",
        "engine.torch_threads=1", "engine.decode_threads=2", f"server.port={free_port()}", "server.num_cpus=1",
        "server.max_ongoing_requests=64", f"server.max_batch_size={args.batch}",
        f"server.batch_wait_timeout_s={args.wait}", "server.app_name=bench", f"security.media_root={tmp / 'media'}",
        f"server.lean_request_path={not args.classic_serve}", f"server.direct_ingress={args.direct_ingress}",
    ])
    with serve_process_env(job.server):  # as `python pipelines/serve.py` does: the proxy gets it too
        init_ray(num_cpus=2, object_store_memory=512 * 1024**2)
    settings = {"on": {"max_batch_size": args.batch, "batch_wait_timeout_s": args.wait},
                "off": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}}
    proxy_url, handle = start(job, settings["on"])
    replicas = replica_urls(job.server)  # direct ingress: the replica's own port (empty with --no-direct-ingress)
    entries = {"via proxy": proxy_url, **({"direct to replica": replicas[0]} if replicas else {})}
    url = replicas[0] if replicas else proxy_url  # the batching tables: the fastest entry point
    question = "Where does <obj_1> move?"
    body: dict[str, Any] = {"video": {"data_b64": base64.b64encode(video).decode()}, "question": question,
                            "options": OPTIONS, "regions": [{"obj_id": 1, "box": [0.05, 0.3, 0.4, 0.65]}]}
    engine = VQAEngine(EngineConfig(checkpoint=str(tmp / "ckpt"), max_new_tokens=tokens, torch_threads=1))
    request = VQARequest(video=video, question=question, options=tuple(OPTIONS),
                         regions=(Region(1, (0.05, 0.3, 0.4, 0.65)),))
    sources = {"json base64": request, "multipart": request,
               "media-root path": dataclasses.replace(request, video=str(tmp / "media" / "clip.mp4"))}
    calls = {f"{entry}, {name}": (base, kwargs) for entry, base in entries.items()
             for name, kwargs in transports(body, video, "clip.mp4").items()}  # fmt: skip
    direct = {key: sources[key.split(", ", 1)[1]] for key in calls}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        asyncio.run(load(url, body, 8, 4))  # warm-up
        over = overhead(calls, engine, direct, args.rounds)  # batching on
        for conc, n in zip(args.concurrency, args.requests, strict=True):
            chunks: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
            for _ in range(args.alternations):  # on and off alternate, so both see the same machine load
                for mode, user_config in settings.items():
                    handle.reconfigure.remote(user_config).result()  # in place, as `serve deploy` does
                    chunks[mode].append(asyncio.run(load(url, body, max(1, n // args.alternations), conc)))
            for mode in settings:
                results[(mode, conc)] = r = {**summary(chunks[mode]), "load": loadavg()}
                print(f"  batching {mode:3s} c={conc:2d}: {r['rps']:6.1f} req/s  p50 {r['p50']:7.1f} ms  "
                      f"p99 {r['p99']:7.1f} ms  mean batch {r['mean_batch']:4.1f}  errors {r['errors']}  "
                      f"({r['load']})", flush=True)
    finally:
        serve.shutdown()
    ceiling = engine_ceiling(engine, request, args.batch)
    report(args, results, ceiling, loadavg())
    report_overhead(args, over)


def report(args: argparse.Namespace, results: dict[tuple[str, int], dict[str, Any]], ceiling: float,
           ceiling_load: str) -> None:
    """The batching tables (each figure with the load average when it was measured)."""
    print(f"\ntiny student, 16 frames 64x64 + SoM image, max_new_tokens={args.max_new_tokens}, 1 replica, "
          f"torch threads 1, lean_request_path={not args.classic_serve}")
    print("| concurrency | batching on: req/s | p50 ms | p99 ms | mean batch | batching off: req/s | p50 ms | "
          "p99 ms | throughput ratio | load avg (on / off) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for conc in args.concurrency:
        on, off = results[("on", conc)], results[("off", conc)]
        print(f"| {conc} | {on['rps']:.1f} | {on['p50']:.0f} | {on['p99']:.0f} | {on['mean_batch']:.1f} | "
              f"{off['rps']:.1f} | {off['p50']:.0f} | {off['p99']:.0f} | {on['rps'] / off['rps']:.2f}x | "
              f"{on['load']} / {off['load']} |")
    if 16 in args.concurrency:
        on16, off16 = results[("on", 16)], results[("off", 16)]
        print(f"\nthroughput ratio at concurrency 16, max_batch_size={args.batch} vs 1: "
              f"{on16['rps'] / off16['rps']:.2f}x ({on16['load']} / {off16['load']})")
        if 1 in args.concurrency:
            on1 = results[("on", 1)]
            print(f"batching gain, concurrency 16 vs 1 (batching on): {on16['rps'] / on1['rps']:.2f}x "
                  f"({on16['load']} / {on1['load']})")
    print(f"engine alone, {args.batch} requests: one batched run vs {args.batch} single runs: {ceiling:.2f}x faster "
          f"({ceiling_load})")
    print(f"errors: {sum(r['errors'] for r in results.values())}")


def report_overhead(args: argparse.Namespace, over: dict[str, dict[str, float]]) -> None:
    """The overhead table: one row per transport, p50 / p90 in ms, the median load average of its calls."""
    print(f"\nServe overhead at concurrency 1, batching on (max_batch_size={args.batch}, batch_wait_timeout_s="
          f"{args.wait}), {args.rounds} interleaved rounds; Serve overhead = client latency minus the engine's own "
          "time for the same request (decode + generate, from its Server-Timing header), target p50 <= 10 ms:")
    print("| video sent as | body bytes | client ms p50 / p90 | Serve overhead ms p50 / p90 | outside handler ms p50 | "
          "inside handler ms p50 (read / prepare hop / batch hop) | client minus direct engine call ms p50 / p90 | "
          "load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, o in over.items():
        print(f"| {name} | {o['bytes']:.0f} | {o['client_p50']:.1f} / {o['client_p90']:.1f} | "
              f"{o['serve_p50']:.1f} / {o['serve_p90']:.1f} | {o['outside_p50']:.1f} | {o['inside_p50']:.1f} ({o['read_p50']:.1f} / "
              f"{o['prep_hop_p50']:.1f} / {o['batch_hop_p50']:.1f}) | "
              f"{o['paired_p50']:.1f} / {o['paired_p90']:.1f} | load {o['load_p50']:.2f} |")


if __name__ == "__main__":
    main()
