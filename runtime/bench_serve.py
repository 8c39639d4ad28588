"""``tether bench serve``: a bounded loopback load test of the OpenAI-compatible HTTP server.

    tether bench serve --clients 64 --seconds 60 --json

Starts the server in this process on 127.0.0.1 (a free port) over an
in-process engine (the default model unless ``--model``), then runs
``--clients`` concurrent clients for ``--seconds``: each sends small streamed
chat requests (``--max-tokens`` tokens, no program id) one after another, and
stops starting new ones at the deadline; requests in flight then finish. A
prober meanwhile times ``GET /health``. Reported: requests, errors (with a few
samples), throughput, latency and time to first token (p50/p99, measured by
the clients: the server sends its first event once the first token is out),
``/health`` latency under load, the engine's stats afterwards and whether
every KV block is free again (``kv_blocks_used`` minus pinned blocks is 0;
blocks that only keep cached prefixes are free), and the machine (CPU model
from /proc/cpuinfo). Traffic goes to 127.0.0.1 only, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx

from tether.engine import Engine, EngineConfig
from tether.engine.cpu_tuning import cpu_model
from tether.runtime.client import LLMClient, LocalClient
from tether.runtime.server import create_app


@contextlib.contextmanager
def running_server(app: Any, host: str = "127.0.0.1", start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port of ``host``; yields its base URL.

    Example::

        with running_server(create_app(client)) as base:
            httpx.get(f"{base}/health")
    """
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, name="tether-bench-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _summary(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "mean": statistics.fmean(xs) if xs else None, "p50": _pct(xs, 50), "p99": _pct(xs, 99),
            "max": max(xs) if xs else None}


@dataclass
class _Tally:
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    health: list[float] = field(default_factory=list)
    health_errors: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


async def _one_request(http: httpx.AsyncClient, body: dict[str, Any], tally: _Tally) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    done = False
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                tally.error(f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')}")
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if first is None:
                    first = time.perf_counter()
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    tally.error(f"in-band error: {event['error'].get('message')}")
                    return
                if event.get("usage"):
                    tally.completion_tokens += event["usage"]["completion_tokens"]
    except (httpx.HTTPError, ValueError) as e:
        tally.error(f"{type(e).__name__}: {e}")
        return
    if not done:
        tally.error("the stream ended without [DONE]")
        return
    tally.ok += 1
    tally.latencies.append(time.perf_counter() - t0)
    tally.ttfts.append(first - t0)


async def _client(base: str, index: int, deadline: float, max_tokens: int, timeout_s: float,
                  tally: _Tally) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s) as http:
        i = 0
        while time.perf_counter() < deadline:
            body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0.7, "seed": index * 100_003 + i,
                    "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": f"Client {index}, question {i}: name a color."}]}
            await _one_request(http, body, tally)
            i += 1


async def _probe_health(base: str, stop: asyncio.Event, tally: _Tally, every_s: float = 0.25) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = (await http.get("/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                tally.health.append(time.perf_counter() - t0)
            else:
                tally.health_errors += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


async def _load(base: str, clients: int, seconds: float, max_tokens: int, timeout_s: float) -> tuple[_Tally, float]:
    tally = _Tally()
    stop = asyncio.Event()
    t0 = time.perf_counter()
    prober = asyncio.ensure_future(_probe_health(base, stop, tally))
    await asyncio.gather(*(_client(base, c, t0 + seconds, max_tokens, timeout_s, tally) for c in range(clients)))
    elapsed = time.perf_counter() - t0
    stop.set()
    await prober
    return tally, elapsed


def _settled_stats(client: LLMClient, wait_s: float = 10.0) -> dict[str, Any]:
    """The engine's (or the replicas' summed) stats once nothing runs or waits (aborted requests free
    their blocks at the next step)."""
    deadline = time.monotonic() + wait_s
    while True:
        stats = asyncio.run(client.stats())
        if (stats.get("running", 0) == 0 and stats.get("waiting", 0) == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def run_bench(target: Engine | LLMClient, clients: int = 64, seconds: float = 60.0, max_tokens: int = 16,
              model_name: str = "bench", timeout_s: float = 300.0) -> dict[str, Any]:
    """Serve ``target`` (an in-process engine, or a client over Ray replicas) on loopback and load it;
    the result as ``main`` reports it (see the module doc).

    Example::

        result = run_bench(Engine(EngineConfig(model="default")), clients=8, seconds=5)
        assert result["errors"] == 0 and result["kv_blocks_free_after"]
        with Runtime(replicas=2) as rt:
            result = run_bench(rt.client(), clients=8, seconds=5)
    """
    if clients < 1 or seconds <= 0 or max_tokens < 1:
        raise ValueError("clients, seconds and max_tokens must be positive")
    client = LocalClient(target, model_name) if isinstance(target, Engine) else target
    with running_server(create_app(client)) as base:
        tally, elapsed = asyncio.run(_load(base, clients, seconds, max_tokens, timeout_s))
        stats = _settled_stats(client)
    busy = {k: stats.get(k) for k in ("running", "waiting", "kv_blocks_used", "pinned_blocks",
                                      "kv_blocks_cached_free", "kv_blocks_total", "programs", "finished")}
    held = (stats.get("kv_blocks_used") or 0) - (stats.get("pinned_blocks") or 0)
    return {
        "benchmark": "serve-load",
        "model": model_name,
        "clients": clients,
        "seconds": seconds,
        "max_tokens": max_tokens,
        "elapsed_s": elapsed,
        "requests": tally.ok + tally.errors,
        "ok": tally.ok,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "requests_per_s": tally.ok / elapsed,
        "completion_tokens": tally.completion_tokens,
        "completion_tokens_per_s": tally.completion_tokens / elapsed,
        "latency_s": _summary(tally.latencies),
        "ttft_s": _summary(tally.ttfts),
        "health_s": {**_summary(tally.health), "errors": tally.health_errors},
        "engine_after": busy,
        "kv_blocks_held_after": held,
        "kv_blocks_free_after": held == 0 and not busy["running"] and not busy["waiting"],
        "machine": machine(),
    }


def _through_replicas(args) -> dict[str, Any]:
    """The load through ``args.replicas`` Ray replicas on a local cluster, each given an equal share of the
    cores (``TETHER_CPU_THREADS``, unless set) so they do not oversubscribe them."""
    from tether.agents import Runtime

    os.environ.setdefault("TETHER_CPU_THREADS", str(max(1, len(os.sched_getaffinity(0)) // args.replicas)))
    with Runtime(model=args.model, replicas=args.replicas, policy=args.policy) as rt:
        result = run_bench(rt.client(), args.clients, args.seconds, args.max_tokens, model_name=args.model)
        result["replicas"] = args.replicas
        result["replica_stats"] = [{k: r.get(k) for k in ("finished", "kv_blocks_total", "kv_blocks_used",
                                                           "pinned_blocks", "dead")}
                                   for r in rt.stats().get("replicas", [])]
    result["kv_blocks_total"] = sum(r["kv_blocks_total"] or 0 for r in result["replica_stats"])
    result["cpu_threads_per_replica"] = int(os.environ["TETHER_CPU_THREADS"])
    return result


def machine() -> dict[str, Any]:
    import torch

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


def _table(r: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f} ms"
    lat, ttft, health = r["latency_s"], r["ttft_s"], r["health_s"]
    return "\n".join([
        f"serve load: {r['clients']} clients for {r['seconds']} s, max_tokens {r['max_tokens']}, model {r['model']}",
        f"  machine: {r['machine']['cpu_model']} ({r['machine']['cpu_count']} CPUs)",
        f"  requests {r['requests']} (ok {r['ok']}, errors {r['errors']}), {r['requests_per_s']:.2f} req/s, "
        f"{r['completion_tokens_per_s']:.1f} tokens/s",
        f"  latency p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}; TTFT p50 {ms(ttft['p50'])}, p99 {ms(ttft['p99'])}",
        f"  /health under load: p50 {ms(health['p50'])}, max {ms(health['max'])}, errors {health['errors']}",
        f"  KV blocks free afterwards: {r['kv_blocks_free_after']} (held {r['kv_blocks_held_after']})",
    ] + [f"  error: {e}" for e in r["error_samples"]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="tether bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--model", default="default")
    p.add_argument("--policy", default=None, help="the engine's policy preset (default: the engine's default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.add_argument("--replicas", type=int, default=0,
                   help="serve through N Ray engine replicas, as `tether serve --replicas N` (0: in-process)")
    args = p.parse_args(argv)
    config = {"model": args.model, **({"policy": args.policy} if args.policy else {})}
    if args.replicas:
        result = _through_replicas(args)
    else:
        engine = Engine(EngineConfig(**config))
        result = run_bench(engine, args.clients, args.seconds, args.max_tokens, model_name=args.model)
        result["engine_config"] = {k: v for k, v in engine.config.model_dump().items()
                                   if k in ("model", "policy", "dtype", "device", "num_kv_blocks",
                                            "kv_cache_memory_gb", "max_num_seqs", "max_num_batched_tokens",
                                            "block_size")}
        result["kv_blocks_total"] = engine.core.pool.num_blocks
    result["command"] = "tether bench serve " + " ".join(sys.argv[3:] if argv is None else argv)
    text = json.dumps(result, indent=2)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text if args.json else _table(result))
    if result["errors"] or not result["kv_blocks_free_after"]:
        print("serve load: FAILED (errors, or KV blocks still held)", file=sys.stderr)
    return result
