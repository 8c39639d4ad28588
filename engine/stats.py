"""The engine core's counters and gauges in one flat dict (what ``/metrics`` and replays read)."""

from __future__ import annotations

from typing import Any


def collect_stats(core) -> dict[str, Any]:
    """Counters of every part, and gauges: KV usage, pins, programs tracked, TTFT.

    Example::

        collect_stats(core)["prefix_hit_rate"]
    """
    c = {**core.counters, **core.scheduler.counters, **core.kv.counters, **core.pins.counters,
         **core.reuse.counters}
    q = c["prefix_query_tokens"]
    rq = c["reuse_query_tokens"]
    ttfts = sorted(m.ttft for m in core.finished_metrics if m.ttft is not None)
    pool = core.pool
    c.update(
        prefix_hit_rate=c["prefix_hit_tokens"] / q if q else 0.0,
        reuse="off" if not core.reuse.enabled else core.reuse.rule,
        reuse_rate=c["reuse_placed_tokens"] / rq if rq else 0.0,
        reuse_segments=len(core.reuse.store.segments),
        evicted_tokens=pool.evicted_blocks * pool.block_size,
        running=len(core.scheduler.running), waiting=len(core.scheduler.waiting),
        kv_blocks_total=pool.num_blocks, kv_blocks_used=pool.num_used, kv_blocks_cached_free=pool.num_cached_free,
        pinned_blocks=core.pins.pinned_blocks, host_blocks=len(core.kv.host) if core.kv.host is not None else 0,
        active_pins=len(core.programs.pinned()), programs=len(core.programs),
        ttft_mean=sum(ttfts) / len(ttfts) if ttfts else None,
        ttft_p50=ttfts[len(ttfts) // 2] if ttfts else None)
    return c
