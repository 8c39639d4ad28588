"""KV block accounting without a model: host-tier copies, pins over shared prefixes, admission.

1. A host block with a pending swap-in is never reused by a swap-out queued in the same step.
2. A pin holds a program's whole still-cached prefix, also when another program's copy of it
   is the cached one.
3. Admission ends exactly the pins it needs: no more (shared prefix), no fewer (host hits).
"""

from __future__ import annotations

from types import SimpleNamespace

from tether.engine.block_pool import BlockPool
from tether.engine.clock import VirtualClock
from tether.engine.config import EngineConfig
from tether.engine.events import EventBus
from tether.engine.eviction import LRUEviction
from tether.engine.host_tier import HostTier
from tether.engine.kv_manager import KVCacheManager
from tether.engine.pins import PinController
from tether.engine.program_table import ProgramTable
from tether.engine.queue_policy import RequestFCFS
from tether.engine.sampling import SamplingParams
from tether.engine.scheduler import Scheduler
from tether.engine.sequence import Sequence, SeqStatus
from tether.engine.tool_predictor import EmpiricalPredictor
from tether.engine.ttl_policy import NoPin

BS = 4


def make_kv(num_blocks: int, host_blocks: int | None = None) -> KVCacheManager:
    """The KV manager, with the program table and pin controller it works with hung on it."""
    pool = BlockPool(num_blocks, BS, LRUEviction())
    kv = KVCacheManager(pool, VirtualClock(), EventBus(), host=HostTier(host_blocks) if host_blocks else None)
    programs = ProgramTable()
    pins = PinController(programs, kv, NoPin(), EmpiricalPredictor(), kv.clock, kv.events,
                         SimpleNamespace(prefill_time_s=lambda t: t * 1e-3, copy_time_s=lambda b: b * 1e-4))
    kv.test = SimpleNamespace(programs=programs, pins=pins)
    return kv


def make_seq(rid: str, ids: list[int], program: str | None = None, kv: KVCacheManager | None = None) -> Sequence:
    if program is not None and kv is not None:
        kv.test.programs.turn_arrived(program, 0.0)
    return Sequence(rid, ids, SamplingParams(max_tokens=4), 0.0, program_id=program)


def ids(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def admit_all(kv: KVCacheManager, seq: Sequence) -> None:
    """Admit ``seq`` on whatever it hits, for all its remaining tokens."""
    hit = kv.find_cached_prefix(seq)
    blocks = kv.allocate_slots(seq, seq.num_tokens - hit.num_blocks * BS, hit)
    assert blocks is not None
    seq.block_table = blocks
    seq.num_computed_tokens = hit.num_blocks * BS


def compute(kv: KVCacheManager, seq: Sequence, upto: int | None = None) -> None:
    seq.num_computed_tokens = seq.num_tokens if upto is None else upto
    kv.cache_blocks(seq)


def finish(kv: KVCacheManager, seq: Sequence) -> None:
    seq.status = SeqStatus.FINISHED
    hashes = kv.free(seq)
    seq.block_table = []
    if seq.program_id is not None:
        kv.test.programs.turn_finished(seq.program_id, hashes, 0.0, now=0.0)


def turn(kv: KVCacheManager, seq: Sequence) -> None:
    admit_all(kv, seq)
    compute(kv, seq)
    finish(kv, seq)


def want_on_host(kv: KVCacheManager, program: str) -> None:
    """The program went into a tool call: its blocks are kept on the host if evicted."""
    kv.test.pins.tool_call(program, ["tool"], queue_tokens=0)


def pinned(kv: KVCacheManager, program: str) -> bool:
    return kv.test.programs.is_pinned(program)


# ---- 1. host blocks with a pending copy are not reused ------------------------------

def test_a_host_block_being_swapped_in_is_not_overwritten_by_a_swap_out_of_the_same_step():
    kv = make_kv(4, host_blocks=1)
    turn(kv, make_seq("a1", ids(100, 9), "A", kv))  # 2 full blocks
    want_on_host(kv, "A")
    turn(kv, make_seq("b1", ids(200, 9), "B", kv))  # evicts A's tail block to the single host block
    want_on_host(kv, "B")
    kv.take_swaps()
    a2 = make_seq("a2", ids(100, 9) + [1, 2, 3], "A", kv)
    assert kv.find_cached_prefix(a2).host  # A's tail comes back from the host...
    admit_all(kv, a2)  # ...while the allocation evicts one of B's blocks, which B wants on the host
    out, into = kv.take_swaps()
    read = {hb for hb, _ in into}
    assert not read & {hb for _, hb in out}, (out, into)  # runner copies out first: A would get B's KV
    # The host still names A's block by A's content, and the copy back fills A's device block.
    assert into == [(kv.host.lookup(a2.block_hashes(BS)[1]), a2.block_table[1])]


def test_host_tier_skips_held_entries_and_frees_them_after_the_step():
    tier = HostTier(2)
    a, b = tier.put(10), tier.put(20)
    tier.hold(a)
    tier.hold(b)
    assert tier.put(30) is None and tier.lookup(10) == a  # every entry has a copy pending
    tier.release_holds()
    tier.hold(a)  # a swap-in of 10 is queued: 20 goes instead, though 10 is older
    assert tier.put(30) == b and tier.lookup(20) is None and tier.lookup(10) == a


# ---- 2. a pin holds the shared prefix too ---------------------------------------------

def test_pin_holds_a_shared_prefix_computed_in_the_same_step():
    kv = make_kv(8)
    shared = ids(100, 8)  # 2 full blocks both programs compute in one step
    a = make_seq("a", shared + ids(300, 5), "A", kv)
    b = make_seq("b", shared + ids(400, 5), "B", kv)
    for s in (a, b):
        admit_all(kv, s)
    for s in (a, b):
        compute(kv, s)  # only a's copy of the shared blocks is registered
    for s in (a, b):
        finish(kv, s)
    assert len(kv.cached_prefix(kv.test.programs.get("B").last_turn_hashes)) == 3
    assert kv.test.pins.pin("B", ttl_s=100.0) == 3 * BS
    filler = make_seq("x", ids(500, kv.pool.num_free * BS), "X")  # takes every unpinned block
    admit_all(kv, filler)
    finish(kv, filler)
    b2 = make_seq("b2", b.token_ids + [1, 2], "B")
    assert len(kv.find_cached_prefix(b2).device) == 3  # the full prefix, shared blocks included


# ---- 3. admission counts the blocks it needs in one place -----------------------------

def make_scheduler(kv: KVCacheManager) -> Scheduler:
    cfg = EngineConfig(policy="baseline", max_num_batched_tokens=256, max_num_seqs=8)
    return Scheduler(kv, kv.test.pins, RequestFCFS(kv.clock, kv.test.programs), kv.clock, kv.events, cfg)


def pinned_turn(kv: KVCacheManager, program: str, start: int, value: float) -> None:
    """A finished turn of 2 full blocks (+1 token), pinned with ``value``."""
    turn(kv, make_seq(program, ids(start, 9), program, kv))
    assert kv.test.pins.pin(program, ttl_s=1e9, value=value) == 2 * BS


def test_admission_keeps_pins_it_does_not_need_when_running_requests_share_the_prefix():
    kv = make_kv(12)
    sched = make_scheduler(kv)
    shared = ids(100, 8)
    running = make_seq("r", shared + [7], "R")
    sched.add(running)
    sched.schedule()
    compute(kv, running, upto=8)  # r keeps running and holds the 2 shared blocks (3 in all)
    pinned_turn(kv, "Q1", 200, value=1.0)
    pinned_turn(kv, "Q2", 300, value=2.0)
    assert kv.pool.num_free == 5
    new = make_seq("s", shared + ids(400, 24), "S")  # 2 shared blocks + 6 new ones
    sched.add(new)
    batch = sched.schedule()
    assert new in batch.seqs
    assert not pinned(kv, "Q1") and pinned(kv, "Q2")  # one released pin frees enough
    assert kv.test.pins.counters["pins_released_under_pressure"] == 1


def test_admission_with_a_host_hit_releases_enough_pins_to_fit():
    kv = make_kv(10, host_blocks=8)
    hist = ids(100, 9)
    turn(kv, make_seq("h1", hist, "H", kv))
    want_on_host(kv, "H")
    turn(kv, make_seq("x", ids(600, 4 * 10), "X"))  # the whole pool: H's 2 blocks go to the host
    kv.take_swaps()
    pinned_turn(kv, "Q1", 200, value=1.0)
    pinned_turn(kv, "Q2", 300, value=2.0)
    pinned_turn(kv, "Q3", 400, value=3.0)
    sched = make_scheduler(kv)
    h2 = make_seq("h2", hist + ids(700, 7), "H")  # 2 host blocks + 2 new ones
    hit = kv.find_cached_prefix(h2)
    assert hit.device == [] and len(hit.host) == 2
    occupy = kv.pool.allocate(kv.pool.num_free - 2)  # 2 blocks free, 4 needed
    sched.add(h2)
    batch = sched.schedule()
    assert h2 in batch.seqs  # the head request does not stall on a short count
    assert not pinned(kv, "Q1") and pinned(kv, "Q2") and pinned(kv, "Q3")
    kv.pool.free(occupy)
