"""Prediction latency and throughput of `lifelong serve`, with and without an update training beside it.

    python benchmarks/serve_load.py                       # the digits MLP, 8 clients, 20 s per phase
    python benchmarks/serve_load.py --model DIR --clients 16 --seconds 30

Starts the server on a free port of 127.0.0.1 (SQLite store in a temporary folder), sends feedback,
then runs concurrent clients (asyncio, keep-alive connections, one input per request) in two phases
of a bounded time each: while no update runs, and while an update trains in its worker process
(the phase ends early if the update finishes). Reports requests per second, p50/p90/p99/max latency
and errors per phase, and the ratio of p99 during an update to p99 without one (target <= 2, and 0
errors). Traffic goes only to 127.0.0.1. Writes results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from service_util import Server, add_key, digits_parts, examples, model_template  # noqa: E402

from lifelong.reporting import environment, write_json  # noqa: E402
from lifelong.service.database import default_url  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def phase(url: str, key: str, inputs: list[Any], clients: int, seconds: float,
                update_id: int | None = None) -> dict[str, Any]:
    """`clients` concurrent loops of POST /predict for `seconds` (or until update `update_id` ends)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    versions: set[int] = set()
    state = {"update": "none" if update_id is None else "queued"}
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()

    def going() -> bool:
        return time.perf_counter() < stop_at and state["update"] in ("none", "queued", "training", "evaluating")

    async def watch() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:
            while update_id is not None and going():
                state["update"] = (await http.get(f"/updates/{update_id}")).json()["status"]
                await asyncio.sleep(0.2)

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:
            while going():
                t0 = time.perf_counter()
                try:
                    reply = await http.post("/predict", json={"inputs": [rng.choice(inputs)]})
                    if reply.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                        versions.add(reply.json()["version"])
                    else:
                        errors[str(reply.status_code)] = errors.get(str(reply.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    await asyncio.gather(watch(), *(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    ms = [v * 1000 for v in latencies]
    return {"seconds": round(elapsed, 2), "requests": len(ms), "errors": sum(errors.values()), "error_kinds": errors,
            "throughput_rps": round(len(ms) / elapsed, 1), "p50_ms": round(percentile(ms, 50), 2),
            "p90_ms": round(percentile(ms, 90), 2), "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2), "versions": sorted(versions),
            "update_status_at_end": state["update"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved array model (default: the test suite's digits MLP)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--update-epochs", type=int, default=600, help="long enough to outlast a phase")
    parser.add_argument("--out", default=str(ROOT / "results" / "serve_load.json"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lifelong-serve-load-"))
    try:
        model = work / "model"
        shutil.copytree(args.model or model_template(), model)
        key = add_key(default_url(model), "maintainer")
        parts = digits_parts()
        inputs = parts["test"].x.tolist()
        feedback = examples(parts["more"]) + examples(parts["blank"], "blank", count=200)
        with Server(model, None, "--update-epochs", str(args.update_epochs), log=work / "server.log") as server, \
                server.client(key) as admin:
            assert admin.post("/feedback", json={"examples": feedback}).status_code == 202
            asyncio.run(phase(server.url, key, inputs, args.clients, 3.0))  # warm-up, not reported
            idle = asyncio.run(phase(server.url, key, inputs, args.clients, args.seconds))
            update_id = admin.post("/updates").json()["update_id"]
            during = asyncio.run(phase(server.url, key, inputs, args.clients, args.seconds, update_id))
            deadline = time.monotonic() + 900
            while (outcome := admin.get(f"/updates/{update_id}").json()["status"]) in (
                    "queued", "training", "evaluating") and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = during["p99_ms"] / idle["p99_ms"]
    result = {"config": vars(args), "model": args.model or "digits MLP 64-128-8 (tests/service_util.py)",
              "idle": idle, "during_update": during, "update_outcome": outcome, "p99_ratio": round(ratio, 2),
              "target": "p99 during an update <= 2x p99 without one, 0 errors",
              "target_met": ratio <= 2 and idle["errors"] == during["errors"] == 0, "environment": environment()}
    write_json(args.out, result)
    print(f"{'phase':<16} {'seconds':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} errors")
    for name, r in (("no update", idle), ("update training", during)):
        print(f"{name:<16} {r['seconds']:>7} {r['requests']:>8} {r['throughput_rps']:>7} {r['p50_ms']:>7} "
              f"{r['p99_ms']:>7} {r['max_ms']:>7} {r['errors']}")
    print(f"\np99 during an update / without: {ratio:.2f} (target <= 2); update {outcome}; "
          f"{'target met' if result['target_met'] else 'TARGET MISSED'}\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
