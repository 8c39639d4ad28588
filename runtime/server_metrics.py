"""Prometheus metrics of tether's HTTP server, served at ``GET /metrics``.

Request counts by route and status, token counters, latency histograms, and
the engine's own stats as gauges refreshed at scrape time: every numeric stat
the client reports, under the names below when listed there (e.g. ``programs``,
``replica_restarts``), else as ``tether_engine_<stat>``.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Engine stats exported as gauges at scrape time: stats key -> (metric name, help).
_STAT_GAUGES = {
    "running": ("tether_requests_running", "Requests in the engine's running batch"),
    "waiting": ("tether_requests_waiting", "Requests waiting to be scheduled"),
    "kv_blocks_used": ("tether_kv_blocks_used", "KV cache blocks referenced by requests or pins"),
    "kv_blocks_total": ("tether_kv_blocks_total", "KV cache blocks in the pool"),
    "kv_blocks_cached_free": ("tether_kv_blocks_cached_free", "Unreferenced blocks still holding cached prefixes"),
    "pinned_blocks": ("tether_kv_pinned_blocks", "KV blocks held by program pins"),
    "active_pins": ("tether_kv_active_pins", "Programs whose KV is pinned"),
    "prefix_hit_tokens": ("tether_prefix_hit_tokens", "Prompt tokens served from the prefix cache (engine total)"),
    "prefix_query_tokens": ("tether_prefix_query_tokens", "Prompt tokens looked up in the prefix cache"),
    "prefix_hit_rate": ("tether_prefix_hit_rate", "prefix_hit_tokens / prefix_query_tokens"),
    "preemptions": ("tether_preemptions", "Requests preempted for lack of KV blocks (engine total)"),
    "evicted_tokens": ("tether_evicted_tokens", "Tokens evicted from the prefix cache (engine total)"),
    "programs": ("tether_programs", "Programs tracked by the engine's program table"),
    "replica_restarts": ("tether_replica_restarts", "Engine replicas restarted after a failure (runtime total)"),
    "host_blocks": ("tether_kv_host_blocks", "KV blocks held in the host-memory tier"),
    "reuse_placed_tokens": ("tether_reuse_placed_tokens", "Prompt tokens whose KV was placed from another "
                            "prompt (engine total)"),
    "reuse_recomputed_tokens": ("tether_reuse_recomputed_tokens", "Placed tokens recomputed by the correction"),
    "reuse_rate": ("tether_reuse_rate", "reuse_placed_tokens / prompt tokens the prefix cache did not serve"),
}
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _gauge_spec(key: str) -> tuple[str, str]:
    """The metric name and help of stats key ``key`` (any numeric stat is exported)."""
    return _STAT_GAUGES.get(key) or (f"tether_engine_{_NOT_NAME.sub('_', key)}", f"Engine stat {key!r}")


class ServerMetrics:
    """Prometheus metrics of one app, in its own registry (several apps may share a process)."""

    content_type = CONTENT_TYPE_LATEST  # of ``render()``

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tether_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.prompt_tokens = Counter("tether_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_tokens = Counter("tether_cached_prompt_tokens", "Prompt tokens served from the prefix cache",
                                     registry=r)
        self.reused_tokens = Counter("tether_reused_prompt_tokens", "Prompt tokens whose KV was placed from "
                                     "another prompt (cross-agent reuse)", registry=r)
        self.completion_tokens = Counter("tether_completion_tokens", "Generated tokens", registry=r)
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
        self.ttft = Histogram("tether_time_to_first_token_seconds", "From request arrival to the first token",
                              buckets=buckets, registry=r)
        self.latency = Histogram("tether_request_duration_seconds", "From request arrival to the last token",
                                 buckets=buckets, registry=r)
        self.gauges = {k: Gauge(name, doc, registry=r) for k, (name, doc) in _STAT_GAUGES.items()}
        self._names = {name for name, _ in _STAT_GAUGES.values()}

    def record(self, usage: dict[str, Any], ttft: float | None, latency: float) -> None:
        """One finished request: its OpenAI ``usage`` and its timings in seconds (``ttft`` None: no token came)."""
        self.prompt_tokens.inc(usage["prompt_tokens"])
        self.cached_tokens.inc(usage["prompt_tokens_details"]["cached_tokens"])
        self.reused_tokens.inc(usage["prompt_tokens_details"].get("reused_tokens", 0))
        self.completion_tokens.inc(usage["completion_tokens"])
        if ttft is not None:
            self.ttft.observe(ttft)
        self.latency.observe(latency)

    def update_from_stats(self, stats: dict[str, Any]) -> None:
        """Set a gauge for every numeric stat (non-numbers, e.g. per-replica lists and None, are skipped)."""
        for key, v in stats.items():
            if not isinstance(key, str) or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            gauge = self.gauges.get(key)
            if gauge is None:
                name, doc = _gauge_spec(key)
                if name in self._names:  # two keys sanitized alike: the first keeps the name
                    continue
                self._names.add(name)
                gauge = self.gauges[key] = Gauge(name, doc, registry=self.registry)
            gauge.set(v)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware counting responses by route and status (pure ASGI, so streaming is untouched)."""

    def __init__(self, app: Any, metrics: ServerMetrics, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"  # bounded label values
            self.metrics.requests.labels(route, str(status[0])).inc()
