"""Batched VLA serving: 8 concurrent websocket clients (`--clients`) against one policy
server, with batching (vla.max_batch = the clients) and one request at a time
(max_batch=1), same policy, same run.

The policy is the neural stand-in (sarl_dist/vla/neural.py: a wide bfloat16 network over
the images, state and prompt, random weights), whose batch-1 forward is bound by reading
its weights, as a large VLA's is. Each client is openpi's own WebsocketClientPolicy on a
thread of this process, sending its own LIBERO-shaped observation, one request after the
other. The two servers take turns, `--rounds` times `--seconds` each, so a shared machine's
changing load falls on both alike. The forward pass alone (8 batch-1 calls vs one batch
of 8) is measured first, in the same run, so the serving figure can be read against it.

    python benchmarks/vla_batching.py [--seconds 5] [--rounds 4] [--clients 8] [--out bench.json]

`speedup` is the batched server's throughput over the other's, all rounds together;
`round_speedups` are the rounds' own (each pair of turns side by side in time), to show
how much the machine's load moved the figure.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from sarl_dist.config import VLAConfig
from sarl_dist.report.bench import emit
from sarl_dist.vla.neural import NeuralStandIn, example
from sarl_dist.vla.server import PolicyServer


def forward_ratio(policy: NeuralStandIn, clients: int, repeats: int = 5) -> dict:
    """The policy alone: one observation per client as that many calls, and as one batch."""
    batch = [example(i) for i in range(clients)]
    policy.infer_batch(batch), policy.infer(batch[0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for obs in batch:
            policy.infer(obs)
    one_by_one = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        policy.infer_batch(batch)
    batched = (time.perf_counter() - start) / repeats
    return {
        f"forward_{clients}x1_ms": round(1e3 * one_by_one, 1),
        f"forward_1x{clients}_ms": round(1e3 * batched, 1),
        "forward_ratio": round(one_by_one / batched, 2),
    }


def serve(
    policy: NeuralStandIn, clients: int, max_batch: int, wait_ms: float, seconds: float
) -> dict:
    """`clients` clients, each asking as fast as its replies come, for `seconds`: the
    wall time and every reply's server_timing."""
    server = PolicyServer(policy, port=0, max_batch=max_batch, batch_wait_ms=wait_ms)
    server.start_background()
    policies = [WebsocketClientPolicy("127.0.0.1", server.port) for _ in range(clients)]
    for i, client in enumerate(policies):
        client.infer(example(i))  # connected and warm
    timings: list[list[dict]] = [[] for _ in policies]
    go, stop_at = threading.Barrier(clients + 1), [0.0]

    def run(i: int) -> None:
        obs = example(i)
        go.wait()
        while time.monotonic() < stop_at[0]:
            timings[i].append(policies[i].infer(obs)["server_timing"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    stop_at[0] = start + seconds
    go.wait()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    server.stop()
    return {"wall": wall, "timings": timings}


def row(max_batch: int, rounds: list[dict]) -> dict:
    """One server's figures over all its rounds."""
    wall = sum(r["wall"] for r in rounds)
    served = [t for r in rounds for per_client in r["timings"] for t in per_client]

    def mean(key: str) -> float:
        return round(float(np.mean([t[key] for t in served])), 1)

    return {
        "server": f"max_batch={max_batch}",
        "requests": len(served),
        "requests_per_s": round(len(served) / wall, 1),
        "batch_size_mean": round(float(np.mean([t["batch_size"] for t in served])), 2),
        "queue_ms_mean": mean("queue_ms"),
        "compute_ms_mean": mean("infer_ms"),
        "slowest_client_requests": min(
            sum(len(r["timings"][i]) for r in rounds) for i in range(len(rounds[0]["timings"]))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Per server and round.")
    parser.add_argument("--rounds", type=int, default=4, help="Turns each server takes.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients.")
    parser.add_argument("--width", type=int, default=2048, help="Neural stand-in width.")
    parser.add_argument("--blocks", type=int, default=8, help="Neural stand-in blocks.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the policy.")
    parser.add_argument("--device", default="cpu", help="Where the policy runs (cpu, cuda).")
    parser.add_argument(
        "--wait-ms", type=float, default=VLAConfig().batch_wait_ms, help="vla.batch_wait_ms."
    )
    parser.add_argument("--out", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    logging.getLogger("websockets").setLevel(logging.WARNING)  # not a line per connection
    policy = NeuralStandIn(
        width=args.width, blocks=args.blocks, threads=args.threads, device=args.device
    )
    clients = args.clients
    forward = forward_ratio(policy, clients)
    turns: dict[int, list[dict]] = {clients: [], 1: []}
    for _ in range(args.rounds):
        for max_batch, done in turns.items():
            done.append(serve(policy, clients, max_batch, args.wait_ms, args.seconds))
    rows = [row(max_batch, done) for max_batch, done in turns.items()]
    speedup = rows[0]["requests_per_s"] / rows[1]["requests_per_s"]

    def throughput(turn: dict) -> float:
        return sum(map(len, turn["timings"])) / turn["wall"]

    round_speedups = [
        round(throughput(b) / throughput(s), 2)
        for b, s in zip(turns[clients], turns[1], strict=True)
    ]
    result = {
        "speedup": round(speedup, 2),
        "round_speedups": round_speedups,
        "clients": clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "batch_wait_ms": args.wait_ms,
        "policy": {
            "width": args.width,
            "blocks": args.blocks,
            "torch_threads": args.threads,
            "device": args.device,
        },
        **forward,
        "rows": rows,
    }
    emit(
        f"{clients} websocket clients, one policy server: speedup {speedup:.2f}",
        rows,
        args.out,
        result,
    )


if __name__ == "__main__":
    main()
