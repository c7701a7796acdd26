"""What the VLMService does with concurrent requests, against a local Gemini endpoint.

A FakeVLMServer on 127.0.0.1 answers Gemini's generateContent route after an artificial
delay (the backend's latency); the real google-genai SDK talks to it from a VLMService
Ray actor, and 8 requests arrive at once, as from 8 workers:

- same:      8 x the same (task, first frame)  -> one backend call, 7 merged
- repeat:    the same 8 again                  -> 8 cache hits, no call
- distinct:  8 different frames                -> 8 calls, sent concurrently (~1 latency)
- serial:    8 different frames, concurrency 1 -> 8 calls one after another (~8 latencies)

    python benchmarks/vlm_batching.py [--delay 0.5] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import ray
from rich.console import Console
from rich.table import Table

from sarl_dist.runtime.vlm_service import VLMService
from sarl_dist.testing import FakeReply, FakeVLMServer, scripted, tiny_config

TASK = "put both the alphabet soup and the tomato sauce in the basket"
WORKERS = 8
ANSWER = {"prompts": ["pick up the alphabet soup and put it in the basket"]}


def frame(value: int) -> np.ndarray:
    return np.full((128, 128, 3), value, np.uint8)


def scenario(server: FakeVLMServer, rounds: list[tuple[str, list[np.ndarray]]], *overrides):
    """Run each round's requests at once on one new VLMService actor; one row per round.

    Latency percentiles are the actor's meters: every backend call it has made so far."""
    cfg = tiny_config("vlm.backend=gemini", f"vlm.gemini.base_url={server.url}", *overrides)
    actor = ray.remote(VLMService).remote(cfg, TASK)
    rows = []
    for name, images in rounds:
        before, calls_before = ray.get(actor.stats.remote()), len(server.calls)
        start = time.perf_counter()
        ray.get([actor.propose.remote(image) for image in images])
        wall = time.perf_counter() - start
        after = ray.get(actor.stats.remote())
        rows.append(
            {
                "scenario": name,
                "requests": len(images),
                "backend_calls": len(server.calls) - calls_before,
                "merged": after["merged"] - before["merged"],
                "cache_hits": after["cache_hits"] - before["cache_hits"],
                "wall_s": round(wall, 3),
                "latency_ms_p50": round(after["latency_ms_p50"], 1),
                "latency_ms_p95": round(after["latency_ms_p95"], 1),
                "concurrency": cfg.vlm.concurrency,
            }
        )
    ray.kill(actor)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.5, help="Backend latency, seconds.")
    parser.add_argument("--out", help="Also write the JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("GEMINI_API_KEY", "benchmark-key")  # the fake server accepts any
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    distinct = [frame(v) for v in range(WORKERS)]
    with FakeVLMServer(scripted(FakeReply.json(ANSWER, delay=args.delay))) as server:
        rows = scenario(
            server,
            [("same", [frame(100)] * WORKERS), ("repeat", [frame(100)] * WORKERS)],
        )
        rows += scenario(server, [("distinct", distinct)])
        rows += scenario(
            server, [("serial", [frame(v + 50) for v in range(WORKERS)])], "vlm.concurrency=1"
        )
    ray.shutdown()
    result = {"backend_delay_s": args.delay, "workers": WORKERS, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    table = Table(title=f"VLMService, {WORKERS} requests at once, backend latency {args.delay} s")
    columns = ("requests", "backend_calls", "merged", "cache_hits", "wall_s")
    for header in ("scenario", "requests", "calls", "merged", "hits", "wall s"):
        table.add_column(header, justify="right")
    table.add_column("latency p50 / p95 ms", justify="right")
    for row in rows:
        table.add_row(
            row["scenario"],
            *(str(row[c]) for c in columns),
            f"{row['latency_ms_p50']:.0f} / {row['latency_ms_p95']:.0f}",
        )
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
