"""Block pool, prefix cache, LRU eviction and pins (the mechanism), on a virtual clock."""

from __future__ import annotations

from engine_helpers import greedy, make_core, req, run_all, tokens
from tether.engine.block_pool import BlockPool
from tether.engine.clock import VirtualClock
from tether.engine.eviction import LRUEviction


def span(start: int, n: int) -> list[int]:
    """``n`` distinct-looking token ids inside the tiny model's vocabulary."""
    return [3 + (i % 120) for i in range(start, start + n)]


def test_pool_refcounts_cache_and_lru_order():
    pool = BlockPool(4, 16, LRUEviction())
    a = pool.allocate(2)
    b = pool.allocate(2)
    pool.register(a[0], 100)
    pool.register(a[1], 101)
    pool.register(b[0], 200)
    pool.free(a)  # tail first: a[1] is evicted before a[0]
    pool.free(b)
    assert pool.num_free == 4 and pool.lookup(100) == a[0]
    pool.touch([a[0]])
    assert pool.num_free == 3
    # One never-hashed block (b[1]) is free; the next two come from LRU: a[1], then b[0].
    got = pool.allocate(3)
    assert got[0] == b[1] and got[1:] == [a[1], b[0]]
    assert pool.lookup(101) is None and pool.lookup(200) is None and pool.lookup(100) == a[0]
    assert pool.evicted_blocks == 2


def test_prefix_hit_counts_and_eviction(tiny_model):
    core = make_core(tiny_model, num_kv_blocks=8, policy="baseline")  # no host tier: evicted KV is gone
    p = list(range(3, 40))
    core.add_request(req("a", p, greedy(2)))
    run_all(core)
    core.add_request(req("b", p + [7, 8], greedy(2)))
    b = run_all(core)["b"][-1]
    assert b.metrics.prefix_hit_tokens == 32
    # Fill the pool with other content: the cached prefix is evicted (LRU).
    core.add_request(req("c", span(60, 100), greedy(2)))
    run_all(core)
    s = core.stats()
    assert s["evicted_tokens"] > 0
    assert s["evicted_tokens"] == 16  # c needed one cached block: the prefix's tail went first
    core.add_request(req("d", p, greedy(1)))
    assert run_all(core)["d"][-1].metrics.prefix_hit_tokens == 16
    core.check_no_leaks()


def _turn(core, rid, ids, program="prog"):
    core.add_request(req(rid, ids, greedy(4), program_id=program))
    return run_all(core)[rid]


def test_pin_survives_pressure_that_evicts_unpinned(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, num_kv_blocks=10)
    hist = list(range(3, 51))  # 48 tokens: 3 full blocks
    _turn(core, "t1", hist)
    assert core.pins.pin("prog", ttl_s=5.0) == 48
    assert core.stats()["pinned_blocks"] == 3
    # Another program uses the rest of the pool; the pinned blocks stay.
    _turn(core, "other", span(60, 100), program="other")
    clock.advance(1.0)
    out = _turn(core, "t2", hist + [9, 9, 9])
    assert out[-1].metrics.prefix_hit_tokens == 48
    s = core.stats()
    assert s["pin_hits"] == 1 and s["active_pins"] == 0  # the next turn took the pin
    core.check_no_leaks()


def test_pin_expires_and_release(tiny_model):
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock)
    events = []
    core.add_listener(lambda e: events.append(e.kind))
    _turn(core, "t1", list(range(3, 40)))
    assert core.pins.pin("prog", ttl_s=2.0) == 32
    clock.advance(1.9)
    core.step()
    assert core.stats()["active_pins"] == 1
    clock.advance(0.2)
    core.step()  # expiry is checked every scheduler step
    s = core.stats()
    assert s["active_pins"] == 0 and s["pins_expired"] == 1 and "expiry" in events
    assert core.pins.pin("prog", ttl_s=2.0) == 32  # still cached: can be pinned again
    assert core.pins.release("prog") and not core.pins.release("prog")
    assert core.stats()["pinned_blocks"] == 0
    core.end_program("prog")
    assert core.pins.pin("prog", 1.0) == 0  # the program ended: nothing left to pin
    core.check_no_leaks()


def test_pins_never_block_admission(tiny_model):
    """A request that needs the pinned memory gets it: the pin is released under pressure."""
    core = make_core(tiny_model, num_kv_blocks=8)
    _turn(core, "t1", list(range(3, 3 + 64)))
    assert core.pins.pin("prog", ttl_s=1e9) == 64
    core.add_request(req("big", span(70, 100), greedy(8), program_id="x"))
    assert len(tokens(run_all(core)["big"])) == 8
    assert core.stats()["pins_released_under_pressure"] == 1
    core.check_no_leaks()
